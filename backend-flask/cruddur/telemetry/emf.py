"""CloudWatch Embedded Metric Format: one minute of OpenTelemetry metrics as a few JSON log lines.

CloudWatch Logs turns each line into metric data points (no agent, no PutMetricData call). Every
combination of dimension values is a billed custom metric, so the dimensions are fixed here:
`[Service, Route]` and `[Service]` for the request metrics, `[Service]` for the worker's own.
One line per route per interval carries the request latencies as `Values`/`Counts` arrays (the
buckets of an exponential histogram, at most 100 of them), never one line per request.
`aws/cloudwatch.yaml` graphs and alarms on exactly these names (a test holds them together).
"""

from __future__ import annotations

import math
import os
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from opentelemetry.sdk.metrics.export import (
    ExponentialHistogramDataPoint,
    HistogramDataPoint,
    MetricsData,
    NumberDataPoint,
)

NAMESPACE = "Cruddur"
ROUTE_DIMENSIONS = [["Service", "Route"], ["Service"]]
WORKER_DIMENSIONS = [["Service"]]
#: (name, CloudWatch unit) of what each route line carries.
ROUTE_METRICS = (("Requests", "Count"), ("Errors5xx", "Count"), ("Latency", "Milliseconds"))
#: (name, CloudWatch unit) of what each worker line carries.
WORKER_METRICS = (
    ("InFlight", "Count"),
    ("CpuUtilization", "Percent"),
    ("MemoryRss", "Bytes"),
    ("Threads", "Count"),
    ("GCPauseTime", "Milliseconds"),
    ("TelemetryDropped", "Count"),
)
#: The `Route` of requests that matched no route (scanners, typos): one value, not one per URL.
UNMATCHED_ROUTE = "unmatched"
#: EMF's limit on the values of one metric in one line.
MAX_VALUES = 100

#: OpenTelemetry instrument names this module reads.
DURATION = "http.server.request.duration"
ACTIVE_REQUESTS = "http.server.active_requests"
CPU_TIME = "process.cpu.time"
MEMORY = "process.memory.usage"
THREADS = "process.thread.count"
GC_PAUSE = "cpython.gc.pause.time"
TOOL_DROPPED = "cruddur.telemetry.dropped"
TOOL_QUEUED = "cruddur.telemetry.queued"
TOOL_SENT = "cruddur.telemetry.sent"
TOOL_ATTRIBUTE = "cruddur.telemetry.tool"


@dataclass
class _Buckets:
    """Exponential-histogram buckets merged at one scale (a lower scale when they would not fit)."""

    scale: int | None = None
    counts: dict[int, int] = field(default_factory=dict)
    zero: int = 0
    count: int = 0
    total: float = 0.0
    low: float = math.inf
    high: float = -math.inf

    def add(self, point: ExponentialHistogramDataPoint) -> None:
        if point.count == 0:
            return
        self.count += point.count
        self.total += point.sum
        self.low = min(self.low, point.min)
        self.high = max(self.high, point.max)
        self.zero += point.zero_count
        incoming = {point.positive.offset + i: n for i, n in enumerate(point.positive.bucket_counts) if n}
        scale = point.scale
        if self.scale is not None and self.scale < scale:
            incoming = _downscale(incoming, scale - self.scale)
            scale = self.scale
        elif self.scale is not None and self.scale > scale:
            self.counts = _downscale(self.counts, self.scale - scale)
        self.scale = scale
        for index, n in incoming.items():
            self.counts[index] = self.counts.get(index, 0) + n
        while len(self.counts) + (1 if self.zero else 0) > MAX_VALUES:
            self.counts = _downscale(self.counts, 1)
            self.scale -= 1

    def values_counts(self, factor: float) -> tuple[list[float], list[int]]:
        """Each bucket's midpoint (kept within the observed min and max), scaled by `factor`."""
        values: list[float] = []
        counts: list[int] = []
        if self.zero:
            values.append(0.0)
            counts.append(self.zero)
        if self.scale is not None:
            base = 2.0 ** (2.0**-self.scale)
            for index in sorted(self.counts):
                middle = (base**index + base ** (index + 1)) / 2
                values.append(round(min(max(middle, self.low), self.high) * factor, 3))
                counts.append(self.counts[index])
        return values, counts


def _downscale(counts: Mapping[int, int], by: int) -> dict[int, int]:
    merged: dict[int, int] = {}
    for index, n in counts.items():
        merged[index >> by] = merged.get(index >> by, 0) + n
    return merged


@dataclass
class _Route:
    requests: int = 0
    errors: int = 0
    latency: _Buckets = field(default_factory=_Buckets)


def _points(metrics_data: MetricsData) -> Iterator[tuple[str, Any]]:
    for resource_metrics in metrics_data.resource_metrics:
        for scope_metrics in resource_metrics.scope_metrics:
            for metric in scope_metrics.metrics:
                for point in metric.data.data_points:
                    yield metric.name, point


def _directive(dimensions: list[list[str]], metrics: Iterable[tuple[str, str]]) -> dict[str, Any]:
    return {
        "Namespace": NAMESPACE,
        "Dimensions": dimensions,
        "Metrics": [{"Name": name, "Unit": unit} for name, unit in metrics],
    }


def documents(
    metrics_data: MetricsData, service: str, timestamp_ms: int, interval_seconds: float
) -> list[dict[str, Any]]:
    """The EMF documents of one interval (`interval_seconds` long, for the CPU share): one per route
    that served requests, then one for the worker."""
    routes: dict[str, _Route] = defaultdict(_Route)
    worker: dict[str, float] = dict.fromkeys((name for name, _ in WORKER_METRICS), 0.0)
    tools: dict[str, dict[str, int]] = defaultdict(dict)
    seen_worker = False
    for name, point in _points(metrics_data):
        attributes = point.attributes or {}
        if name == DURATION and isinstance(point, ExponentialHistogramDataPoint | HistogramDataPoint):
            route = routes[str(attributes.get("http.route") or UNMATCHED_ROUTE)]
            route.requests += point.count
            if int(attributes.get("http.response.status_code", 0)) >= 500:
                route.errors += point.count
            if isinstance(point, ExponentialHistogramDataPoint):
                route.latency.add(point)
            continue
        if not isinstance(point, NumberDataPoint):
            continue
        seen_worker = True
        if name == ACTIVE_REQUESTS:
            worker["InFlight"] += point.value
        elif name == CPU_TIME:
            # The SDK's first delta point starts at the first collection, not the interval's start.
            worker["CpuUtilization"] += point.value / max(interval_seconds, 1e-3) * 100
        elif name == MEMORY:
            worker["MemoryRss"] += point.value
        elif name == THREADS:
            worker["Threads"] += point.value
        elif name == GC_PAUSE:
            worker["GCPauseTime"] += point.value * 1000
        elif name in (TOOL_DROPPED, TOOL_QUEUED, TOOL_SENT):
            tool = str(attributes.get(TOOL_ATTRIBUTE, "unknown"))
            tools[tool][name.rsplit(".", 1)[1]] = int(point.value)
            if name == TOOL_DROPPED:
                worker["TelemetryDropped"] += point.value
    lines: list[dict[str, Any]] = []
    for route_name in sorted(routes):
        route = routes[route_name]
        if not route.requests:
            continue
        values, counts = route.latency.values_counts(1000)
        latency: dict[str, Any] = {"Values": values, "Counts": counts}
        if route.latency.count:
            latency.update(
                Max=round(route.latency.high * 1000, 3),
                Min=round(route.latency.low * 1000, 3),
                Count=route.latency.count,
                Sum=round(route.latency.total * 1000, 3),
            )
        lines.append(
            {
                "_aws": {"Timestamp": timestamp_ms, "CloudWatchMetrics": [_directive(ROUTE_DIMENSIONS, ROUTE_METRICS)]},
                "Service": service,
                "Route": route_name,
                "Requests": route.requests,
                "Errors5xx": route.errors,
                "Latency": latency,
            }
        )
    if seen_worker:
        lines.append(
            {
                "_aws": {
                    "Timestamp": timestamp_ms,
                    "CloudWatchMetrics": [_directive(WORKER_DIMENSIONS, WORKER_METRICS)],
                },
                "Service": service,
                **{name: round(value, 3) for name, value in worker.items()},
                "ProcessId": os.getpid(),
                "Telemetry": dict(tools),
            }
        )
    return lines
