"""A local stand-in for the X-Ray daemon: it parses the UDP datagrams the SDK sends."""

from __future__ import annotations

import json
import socket
import threading
import time

PROTOCOL_HEADER = {"format": "json", "version": 1}


class FakeXRayDaemon:
    """Listens on a loopback UDP port; every datagram must be the header line, a newline, a segment."""

    def __init__(self) -> None:
        self.socket = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.socket.bind(("127.0.0.1", 0))
        self.socket.settimeout(0.1)
        self.address = f"127.0.0.1:{self.socket.getsockname()[1]}"
        self.documents: list[dict] = []
        self.malformed: list[bytes] = []
        self._running = True
        self._thread = threading.Thread(target=self._receive, daemon=True)
        self._thread.start()

    def _receive(self) -> None:
        while self._running:
            try:
                data, _ = self.socket.recvfrom(65535)
            except (TimeoutError, OSError):
                continue
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
        self._running = False
        self._thread.join()
        self.socket.close()


def walk(entity: dict, depth: int = 0):
    """Every (depth, entity) of a segment document, the segment first."""
    yield depth, entity
    for child in entity.get("subsegments", []):
        yield from walk(child, depth + 1)
