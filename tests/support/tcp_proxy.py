"""A loopback TCP port that stands in for a database server that goes down, comes back, or hangs.

`up()` forwards every connection to the real server; `down()` closes the port and cuts every
connection (a server that stopped); `silent()` accepts connections and never says a word (a server
that is wedged, or a firewall that swallows packets). The port stays the same throughout, so an
app keeps using one `DATABASE_URL`.
"""

from __future__ import annotations

import contextlib
import socket
import threading

from tests.support.server import free_port


class TcpProxy:
    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.port = free_port()
        self._listener: socket.socket | None = None
        self._silent = False
        self._sockets: set[socket.socket] = set()
        self._lock = threading.Lock()

    def up(self) -> TcpProxy:
        self._listen(silent=False)
        return self

    def silent(self) -> TcpProxy:
        self._listen(silent=True)
        return self

    def down(self) -> TcpProxy:
        with self._lock:
            listener, self._listener = self._listener, None
            sockets, self._sockets = self._sockets, set()
        for sock in [*([listener] if listener else []), *sockets]:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
        return self

    def _listen(self, silent: bool) -> None:
        self.down()
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        with self._lock:
            self._listener, self._silent = listener, silent
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            with self._lock:
                if self._listener is not listener:
                    client.close()
                    return
                self._sockets.add(client)
                silent = self._silent
            if silent:
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            with self._lock:
                self._sockets.add(upstream)
            threading.Thread(target=self._pipe, args=(client, upstream), daemon=True).start()
            threading.Thread(target=self._pipe, args=(upstream, client), daemon=True).start()

    def _pipe(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        for sock in (source, sink):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self.down()
