"""`CRUDDUR_XRAY_MODE=otlp`: spans straight to X-Ray's OTLP endpoint, signed SigV4, no SDK, no daemon.

The fake X-Ray endpoint recomputes each request's SigV4 signature from the fake credentials it
knows (tests/support/sigv4.py) and refuses a wrong one with 403, as AWS does; what it takes is
decoded as OTLP protobuf and compared with what the Honeycomb fake received.
"""

from __future__ import annotations

import datetime
import json
import sys
from collections.abc import Iterator

import pytest
import requests
from botocore.credentials import Credentials, RefreshableCredentials
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from cruddur.config import ConfigError
from cruddur.telemetry import spend, xray_otlp
from cruddur.telemetry.settings import TelemetrySettings, XRaySettings
from tests.support.otlp import FakeOtlpReceiver
from tests.support.recording import RecordingServer
from tests.support.server import Gunicorn, run_in_backend
from tests.support.sigv4 import SigV4Verifier

ACCESS_KEY = "fake-key-0001"
SECRET_KEY = "fake-secret-key-for-tests-only-0001"
HONEYCOMB_KEY = "hcaik_fake_key_for_tests_0000wxyz"
REQUESTS = [
    ("get", "/api/activities/home", None, 200),
    ("post", "/api/activities", {"message": "", "ttl": "never"}, 422),
    ("get", "/api/activities/00000000-0000-4000-8000-000000000000", None, 404),
    ("post", "/api/messages", {"message": "m", "user_receiver_handle": "lore"}, 200),
]


@pytest.fixture(autouse=True)
def cloudwatch_to_moto(moto_server: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A region and credentials turn CloudWatch Logs on too: its lines, and its check's STS call, go to moto."""
    monkeypatch.setenv("AWS_ENDPOINT_URL_CLOUDWATCH_LOGS", moto_server)
    monkeypatch.setenv("AWS_ENDPOINT_URL_STS", moto_server)


@pytest.fixture
def aws_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fake static credentials where boto3's chain looks first: the process environment."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", ACCESS_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET_KEY)


@pytest.fixture
def xray_endpoint() -> Iterator[FakeOtlpReceiver]:
    receiver = FakeOtlpReceiver(authorize=SigV4Verifier({ACCESS_KEY: (SECRET_KEY, None)}))
    yield receiver
    receiver.close()


def otlp_mode(xray: FakeOtlpReceiver, **extra: str) -> dict[str, str]:
    return {"CRUDDUR_XRAY_MODE": "otlp", "AWS_REGION": "us-east-1", "AWS_ENDPOINT_URL_XRAY": xray.url, **extra}


def serve(app) -> None:
    client = app.test_client()
    for method, path, body, status in REQUESTS:
        assert getattr(client, method)(path, json=body).status_code == status


def flush(app) -> None:
    app.extensions["cruddur"].telemetry.shutdown()


def ids(spans) -> set[tuple[str, str]]:
    return {(span.trace_id.hex(), span.span_id.hex()) for span in spans}


def xray_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    messages = [record.getMessage() for record in caplog.records if record.name == "cruddur.telemetry"]
    return [message.removeprefix("telemetry: ") for message in messages if message.startswith("telemetry: AWS X-Ray")]


# --- the mode, end to end ------------------------------------------------------------------------


def test_xray_and_honeycomb_get_the_same_spans_signed_for_xray_and_no_daemon_datagram(
    make_app, aws_keys, xray_endpoint, otlp_receiver, xray_daemon
):
    app = make_app(
        otlp_mode(
            xray_endpoint,
            HONEYCOMB_API_KEY=HONEYCOMB_KEY,
            HONEYCOMB_API_ENDPOINT=otlp_receiver.url,
            AWS_XRAY_DAEMON_ADDRESS=xray_daemon.address,
        )
    )
    serve(app)
    flush(app)
    assert xray_endpoint.refused == []
    assert xray_endpoint.authorize.accepted_keys, "every request carried a signature AWS accepts"
    xray_spans, honeycomb_spans = xray_endpoint.spans(), otlp_receiver.spans()
    assert len(xray_spans) >= len(REQUESTS) * 2
    assert ids(xray_spans) == ids(honeycomb_spans)
    assert {"GET /api/activities/home", "home-activities"} <= {span.name for span in xray_spans}
    for export in xray_endpoint.exports:
        assert export.path == "/v1/traces"
        assert export.headers["content-type"] == "application/x-protobuf"
        assert "x-honeycomb-team" not in export.headers
        assert export.resource_attributes()["service.name"] == "backend-flask"
    assert all(export.headers["x-honeycomb-team"] == HONEYCOMB_KEY for export in otlp_receiver.exports)
    assert xray_daemon.wait_for_segments(1, timeout=0.3) == [] and xray_daemon.documents == []
    telemetry = app.extensions["cruddur"].telemetry
    assert telemetry.xray_middleware is None and telemetry.tracing.xray is None


def test_both_endpoints_receive_the_same_bytes_encoded_once_per_batch(
    make_app, aws_keys, xray_endpoint, otlp_receiver, monkeypatch
):
    encoded: list[int] = []
    real_encode = xray_otlp.encode_spans

    def counting(spans):
        encoded.append(len(spans))
        return real_encode(spans)

    def second_encoder(spans):
        raise AssertionError("OTLPSpanExporter.export would encode the batch a second time")

    monkeypatch.setattr(xray_otlp, "encode_spans", counting)
    monkeypatch.setattr("opentelemetry.exporter.otlp.proto.http.trace_exporter.encode_spans", second_encoder)
    app = make_app(otlp_mode(xray_endpoint, OTEL_EXPORTER_OTLP_ENDPOINT=otlp_receiver.url))
    serve(app)
    flush(app)
    assert encoded and len(encoded) == len(xray_endpoint.exports) == len(otlp_receiver.exports)
    assert sum(encoded) == len(xray_endpoint.spans())
    assert sorted(e.raw for e in xray_endpoint.exports) == sorted(e.raw for e in otlp_receiver.exports)


def test_xray_alone_without_honeycomb_gets_the_spans_and_the_startup_says_so(make_app, aws_keys, xray_endpoint, caplog):
    app = make_app(otlp_mode(xray_endpoint))
    serve(app)
    flush(app)
    assert {"GET /api/activities/home", "home-activities"} <= {span.name for span in xray_endpoint.spans()}
    [xray_line] = xray_lines(caplog)
    assert xray_line == (
        f"AWS X-Ray: on, CRUDDUR_XRAY_MODE=otlp: spans over OTLP to {xray_endpoint.url}/v1/traces, "
        "signed SigV4 for us-east-1 (no SDK, no daemon)"
    )


def test_a_session_token_is_sent_and_signed(make_app, monkeypatch, xray_endpoint):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", ACCESS_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
    monkeypatch.setenv("AWS_SESSION_TOKEN", "fake-session-token-for-tests")
    xray_endpoint.authorize.keys[ACCESS_KEY] = (SECRET_KEY, "fake-session-token-for-tests")
    app = make_app(otlp_mode(xray_endpoint))
    serve(app)
    flush(app)
    assert xray_endpoint.refused == [] and xray_endpoint.spans()
    assert "x-amz-security-token" in xray_endpoint.exports[0].headers


def test_sampling_keeps_a_trace_in_both_or_in_neither(make_app, aws_keys, xray_endpoint, otlp_receiver):
    app = make_app(
        otlp_mode(xray_endpoint, OTEL_EXPORTER_OTLP_ENDPOINT=otlp_receiver.url, OTEL_TRACES_SAMPLER="traceidratio")
        | {"OTEL_TRACES_SAMPLER_ARG": "0.5"}
    )
    client = app.test_client()
    for _ in range(40):
        assert client.get("/api/activities/home").status_code == 200
    flush(app)
    kept = {span.trace_id.hex() for span in xray_endpoint.spans()}
    assert kept == {span.trace_id.hex() for span in otlp_receiver.spans()}
    assert 0 < len(kept) < 40


# --- never fatal -------------------------------------------------------------------------------


def test_a_wrong_signature_is_refused_and_the_app_serves_on(make_app, monkeypatch, xray_endpoint, otlp_receiver):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", ACCESS_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret-aws-knows")
    app = make_app(otlp_mode(xray_endpoint, OTEL_EXPORTER_OTLP_ENDPOINT=otlp_receiver.url))
    serve(app)
    flush(app)
    assert xray_endpoint.exports == []
    assert xray_endpoint.refused and all("signature" in why for why in xray_endpoint.refused)
    destination = app.extensions["cruddur"].telemetry.xray_destination
    assert destination.failed_batches == len(xray_endpoint.refused) and destination.sent_batches == 0
    assert otlp_receiver.spans(), "Honeycomb's copy does not depend on X-Ray's"


def test_without_credentials_xray_is_off_with_one_line_and_the_app_serves(make_app, xray_endpoint, caplog):
    app = make_app(otlp_mode(xray_endpoint))
    serve(app)
    flush(app)
    assert xray_endpoint.exports == [] and xray_endpoint.refused == []
    [line] = xray_lines(caplog)
    assert line.startswith("AWS X-Ray: off (CRUDDUR_XRAY_MODE=otlp found no AWS credentials")
    assert app.extensions["cruddur"].telemetry.tracing.tracer is None, "no tracer when nothing receives spans"


def test_without_a_region_xray_is_off_and_says_which_variable(make_app, aws_keys, xray_endpoint, caplog):
    app = make_app({"CRUDDUR_XRAY_MODE": "otlp", "AWS_ENDPOINT_URL_XRAY": xray_endpoint.url})
    serve(app)
    [line] = xray_lines(caplog)
    assert line == "AWS X-Ray: off (CRUDDUR_XRAY_MODE=otlp needs AWS_REGION: X-Ray's OTLP endpoint is regional)"


@pytest.mark.parametrize("mode", ["error", "hang"])
def test_an_endpoint_that_fails_or_hangs_slows_no_request(make_app, aws_keys, xray_endpoint, mode):
    xray_endpoint.mode = mode
    app = make_app(otlp_mode(xray_endpoint, OTEL_EXPORTER_OTLP_TIMEOUT="1", OTEL_BSP_SCHEDULE_DELAY="50"))
    client = app.test_client()
    for _ in range(20):
        assert client.get("/api/activities/home").status_code == 200
    app.extensions["cruddur"].telemetry.shutdown(timeout=3)


def test_the_otlp_headers_meant_for_honeycomb_never_reach_aws(
    make_app, aws_keys, xray_endpoint, otlp_receiver, monkeypatch
):
    # The OTLP exporter reads this variable itself, for every request it makes.
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_HEADERS", f"x-honeycomb-team={HONEYCOMB_KEY}")
    app = make_app(otlp_mode(xray_endpoint, OTEL_EXPORTER_OTLP_ENDPOINT=otlp_receiver.url))
    serve(app)
    flush(app)
    assert otlp_receiver.exports[0].headers["x-honeycomb-team"] == HONEYCOMB_KEY
    assert xray_endpoint.exports and all("x-honeycomb-team" not in e.headers for e in xray_endpoint.exports)


def test_the_xray_sdk_is_never_imported_in_otlp_mode(tmp_path):
    script = (
        "import sys\n"
        "from cruddur import create_app\n"
        "app = create_app({'TESTING': True, 'DATABASE_URL': sys.argv[1]})\n"
        "assert app.test_client().get('/api/activities/home').status_code == 200\n"
        "app.extensions['cruddur'].telemetry.shutdown(timeout=1)\n"
        "print(sorted(name for name in sys.modules if name.startswith('aws_xray_sdk')))\n"
    )
    env = {
        "PATH": "/usr/bin:/bin",
        "AWS_EC2_METADATA_DISABLED": "true",
        "CRUDDUR_XRAY_MODE": "otlp",
        "AWS_REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": ACCESS_KEY,
        "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
        "AWS_ENDPOINT_URL_XRAY": "http://127.0.0.1:9",
        "AWS_ENDPOINT_URL_CLOUDWATCH_LOGS": "http://127.0.0.1:9",
        "AWS_XRAY_DAEMON_ADDRESS": "127.0.0.1:2000",
        "AWS_CONFIG_FILE": str(tmp_path / "none"),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none"),
    }
    done = run_in_backend([sys.executable, "-c", script, str(tmp_path / "db.sqlite3")], env, 60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "[]"


def test_sigterm_flushes_xray_within_the_deadline(tmp_path, xray_endpoint):
    env = {
        "DATABASE_URL": str(tmp_path / "db.sqlite3"),
        "AWS_ACCESS_KEY_ID": ACCESS_KEY,
        "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
        "AWS_CONFIG_FILE": str(tmp_path / "none"),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none"),
        "AWS_ENDPOINT_URL_CLOUDWATCH_LOGS": "http://127.0.0.1:9",
        "OTEL_BSP_SCHEDULE_DELAY": "60000",
        "CRUDDUR_SHUTDOWN_TIMEOUT": "3",
        **otlp_mode(xray_endpoint),
    }
    server = Gunicorn(env, tmp_path / "gunicorn.log").wait_ready()
    for _ in range(3):
        assert requests.get(f"{server.url}/api/activities/home", timeout=5).status_code == 200
    assert xray_endpoint.spans() == []
    assert server.stop() < 3 + 5, server.output()
    assert [span.name for span in xray_endpoint.spans()].count("GET /api/activities/home") == 3


# --- the pieces ----------------------------------------------------------------------------------


def finished_spans(count: int) -> list:
    memory = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    for index in range(count):
        with provider.get_tracer("test").start_as_current_span(f"span-{index}"):
            pass
    return list(memory.get_finished_spans())


def xray_exporter(endpoint: FakeOtlpReceiver, credentials: Credentials) -> OTLPSpanExporter:
    return OTLPSpanExporter(
        endpoint=f"{endpoint.url}/v1/traces", timeout=5, session=xray_otlp.SigV4Session(credentials, "us-east-1")
    )


def test_credentials_are_read_again_for_each_send_so_a_rotated_role_keeps_working(xray_endpoint):
    """An assumed or instance role: botocore refreshes the keys shortly before they expire."""
    xray_endpoint.authorize.keys = {"fake-key-0002": ("rotated-fake-secret", "rotated-token")}
    soon = datetime.datetime.now(datetime.UTC) + datetime.timedelta(minutes=5)
    later = soon + datetime.timedelta(hours=1)
    credentials = RefreshableCredentials.create_from_metadata(
        metadata={"access_key": ACCESS_KEY, "secret_key": SECRET_KEY, "token": "old", "expiry_time": soon.isoformat()},
        refresh_using=lambda: {
            "access_key": "fake-key-0002",
            "secret_key": "rotated-fake-secret",
            "token": "rotated-token",
            "expiry_time": later.isoformat(),
        },
        method="assume-role",
    )
    destination = xray_otlp.Destination("AWS X-Ray", xray_exporter(xray_endpoint, credentials))
    spans = finished_spans(2)
    assert destination.send(xray_otlp.encode(spans), spans)
    assert xray_endpoint.authorize.accepted_keys == ["fake-key-0002"]


def test_a_batch_over_xrays_limits_is_sent_in_parts(xray_endpoint):
    credentials = Credentials(ACCESS_KEY, SECRET_KEY)
    destination = xray_otlp.Destination("AWS X-Ray", xray_exporter(xray_endpoint, credentials), max_spans=2)
    spans = finished_spans(5)
    assert destination.send(xray_otlp.encode(spans), spans)
    assert sorted(len(export.spans()) for export in xray_endpoint.exports) == [1, 2, 2]
    assert {span.name for span in xray_endpoint.spans()} == {f"span-{i}" for i in range(5)}


def test_a_single_span_over_the_byte_limit_is_dropped_and_counted(xray_endpoint):
    credentials = Credentials(ACCESS_KEY, SECRET_KEY)
    destination = xray_otlp.Destination("AWS X-Ray", xray_exporter(xray_endpoint, credentials), max_bytes=10)
    spans = finished_spans(1)
    assert not destination.send(xray_otlp.encode(spans), spans)
    assert xray_endpoint.exports == [] and (destination.failed_batches, destination.failed_spans) == (1, 1)


@pytest.mark.parametrize(
    ("environ", "endpoint"),
    [
        ({"AWS_REGION": "eu-west-1"}, "https://xray.eu-west-1.amazonaws.com/v1/traces"),
        ({"AWS_DEFAULT_REGION": "ap-south-1"}, "https://xray.ap-south-1.amazonaws.com/v1/traces"),
        ({"AWS_REGION": "us-east-1", "AWS_ENDPOINT_URL_XRAY": "http://proxy:8080/"}, "http://proxy:8080/v1/traces"),
        ({"AWS_REGION": "us-east-1", "AWS_ENDPOINT_URL": "http://local:4566"}, "http://local:4566/v1/traces"),
        (
            {"AWS_REGION": "us-east-1", "AWS_ENDPOINT_URL_XRAY": "http://x/v1/traces", "AWS_ENDPOINT_URL": "http://y"},
            "http://x/v1/traces",
        ),
    ],
)
def test_the_endpoint_follows_the_region_and_boto3s_endpoint_variables(environ, endpoint):
    settings = XRaySettings.from_environ({"CRUDDUR_XRAY_MODE": "otlp", **environ}, "backend-flask")
    assert settings.otlp and not settings.sdk
    assert settings.otlp_endpoint == endpoint


def test_an_unknown_mode_names_the_three(database_url):
    with pytest.raises(ConfigError, match="sdk, otel, otlp"):
        XRaySettings.from_environ({"CRUDDUR_XRAY_MODE": "daemon"}, "backend-flask")


def test_otlp_mode_needs_the_opentelemetry_sdk():
    settings = XRaySettings.from_environ(
        {"CRUDDUR_XRAY_MODE": "otlp", "AWS_REGION": "us-east-1"}, "backend-flask", otel_sdk_disabled=True
    )
    assert not settings.enabled and "OTEL_SDK_DISABLED" in settings.why_off


# --- flask telemetry status | check ----------------------------------------------------------------


def cli(app, *args: str) -> tuple[int, str]:
    result = app.test_cli_runner().invoke(args=["telemetry", *args])
    return result.exit_code, result.output


def xray_report(output: str) -> dict:
    report = json.loads(output.strip().splitlines()[-1])
    [xray] = [tool for tool in report["tools"] if tool["tool"] == "AWS X-Ray"]
    return xray


def test_status_names_the_mode_and_the_endpoint(make_app, aws_keys, xray_endpoint):
    code, output = cli(make_app(otlp_mode(xray_endpoint)), "status", "--json")
    assert code == 0
    status = json.loads(output.strip().splitlines()[-1])
    assert "CRUDDUR_XRAY_MODE=otlp" in status["xray"] and f"{xray_endpoint.url}/v1/traces" in status["xray"]


def test_status_says_why_xray_is_off_without_credentials(make_app, xray_endpoint):
    code, output = cli(make_app(otlp_mode(xray_endpoint)), "status", "--json")
    assert code == 0
    status = json.loads(output.strip().splitlines()[-1])
    assert status["xray"].startswith("AWS X-Ray: off (CRUDDUR_XRAY_MODE=otlp found no AWS credentials")


def test_check_proves_the_credentials_sign_and_the_endpoint_takes_a_test_span(make_app, aws_keys, xray_endpoint):
    code, output = cli(make_app(otlp_mode(xray_endpoint)), "check", "--json")
    xray = xray_report(output)
    assert code == 0 and xray["state"] == "ok", output
    credentials, test_span = xray["steps"]
    assert credentials["detail"] == "from env, access key …0001, signing for us-east-1"
    assert test_span["detail"].startswith(f"accepted by {xray_endpoint.url}/v1/traces (trace 1-")
    assert [span.name for span in xray_endpoint.spans()] == ["cruddur-telemetry-check"]
    assert SECRET_KEY not in output


def test_check_names_a_refused_signature_and_the_fix(make_app, monkeypatch, xray_endpoint):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", ACCESS_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret-aws-knows")
    code, output = cli(make_app(otlp_mode(xray_endpoint)), "check", "--json")
    assert code == 1
    [_, test_span] = xray_report(output)["steps"]
    assert test_span["detail"].startswith("X-Ray refused the request (403): The request signature we calculated")
    assert "xray:PutTraceSegments" in test_span["fix"]


def test_check_points_at_transaction_search_when_the_endpoint_refuses_otlp(make_app, aws_keys):
    refusing = RecordingServer(status=400, reply={"message": "Transaction Search is not enabled"})
    try:
        code, output = cli(make_app(otlp_mode(refusing)), "check", "--json")
    finally:
        refusing.close()
    assert code == 1
    [_, test_span] = xray_report(output)["steps"]
    assert "answered 400" in test_span["detail"] and "Transaction Search is not enabled" in test_span["detail"]
    assert "aws/bin/xray-setup --transaction-search" in test_span["fix"]
    assert refusing.requests[0].headers["authorization"].startswith("AWS4-HMAC-SHA256 Credential=fake-key-0001/")


# --- flask telemetry spend ---------------------------------------------------------------------------


def test_spend_prices_transaction_search_next_to_classic_xray():
    emitted = spend.Emitted(spans=4.0, xray_documents=1.0, log_bytes=500.0, error_log_bytes=2000.0, span_bytes=3000.0)
    per_day = 1_000_000
    month = per_day * spend.DAYS_PER_MONTH
    for mode, indexed in (("sdk", 1.0), ("otlp", spend.INDEXED_SHARE)):
        environ = {"CRUDDUR_XRAY_MODE": mode, "AWS_REGION": "us-east-1"}
        lines, _ = spend.monthly_volumes(
            TelemetrySettings.from_environ(environ, "development", "1"), emitted, per_day, 0
        )
        volume = {line.tool: line for line in lines}
        assert volume["Transaction Search"].monthly == pytest.approx(month * 3000 / 1024**3)
        assert volume["Transaction Search"].free is None and volume["Transaction Search"].share is None
        assert volume["X-Ray (recorded)"].monthly == pytest.approx(month * indexed)
        assert volume["Honeycomb"].monthly == pytest.approx(month * 4)


def test_spend_command_measures_span_bytes_and_prints_the_transaction_search_row(make_app, aws_keys, xray_endpoint):
    code, output = cli(make_app(otlp_mode(xray_endpoint)), "spend", "--requests-per-day", "100000")
    assert code == 0, output
    measured = next(line for line in output.splitlines() if line.startswith("Measured per request:"))
    span_bytes = float(measured.split("X-Ray documents, ")[1].split(" span bytes")[0])
    assert span_bytes > 200, "a few spans of OTLP protobuf per request"
    [row] = [line for line in output.splitlines() if line.startswith("Transaction Search ")]
    assert "no free tier (GB ingested)" in row
    assert "X-Ray above counts the 1% of traces Transaction Search indexes by default" in output
