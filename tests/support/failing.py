"""Backends that fail on purpose, in each way a real one does: refuse, hang, answer slowly, 5xx, throttle.

One HTTP server speaks for the OTLP receiver, the Rollbar item API and CloudWatch Logs: each
`Protocol` says what a healthy answer, a server error and a throttling answer look like on that
API's wire. `refuse` starts no server at all: the URL is a loopback port nothing listens on.
Every request that reaches the server is counted in `attempts`, so a test can tell that its
failure mode was exercised and not merely configured.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

from tests.support.server import free_port

MODES = ("refuse", "hang", "slow", "error", "throttle")
HTTP_MODES = (*MODES, "ok")

#: status, content type, body
Answer = tuple[int, str, bytes]


@dataclass(frozen=True)
class Attempt:
    at: float
    path: str
    target: str
    body: bytes


@dataclass(frozen=True)
class Protocol:
    """How one API answers: `ok` may depend on the request (CloudWatch dispatches on X-Amz-Target)."""

    name: str
    ok: Callable[[str, bytes], Answer]
    error: Answer
    throttle: Answer
    extra_throttle_headers: tuple[tuple[str, str], ...] = ()


def _json(status: int, body: object, content_type: str = "application/json") -> Answer:
    return status, content_type, json.dumps(body).encode()


OTLP = Protocol(
    name="otlp",
    ok=lambda target, body: (200, "application/x-protobuf", ExportTraceServiceResponse().SerializeToString()),
    error=(503, "text/plain", b"upstream unavailable"),
    throttle=(429, "text/plain", b"too many requests"),
)

ROLLBAR = Protocol(
    name="rollbar",
    ok=lambda target, body: _json(200, {"err": 0, "result": {"id": None, "uuid": "00000000-0000-4000-8000-0000"}}),
    error=_json(500, {"err": 1, "message": "Internal server error"}),
    throttle=_json(429, {"err": 1, "message": "rate limit reached for access token"}),
    extra_throttle_headers=(("X-Rate-Limit-Remaining", "0"), ("X-Rate-Limit-Remaining-Seconds", "60")),
)

AMZ_JSON = "application/x-amz-json-1.1"


def _cloudwatch_ok(target: str, body: bytes) -> Answer:
    operation = target.rsplit(".", 1)[-1]
    if operation == "DescribeLogGroups":
        return _json(200, {"logGroups": []}, AMZ_JSON)
    if operation == "DescribeLogStreams":
        return _json(200, {"logStreams": []}, AMZ_JSON)
    if operation == "PutLogEvents":
        return _json(200, {"nextSequenceToken": "49000000000000000000000000000000000000000000000000000000"}, AMZ_JSON)
    return _json(200, {}, AMZ_JSON)  # CreateLogGroup, CreateLogStream, PutRetentionPolicy


CLOUDWATCH_LOGS = Protocol(
    name="cloudwatch",
    ok=_cloudwatch_ok,
    error=_json(500, {"__type": "ServiceUnavailableException", "message": "The service is unavailable"}, AMZ_JSON),
    throttle=_json(400, {"__type": "ThrottlingException", "message": "Rate exceeded"}, AMZ_JSON),
)


class QuietHTTPServer(ThreadingHTTPServer):
    """Clients that give up (timeouts, resets) are the point here, not errors worth a traceback."""

    daemon_threads = True

    def handle_error(self, request: object, client_address: object) -> None:
        pass


class FailingHttpBackend:
    """`mode`: refuse (nothing listens), hang (reads the request, never answers), slow (answers after
    `delay`), error (5xx), throttle (the API's own throttling answer), ok."""

    def __init__(self, protocol: Protocol, mode: str, delay: float = 1.0) -> None:
        if mode not in HTTP_MODES:
            raise ValueError(f"mode {mode!r} is not one of {HTTP_MODES}")
        self.protocol = protocol
        self.mode = mode
        self.delay = delay
        self.attempts: list[Attempt] = []
        self._released = threading.Event()
        self.server: QuietHTTPServer | None = None
        if mode == "refuse":
            self.url = f"http://127.0.0.1:{free_port()}"
            return
        backend = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0) or 0))
                target = self.headers.get("X-Amz-Target", "")
                backend.attempts.append(Attempt(time.monotonic(), self.path, target, body))
                if backend.mode == "hang":
                    backend._released.wait()
                    self.close_connection = True
                    return
                if backend.mode == "slow":
                    time.sleep(backend.delay)
                extra: tuple[tuple[str, str], ...] = ()
                if backend.mode == "error":
                    status, content_type, payload = backend.protocol.error
                elif backend.mode == "throttle":
                    status, content_type, payload = backend.protocol.throttle
                    extra = backend.protocol.extra_throttle_headers
                else:
                    status, content_type, payload = backend.protocol.ok(target, body)
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(payload)))
                if status >= 400 and backend.protocol is CLOUDWATCH_LOGS:
                    self.send_header("x-amzn-RequestId", "00000000-0000-4000-8000-000000000000")
                for name, value in extra:
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(payload)

            do_PUT = do_POST

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = QuietHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, name=f"fake-{protocol.name}", daemon=True).start()

    def attempts_before(self, moment: float) -> int:
        return sum(1 for attempt in list(self.attempts) if attempt.at <= moment)

    def close(self) -> None:
        self._released.set()
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
