"""A local OTLP/HTTP receiver that decodes what the real exporters send (metrics on a path ending in
`metrics`, traces on any other), and can misbehave on purpose."""

from __future__ import annotations

import gzip
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)


@dataclass
class ReceivedExport:
    path: str
    headers: dict[str, str]
    request: ExportTraceServiceRequest
    raw: bytes

    def spans(self) -> list:
        return [span for rs in self.request.resource_spans for ss in rs.scope_spans for span in ss.spans]

    def resource_attributes(self) -> dict[str, str]:
        [resource_spans, *_] = self.request.resource_spans
        return {kv.key: kv.value.string_value for kv in resource_spans.resource.attributes}


#: Checks a request before it is taken: (path, lower-cased headers, raw body) -> why it is refused, or None.
Authorize = Callable[[str, dict[str, str], bytes], str | None]


@dataclass
class ReceivedMetrics:
    path: str
    headers: dict[str, str]
    request: ExportMetricsServiceRequest

    def metrics(self) -> dict[str, list]:
        """Each metric by name: the list of its protobuf `Metric` messages in this export."""
        found: dict[str, list] = {}
        for resource_metrics in self.request.resource_metrics:
            for scope_metrics in resource_metrics.scope_metrics:
                for metric in scope_metrics.metrics:
                    found.setdefault(metric.name, []).append(metric)
        return found

    def resource_attributes(self) -> dict[str, str]:
        [resource_metrics, *_] = self.request.resource_metrics
        return {kv.key: kv.value.string_value for kv in resource_metrics.resource.attributes}


@dataclass
class FakeOtlpReceiver:
    """`mode`: "ok" answers 200; "error" 503; "throttle" 429; "slow" waits `delay` then 200; "hang" never answers.

    With `authorize`, a request it refuses gets 403 and a JSON message, and is kept in `refused`.
    """

    mode: str = "ok"
    delay: float = 0.5
    exports: list[ReceivedExport] = field(default_factory=list)
    metric_exports: list[ReceivedMetrics] = field(default_factory=list)
    authorize: Authorize | None = None
    refused: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        receiver = self
        self._released = threading.Event()

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if receiver.mode == "hang":
                    receiver._released.wait()
                    return
                if receiver.mode == "slow":
                    time.sleep(receiver.delay)
                headers = {k.lower(): v for k, v in self.headers.items()}
                if receiver.authorize is not None and (why := receiver.authorize(self.path, headers, body)):
                    receiver.refused.append(why)
                    message = json.dumps({"message": why}).encode()
                    self.send_response(403)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(message)))
                    self.end_headers()
                    self.wfile.write(message)
                    return
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                if receiver.mode in {"error", "throttle"}:
                    self.send_response(503 if receiver.mode == "error" else 429)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                if self.path.rstrip("/").endswith("metrics"):  # /v1/metrics, or a custom metrics path
                    metrics = ExportMetricsServiceRequest()
                    metrics.ParseFromString(body)
                    receiver.metric_exports.append(ReceivedMetrics(self.path, headers, metrics))
                    reply = ExportMetricsServiceResponse().SerializeToString()
                else:
                    request = ExportTraceServiceRequest()
                    request.ParseFromString(body)
                    receiver.exports.append(ReceivedExport(self.path, headers, request, body))
                    reply = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def spans(self) -> list:
        return [span for export in list(self.exports) for span in export.spans()]

    def wait_for_spans(self, count: int, timeout: float = 10) -> list:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if len(self.spans()) >= count:
                return self.spans()
            time.sleep(0.02)
        return self.spans()

    def wait_for_metrics(self, count: int = 1, timeout: float = 10) -> list[ReceivedMetrics]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and len(self.metric_exports) < count:
            time.sleep(0.02)
        return list(self.metric_exports)

    def close(self) -> None:
        self._released.set()
        self.server.shutdown()
        self.server.server_close()
