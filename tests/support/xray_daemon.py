"""A local stand-in for the X-Ray daemon: it parses the UDP datagrams the SDK sends."""

from __future__ import annotations

import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PROTOCOL_HEADER = {"format": "json", "version": 1}


class FakeXRayDaemon:
    """Listens on a loopback UDP port; every datagram must be the header line, a newline, a segment.

    With `tcp=True` it also answers the X-Ray API proxy on TCP at the same port, as the daemon
    does for sampling rules: `POST /GetSamplingRules` returns `sampling_rules`.
    """

    def __init__(self, tcp: bool = False) -> None:
        self.sampling_rules = [{"SamplingRule": {"RuleName": "Cruddur"}}, {"SamplingRule": {"RuleName": "Default"}}]
        self.http = None
        while True:
            self.socket = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            self.socket.bind(("127.0.0.1", 0))
            port = self.socket.getsockname()[1]
            try:
                self.http = self._serve_tcp(port) if tcp else None
                break
            except OSError:  # that port is taken on TCP: try another pair
                self.socket.close()
        # As much buffer as the system allows: the SDK's count streaming sends 30 datagrams at once.
        self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * 1024 * 1024)
        self.socket.settimeout(0.1)
        self.address = f"127.0.0.1:{port}"
        self.documents: list[dict] = []
        self.malformed: list[bytes] = []
        #: The size in bytes of every datagram received, in order.
        self.sizes: list[int] = []
        self._running = True
        self._thread = threading.Thread(target=self._receive, daemon=True)
        self._thread.start()

    def _serve_tcp(self, port: int) -> ThreadingHTTPServer:
        daemon = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length", 0) or 0))
                body = json.dumps({"SamplingRuleRecords": daemon.sampling_rules}).encode()
                self.send_response(200 if self.path == "/GetSamplingRules" else 404)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, daemon=True).start()
        return server

    def _receive(self) -> None:
        while self._running:
            try:
                data, _ = self.socket.recvfrom(65535)
            except (TimeoutError, OSError):
                continue
            self.sizes.append(len(data))
            header, _, body = data.decode("utf-8").partition("\n")
            try:
                assert json.loads(header) == PROTOCOL_HEADER
                self.documents.append(json.loads(body))
            except (AssertionError, ValueError):
                self.malformed.append(data)

    def segments(self) -> list[dict]:
        return [doc for doc in list(self.documents) if doc.get("type") != "subsegment"]

    def wait_for_segments(self, count: int, timeout: float = 5) -> list[dict]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and len(self.segments()) < count:
            time.sleep(0.01)
        return self.segments()

    def close(self) -> None:
        if self.http is not None:
            self.http.shutdown()
            self.http.server_close()
        self._running = False
        self._thread.join()
        self.socket.close()


def walk(entity: dict, depth: int = 0):
    """Every (depth, entity) of a segment document, the segment first."""
    yield depth, entity
    for child in entity.get("subsegments", []):
        yield from walk(child, depth + 1)
