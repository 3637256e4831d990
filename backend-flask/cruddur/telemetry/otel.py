"""OpenTelemetry: a tracer provider per process, batched exporters (OTLP/HTTP, console, file), the propagators.

The provider is passed explicitly to the instrumentations; the only global pieces are the ones
OpenTelemetry has no other way to share: the text-map propagator and the `requests` patch.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from flask import Flask, request
from opentelemetry import propagate
from opentelemetry.baggage.propagation import W3CBaggagePropagator
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.instrumentation.flask import FlaskInstrumentor
from opentelemetry.instrumentation.requests import RequestsInstrumentor
from opentelemetry.propagators.composite import CompositePropagator
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SimpleSpanProcessor,
    SpanExporter,
    SpanExportResult,
)
from opentelemetry.sdk.trace.sampling import Sampler
from opentelemetry.trace import Span
from opentelemetry.util.http import sanitize_method

from cruddur.telemetry import local_traces, xray_otlp
from cruddur.telemetry.counts import ToolCounts
from cruddur.telemetry.local_traces import LocalSpanExporter, LocalTraceFile, PendingLogLines
from cruddur.telemetry.propagation import CallerPropagator, CallerTraceIdGenerator
from cruddur.telemetry.scrub import REDACTED, is_sensitive, scrub_exception, scrub_query, scrub_url
from cruddur.telemetry.settings import BSP_DEFAULT_MAX_QUEUE_SIZE, OtelSettings

#: Incoming: an X-Ray header or a W3C `traceparent` (which wins when both are sent) continues the
#: caller's trace (see `propagation`); outgoing `requests` calls carry both, and baggage.
PROPAGATOR = CompositePropagator([CallerPropagator(), W3CBaggagePropagator()])


class HashOnceResource(Resource):
    """A Resource that computes its hash once. The OTLP encoder hashes the resource of every span it
    exports, and `Resource.__hash__` serialises all its attributes to JSON each time."""

    _hash: int | None = None

    def __hash__(self) -> int:
        if self._hash is None:
            self._hash = super().__hash__()
        return self._hash


def build_resource(settings: OtelSettings, version: str, environment: str) -> Resource:
    """`service.*` and the deployment environment (under its current name and the old one), under
    `OTEL_RESOURCE_ATTRIBUTES`, as the specification orders them: the user's attributes win over
    the code's defaults, and `OTEL_SERVICE_NAME` wins over both (`settings.service_name`)."""
    merged = Resource.create(
        {
            "service.version": version,
            "deployment.environment.name": environment,
            "deployment.environment": environment,
            **settings.resource_attributes,
            "service.name": settings.service_name,
        }
    )
    return HashOnceResource(merged.attributes, merged.schema_url)


#: Spans per export unless OTEL_BSP_MAX_EXPORT_BATCH_SIZE says otherwise. The SDK's 512 makes the
#: export thread hold the GIL for ~15 ms at a time while requests wait; smaller batches, more often,
#: cost the same CPU in shorter bursts (`make bench`: p99 60 → 44 ms on their own).
EXPORT_BATCH_SIZE = 128


def build_processors(
    settings: OtelSettings,
    test_exporter: SpanExporter | None,
    counts: ToolCounts,
    xray: xray_otlp.Destination | None = None,
    log_lines: PendingLogLines | None = None,
) -> list[SpanProcessor]:
    """A processor per destination in the settings: OTLP (and X-Ray's OTLP endpoint, each batch
    encoded once and the bytes posted to both), the console, the local trace file.

    This is the one place that chooses exporters. A test's own exporter replaces them all and gets
    spans synchronously; the others are batched, so no request waits for an export. What goes to
    a backend (OTLP, X-Ray, a test's exporter) is counted in `counts` (see `cruddur.telemetry.counts`):
    with two destinations, a span is sent when both took it. The console and the file stay local."""
    if test_exporter is not None:
        return [_counted(CountedSimpleSpanProcessor(CountingSpanExporter(test_exporter, counts)), counts)]
    # Our smaller default batch must still fit a smaller queue (the SDK refuses batch > queue).
    queue = settings.bsp.get("max_queue_size", BSP_DEFAULT_MAX_QUEUE_SIZE)
    batch = {"max_export_batch_size": min(EXPORT_BATCH_SIZE, queue), **settings.bsp}
    processors: list[SpanProcessor] = []
    otlp: SpanExporter | None = (
        OTLPSpanExporter(endpoint=settings.endpoint, headers=dict(settings.headers), timeout=settings.timeout_seconds)
        if settings.endpoint
        else None
    )
    if xray is not None:
        others = [xray_otlp.Destination(settings.destination, otlp)] if otlp is not None else []
        otlp = xray_otlp.SharedBytesExporter([*others, xray])
    if otlp is not None:
        processors.append(_counted(CountedBatchSpanProcessor(CountingSpanExporter(otlp, counts), **batch), counts))
    if settings.console:
        # One line per span, like the app's JSON log lines (the SDK's default indents each span).
        console = ConsoleSpanExporter(out=sys.stdout, formatter=lambda span: span.to_json(indent=None) + "\n")
        processors.append(BatchSpanProcessor(console, **batch))
    if settings.local_traces:
        exporter = LocalSpanExporter(LocalTraceFile(settings.local_traces), log_lines)
        processors.append(
            BatchSpanProcessor(exporter, **{**batch, "schedule_delay_millis": local_traces.EXPORT_DELAY_MILLIS})
        )
    return processors


class CountingSpanExporter(SpanExporter):
    """Counts what its exporter sent and what it failed to send."""

    def __init__(self, exporter: SpanExporter, counts: ToolCounts) -> None:
        self._exporter = exporter
        self._counts = counts

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        try:
            result = self._exporter.export(spans)
        except Exception:
            self._counts.add(dropped=len(spans))
            raise
        if result is SpanExportResult.SUCCESS:
            self._counts.add(sent=len(spans))
        else:
            self._counts.add(dropped=len(spans))
        return result

    def shutdown(self) -> None:
        self._exporter.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self._exporter.force_flush(timeout_millis)


class _CountsQueued:
    """Counts every sampled span handed to the processor: one addition per span, nothing else."""

    counts: ToolCounts

    def on_end(self, span: ReadableSpan) -> None:
        if span.context.trace_flags.sampled:
            self.counts.add(queued=1)
        super().on_end(span)  # type: ignore[misc]


class CountedBatchSpanProcessor(_CountsQueued, BatchSpanProcessor):
    pass


class CountedSimpleSpanProcessor(_CountsQueued, SimpleSpanProcessor):
    pass


class _CountDrops:
    """The SDK's processor metrics, plus our count of the spans a processor drops (queue full, or
    ended after shutdown). The SDK reports those drops only to this hook and a warning line."""

    def __init__(self, inner: Any, counts: ToolCounts) -> None:
        self._inner = inner
        self._counts = counts

    def register_queue_size(self, get_queue_size: Any) -> None:
        self._inner.register_queue_size(get_queue_size)

    def drop_items(self, count: int, error_type: str = "queue_full") -> None:
        self._counts.add(dropped=count)
        self._inner.drop_items(count, error_type)

    def finish_items(self, count: int) -> None:
        self._inner.finish_items(count)


def _counted(processor: CountedBatchSpanProcessor | CountedSimpleSpanProcessor, counts: ToolCounts) -> SpanProcessor:
    """Give a processor its counts. The one place that reaches into the SDK: a processor drops
    spans through its private `_metrics` (the batch processor's in `_batch_processor`), and that
    is the only way to learn how many (opentelemetry-sdk 1.45; `test_export.py` covers it)."""
    processor.counts = counts
    owner = getattr(processor, "_batch_processor", processor)
    owner._metrics = _CountDrops(owner._metrics, counts)
    return processor


def build_tracer_provider(resource: Resource, sampler: Sampler, processors: list[SpanProcessor]) -> TracerProvider:
    provider = TracerProvider(resource=resource, sampler=sampler, id_generator=CallerTraceIdGenerator())
    for processor in processors:
        provider.add_span_processor(processor)
    return provider


#: Span attributes that carry a URL or a query string, in the old and the new HTTP conventions.
URL_ATTRIBUTES = ("http.url", "http.target", "url.full", "url.query")


def scrub_span_urls(span: Span, *_: object) -> None:
    """The scrub list applied to the URLs the HTTP instrumentations record (`?token=...`)."""
    if not span.is_recording():
        return
    for key in URL_ATTRIBUTES:
        value = span.attributes.get(key)
        if isinstance(value, str) and value:
            clean = scrub_query(value) if key == "url.query" else scrub_url(value)
            if clean != value:
                span.set_attribute(key, clean)


def start_outgoing_call(span: Span, *_: object) -> None:
    """The `requests` instrumentation's request hook: the scrub list on the call's URL, and on the
    exception it records if the call fails, whose text quotes the URL with its query (`Max retries
    exceeded with url: /path?token=...`). The instrumentation records it with the span's public
    `record_exception` as the exception leaves the span, after every hook; so that method is
    wrapped, on this span only, to scrub the exception first (`scrub_exception`, as the 500 handler does)."""
    if not span.is_recording():
        return
    scrub_span_urls(span)
    record = span.record_exception

    def record_scrubbed(exception: BaseException, *args: object, **kwargs: object) -> None:
        record(scrub_exception(exception), *args, **kwargs)

    span.record_exception = record_scrubbed  # type: ignore[method-assign]


#: Which HTTP attribute names the instrumentations write; `http` (today's stable names) unless the user
#: chose, e.g. `http/dup` to also write the old ones (`http.method`, `http.target`, ...).
SEMCONV_OPT_IN = "OTEL_SEMCONV_STABILITY_OPT_IN"


def use_stable_http_conventions(user_choice: str | None) -> None:
    """Opt the HTTP instrumentations into the stable conventions unless the user set the variable.

    They read it from the process environment, once per process, when the first of them is set up
    (`_OpenTelemetrySemanticConventionStability._initialize`), so it goes there, before them.
    """
    os.environ[SEMCONV_OPT_IN] = user_choice or "http"


def name_unrouted_requests(span: Span, environ: Mapping[str, object]) -> None:
    """A request no route matches is named by its method alone (`GET`), as the conventions say:
    a scanner's `GET /wp-admin/setup-config.php` must not become a span name of its own."""
    if request.url_rule is None and span.is_recording():
        method = sanitize_method(str(environ.get("REQUEST_METHOD", "")).strip())
        span.update_name("HTTP" if method == "_OTHER" else method)


def finish_server_span(span: Span, *_: object) -> None:
    """The scrub list on the server span's URLs, and `server.address` without the Host header's port
    (the WSGI instrumentation copies the header whole; the conventions keep the port in `server.port`)."""
    if not span.is_recording():
        return
    scrub_span_urls(span)
    address = span.attributes.get("server.address")
    if isinstance(address, str) and address[-1:].isdigit():
        host, sep, port = address.rpartition(":")
        if sep and port.isdigit() and (":" not in host or host.startswith("[")):
            span.set_attribute("server.address", host.removeprefix("[").removesuffix("]"))


#: OpenTelemetry's standard settings for recording HTTP headers as span attributes, read by the
#: instrumentations from the process environment (`opentelemetry.util.http`).
CAPTURE_HEADER_SETTINGS = (
    "OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_REQUEST",
    "OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_RESPONSE",
    "OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_CLIENT_REQUEST",
    "OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_CLIENT_RESPONSE",
)
#: The attributes those settings make: `http.request.header.<name>` and `http.response.header.<name>`.
HEADER_ATTRIBUTE_PREFIXES = ("http.request.header.", "http.response.header.")


def scrub_captured_headers(span: Span, *_: object) -> None:
    """The scrub list applied to captured headers: the instrumentations redact only what
    `OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SANITIZE_FIELDS` names. Run from their hooks, which
    come after the capture (Flask's response hook: request and response headers both)."""
    if not span.is_recording():
        return
    for key, value in list(span.attributes.items()):
        if key.startswith(HEADER_ATTRIBUTE_PREFIXES) and value != (REDACTED,) and is_sensitive(key.split(".", 3)[3]):
            span.set_attribute(key, (REDACTED,))


def and_captured_headers(hook: Callable[..., None] | None) -> Callable[..., None] | None:
    """`hook`, followed by `scrub_captured_headers` when a capture setting is on: decided at start,
    so a request pays for the pass over its attributes only when headers are recorded."""
    if not any(os.environ.get(name) for name in CAPTURE_HEADER_SETTINGS):
        return hook
    if hook is None:
        return scrub_captured_headers

    def hook_then_scrub(span: Span, *args: object) -> None:
        hook(span, *args)
        scrub_captured_headers(span)

    return hook_then_scrub


def instrument(app: Flask, provider: TracerProvider, excluded_urls: str) -> None:
    """Server spans for the app, client spans and context headers for outgoing `requests` calls."""
    propagate.set_global_textmap(PROPAGATOR)
    FlaskInstrumentor().instrument_app(
        app,
        tracer_provider=provider,
        excluded_urls=excluded_urls,
        enable_commenter=False,
        request_hook=name_unrouted_requests,
        response_hook=and_captured_headers(finish_server_span),
    )
    requests_instrumentor = RequestsInstrumentor()
    if requests_instrumentor.is_instrumented_by_opentelemetry:
        # The patch is process-wide; the newest app's provider is the one to use.
        requests_instrumentor.uninstrument()
    requests_instrumentor.instrument(
        tracer_provider=provider,
        request_hook=and_captured_headers(start_outgoing_call),
        response_hook=and_captured_headers(None),
    )
