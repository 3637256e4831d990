"""Active checks of each tool that is on: does the key, daemon, permission or token really work?

Every endpoint comes from the settings the app uses (`TelemetrySettings`), so the checks ask the
same places the app sends to. Each network call has a timeout; a failure says why and what to change.
"""

from __future__ import annotations

import contextlib
import json
import platform
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field

import boto3
import botocore.exceptions
import requests
from botocore.credentials import Credentials
from google.protobuf.message import DecodeError
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.instrumentation.utils import suppress_instrumentation
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse
from opentelemetry.sdk.extension.aws.trace import AwsXRayIdGenerator
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from cruddur.telemetry import xray_otlp
from cruddur.telemetry.cloudwatch import boto_config
from cruddur.telemetry.settings import HONEYCOMB_DEFAULT_ENDPOINT, TelemetrySettings, XRaySettings, key_hint

TIMEOUT_SECONDS = 5.0
CHECK_NAME = "cruddur-telemetry-check"


@dataclass
class Step:
    name: str
    ok: bool
    detail: str
    fix: str | None = None


@dataclass
class ToolReport:
    tool: str
    state: str  # "ok", "failed" or "off"
    steps: list[Step] = field(default_factory=list)
    off_because: str | None = None

    def run(self, name: str, probe: Callable[[], str]) -> bool:
        """Run one step; a `CheckFailed` or an unexpected error marks the tool failed."""
        try:
            self.steps.append(Step(name, True, probe()))
            return True
        except CheckFailed as failed:
            self.steps.append(Step(name, False, failed.detail, failed.fix))
        except Exception as error:  # a check must report, never crash the command
            self.steps.append(Step(name, False, f"{type(error).__name__}: {error}", None))
        self.state = "failed"
        return False

    def as_dict(self) -> dict:
        return asdict(self)


class CheckFailed(Exception):
    def __init__(self, detail: str, fix: str) -> None:
        super().__init__(detail)
        self.detail = detail
        self.fix = fix


def _honeycomb_base(settings: TelemetrySettings) -> str:
    endpoint = settings.otel.endpoint or ""
    return endpoint.removesuffix("/v1/traces") if endpoint.endswith("/v1/traces") else HONEYCOMB_DEFAULT_ENDPOINT


def check_otel(settings: TelemetrySettings) -> ToolReport:
    otel = settings.otel
    name = "Honeycomb" if "x-honeycomb-team" in otel.headers else "OpenTelemetry (OTLP)"
    report = ToolReport(name, "ok")
    if not otel.enabled:
        return ToolReport(name, "off", off_because=otel.why_off)
    if "x-honeycomb-team" in otel.headers and not report.run("who am I", lambda: _honeycomb_auth(settings)):
        return report
    report.run("test span", lambda: _export_test_span(settings))
    return report


def _honeycomb_auth(settings: TelemetrySettings) -> str:
    """Honeycomb's `GET /1/auth`: which team and environment the key belongs to."""
    url = f"{_honeycomb_base(settings)}/1/auth"
    try:
        response = requests.get(
            url, headers={"X-Honeycomb-Team": settings.otel.headers["x-honeycomb-team"]}, timeout=TIMEOUT_SECONDS
        )
    except requests.RequestException as error:
        raise CheckFailed(
            f"cannot reach {url}: {type(error).__name__}",
            "check HONEYCOMB_API_ENDPOINT and that this host can reach it",
        ) from None
    if response.status_code == 401:
        raise CheckFailed(
            "Honeycomb rejected the key (401)",
            "set HONEYCOMB_API_KEY to an ingest key of the environment you want (Environment settings → API Keys)",
        )
    if response.status_code != 200:
        raise CheckFailed(f"{url} answered {response.status_code}", "check HONEYCOMB_API_ENDPOINT")
    body = response.json()
    team = body.get("team", {}).get("name") or body.get("team", {}).get("slug") or "?"
    environment = body.get("environment", {}).get("name") or body.get("environment", {}).get("slug") or "classic"
    return f"team {team!r}, environment {environment!r}"


def _test_span(service_name: str) -> tuple[Sequence[ReadableSpan], str]:
    """One finished span named `CHECK_NAME`, with an X-Ray trace id, and that id in hex."""
    memory = InMemorySpanExporter()
    provider = TracerProvider(
        resource=Resource.create({"service.name": service_name}), id_generator=AwsXRayIdGenerator()
    )
    provider.add_span_processor(SimpleSpanProcessor(memory))
    with provider.get_tracer("cruddur.telemetry.check").start_as_current_span(CHECK_NAME) as span:
        span.set_attribute("app.check", True)
    return memory.get_finished_spans(), format(span.get_span_context().trace_id, "032x")


def _export_test_span(settings: TelemetrySettings) -> str:
    spans, trace_hex = _test_span(settings.otel.service_name)
    exporter = OTLPSpanExporter(
        endpoint=settings.otel.endpoint, headers=dict(settings.otel.headers), timeout=TIMEOUT_SECONDS
    )
    try:
        result = exporter.export(spans)
    finally:
        exporter.shutdown()
    if result is not SpanExportResult.SUCCESS:
        raise CheckFailed(
            f"the test span was not accepted by {settings.otel.endpoint}",
            "check the endpoint and its headers (OTEL_EXPORTER_OTLP_* or HONEYCOMB_API_KEY); the app's log has details",
        )
    return f"exported to {settings.otel.endpoint} (trace {trace_hex})"


def _daemon_host_port(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host or "127.0.0.1", int(port)


def check_xray(settings: TelemetrySettings) -> ToolReport:
    xray = settings.xray
    if not xray.enabled:
        return ToolReport("AWS X-Ray", "off", off_because=xray.why_off)
    report = ToolReport("AWS X-Ray", "ok")
    if xray.mode == "otlp":
        found: list[Credentials] = []
        if report.run("credentials", lambda: _xray_credentials(xray, found)):
            report.run("test span", lambda: _post_xray_test_span(xray, found[0]))
        return report
    if report.run("daemon", lambda: _daemon_answers(xray.daemon_address)):
        report.run("test segment", lambda: _send_test_segment(xray.daemon_address, xray.service_name))
    return report


def _daemon_answers(address: str) -> str:
    """The daemon proxies the X-Ray API on TCP at its address: ask it for the sampling rules."""
    host, port = _daemon_host_port(address)
    url = f"http://{host}:{port}/GetSamplingRules"
    try:
        response = requests.post(url, json={}, timeout=TIMEOUT_SECONDS)
    except requests.ConnectionError:
        raise CheckFailed(
            f"nothing answers on TCP {host}:{port}",
            "start the X-Ray daemon (docker compose --profile xray up xray-daemon publishes TCP and UDP 2000) "
            "or fix AWS_XRAY_DAEMON_ADDRESS",
        ) from None
    except requests.Timeout:
        raise CheckFailed(f"{host}:{port} did not answer within {TIMEOUT_SECONDS:.0f}s", "check the daemon") from None
    if response.status_code != 200:
        raise CheckFailed(
            f"the daemon answered {response.status_code}: {response.text[:120]}",
            "give the daemon AWS credentials and a region with xray:GetSamplingRules and xray:PutTraceSegments",
        )
    rules = [record["SamplingRule"]["RuleName"] for record in response.json().get("SamplingRuleRecords", [])]
    return f"answering at {host}:{port}; sampling rules in the account: {', '.join(rules) or 'none'}"


def _send_test_segment(address: str, service_name: str) -> str:
    host, port = _daemon_host_port(address)
    generator = AwsXRayIdGenerator()
    trace_hex = format(generator.generate_trace_id(), "032x")
    now = time.time()
    segment = {
        "name": service_name,
        "id": format(generator.generate_span_id(), "016x"),
        "trace_id": f"1-{trace_hex[:8]}-{trace_hex[8:]}",
        "start_time": now,
        "end_time": now,
        "annotations": {"check": CHECK_NAME},
    }
    datagram = '{"format":"json","version":1}\n' + json.dumps(segment)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        udp.sendto(datagram.encode(), (host, port))
    return f"sent over UDP (trace {segment['trace_id']}); UDP has no reply, look for it in the X-Ray console"


def _xray_credentials(xray: XRaySettings, found: list[Credentials]) -> str:
    """The credentials the app signs with: boto3's chain, as the app resolves it."""
    credentials, missing = xray_otlp.resolve_credentials(xray.region)
    if credentials is None:
        raise CheckFailed(missing, "give this process AWS credentials allowed xray:PutTraceSegments")
    access_key = credentials.get_frozen_credentials().access_key
    found.append(credentials)
    return f"from {credentials.method}, access key {key_hint(access_key)}, signing for {xray.region}"


def _post_xray_test_span(xray: XRaySettings, credentials: Credentials) -> str:
    """One signed OTLP request, as the app sends them; AWS checks the signature and the permission."""
    spans, trace_hex = _test_span(xray.service_name)
    session = xray_otlp.SigV4Session(credentials, xray.region)
    try:
        response = session.post(
            xray.otlp_endpoint,
            data=xray_otlp.encode(spans),
            headers={"Content-Type": "application/x-protobuf"},
            timeout=TIMEOUT_SECONDS,
        )
    except requests.RequestException as error:
        raise CheckFailed(
            f"cannot reach {xray.otlp_endpoint}: {type(error).__name__}",
            "check AWS_REGION (and AWS_ENDPOINT_URL_XRAY) and that this host can reach it",
        ) from None
    finally:
        session.close()
    message = _aws_message(response)
    if response.status_code == 403:
        raise CheckFailed(
            f"X-Ray refused the request (403): {message}",
            "allow xray:PutTraceSegments (AWSXrayWriteOnlyAccess) for these credentials, and check the clock",
        )
    if response.status_code != 200:
        raise CheckFailed(
            f"{xray.otlp_endpoint} answered {response.status_code}: {message}",
            "X-Ray takes OTLP only with Transaction Search on: run aws/bin/xray-setup --transaction-search",
        )
    reply = ExportTraceServiceResponse()
    with contextlib.suppress(DecodeError):
        reply.ParseFromString(response.content)
    if reply.partial_success.rejected_spans:
        raise CheckFailed(f"X-Ray rejected the test span: {reply.partial_success.error_message}", "see X-Ray's message")
    return (
        f"accepted by {xray.otlp_endpoint} (trace 1-{trace_hex[:8]}-{trace_hex[8:]}); "
        "find it in CloudWatch → Transaction Search"
    )


def _aws_message(response: requests.Response) -> str:
    """The `message` of an AWS JSON error, or the start of whatever else the body is."""
    with contextlib.suppress(ValueError, AttributeError):
        body = response.json()
        return str(body.get("message") or body.get("Message") or response.text)[:200]
    return response.text[:200].strip()


def check_cloudwatch(settings: TelemetrySettings, missing: str | None) -> ToolReport:
    if missing:
        return ToolReport("CloudWatch Logs", "off", off_because=missing)
    report = ToolReport("CloudWatch Logs", "ok")
    cloudwatch = settings.cloudwatch
    logs = boto3.client("logs", region_name=cloudwatch.region, endpoint_url=cloudwatch.endpoint, config=boto_config())
    if not report.run("identity", lambda: _caller_identity(cloudwatch.region)):
        return report
    if report.run("log group", lambda: _log_group(logs, cloudwatch.log_group, cloudwatch.retention_days)):
        report.run("test event", lambda: _put_test_event(logs, cloudwatch.log_group))
    return report


def _aws_failure(action: str, error: Exception) -> CheckFailed:
    if isinstance(error, botocore.exceptions.ClientError):
        code = error.response.get("Error", {}).get("Code", "")
        message = error.response.get("Error", {}).get("Message", "")
        if code in {"AccessDeniedException", "AccessDenied", "UnauthorizedOperation"}:
            return CheckFailed(f"missing permission {action}: {message}", f"allow {action} in the role or user policy")
        if code in {"InvalidClientTokenId", "UnrecognizedClientException", "SignatureDoesNotMatch"}:
            return CheckFailed(
                f"AWS rejected the credentials ({code})", "check AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY"
            )
        return CheckFailed(f"{action} failed: {code} {message}", "see the AWS error above")
    return CheckFailed(f"{action} failed: {type(error).__name__}: {error}", "check AWS_REGION and AWS_ENDPOINT_URL*")


def _caller_identity(region: str) -> str:
    try:
        identity = boto3.client("sts", region_name=region, config=boto_config()).get_caller_identity()
    except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as error:
        raise _aws_failure("sts:GetCallerIdentity", error) from None
    return f"account {identity['Account']}, {identity['Arn']}"


def _log_group(logs: object, group: str, wanted_retention: int | None) -> str:
    try:
        found = [
            g for g in logs.describe_log_groups(logGroupNamePrefix=group)["logGroups"] if g["logGroupName"] == group
        ]
    except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as error:
        raise _aws_failure("logs:DescribeLogGroups", error) from None
    if not found:
        return f"{group!r} does not exist yet; the app creates it with its first lines"
    retention = found[0].get("retentionInDays")
    if wanted_retention and retention != wanted_retention:
        return (
            f"{group!r} exists, retention {retention or 'never expire'} (the app sets {wanted_retention} when it sends)"
        )
    return f"{group!r} exists, retention {f'{retention} days' if retention else 'never expire'}"


def _put_test_event(logs: object, group: str) -> str:
    stream = f"{platform.node()}/{CHECK_NAME}"
    try:
        with contextlib.suppress(logs.exceptions.ResourceAlreadyExistsException):
            logs.create_log_group(logGroupName=group)
        with contextlib.suppress(logs.exceptions.ResourceAlreadyExistsException):
            logs.create_log_stream(logGroupName=group, logStreamName=stream)
        message = json.dumps({"level": "INFO", "logger": "cruddur.telemetry.check", "message": CHECK_NAME})
        logs.put_log_events(
            logGroupName=group,
            logStreamName=stream,
            logEvents=[{"timestamp": int(time.time() * 1000), "message": message}],
        )
    except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as error:
        raise _aws_failure("logs:CreateLogGroup/CreateLogStream/PutLogEvents", error) from None
    return f"written to {group}/{stream}"


def check_rollbar(settings: TelemetrySettings) -> ToolReport:
    rollbar = settings.rollbar
    if not rollbar.enabled:
        return ToolReport("Rollbar", "off", off_because="set ROLLBAR_ACCESS_TOKEN to report errors to Rollbar")
    report = ToolReport("Rollbar", "ok")
    report.run("test item", lambda: _post_test_item(settings))
    return report


def _post_test_item(settings: TelemetrySettings) -> str:
    rollbar = settings.rollbar
    payload = {
        "data": {
            "environment": rollbar.environment,
            "level": "info",
            "code_version": rollbar.code_version,
            "body": {"message": {"body": f"{CHECK_NAME}: Rollbar receives items from backend-flask"}},
            "notifier": {"name": "cruddur-telemetry-check"},
        }
    }
    url = f"{rollbar.endpoint}item/"
    try:
        response = requests.post(
            url, json=payload, headers={"X-Rollbar-Access-Token": rollbar.access_token}, timeout=TIMEOUT_SECONDS
        )
    except requests.RequestException as error:
        raise CheckFailed(f"cannot reach {url}: {type(error).__name__}", "check ROLLBAR_ENDPOINT") from None
    if response.status_code in {401, 403}:
        raise CheckFailed(
            f"Rollbar rejected the token ({response.status_code}): {response.text[:120]}",
            "set ROLLBAR_ACCESS_TOKEN to a post_server_item token of this project (Project settings → Access Tokens)",
        )
    if response.status_code != 200:
        raise CheckFailed(f"Rollbar answered {response.status_code}: {response.text[:120]}", "see Rollbar's message")
    return f"accepted for environment {rollbar.environment!r}"


def run_checks(settings: TelemetrySettings, cloudwatch_missing: str | None) -> list[ToolReport]:
    """Every tool's checks; their own HTTP calls are not traced into the app's spans."""
    with suppress_instrumentation():
        return [
            check_otel(settings),
            check_xray(settings),
            check_cloudwatch(settings, cloudwatch_missing),
            check_rollbar(settings),
        ]
