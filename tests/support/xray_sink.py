"""An X-Ray daemon address that misbehaves, for each failure mode as it exists over UDP.

The SDK sends each segment as one datagram and never waits for an answer, so an HTTP backend's
failure modes map onto UDP like this:

* refuse: nothing listens on the port; the kernel answers with ICMP port unreachable.
* hang: a socket that is bound but never read: its receive buffer fills, then the kernel drops.
* slow: a daemon that reads one datagram every `interval` seconds, with a small receive buffer.
* error: a daemon that answers every datagram with an error datagram sent back to the emitter's
  socket (which never reads, so its own receive buffer fills).
* throttle: a daemon that takes `per_second` datagrams a second and discards the rest unread by
  shrinking its buffer to the minimum, as a daemon whose upstream throttles it falls behind.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time

MODES = ("refuse", "hang", "slow", "error", "throttle")
#: The smallest receive buffer Linux allows (it doubles what is asked, with a floor).
TINY_BUFFER = 1


class MisbehavingXRayDaemon:
    def __init__(self, mode: str, interval: float = 0.01, per_second: int = 20) -> None:
        if mode not in MODES:
            raise ValueError(f"mode {mode!r} is not one of {MODES}")
        self.mode = mode
        self.received = 0
        self._running = True
        self.socket = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.socket.bind(("127.0.0.1", 0))
        port = self.socket.getsockname()[1]
        self.address = f"127.0.0.1:{port}"
        self._thread: threading.Thread | None = None
        if mode == "refuse":
            self.socket.close()
            return
        if mode in {"slow", "throttle"}:
            self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, TINY_BUFFER)
        if mode == "hang":
            return
        self.socket.settimeout(0.1)
        pause = interval if mode == "slow" else 1.0 / per_second if mode == "throttle" else 0.0
        self._thread = threading.Thread(target=self._receive, args=(pause,), name=f"xray-{mode}", daemon=True)
        self._thread.start()

    def _receive(self, pause: float) -> None:
        while self._running:
            try:
                _, sender = self.socket.recvfrom(65535)
            except (TimeoutError, OSError):
                continue
            self.received += 1
            if self.mode == "error":
                with contextlib.suppress(OSError):
                    self.socket.sendto(b'{"error":"ThrottlingException","message":"Rate exceeded"}', sender)
            if pause:
                time.sleep(pause)

    def close(self) -> None:
        self._running = False
        if self._thread is not None:
            self._thread.join()
        self.socket.close()
