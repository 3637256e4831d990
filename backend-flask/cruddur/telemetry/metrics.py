"""OpenTelemetry metrics: one `MeterProvider` per process, read once an interval by two readers.

- OTLP/HTTP, to where the traces go (Honeycomb files them under `x-honeycomb-dataset`);
- CloudWatch Embedded Metric Format lines, handed straight to the CloudWatch Logs handler's queue
  (never to stdout, never through the logging tree), so metrics cost no agent and no extra AWS call.

A request appends its duration to an array; the histogram records it when a reader collects, once
an interval, on the reader's own thread, where callbacks also observe everything else (CPU,
memory, threads, garbage-collection pauses, each tool's queued/sent/dropped).
"""

from __future__ import annotations

import gc
import json
import logging
import os
import resource
import threading
import time
from array import array
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
from opentelemetry.metrics import CallbackOptions, Observation
from opentelemetry.sdk.metrics import (
    AlwaysOffExemplarFilter,
    Counter,
    Histogram,
    MeterProvider,
    ObservableCounter,
    ObservableGauge,
    ObservableUpDownCounter,
    UpDownCounter,
)
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    MetricExporter,
    MetricExportResult,
    MetricReader,
    MetricsData,
    PeriodicExportingMetricReader,
)
from opentelemetry.sdk.metrics.view import ExponentialBucketHistogramAggregation
from opentelemetry.sdk.resources import Resource

from cruddur.telemetry import emf
from cruddur.telemetry.settings import MetricsSettings

log = logging.getLogger(__name__)

#: The stable HTTP semantic conventions' advisory buckets for `http.server.request.duration`, in seconds.
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10)
#: Methods recorded by name; any other (a scanner's `FOO`) is `_OTHER`, as the conventions say.
KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"})
#: Durations held between collections at most (8 bytes each): a minute of a sync worker's top rate
#: fits; past it (a far longer export interval) each request records its own into the SDK at once,
#: as before batching, until the next collection: memory stays flat and no request waits for a batch.
MAX_PENDING_DURATIONS = 100_000
_PAGE_SIZE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096

CountsReader = Callable[[], Mapping[str, Mapping[str, int]]]


class RequestMetrics:
    """What a request records: its duration, by route, method and status, and requests in flight.

    A request appends its duration to an array and counts itself in or out, under one lock; the
    durations reach the SDK histogram in a batch when a reader collects (the in-flight callback
    hands them over first). Recorded into the SDK as each request ended, a duration cost 30-45 µs
    of CPU (OTLP alone; the SDK's generic path runs cold between requests); in a batch, 18-23 µs
    (measured in-process, recording on and off in alternating rounds; docs/benchmarks.md).
    Every duration is still one SDK measurement, so the exported histograms are the same.
    """

    def __init__(self, provider: MeterProvider) -> None:
        meter = provider.get_meter("cruddur")
        self._duration = meter.create_histogram(
            emf.DURATION,
            unit="s",
            description="Duration of HTTP server requests.",
            explicit_bucket_boundaries_advisory=DURATION_BUCKETS,
        )
        meter.create_observable_up_down_counter(
            emf.ACTIVE_REQUESTS,
            [self._collect],
            unit="{request}",
            description="Number of active HTTP server requests.",
        )
        self._in_flight = 0
        self._lock = threading.Lock()
        #: Durations not yet handed to the SDK, by attribute set, and how many in all.
        self._pending: dict[tuple[str, str | None, int], array[float]] = {}
        self._pending_count = 0

    def started(self) -> None:
        with self._lock:
            self._in_flight += 1

    def finished(self, method: str, route: str | None, status: int, seconds: float) -> None:
        key = (method if method in KNOWN_METHODS else "_OTHER", route, status)
        with self._lock:
            self._in_flight -= 1
            full = self._pending_count >= MAX_PENDING_DURATIONS
            if not full:
                durations = self._pending.get(key)
                if durations is None:
                    durations = self._pending[key] = array("d")
                durations.append(seconds)
                self._pending_count += 1
        if full:
            self._duration.record(seconds, _attributes(key))

    def record_pending(self) -> None:
        """Hand every duration so far to the SDK histogram (each reader sees it at its next collect)."""
        with self._lock:
            pending, self._pending, self._pending_count = self._pending, {}, 0
        for key, durations in pending.items():
            attributes = _attributes(key)
            for seconds in durations:
                self._duration.record(seconds, attributes)

    def _collect(self, _: CallbackOptions) -> Sequence[Observation]:
        self.record_pending()
        return [Observation(self._in_flight)]


def _attributes(key: tuple[str, str | None, int]) -> dict[str, str | int]:
    """A duration's attributes from its (method, route, status); no route, no `http.route`."""
    method, route, status = key
    attributes: dict[str, str | int] = {"http.request.method": method, "http.response.status_code": status}
    if route:
        attributes["http.route"] = route
    return attributes


class GcPauses:
    """Seconds the garbage collector stopped this process, from `gc.callbacks` (no per-request cost)."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self.collections = 0
        self._started = 0.0

    def __call__(self, phase: str, _info: Mapping[str, Any]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        else:
            self.seconds += time.perf_counter() - self._started
            self.collections += 1


def _rss_bytes() -> int:
    try:
        with open("/proc/self/statm", "rb") as statm:
            return int(statm.read().split()[1]) * _PAGE_SIZE
    except (OSError, IndexError, ValueError):
        # Elsewhere only the peak is known (kilobytes on Linux, bytes on macOS); close enough for a trend.
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


class CpuSince:
    """CPU seconds since the worker's metrics began: not the imports', nor, in a worker forked from
    a master that built the app, the master's (a child's own times start again from zero)."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self._start = os.times()

    def observe(self, _: CallbackOptions) -> Sequence[Observation]:
        times = os.times()
        return [
            Observation(max(0.0, times.user - self._start.user), {"cpu.mode": "user"}),
            Observation(max(0.0, times.system - self._start.system), {"cpu.mode": "system"}),
        ]


def _observe_worker(provider: MeterProvider, pauses: GcPauses, cpu: CpuSince, tool_counts: CountsReader | None) -> None:
    meter = provider.get_meter("cruddur.process")

    meter.create_observable_counter(
        emf.CPU_TIME, [cpu.observe], unit="s", description="CPU seconds used by this process."
    )
    meter.create_observable_up_down_counter(
        emf.MEMORY, [lambda _: [Observation(_rss_bytes())]], unit="By", description="Resident memory."
    )
    meter.create_observable_up_down_counter(
        emf.THREADS, [lambda _: [Observation(threading.active_count())]], unit="{thread}"
    )
    meter.create_observable_counter(
        emf.GC_PAUSE,
        [lambda _: [Observation(pauses.seconds)]],
        unit="s",
        description="Seconds this process spent in garbage collection.",
    )
    if tool_counts is None:
        return

    def counts(key: str) -> Callable[[CallbackOptions], Sequence[Observation]]:
        def observe(_: CallbackOptions) -> Sequence[Observation]:
            try:
                snapshot = tool_counts()
            except Exception:  # a tool's counters must never break the others' metrics
                log.debug("telemetry tool counts could not be read", exc_info=True)
                return []
            return [Observation(c.get(key, 0), {emf.TOOL_ATTRIBUTE: tool}) for tool, c in snapshot.items()]

        return observe

    meter.create_observable_counter(emf.TOOL_SENT, [counts("sent")], unit="{item}")
    meter.create_observable_counter(emf.TOOL_DROPPED, [counts("dropped")], unit="{item}")
    meter.create_observable_counter(emf.TOOL_QUEUED, [counts("queued")], unit="{item}")


#: The EMF reader reports each interval on its own: deltas for counts and histograms, current values otherwise.
_DELTA = {
    Counter: AggregationTemporality.DELTA,
    Histogram: AggregationTemporality.DELTA,
    ObservableCounter: AggregationTemporality.DELTA,
    UpDownCounter: AggregationTemporality.CUMULATIVE,
    ObservableUpDownCounter: AggregationTemporality.CUMULATIVE,
    ObservableGauge: AggregationTemporality.CUMULATIVE,
}


class EmfExporter(MetricExporter):
    """Writes each interval's metrics as EMF lines through `write(line, timestamp_ms)`."""

    def __init__(self, service: str, write: Callable[[str, int], None]) -> None:
        super().__init__(
            preferred_temporality=_DELTA,
            # Exponential buckets: fine-grained latencies whatever the range, never over EMF's 100 values.
            preferred_aggregation={Histogram: ExponentialBucketHistogramAggregation(max_size=emf.MAX_VALUES)},
        )
        self.service = service
        self._write = write
        self.closed = False
        #: Data points in the last export: what an OTLP export of the same interval carries.
        self.last_series = 0
        self._last_export = time.monotonic()
        self.lines = 0
        self.bytes = 0

    def export(self, metrics_data: MetricsData, timeout_millis: float = 10_000, **_: Any) -> MetricExportResult:
        if self.closed:
            return MetricExportResult.SUCCESS
        timestamp_ms = int(time.time() * 1000)
        now = time.monotonic()
        interval, self._last_export = now - self._last_export, now
        self.last_series = sum(
            len(m.data.data_points) for r in metrics_data.resource_metrics for s in r.scope_metrics for m in s.metrics
        )
        for document in emf.documents(metrics_data, self.service, timestamp_ms, interval):
            line = json.dumps(document, separators=(",", ":"))
            self._write(line, timestamp_ms)
            self.lines += 1
            self.bytes += len(line.encode())
        return MetricExportResult.SUCCESS

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return True

    def shutdown(self, timeout_millis: float = 30_000, **_: Any) -> None:
        pass


class Metrics:
    """The process's meter provider, what requests record into it, and how it is flushed at shutdown."""

    def __init__(
        self,
        provider: MeterProvider,
        emf: tuple[MetricReader, EmfExporter] | None,
        otlp_reader: MetricReader | None,
        pauses: GcPauses,
        cpu: CpuSince,
    ) -> None:
        self.provider = provider
        self.requests = RequestMetrics(provider)
        self.emf_reader, self.emf_exporter = emf if emf is not None else (None, None)
        self.otlp_reader = otlp_reader
        self._pauses = pauses
        self._cpu = cpu
        self._emf_lock = threading.Lock()

    def after_fork(self) -> None:
        """In a worker forked from a master that built the app (the readers restart their own threads)."""
        self._cpu.reset()
        self._pauses.seconds = 0.0

    def flush_emf(self) -> None:
        """Write the last EMF lines, once: the CloudWatch handler calls this before its final send,
        since the shutdown closers run side by side."""
        with self._emf_lock:
            exporter = self.emf_exporter
            if self.emf_reader is None or exporter is None or exporter.closed:
                return
            try:
                self.emf_reader.collect()
            except Exception:
                log.warning("metrics: the last EMF lines could not be written", exc_info=True)
            finally:
                exporter.closed = True

    def shutdown(self, deadline: float) -> None:
        """Write the last EMF lines, then stop both readers; the OTLP one sends its last export within the deadline."""
        self.flush_emf()
        if self._pauses in gc.callbacks:
            gc.callbacks.remove(self._pauses)
        remaining_ms = max(0.0, deadline - time.monotonic()) * 1000
        try:
            self.provider.shutdown(timeout_millis=remaining_ms)
        except Exception as error:  # the SDK raises when a reader misses the deadline: never fatal
            log.warning("metrics: the last export did not finish before the shutdown deadline: %s", error)


def build(
    settings: MetricsSettings,
    resource: Resource,
    emf_write: Callable[[str, int], None] | None,
    tool_counts: CountsReader | None,
) -> Metrics | None:
    """The provider and its readers, or None when neither OTLP nor EMF is wanted."""
    interval_ms = settings.interval_seconds * 1000
    timeout_ms = settings.export_timeout_seconds * 1000
    readers: list[MetricReader] = []
    otlp_reader = emf = None
    if settings.otlp_endpoint:
        exporter = OTLPMetricExporter(
            endpoint=settings.otlp_endpoint,
            headers=dict(settings.otlp_headers),
            timeout=settings.otlp_timeout_seconds,
        )
        otlp_reader = PeriodicExportingMetricReader(exporter, interval_ms, timeout_ms)
        readers.append(otlp_reader)
    if emf_write is not None:
        service = str(resource.attributes.get("service.name", "backend-flask"))
        emf_exporter = EmfExporter(service, emf_write)
        emf = (PeriodicExportingMetricReader(emf_exporter, interval_ms, timeout_ms), emf_exporter)
        readers.append(emf[0])
    if not readers:
        return None
    # No exemplars: offering each measurement to a reservoir costs every request, and the traces
    # already carry each request's duration.
    provider = MeterProvider(
        metric_readers=readers, resource=resource, shutdown_on_exit=False, exemplar_filter=AlwaysOffExemplarFilter()
    )
    pauses = GcPauses()
    gc.callbacks.append(pauses)
    cpu = CpuSince()
    _observe_worker(provider, pauses, cpu, tool_counts)
    return Metrics(provider, emf, otlp_reader, pauses, cpu)
