"""The four observability tools, set up together per process and shut down under one deadline.

`init_app` wires, in this order: JSON logging, the sampler, OpenTelemetry (server spans), the
request's `TraceIds`, X-Ray (a segment that copies the server span), then CloudWatch, Rollbar and
metrics (OTLP and CloudWatch EMF, recorded by the request's own hooks).
Each tool is on only when its settings are present, says so in one line at start-up, and can
neither crash the app nor make a request wait on the network.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import sys
import threading
import time
import weakref
from collections.abc import Callable
from pathlib import Path

from flask import Flask, request
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SpanExporter
from opentelemetry.sdk.trace.sampling import Sampler
from opentelemetry.trace import Status, StatusCode
from opentelemetry.util.http import parse_excluded_urls

from cruddur.config import Settings
from cruddur.telemetry import cloudwatch, local_traces, logs, metrics, otel, xray_otlp
from cruddur.telemetry.counts import Counts, CountsReporter, ToolCounts, describe
from cruddur.telemetry.enduser import EndUser, set_current_user
from cruddur.telemetry.ids import current_ids
from cruddur.telemetry.rollbar_reporter import RollbarReporter
from cruddur.telemetry.sampling import build_sampler
from cruddur.telemetry.scrub import scrub_exception
from cruddur.telemetry.settings import TelemetrySettings
from cruddur.telemetry.tracing import Tracing
from cruddur.telemetry.web import RequestTelemetry, note_failure_logged

log = logging.getLogger(__name__)
#: The counts lines: stdout only (see `CountsReporter`).
counts_log = logging.getLogger("cruddur.telemetry.counts")

#: Flask setting (not an environment variable) through which tests hand in their own span exporter.
TEST_SPAN_EXPORTER = "TELEMETRY_SPAN_EXPORTER"
#: Flask setting through which `telemetry spend` hands in its own EMF sink, `write(line, timestamp_ms)`.
TEST_EMF_WRITER = "TELEMETRY_EMF_WRITER"


class Telemetry:
    """Per-app telemetry state, kept in `app.extensions["cruddur"].telemetry`."""

    def __init__(self, settings: TelemetrySettings, tracing: Tracing) -> None:
        self.settings = settings
        self.tracing = tracing
        self.xray_middleware = None
        self.xray_off: str | None = None
        self.xray_destination: xray_otlp.Destination | None = None
        self.cloudwatch = None
        self.cloudwatch_off: str | None = None
        self.rollbar = None
        self.metrics: metrics.Metrics | None = None
        self.sampling_description = ""
        self._closers: list[tuple[str, Callable[[float], None]]] = []
        self._counted: dict[str, Callable[[], dict[str, int]]] = {}
        self._reporter = CountsReporter(self.tool_counts, settings.counts_interval_seconds, counts_log)
        self._closed = False
        self._lock = threading.Lock()

    @property
    def emf_on(self) -> bool:
        """Metrics go to CloudWatch as EMF lines when CloudWatch Logs is on and they are not turned off."""
        return self.cloudwatch is not None and self.settings.metrics.emf_wanted

    def count(self, tool: str, snapshot: Callable[[], dict[str, int]]) -> None:
        """Register a tool's counts (`cruddur.telemetry.counts`) under its name in `tool_counts`."""
        self._counted[tool] = snapshot

    def tool_counts(self) -> Counts:
        """For each tool that is on, what it was given (`queued`), `sent` and `dropped` in this
        process so far: `{"opentelemetry": {"queued": .., "sent": .., "dropped": ..}, "xray": ..,
        "cloudwatch": .., "rollbar": ..}`. The periodic and stop lines log it; metrics can export it."""
        return {tool: snapshot() for tool, snapshot in self._counted.items()}

    def start_reporting(self) -> None:
        """Log the counts every `CRUDDUR_TELEMETRY_COUNTS_INTERVAL` seconds when they change."""
        if self._counted:
            self._reporter.start()

    def current_trace_id(self) -> str | None:
        """The trace id of the request being served (32 hex digits), for error bodies."""
        ids = current_ids()
        return ids.trace_id_hex if ids else None

    def identify(self, user: EndUser) -> None:
        """Name the request's user in every tool: `enduser.id` and `app.user_handle` on the server
        span, the X-Ray segment's `user` and an annotation, Rollbar's `person`, each log line's
        `user_id`. A request that is not traced (the health check) records no one."""
        if current_ids() is None:
            return
        set_current_user(user)
        span = trace.get_current_span()
        if span.is_recording():
            span.set_attribute("enduser.id", user.id)
            span.set_attribute("app.user_handle", user.handle)
        if self.xray_middleware is not None:
            self.xray_middleware.identify(user)

    def report_failure(self, error: BaseException) -> None:
        """An unhandled exception, recorded exactly once by each tool, under the request's trace id.

        Called by the app's 500 handler: Flask sends no `got_request_exception` for errors a
        handler takes, and the instrumentations see only a 500 response, not the exception. Its
        message is scrubbed first (`scrub_exception`): a secret the request sent may be quoted in it.
        """
        scrub_exception(error)
        log.error("unhandled %s in %s %s", type(error).__name__, request.method, request.path, exc_info=error)
        note_failure_logged()
        span = trace.get_current_span()
        if span.is_recording():
            span.record_exception(error)
            span.set_status(Status(StatusCode.ERROR, type(error).__name__))
        if self.xray_middleware is not None:
            self.xray_middleware.record_exception(error)
        if self.rollbar is not None:
            self.rollbar.report_exception(error, request)

    def report_message(self, message: str, level: str) -> bool:
        """Send a message to Rollbar with the current request; False when Rollbar is off."""
        if self.rollbar is None:
            return False
        self.rollbar.report_message(message, level, request)
        return True

    def on_close(self, name: str, close: Callable[[float], None]) -> None:
        """Register a tool's flush-and-close, run at shutdown with the seconds left before the deadline."""
        self._closers.append((name, close))

    def shutdown(self, timeout: float | None = None) -> None:
        """Flush and close every tool in parallel; give up on any still busy at the deadline."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._reporter.stop()
        deadline = time.monotonic() + (timeout if timeout is not None else self.settings.shutdown_timeout_seconds)
        workers = [
            (name, threading.Thread(target=close, args=(deadline,), name=f"shutdown-{name}", daemon=True))
            for name, close in self._closers
        ]
        for _, worker in workers:
            worker.start()
        for name, worker in workers:
            worker.join(max(0.0, deadline - time.monotonic()))
            if worker.is_alive():
                log.warning("shutdown: %s did not finish flushing before the deadline; the rest is dropped", name)
        if self._counted:
            counts = final_counts(self.tool_counts())
            dropped = any(c["dropped"] for c in counts.values())
            counts_log.log(
                logging.WARNING if dropped else logging.INFO,
                "telemetry stopped: %s",
                describe(counts),
                extra={"telemetry": counts},
            )

    def after_fork(self) -> None:
        """In a worker forked from a master that built the app. OpenTelemetry's batch processor and
        metric readers and the CloudWatch handler restart their own threads (they hook
        `os.register_at_fork`)."""
        if self.rollbar is not None:
            self.rollbar.after_fork()
        if self.metrics is not None:
            self.metrics.after_fork()
        self.start_reporting()


def final_counts(counts: Counts) -> Counts:
    """Counts at the stop: what is neither sent nor dropped by then is lost with the process."""
    return {
        tool: {**c, "dropped": c["dropped"] + max(0, c["queued"] - c["sent"] - c["dropped"])}
        for tool, c in counts.items()
    }


def _shutdown_at_exit(reference: weakref.ReferenceType[Telemetry]) -> None:
    telemetry = reference()
    if telemetry is not None:
        telemetry.shutdown()


def init_app(app: Flask, settings: Settings, version: str, for_command: bool = False) -> Telemetry:
    """Set up every tool for this app in this process; see the module docstring for the order.

    `for_command`: the app was built to run a CLI command (`flask --app app telemetry status`), not
    to serve. Its settings are read and checked, but no tool starts: nothing is sent anywhere, no
    start-up line is written, and what the app logs goes to stderr, leaving stdout to the command."""
    level = settings.environ.get("CRUDDUR_LOG_LEVEL", "INFO").upper()
    logs.configure_logging(logging.WARNING if for_command else level, sys.stderr if for_command else sys.stdout)
    telemetry_settings = TelemetrySettings.from_environ(
        settings.environ, settings.environment, version, Path(app.instance_path)
    )
    otel_settings = telemetry_settings.otel
    sampler, sampling_description = build_sampler(
        otel_settings.sampler,
        otel_settings.sampler_arg,
        telemetry_settings.sampling.rule_path,
        telemetry_settings.xray.service_name,
    )
    telemetry = Telemetry(telemetry_settings, Tracing())
    telemetry.sampling_description = sampling_description
    if for_command:
        return telemetry

    test_exporter = app.config.get(TEST_SPAN_EXPORTER)
    if telemetry_settings.xray.otlp:
        telemetry.xray_destination, telemetry.xray_off = xray_otlp.start(
            telemetry_settings.xray, otel_settings.timeout_seconds
        )
    otel_on = (
        otel_settings.enabled
        or telemetry.xray_destination is not None
        or (test_exporter is not None and not otel_settings.sdk_disabled)
    )
    provider = _start_otel(app, telemetry, sampler, test_exporter, version, settings.environment) if otel_on else None
    request_telemetry = RequestTelemetry(app, sampler, parse_excluded_urls(otel_settings.excluded_urls), otel_on)
    if telemetry_settings.xray.sdk:
        _start_xray(app, telemetry, provider)
    telemetry.cloudwatch_off = cloudwatch.missing_setting(telemetry_settings.cloudwatch)
    if telemetry.cloudwatch_off is None:
        _start_cloudwatch(telemetry)
    if telemetry_settings.rollbar.enabled:
        telemetry.rollbar = RollbarReporter(telemetry_settings.rollbar)
        telemetry.count("rollbar", telemetry.rollbar.counts.snapshot)
        telemetry.on_close("Rollbar", telemetry.rollbar.flush_and_close)
    _start_metrics(telemetry, request_telemetry, version, settings.environment, app.config.get(TEST_EMF_WRITER))

    log.info("telemetry: %s", "OpenTelemetry: on, test exporter" if test_exporter else otel_settings.describe())
    (log.warning if telemetry.xray_off else log.info)(
        "telemetry: %s", telemetry_settings.xray.describe(telemetry.xray_off)
    )
    log.info("telemetry: sampling %s", sampling_description)
    cloudwatch_line = telemetry_settings.cloudwatch.describe(telemetry.cloudwatch_off)
    (log.info if telemetry.cloudwatch_off is None else log.warning)("telemetry: %s", cloudwatch_line)
    log.info("telemetry: %s", telemetry_settings.rollbar.describe())
    log.info("telemetry: %s", telemetry_settings.metrics.describe(telemetry.emf_on))
    telemetry.start_reporting()
    atexit.register(_shutdown_at_exit, weakref.ref(telemetry))
    return telemetry


def _start_otel(
    app: Flask, telemetry: Telemetry, sampler: Sampler, exporter: SpanExporter | None, version: str, environment: str
) -> TracerProvider:
    otel_settings = telemetry.settings.otel
    otel.use_stable_http_conventions(otel_settings.semconv_opt_in)
    log_lines = None
    if otel_settings.local_traces and exporter is None:
        # The default file is in the instance folder, which may not exist yet (an explicit path's
        # folder must exist already); the log lines of each trace go to the file beside its spans.
        with contextlib.suppress(OSError):
            otel_settings.local_traces.parent.mkdir(parents=True, exist_ok=True)
        log_lines = local_traces.PendingLogLines()
        logs.add_handler(log_lines, "local-traces")
    counts = ToolCounts()
    processors = otel.build_processors(otel_settings, exporter, counts, telemetry.xray_destination, log_lines)
    telemetry.count("opentelemetry", counts.snapshot)
    provider = otel.build_tracer_provider(otel.build_resource(otel_settings, version, environment), sampler, processors)
    otel.instrument(app, provider, otel_settings.excluded_urls)
    telemetry.tracing.tracer = provider.get_tracer("cruddur")

    def close(_deadline: float) -> None:
        if log_lines is not None:
            logs.remove_handler(log_lines)
        provider.shutdown()

    telemetry.on_close("OpenTelemetry", close)
    return provider


def _start_xray(app: Flask, telemetry: Telemetry, provider: TracerProvider | None) -> None:
    # Imported here: the X-Ray SDK is loaded only by apps that use it (CRUDDUR_XRAY_MODE=sdk).
    from cruddur.telemetry import xray

    recorder = xray.build_recorder(telemetry.settings.xray)
    telemetry.count("xray", recorder.emitter.counts.snapshot)
    telemetry.xray_middleware = xray.LinkedXRayMiddleware(app, recorder)
    telemetry.tracing.xray = xray.XRaySubsegments(recorder)
    if provider is not None:
        provider.add_span_processor(xray.OutgoingCallSubsegments(recorder))


def _start_cloudwatch(telemetry: Telemetry) -> None:
    handler = telemetry.cloudwatch = cloudwatch.BoundedCloudWatchHandler(telemetry.settings.cloudwatch)
    logs.add_handler(handler, "cloudwatch")
    telemetry.count("cloudwatch", handler.counts.snapshot)

    def close(deadline: float) -> None:
        logs.remove_handler(handler)
        if telemetry.metrics is not None:
            telemetry.metrics.flush_emf()
        handler.flush_and_close(deadline)

    telemetry.on_close("CloudWatch Logs", close)


def _start_metrics(
    telemetry: Telemetry,
    request_telemetry: RequestTelemetry,
    version: str,
    environment: str,
    emf_writer: Callable[[str, int], None] | None,
) -> None:
    settings = telemetry.settings
    emf_write = emf_writer
    if emf_write is None and telemetry.emf_on and telemetry.cloudwatch is not None:
        emf_write = telemetry.cloudwatch.emit_line
    resource = otel.build_resource(settings.otel, version, environment)
    built = telemetry.metrics = metrics.build(settings.metrics, resource, emf_write, telemetry.tool_counts)
    if built is not None:
        request_telemetry.metrics = built.requests
        telemetry.on_close("Metrics", built.shutdown)
