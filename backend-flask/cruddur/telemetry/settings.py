"""Where each tool sends, read from the environment once, with each ecosystem's own variable names.

Each tool is on when its settings are present and off otherwise; `why_off` says which setting
would turn it on. Secrets live only in fields with `repr=False`, and `describe()` never shows them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from cruddur.config import FALSE_WORDS, TRUE_WORDS, ConfigError, flag, positive_int, positive_number

DEFAULT_SERVICE_NAME = "backend-flask"
HONEYCOMB_DEFAULT_ENDPOINT = "https://api.honeycomb.io"
#: `OTEL_BSP_MAX_QUEUE_SIZE` when unset (the specification's default, which the SDK follows).
BSP_DEFAULT_MAX_QUEUE_SIZE = 2048
TRACES_PATH = "v1/traces"
METRICS_PATH = "v1/metrics"
#: Honeycomb keeps metrics in a dataset of their own, named by this header.
HONEYCOMB_METRICS_DEFAULT_DATASET = "backend-flask-metrics"
#: Where `OTEL_TRACES_EXPORTER=otlp` sends when no endpoint is set: the OTLP/HTTP default of the spec.
OTLP_DEFAULT_ENDPOINT = "http://localhost:4318"
#: The exporter names of `OTEL_TRACES_EXPORTER` this build has. `otlp` is OTLP/HTTP (protobuf), the
#: only OTLP transport installed; the SDK's own name for it, `otlp_proto_http`, means the same.
TRACES_EXPORTERS = {"otlp": "otlp", "otlp_proto_http": "otlp", "console": "console"}
#: The local span file's name in the app's instance folder (`CRUDDUR_LOCAL_TRACES`).
LOCAL_TRACES_FILE = "traces.jsonl"
#: Never traced, logged or sampled: the load balancer's and the container's health checks.
ALWAYS_EXCLUDED_URLS = "/api/health"
REPO_ROOT = Path(__file__).resolve().parents[3]
#: Flask's instance folder for the `cruddur` package, where the app keeps its local files.
DEFAULT_INSTANCE_PATH = REPO_ROOT / "backend-flask" / "instance"


def key_hint(secret: str | None) -> str:
    """A secret as it may appear in output: its last four characters at most."""
    if not secret:
        return "(none)"
    return f"…{secret[-4:]}" if len(secret) > 8 else "…"


def parse_headers(raw: str) -> dict[str, str]:
    """`OTEL_EXPORTER_OTLP_HEADERS` syntax: comma-separated `key=value`, values URL-encoded."""
    headers: dict[str, str] = {}
    for item in raw.split(","):
        name, sep, value = item.partition("=")
        if sep and name.strip():
            headers[unquote(name.strip()).lower()] = unquote(value.strip())
    return headers


def parse_resource_attributes(raw: str) -> dict[str, str]:
    """`OTEL_RESOURCE_ATTRIBUTES` syntax, as the SDK's own detector reads it: comma-separated
    `key=value`, values URL-encoded, keys kept as written."""
    attributes: dict[str, str] = {}
    for item in raw.split(","):
        key, sep, value = item.partition("=")
        if sep and key.strip():
            attributes[key.strip()] = unquote(value.strip())
    return attributes


def traces_exporters(environ: Mapping[str, str]) -> tuple[str, ...] | None:
    """`OTEL_TRACES_EXPORTER` as exporter kinds (`otlp`, `console`), `()` for `none`, None when unset.

    Like the SDK: comma-separated names, `none` alone means no exporter. Unlike the SDK, an unknown
    name is an error at start rather than a missing entry point found later."""
    raw = (environ.get("OTEL_TRACES_EXPORTER") or "").strip().lower()
    if not raw:
        return None
    names = [name.strip() for name in raw.split(",") if name.strip()]
    if names == ["none"]:
        return ()
    accepted = f"use {', '.join(sorted(TRACES_EXPORTERS))} or none, several separated by commas"
    unknown = [name for name in names if name not in TRACES_EXPORTERS]
    if unknown:
        missing = ", ".join(unknown)
        raise ConfigError(f"OTEL_TRACES_EXPORTER={raw!r}: {missing} is not available in this build ({accepted})")
    for name in ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"):
        protocol = (environ.get(name) or "").strip()
        if protocol and protocol != "http/protobuf":
            raise ConfigError(f"{name}={protocol!r}: this build exports OTLP over HTTP only (use http/protobuf)")
        if protocol:
            break
    return tuple(dict.fromkeys(TRACES_EXPORTERS[name] for name in names))


def local_traces_path(environ: Mapping[str, str], instance_path: Path, default_on: bool) -> Path | None:
    """`CRUDDUR_LOCAL_TRACES`: unset follows `default_on`; true/false; or the file's path.

    An explicit path must be in a folder that exists: a typo must not grow a tree of folders."""
    raw = (environ.get("CRUDDUR_LOCAL_TRACES") or "").strip()
    default = instance_path / LOCAL_TRACES_FILE
    if not raw:
        return default if default_on else None
    if raw.lower() in TRUE_WORDS:
        return default
    if raw.lower() in FALSE_WORDS:
        return None
    path = Path(raw).expanduser()
    if not path.parent.is_dir():
        raise ConfigError(
            f"CRUDDUR_LOCAL_TRACES={raw!r}: the folder {str(path.parent)!r} does not exist "
            "(create it, give a path in an existing folder, or use true/false)"
        )
    return path


def resolve_repo_path(raw: str) -> Path:
    """Relative paths resolve against the repository root, so `aws/json/xray.json` works anywhere."""
    path = Path(raw)
    return path if path.is_absolute() else REPO_ROOT / path


@dataclass(frozen=True)
class OtelSettings:
    """Where spans go: OTLP (`endpoint`), the console, the local trace file, any of them together."""

    enabled: bool
    sdk_disabled: bool
    service_name: str
    endpoint: str | None
    destination: str
    headers: Mapping[str, str] = field(repr=False)
    timeout_seconds: float | None
    excluded_urls: str
    sampler: str | None
    sampler_arg: str | None
    bsp: Mapping[str, int]
    resource_attributes: Mapping[str, str]
    semconv_opt_in: str | None
    why_off: str | None
    console: bool = False
    local_traces: Path | None = None

    @classmethod
    def from_environ(
        cls, environ: Mapping[str, str], environment: str = "development", instance_path: Path = DEFAULT_INSTANCE_PATH
    ) -> OtelSettings:
        service_name = environ.get("OTEL_SERVICE_NAME") or DEFAULT_SERVICE_NAME
        user_excluded = environ.get("OTEL_PYTHON_FLASK_EXCLUDED_URLS") or environ.get("OTEL_PYTHON_EXCLUDED_URLS")
        excluded = ",".join(filter(None, [ALWAYS_EXCLUDED_URLS, user_excluded]))
        bsp = {
            argument: value
            for argument, name in (
                ("schedule_delay_millis", "OTEL_BSP_SCHEDULE_DELAY"),
                ("max_queue_size", "OTEL_BSP_MAX_QUEUE_SIZE"),
                ("max_export_batch_size", "OTEL_BSP_MAX_EXPORT_BATCH_SIZE"),
                ("export_timeout_millis", "OTEL_BSP_EXPORT_TIMEOUT"),
            )
            if (value := positive_int(environ, name, None)) is not None
        }
        queue = bsp.get("max_queue_size", BSP_DEFAULT_MAX_QUEUE_SIZE)
        if bsp.get("max_export_batch_size", 0) > queue:
            raise ConfigError(
                f"OTEL_BSP_MAX_EXPORT_BATCH_SIZE={bsp['max_export_batch_size']} must not exceed "
                f"OTEL_BSP_MAX_QUEUE_SIZE ({queue})"
            )
        resource_attributes = parse_resource_attributes(environ.get("OTEL_RESOURCE_ATTRIBUTES") or "")
        if not environ.get("OTEL_SERVICE_NAME") and resource_attributes.get("service.name"):
            service_name = resource_attributes["service.name"]
        timeout_name = (
            "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT"
            if environ.get("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT")
            else "OTEL_EXPORTER_OTLP_TIMEOUT"
        )
        common = {
            "service_name": service_name,
            "excluded_urls": excluded,
            "sampler": (environ.get("OTEL_TRACES_SAMPLER") or "").strip().lower() or None,
            "sampler_arg": environ.get("OTEL_TRACES_SAMPLER_ARG") or None,
            "bsp": bsp,
            "resource_attributes": resource_attributes,
            "semconv_opt_in": environ.get("OTEL_SEMCONV_STABILITY_OPT_IN") or None,
            "timeout_seconds": positive_number(environ, timeout_name, None),
        }
        if flag(environ, "OTEL_SDK_DISABLED", False):
            return cls.off("OTEL_SDK_DISABLED=true", sdk_disabled=True, **common)
        kinds = traces_exporters(environ)
        endpoint, destination, headers = _otlp_destination(environ)
        if kinds is None:
            # Unset: OTLP when an endpoint or a Honeycomb key says where to, else nothing but the local file.
            otlp, console = endpoint is not None, False
        else:
            otlp, console = "otlp" in kinds, "console" in kinds
            if otlp and endpoint is None:
                endpoint = f"{OTLP_DEFAULT_ENDPOINT}/{TRACES_PATH}"
                destination = "OTLP (OTEL_TRACES_EXPORTER=otlp, the default endpoint)"
        if not otlp:
            endpoint, destination, headers = None, "none", {}
        default_local = kinds is None and not otlp and environment != "production"
        local_traces = local_traces_path(environ, instance_path, default_local)
        if not (otlp or console or local_traces):
            why_off = (
                "OTEL_TRACES_EXPORTER=none"
                if kinds == ()
                else "set HONEYCOMB_API_KEY for Honeycomb, or OTEL_EXPORTER_OTLP_ENDPOINT for any OTLP endpoint; "
                "OTEL_TRACES_EXPORTER=console prints spans, CRUDDUR_LOCAL_TRACES=true keeps them in a local file"
            )
            return cls.off(why_off, sdk_disabled=False, **common)
        return cls(
            enabled=True,
            sdk_disabled=False,
            endpoint=endpoint,
            destination=destination,
            headers=headers,
            why_off=None,
            console=console,
            local_traces=local_traces,
            **common,
        )

    @classmethod
    def off(cls, why_off: str, sdk_disabled: bool, **common: Any) -> OtelSettings:
        return cls(
            enabled=False,
            sdk_disabled=sdk_disabled,
            endpoint=None,
            destination="none",
            headers={},
            why_off=why_off,
            **common,
        )

    def describe(self) -> str:
        if not self.enabled:
            return f"OpenTelemetry: off ({self.why_off})"
        parts = []
        if self.endpoint:
            team = self.headers.get("x-honeycomb-team")
            key = f", key {key_hint(team)}" if team else ""
            parts.append(f"OTLP/HTTP to {self.endpoint} via {self.destination}{key}")
        if self.console:
            parts.append("the console (a JSON line per span on stdout, OTEL_TRACES_EXPORTER=console)")
        if self.local_traces:
            parts.append(f"the local trace file {self.local_traces} (read it with `flask --app app telemetry trace`)")
        return f"OpenTelemetry: on, spans to {'; and '.join(parts)}"


def _otlp_destination(environ: Mapping[str, str]) -> tuple[str | None, str, dict[str, str]]:
    """Where OTLP export would go, by the standard variables first, then Honeycomb's key."""
    headers = parse_headers(
        environ.get("OTEL_EXPORTER_OTLP_TRACES_HEADERS") or environ.get("OTEL_EXPORTER_OTLP_HEADERS") or ""
    )
    if traces_endpoint := environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"):
        return traces_endpoint, "OTLP (OTEL_EXPORTER_OTLP_TRACES_ENDPOINT)", headers
    if base := environ.get("OTEL_EXPORTER_OTLP_ENDPOINT"):
        return f"{base.rstrip('/')}/{TRACES_PATH}", "OTLP (OTEL_EXPORTER_OTLP_ENDPOINT)", headers
    if api_key := environ.get("HONEYCOMB_API_KEY"):
        base = environ.get("HONEYCOMB_API_ENDPOINT") or HONEYCOMB_DEFAULT_ENDPOINT
        headers = {"x-honeycomb-team": api_key, **headers}
        if dataset := environ.get("HONEYCOMB_DATASET"):
            headers["x-honeycomb-dataset"] = dataset
        return f"{base.rstrip('/')}/{TRACES_PATH}", "Honeycomb (HONEYCOMB_API_KEY)", headers
    return None, "none", headers


#: Files that say "this is an EC2 instance" without a call to the instance metadata service: the
#: DMI system vendor of Nitro instances and the hypervisor UUID of Xen ones (world-readable, also
#: from inside a container), with the text each starts with there.
EC2_MARKERS: tuple[tuple[Path, str], ...] = (
    (Path("/sys/devices/virtual/dmi/id/sys_vendor"), "Amazon EC2"),
    (Path("/sys/hypervisor/uuid"), "ec2"),
)


def _starts_with(path: Path, prefix: str) -> bool:
    try:
        return path.read_text(encoding="ascii", errors="replace").startswith(prefix)
    except OSError:
        return False


def platform_plugins(environ: Mapping[str, str]) -> tuple[str, ...]:
    """The X-Ray SDK plugins for where this runs, decided from local facts only.

    ECS sets `ECS_CONTAINER_METADATA_URI_V4` in every task (Fargate too); the SDK's ECS plugin reads
    only the host name. EC2 is told by its DMI vendor or hypervisor UUID; only then is the EC2
    plugin used, which asks the instance metadata service (two calls of up to a second each, at
    start-up), unless `AWS_EC2_METADATA_DISABLED=true` forbids that call as it does for boto3.
    Anywhere else: no plugin, no network call.
    """
    if environ.get("ECS_CONTAINER_METADATA_URI_V4") or environ.get("ECS_CONTAINER_METADATA_URI"):
        return ("ECSPlugin",)
    if environ.get("AWS_EC2_METADATA_DISABLED", "").strip().lower() == "true":
        return ()
    if any(_starts_with(path, prefix) for path, prefix in EC2_MARKERS):
        return ("EC2Plugin",)
    return ()


#: `CRUDDUR_XRAY_MODE`: segments from the X-Ray SDK to a daemon; OTEL spans to a collector that
#: converts them; OTEL spans straight to X-Ray's OTLP endpoint, signed SigV4.
XRAY_MODES = ("sdk", "otel", "otlp")
XRAY_OTLP_ENDPOINT = "https://xray.{region}.amazonaws.com/v1/traces"


def xray_otlp_endpoint(region: str, endpoint_url: str | None) -> str:
    """X-Ray's OTLP traces URL in `region`; an `AWS_ENDPOINT_URL_XRAY`/`AWS_ENDPOINT_URL` base URL
    (boto3's meaning: the service's root, for proxies and tests) gets `/v1/traces` appended."""
    if not endpoint_url:
        return XRAY_OTLP_ENDPOINT.format(region=region)
    base = endpoint_url.rstrip("/")
    return base if base.endswith(f"/{TRACES_PATH}") else f"{base}/{TRACES_PATH}"


@dataclass(frozen=True)
class XRaySettings:
    """`enabled` says X-Ray receives traces in this mode; `mode` says how (the SDK only in `sdk`)."""

    enabled: bool
    mode: str
    daemon_address: str | None
    service_name: str
    dynamic_naming: str | None
    why_off: str | None
    plugins: tuple[str, ...] = ()
    region: str | None = None
    otlp_endpoint: str | None = None

    @classmethod
    def from_environ(
        cls, environ: Mapping[str, str], otel_service_name: str, otel_sdk_disabled: bool = False
    ) -> XRaySettings:
        daemon = environ.get("AWS_XRAY_DAEMON_ADDRESS") or None
        mode = (environ.get("CRUDDUR_XRAY_MODE") or "sdk").strip().lower()
        if mode not in XRAY_MODES:
            raise ConfigError(f"CRUDDUR_XRAY_MODE={mode!r} must be one of {', '.join(XRAY_MODES)}")
        region = environ.get("AWS_REGION") or environ.get("AWS_DEFAULT_REGION") or None
        why_off = None
        if not flag(environ, "AWS_XRAY_SDK_ENABLED", True):
            why_off = "AWS_XRAY_SDK_ENABLED=false"
        elif mode == "otel":
            why_off = "CRUDDUR_XRAY_MODE=otel: spans reach X-Ray through the collector's awsxray exporter"
        elif mode == "otlp" and otel_sdk_disabled:
            why_off = "OTEL_SDK_DISABLED=true, and CRUDDUR_XRAY_MODE=otlp sends X-Ray the OpenTelemetry spans"
        elif mode == "otlp" and not region:
            why_off = "CRUDDUR_XRAY_MODE=otlp needs AWS_REGION: X-Ray's OTLP endpoint is regional"
        elif mode == "sdk" and not daemon:
            why_off = "set AWS_XRAY_DAEMON_ADDRESS, e.g. 127.0.0.1:2000, to send segments to an X-Ray daemon"
        endpoint_url = environ.get("AWS_ENDPOINT_URL_XRAY") or environ.get("AWS_ENDPOINT_URL") or None
        return cls(
            enabled=why_off is None,
            mode=mode,
            daemon_address=daemon,
            service_name=environ.get("AWS_XRAY_TRACING_NAME") or otel_service_name,
            dynamic_naming=environ.get("AWS_XRAY_URL") or None,
            why_off=why_off,
            plugins=platform_plugins(environ) if why_off is None and mode == "sdk" else (),
            region=region,
            otlp_endpoint=xray_otlp_endpoint(region, endpoint_url) if mode == "otlp" and region else None,
        )

    @property
    def sdk(self) -> bool:
        """Whether this process loads the X-Ray SDK and sends segments to a daemon."""
        return self.enabled and self.mode == "sdk"

    @property
    def otlp(self) -> bool:
        """Whether spans go straight to X-Ray's OTLP endpoint (credentials are checked at start)."""
        return self.enabled and self.mode == "otlp"

    def describe(self, missing: str | None = None) -> str:
        """`missing`: what was found wanting at start, such as credentials (see `xray_otlp`)."""
        if not self.enabled or missing:
            return f"AWS X-Ray: off ({missing or self.why_off})"
        if self.mode == "otlp":
            return (
                f"AWS X-Ray: on, CRUDDUR_XRAY_MODE=otlp: spans over OTLP to {self.otlp_endpoint}, "
                f"signed SigV4 for {self.region} (no SDK, no daemon)"
            )
        naming = f", segment names from hosts matching {self.dynamic_naming!r}" if self.dynamic_naming else ""
        platform = f", platform metadata from {', '.join(self.plugins)}" if self.plugins else ""
        return (
            f"AWS X-Ray: on, segments for {self.service_name!r} to the daemon at {self.daemon_address}"
            f"{naming}{platform}"
        )


@dataclass(frozen=True)
class SamplingSettings:
    rule_path: Path | None

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> SamplingSettings:
        raw = environ.get("CRUDDUR_SAMPLING_RULE")
        return cls(rule_path=resolve_repo_path(raw) if raw else None)


#: The retention periods CloudWatch Logs accepts, in days.
CLOUDWATCH_RETENTION_DAYS = frozenset(
    {1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653}
)
ROLLBAR_DEFAULT_ENDPOINT = "https://api.rollbar.com/api/1/"


@dataclass(frozen=True)
class CloudWatchSettings:
    """CloudWatch Logs is wanted when a region is set; whether credentials resolve is checked at start."""

    region: str | None
    log_group: str
    retention_days: int | None
    endpoint: str | None

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> CloudWatchSettings:
        retention = positive_int(environ, "CLOUDWATCH_LOG_RETENTION_DAYS", None)
        if retention is not None and retention not in CLOUDWATCH_RETENTION_DAYS:
            allowed = ", ".join(map(str, sorted(CLOUDWATCH_RETENTION_DAYS)))
            raise ConfigError(f"CLOUDWATCH_LOG_RETENTION_DAYS={retention} is not one of {allowed}")
        return cls(
            region=environ.get("AWS_REGION") or environ.get("AWS_DEFAULT_REGION") or None,
            log_group=environ.get("CLOUDWATCH_LOG_GROUP") or "cruddur",
            retention_days=retention,
            endpoint=environ.get("AWS_ENDPOINT_URL_CLOUDWATCH_LOGS") or environ.get("AWS_ENDPOINT_URL") or None,
        )

    def describe(self, why_off: str | None) -> str:
        if why_off:
            return f"CloudWatch Logs: off ({why_off})"
        retention = f", retention {self.retention_days} days" if self.retention_days else ""
        where = f" via {self.endpoint}" if self.endpoint else ""
        return f"CloudWatch Logs: on, log group {self.log_group!r} in {self.region}{where}{retention}"


@dataclass(frozen=True)
class RollbarSettings:
    access_token: str | None = field(repr=False)
    environment: str
    code_version: str
    endpoint: str
    test_route: bool

    @classmethod
    def from_environ(cls, environ: Mapping[str, str], environment: str, version: str) -> RollbarSettings:
        endpoint = environ.get("ROLLBAR_ENDPOINT") or ROLLBAR_DEFAULT_ENDPOINT
        return cls(
            access_token=environ.get("ROLLBAR_ACCESS_TOKEN") or None,
            environment=environ.get("ROLLBAR_ENVIRONMENT") or environment,
            code_version=environ.get("ROLLBAR_CODE_VERSION") or version,
            endpoint=endpoint if endpoint.endswith("/") else f"{endpoint}/",
            test_route=flag(environ, "CRUDDUR_ROLLBAR_TEST_ROUTE", environment != "production"),
        )

    @property
    def enabled(self) -> bool:
        return self.access_token is not None

    def describe(self) -> str:
        if not self.enabled:
            return "Rollbar: off (set ROLLBAR_ACCESS_TOKEN to report errors to Rollbar)"
        return (
            f"Rollbar: on, environment {self.environment!r}, code version {self.code_version}, "
            f"token {key_hint(self.access_token)}, API {self.endpoint}"
        )


@dataclass(frozen=True)
class MetricsSettings:
    """OpenTelemetry metrics: over OTLP/HTTP where the traces go (or `OTEL_EXPORTER_OTLP_METRICS_ENDPOINT`),
    and as CloudWatch Embedded Metric Format lines in the log stream whenever CloudWatch Logs is on."""

    sdk_disabled: bool
    otlp_wanted: bool
    otlp_endpoint: str | None
    otlp_destination: str
    otlp_headers: Mapping[str, str] = field(repr=False)
    otlp_timeout_seconds: float | None
    emf_wanted: bool
    interval_seconds: float
    export_timeout_seconds: float
    why_otlp_off: str | None

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> MetricsSettings:
        exporter = (environ.get("OTEL_METRICS_EXPORTER") or "otlp").strip().lower()
        if exporter not in {"otlp", "none"}:
            raise ConfigError(f"OTEL_METRICS_EXPORTER={exporter!r}: this service exports metrics as otlp or none")
        interval_ms = positive_number(environ, "OTEL_METRIC_EXPORT_INTERVAL", 60_000.0)
        timeout_ms = positive_number(environ, "OTEL_METRIC_EXPORT_TIMEOUT", 30_000.0)
        sdk_disabled = flag(environ, "OTEL_SDK_DISABLED", False)
        timeout_name = (
            "OTEL_EXPORTER_OTLP_METRICS_TIMEOUT"
            if environ.get("OTEL_EXPORTER_OTLP_METRICS_TIMEOUT")
            else "OTEL_EXPORTER_OTLP_TIMEOUT"
        )
        headers = parse_headers(
            environ.get("OTEL_EXPORTER_OTLP_METRICS_HEADERS") or environ.get("OTEL_EXPORTER_OTLP_HEADERS") or ""
        )
        endpoint = None
        destination = "none"
        why_off = None
        if sdk_disabled:
            why_off = "OTEL_SDK_DISABLED=true"
        elif exporter == "none":
            why_off = "OTEL_METRICS_EXPORTER=none"
        elif metrics_endpoint := environ.get("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT"):
            endpoint, destination = metrics_endpoint, "OTLP (OTEL_EXPORTER_OTLP_METRICS_ENDPOINT)"
        elif base := environ.get("OTEL_EXPORTER_OTLP_ENDPOINT"):
            endpoint, destination = f"{base.rstrip('/')}/{METRICS_PATH}", "OTLP (OTEL_EXPORTER_OTLP_ENDPOINT)"
        elif api_key := environ.get("HONEYCOMB_API_KEY"):
            base = environ.get("HONEYCOMB_API_ENDPOINT") or HONEYCOMB_DEFAULT_ENDPOINT
            endpoint, destination = f"{base.rstrip('/')}/{METRICS_PATH}", "Honeycomb (HONEYCOMB_API_KEY)"
            headers = {"x-honeycomb-team": api_key, **headers}
        else:
            why_off = "set HONEYCOMB_API_KEY or OTEL_EXPORTER_OTLP_ENDPOINT to export metrics over OTLP"
        if endpoint and "x-honeycomb-team" in headers and not environ.get("OTEL_EXPORTER_OTLP_METRICS_HEADERS"):
            # Honeycomb files metrics under the dataset this header names; the traces' dataset is not it.
            dataset = environ.get("HONEYCOMB_METRICS_DATASET") or HONEYCOMB_METRICS_DEFAULT_DATASET
            headers = {**headers, "x-honeycomb-dataset": dataset}
        return cls(
            sdk_disabled=sdk_disabled,
            otlp_wanted=not sdk_disabled and exporter != "none",
            otlp_endpoint=endpoint,
            otlp_destination=destination,
            otlp_headers=headers if endpoint else {},
            otlp_timeout_seconds=positive_number(environ, timeout_name, None),
            emf_wanted=not sdk_disabled and flag(environ, "CRUDDUR_METRICS_EMF", True),
            interval_seconds=interval_ms / 1000,
            export_timeout_seconds=timeout_ms / 1000,
            why_otlp_off=why_off,
        )

    def describe(self, emf_on: bool) -> str:
        """One start-up line: where metrics go, or what would turn them on."""
        every = f"every {self.interval_seconds:g} s"
        if self.otlp_endpoint:
            team = self.otlp_headers.get("x-honeycomb-team")
            key = f", key {key_hint(team)}" if team else ""
            dataset = self.otlp_headers.get("x-honeycomb-dataset")
            to_dataset = f", dataset {dataset!r}" if dataset and team else ""
            otlp = f"OTLP/HTTP to {self.otlp_endpoint} via {self.otlp_destination}{key}{to_dataset}"
        else:
            otlp = f"no OTLP ({self.why_otlp_off})"
        if emf_on:
            emf = "CloudWatch EMF lines in the log stream"
        elif self.sdk_disabled:
            emf = "no CloudWatch EMF (OTEL_SDK_DISABLED=true)"
        elif not self.emf_wanted:
            emf = "no CloudWatch EMF (CRUDDUR_METRICS_EMF=false)"
        else:
            emf = "no CloudWatch EMF (CloudWatch Logs is off)"
        state = "on" if self.otlp_endpoint or emf_on else "off"
        return f"Metrics: {state}, {every}: {otlp}; {emf}"


@dataclass(frozen=True)
class TelemetrySettings:
    otel: OtelSettings
    xray: XRaySettings
    sampling: SamplingSettings
    cloudwatch: CloudWatchSettings
    rollbar: RollbarSettings
    metrics: MetricsSettings
    shutdown_timeout_seconds: float
    counts_interval_seconds: float

    @classmethod
    def from_environ(
        cls,
        environ: Mapping[str, str],
        environment: str,
        version: str,
        instance_path: Path = DEFAULT_INSTANCE_PATH,
    ) -> TelemetrySettings:
        otel = OtelSettings.from_environ(environ, environment, Path(instance_path))
        return cls(
            otel=otel,
            xray=XRaySettings.from_environ(environ, otel.service_name, otel.sdk_disabled),
            sampling=SamplingSettings.from_environ(environ),
            cloudwatch=CloudWatchSettings.from_environ(environ),
            rollbar=RollbarSettings.from_environ(environ, environment, version),
            metrics=MetricsSettings.from_environ(environ),
            shutdown_timeout_seconds=positive_number(environ, "CRUDDUR_SHUTDOWN_TIMEOUT", 10.0),
            counts_interval_seconds=positive_number(environ, "CRUDDUR_TELEMETRY_COUNTS_INTERVAL", 60.0),
        )
