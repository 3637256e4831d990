"""A local OTLP/HTTP receiver that decodes what the real exporter sends, and can misbehave on purpose."""

from __future__ import annotations

import gzip
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

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


@dataclass
class FakeOtlpReceiver:
    """`mode`: "ok" answers 200; "error" 503; "throttle" 429; "slow" waits `delay` then 200; "hang" never answers."""

    mode: str = "ok"
    delay: float = 0.5
    exports: list[ReceivedExport] = field(default_factory=list)

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
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                if receiver.mode in {"error", "throttle"}:
                    self.send_response(503 if receiver.mode == "error" else 429)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                request = ExportTraceServiceRequest()
                request.ParseFromString(body)
                receiver.exports.append(
                    ReceivedExport(self.path, {k.lower(): v for k, v in self.headers.items()}, request, body)
                )
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

    def close(self) -> None:
        self._released.set()
        self.server.shutdown()
        self.server.server_close()
