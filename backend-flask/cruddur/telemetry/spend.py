"""What the four tools will cost: monthly volumes from what this service really emits, against free tiers.

Metrics count too: the metric events Honeycomb receives, the EMF bytes CloudWatch Logs ingests,
and the custom metrics CloudWatch bills (one per metric name and dimension combination).

A probe app (same code, a scratch database, local sinks) serves a mix of real requests; the
spans, X-Ray documents and JSON log bytes it emits per request are counted, then scaled by the
request rate, the sampling rule in force and the error rate.
"""

from __future__ import annotations

import logging
import socket
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from cruddur.telemetry import emf, xray_otlp
from cruddur.telemetry.otel import EXPORT_BATCH_SIZE
from cruddur.telemetry.sampling import SamplingRule, sample_rate
from cruddur.telemetry.settings import TelemetrySettings

#: The free tiers as the course docs weigh them, per month. Update here when the vendors change them.
FREE_TIERS: dict[str, tuple[float, str]] = {
    "Honeycomb": (20_000_000, "events"),
    "X-Ray (recorded)": (100_000, "traces recorded"),
    "X-Ray (scanned)": (1_000_000, "traces scanned"),
    "CloudWatch Logs": (5, "GB ingested"),
    "Rollbar": (5_000, "events"),
    "CloudWatch metrics": (10, "custom metrics"),
}
#: X-Ray's OTLP endpoint stores every span in CloudWatch (Transaction Search), billed per GB of
#: spans ingested rather than per trace; no free tier is assumed for it.
TRANSACTION_SEARCH = "Transaction Search"
#: The share of traces Transaction Search indexes as X-Ray trace summaries unless told otherwise
#: (`aws xray update-indexing-rule`); only these count as X-Ray traces in `CRUDDUR_XRAY_MODE=otlp`.
INDEXED_SHARE = 0.01
DAYS_PER_MONTH = 30
SECONDS_PER_DAY = 86_400
GIGABYTE = 1024**3
#: What CloudWatch charges a month for each custom metric beyond the free ones (first 10,000 metrics).
CLOUDWATCH_METRIC_PRICE = 0.30
#: CloudWatch Logs bills each event's UTF-8 bytes plus this overhead.
CLOUDWATCH_EVENT_OVERHEAD_BYTES = 26
#: The requests the probe serves: the routes a Cruddur client calls, reads and writes.
PROBE_REQUESTS = (
    ("GET", "/api/activities/home", None),
    ("GET", "/api/activities/notifications", None),
    ("GET", "/api/activities/@andrewbrown", None),
    ("GET", "/api/activities/search?term=fun", None),
    ("GET", "/api/activities/68f126b0-1ceb-4a33-88be-d90fa7109eee", None),
    ("POST", "/api/activities", {"message": "How much does this cost?", "ttl": "1-day"}),
    ("GET", "/api/message_groups", None),
    ("GET", "/api/messages/@bayko", None),
)


@dataclass(frozen=True)
class Emitted:
    """What one request makes, on average, and what one failing request adds."""

    spans: float
    xray_documents: float
    log_bytes: float
    error_log_bytes: float
    #: The spans as OTLP protobuf, in batches as the exporter sends them: what X-Ray's OTLP endpoint receives.
    span_bytes: float = 0.0
    #: Per process and metric interval: the data points an OTLP export carries (each a Honeycomb
    #: event), the EMF lines' bytes for each route served and for the worker, and the routes served.
    metric_series: float = 0.0
    emf_route_line_bytes: float = 0.0
    emf_worker_line_bytes: float = 0.0
    routes_served: int = 0
    #: Every `Route` value the app can emit (its routes, and `unmatched`): CloudWatch bills each.
    routes: int = 0

    @property
    def custom_metrics(self) -> int:
        """Each metric name with each dimension combination it is emitted under is a billed metric."""
        per_route = len(emf.ROUTE_METRICS)
        return per_route * self.routes + per_route + len(emf.WORKER_METRICS)


class _ByteCounter(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.total = 0

    def emit(self, record: logging.LogRecord) -> None:
        self.total += len(self.format(record).encode()) + CLOUDWATCH_EVENT_OVERHEAD_BYTES


def measure_emitted(rounds: int = 5) -> Emitted:
    """Serve the probe mix with every tool on and everything kept, and count what comes out."""
    from cruddur import create_app
    from cruddur.telemetry import logs

    exporter = InMemorySpanExporter()
    emf_lines: list[str] = []
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as daemon, tempfile.TemporaryDirectory() as scratch:
        daemon.bind(("127.0.0.1", 0))
        daemon.settimeout(0.2)
        probe = create_app(
            {
                "TESTING": True,
                "CRUDDUR_FOR_COMMAND": False,
                "TELEMETRY_SPAN_EXPORTER": exporter,
                "TELEMETRY_EMF_WRITER": lambda line, _timestamp_ms: emf_lines.append(line),
                "DATABASE_URL": str(Path(scratch) / "probe.sqlite3"),
                "AWS_XRAY_DAEMON_ADDRESS": "{}:{}".format(*daemon.getsockname()),
                "CRUDDUR_XRAY_MODE": "sdk",
                "AWS_XRAY_SDK_ENABLED": "true",
                **dict.fromkeys(
                    ("OTEL_SDK_DISABLED", "OTEL_TRACES_SAMPLER", "CRUDDUR_SAMPLING_RULE", "ROLLBAR_ACCESS_TOKEN"), None
                ),
                **dict.fromkeys(("OTEL_METRICS_EXPORTER", "CRUDDUR_METRICS_EMF"), None),
                **dict.fromkeys(("AWS_REGION", "AWS_DEFAULT_REGION", "OTEL_PYTHON_FLASK_EXCLUDED_URLS"), None),
                "CRUDDUR_LOG_LEVEL": "ERROR",
            }
        )
        client = probe.test_client()
        counter = logs.json_handler(_ByteCounter(), "probe")
        root = logging.getLogger()
        root.setLevel(logging.INFO)
        root.addHandler(counter)
        muted = logs.mute_stdout()
        try:
            served = 0
            for _ in range(rounds):
                for method, path, body in PROBE_REQUESTS:
                    client.open(path, method=method, json=body)
                    served += 1
            finished = exporter.get_finished_spans()
            spans, log_bytes = len(finished), counter.total
            span_bytes = sum(
                len(xray_otlp.encode(finished[start : start + EXPORT_BATCH_SIZE]))
                for start in range(0, len(finished), EXPORT_BATCH_SIZE)
            )
            metrics = _measure_metrics(probe, emf_lines)
            documents = _drain(daemon)
            exporter.clear()
            counter.total = 0
            _fail_once(probe, client)
            error_log_bytes = counter.total - log_bytes / served
        finally:
            root.removeHandler(counter)
            muted()
            probe.extensions["cruddur"].telemetry.shutdown()
    return Emitted(
        spans / served,
        documents / served,
        log_bytes / served,
        max(0.0, error_log_bytes),
        span_bytes=span_bytes / served,
        **metrics,
    )


def _measure_metrics(probe: object, emf_lines: list[str]) -> dict[str, float]:
    """One metric interval of the probe mix: its EMF lines and the data points of an export."""
    metrics = probe.extensions["cruddur"].telemetry.metrics
    metrics.flush_emf()
    route_lines = [line for line in emf_lines if '"Route":' in line]
    worker_lines = [line for line in emf_lines if '"Route":' not in line]
    rules = [rule for rule in probe.url_map.iter_rules() if rule.endpoint != "static" and rule.rule != "/api/health"]

    def average(lines: list[str]) -> float:
        return sum(len(line.encode()) for line in lines) / len(lines) if lines else 0.0

    return {
        "metric_series": float(metrics.emf_exporter.last_series),
        "emf_route_line_bytes": average(route_lines),
        "emf_worker_line_bytes": average(worker_lines),
        "routes_served": len(route_lines),
        "routes": len({rule.rule for rule in rules}) + 1,
    }


def _drain(daemon: socket.socket) -> int:
    received = 0
    while True:
        try:
            daemon.recv(65_535)
        except TimeoutError:
            return received
        received += 1


def _fail_once(probe: object, client: object) -> None:
    store = probe.extensions["cruddur"].deps.store

    def broken(*_: object) -> list:
        raise RuntimeError("telemetry spend: a failure to measure")

    store.home_activities = broken
    try:
        client.get("/api/activities/home")
    finally:
        del store.home_activities


def kept_fraction(settings: TelemetrySettings, requests_per_second: float, processes: int = 1) -> tuple[float, str]:
    """The share of requests traced at this rate, spread over `processes` (workers times tasks), under
    the sampling in force. The X-Ray rule's reservoir is per process (`SamplingRule.kept_per_second`)."""
    otel = settings.otel
    if otel.sampler in {"always_off", "parentbased_always_off"}:
        return 0.0, "OTEL_TRACES_SAMPLER keeps nothing"
    if otel.sampler in {"traceidratio", "parentbased_traceidratio"}:
        ratio = float(otel.sampler_arg or 1.0)
        return ratio, f"OTEL_TRACES_SAMPLER keeps {ratio:.0%} (SampleRate {sample_rate(ratio)})"
    if otel.sampler or settings.sampling.rule_path is None:
        return 1.0, "every request is kept (SampleRate 1)"
    rule = SamplingRule.load(settings.sampling.rule_path)
    described = (
        f"rule {rule.name!r}: {rule.reservoir_size}/s in each of {processes} process(es), then {rule.fixed_rate:.0%} "
        f"(SampleRate {rule.sample_rate})"
    )
    if requests_per_second <= 0:
        return 1.0, described
    return rule.kept_per_second(requests_per_second, processes) / requests_per_second, described


@dataclass(frozen=True)
class Line:
    tool: str
    monthly: float
    unit: str
    free: float | None
    exhausted_at_per_day: float | None

    @property
    def share(self) -> float | None:
        return None if self.free is None else self.monthly / self.free


def monthly_volumes(
    settings: TelemetrySettings, emitted: Emitted, requests_per_day: float, error_rate: float, processes: int = 1
) -> tuple[list[Line], str]:
    """Each tool's monthly volume at this rate, and the daily rate at which its free tier runs out.

    Volumes are what each tool would receive if it is on; X-Ray's scanned traces assume each
    recorded trace is read once (queries in the console scan more). Transaction Search (the spans
    X-Ray's OTLP endpoint stores) is priced next to classic X-Ray; with `CRUDDUR_XRAY_MODE=otlp`
    the X-Ray rows count only the traces it indexes."""
    indexed = INDEXED_SHARE if settings.xray.mode == "otlp" else 1.0

    def volumes(per_day: float) -> dict[str, float]:
        month = per_day * DAYS_PER_MONTH
        kept, _ = kept_fraction(settings, per_day / SECONDS_PER_DAY, processes)
        traced = month * kept
        events, emf_bytes = metric_volumes(settings, emitted, per_day, processes)
        return {
            "Honeycomb": traced * emitted.spans + events,
            "X-Ray (recorded)": traced * indexed,
            "X-Ray (scanned)": traced * indexed,
            TRANSACTION_SEARCH: traced * emitted.span_bytes / GIGABYTE,
            "CloudWatch Logs": (month * (emitted.log_bytes + error_rate * emitted.error_log_bytes) + emf_bytes)
            / GIGABYTE,
            "Rollbar": month * error_rate,
            "CloudWatch metrics": emitted.custom_metrics if settings.metrics.emf_wanted else 0,
        }

    now = volumes(requests_per_day)
    _, sampling = kept_fraction(settings, requests_per_day / SECONDS_PER_DAY, processes)
    lines = [
        Line(tool, now[tool], unit, free, _rate_where(lambda n, tool=tool: volumes(n)[tool], free))
        for tool, (free, unit) in FREE_TIERS.items()
    ]
    lines.insert(3, Line(TRANSACTION_SEARCH, now[TRANSACTION_SEARCH], "GB ingested", None, None))
    return lines, sampling


def metric_volumes(
    settings: TelemetrySettings, emitted: Emitted, requests_per_day: float, processes: int = 1
) -> tuple[float, float]:
    """Monthly metric events sent over OTLP (every series, every interval, from every process) and
    EMF bytes (a line per route served in an interval, and one per worker)."""
    interval = settings.metrics.interval_seconds
    intervals = DAYS_PER_MONTH * SECONDS_PER_DAY / interval
    events = processes * intervals * emitted.metric_series if settings.metrics.otlp_wanted else 0.0
    if not settings.metrics.emf_wanted or not emitted.emf_worker_line_bytes:
        return events, 0.0
    per_interval = requests_per_day / SECONDS_PER_DAY * interval / processes
    route_lines = min(float(emitted.routes_served), per_interval)
    per_process = route_lines * (emitted.emf_route_line_bytes + CLOUDWATCH_EVENT_OVERHEAD_BYTES)
    per_process += emitted.emf_worker_line_bytes + CLOUDWATCH_EVENT_OVERHEAD_BYTES
    return events, processes * intervals * per_process


def custom_metrics_price(emitted: Emitted) -> float:
    """Dollars a month for the custom metrics beyond CloudWatch's free ones."""
    free, _ = FREE_TIERS["CloudWatch metrics"]
    return max(0.0, emitted.custom_metrics - free) * CLOUDWATCH_METRIC_PRICE


def _rate_where(volume: Callable[[float], float], limit: float) -> float | None:
    """The requests per day at which `volume` reaches `limit` (it grows with the rate), by bisection."""
    low, high = 0.0, 1e13
    if volume(high) < limit:
        return None
    for _ in range(200):
        middle = (low + high) / 2
        low, high = (middle, high) if volume(middle) < limit else (low, middle)
    return high
