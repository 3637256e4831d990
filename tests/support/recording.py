"""A local HTTP server that records every request and answers with a canned status and JSON body."""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class RecordedRequest:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> object:
        return json.loads(self.body)


class RecordingServer:
    """`status`/`reply` set the answer (`routes` per path: {path: (status, reply)}); `delay` slows it;
    `hang` makes it never answer."""

    def __init__(self, status: int = 200, reply: object | None = None, routes: dict | None = None) -> None:
        self.status = status
        self.reply = reply if reply is not None else {}
        self.routes = routes or {}
        self.delay = 0.0
        self.hang = False
        self.requests: list[RecordedRequest] = []
        self._released = threading.Event()
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _handle(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0) or 0))
                recorder.requests.append(
                    RecordedRequest(self.command, self.path, {k.lower(): v for k, v in self.headers.items()}, body)
                )
                if recorder.hang:
                    recorder._released.wait()
                    return
                if recorder.delay:
                    time.sleep(recorder.delay)
                status, reply = recorder.routes.get(self.path, (recorder.status, recorder.reply))
                payload = json.dumps(reply).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = do_PUT = _handle

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def wait_for(self, count: int, timeout: float = 10) -> list[RecordedRequest]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and len(self.requests) < count:
            time.sleep(0.02)
        return list(self.requests)

    def close(self) -> None:
        self._released.set()
        self.server.shutdown()
        self.server.server_close()
