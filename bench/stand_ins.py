"""Cheap stand-ins for the four backends: they accept what the service sends and throw it away.

Run as `python -m bench.stand_ins`, in a process of its own (pinned away from the measured
server), so what they spend is never counted as the server's. They answer the way the real
services do, without decoding anything:

- OTLP/HTTP: `POST /v1/traces` -> 200, empty body (the exporter does not read it); a request
  signed SigV4 (`Authorization: AWS4-HMAC-SHA256 ...`) is X-Ray's OTLP endpoint and counted apart,
  its signature taken on trust.
- CloudWatch Logs (JSON protocol, dispatched on `X-Amz-Target`): DescribeLogGroups ->
  `{"logGroups": []}`, PutLogEvents -> `{"nextSequenceToken": "1"}`, anything else -> `{}`.
- Rollbar: `POST /api/1/item/` -> `{"err": 0, "result": {}}`.
- X-Ray daemon: a UDP socket that reads datagrams and drops them.
- Cognito: `GET .../.well-known/jwks.json` -> the key set given in `BENCH_JWKS` (the benchmark's own key).

`GET /stats` answers what each has received (requests and bytes), so a benchmark can show the
tools really did send. The first line on stdout is a JSON object with the addresses; the
process ends when its standard input closes or on SIGTERM.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

_EMPTY = b""
_CLOUDWATCH_REPLIES = {
    "Logs_20140328.DescribeLogGroups": b'{"logGroups": []}',
    "Logs_20140328.PutLogEvents": b'{"nextSequenceToken": "1"}',
}
_ROLLBAR_REPLY = b'{"err": 0, "result": {}}'


class Counters:
    """Requests and bytes per backend; `+=` on ints under a lock, read by `/stats`."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.counts: dict[str, list[int]] = {
            name: [0, 0] for name in ("otlp", "xray_otlp", "xray", "cloudwatch", "rollbar")
        }

    def add(self, name: str, size: int) -> None:
        with self._lock:
            entry = self.counts[name]
            entry[0] += 1
            entry[1] += size

    def snapshot(self) -> dict[str, dict[str, int]]:
        with self._lock:
            return {name: {"requests": n, "bytes": size} for name, (n, size) in self.counts.items()}


def _handler(counters: Counters, jwks: bytes | None) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _reply(self, body: bytes, content_type: str = "application/json") -> None:
            self.send_response(200)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if body:
                self.wfile.write(body)

        def do_POST(self) -> None:
            size = int(self.headers.get("Content-Length") or 0)
            remaining = size
            while remaining > 0:
                chunk = self.rfile.read(min(remaining, 1 << 16))
                if not chunk:
                    break
                remaining -= len(chunk)
            target = self.headers.get("X-Amz-Target")
            if target is not None:
                counters.add("cloudwatch", size)
                self._reply(_CLOUDWATCH_REPLIES.get(target, b"{}"), "application/x-amz-json-1.1")
            elif self.path.startswith("/api/1/"):
                counters.add("rollbar", size)
                self._reply(_ROLLBAR_REPLY)
            else:
                signed = (self.headers.get("Authorization") or "").startswith("AWS4-HMAC-SHA256 ")
                counters.add("xray_otlp" if signed else "otlp", size)
                self._reply(_EMPTY, "application/x-protobuf")

        do_PUT = do_POST

        def do_GET(self) -> None:
            if jwks is not None and self.path.endswith("/.well-known/jwks.json"):
                self._reply(jwks)
                return
            self._reply(json.dumps(counters.snapshot()).encode())

        def log_message(self, format: str, *args: object) -> None:
            pass

    return Handler


def _drain_udp(sock: socket.socket, counters: Counters) -> None:
    while True:
        try:
            data = sock.recv(65535)
        except OSError:
            return
        counters.add("xray", len(data))


def serve(host: str = "127.0.0.1", jwks: bytes | None = None) -> tuple[dict[str, str], threading.Event]:
    """Start every stand-in in this process; returns their addresses and an event that stops them."""
    counters = Counters()
    server = ThreadingHTTPServer((host, 0), _handler(counters, jwks))
    server.daemon_threads = True
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    udp.bind((host, 0))
    threading.Thread(target=server.serve_forever, name="stand-ins-http", daemon=True).start()
    threading.Thread(target=_drain_udp, args=(udp, counters), name="stand-ins-udp", daemon=True).start()
    stop = threading.Event()

    def close() -> None:
        stop.wait()
        server.shutdown()
        server.server_close()
        udp.close()

    threading.Thread(target=close, daemon=True).start()
    http_url = f"http://{host}:{server.server_address[1]}"
    return {"http": http_url, "xray": f"{host}:{udp.getsockname()[1]}"}, stop


def main() -> None:
    jwks = os.environ.get("BENCH_JWKS")
    addresses, stop = serve(jwks=jwks.encode() if jwks else None)
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    print(json.dumps(addresses), flush=True)
    # Ends when the parent closes our stdin (or dies), so no stand-in outlives a benchmark.
    threading.Thread(target=lambda: (sys.stdin.read(), stop.set()), daemon=True).start()
    stop.wait()
    os._exit(0)


if __name__ == "__main__":
    main()
