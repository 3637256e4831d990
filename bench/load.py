"""Load generators: wrk when it is on PATH, else a small Python one. Both are bounded in time.

Each run returns the same `LoadResult`: completed requests, errors, requests per second, and
the latency percentiles the report shows. Latency is measured from sending the request to the
last byte of the response (connection set-up excluded, as wrk does).
"""

from __future__ import annotations

import itertools
import math
import re
import shutil
import socket
import subprocess
import threading
import time
from dataclasses import dataclass

#: wrk's own limit on one request before it counts a timeout.
WRK_TIMEOUT_SECONDS = 5
_WRK_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3, "h": 3600e3}


@dataclass(frozen=True)
class LoadResult:
    requests: int
    errors: int
    seconds: float
    p50_ms: float
    p99_ms: float

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds > 0 else 0.0


def wrk_path() -> str | None:
    return shutil.which("wrk")


def wrk_version() -> str:
    """wrk prints its version in the first line of its usage text."""
    path = wrk_path()
    if path is None:
        return "wrk (not installed)"
    completed = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=10, check=False)  # noqa: S603
    first = (completed.stdout or completed.stderr).splitlines()
    return first[0].split(" Copyright")[0].strip() if first else "wrk"


def _wrk_duration_ms(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m|h)", text.strip())
    if match is None:
        raise ValueError(f"not a wrk duration: {text!r}")
    return float(match.group(1)) * _WRK_UNITS[match.group(2)]


def parse_wrk(output: str) -> LoadResult:
    """Read `wrk --latency` output: the request count and time, errors, and the 50%/99% latencies."""
    done = re.search(r"^\s*(\d+) requests in ([\d.]+\w+),", output, re.MULTILINE)
    p50 = re.search(r"^\s*50(?:\.0+)?%\s+(\S+)", output, re.MULTILINE)
    p99 = re.search(r"^\s*99(?:\.0+)?%\s+(\S+)", output, re.MULTILINE)
    if not (done and p50 and p99):
        raise ValueError(f"cannot read wrk's output:\n{output}")
    errors = 0
    if sockets := re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output):
        errors += sum(int(n) for n in sockets.groups())
    if non_2xx := re.search(r"Non-2xx or 3xx responses: (\d+)", output):
        errors += int(non_2xx.group(1))
    return LoadResult(
        requests=int(done.group(1)),
        errors=errors,
        seconds=_wrk_duration_ms(done.group(2)) / 1000,
        p50_ms=_wrk_duration_ms(p50.group(1)),
        p99_ms=_wrk_duration_ms(p99.group(1)),
    )


def run_wrk(url: str, connections: int, seconds: float) -> LoadResult:
    """One wrk thread (the generator's core is shared with the stand-ins), `connections` connections."""
    path = wrk_path()
    if path is None:
        raise RuntimeError("wrk is not on PATH")
    duration = max(1, round(seconds))
    command = [path, "-t1", f"-c{connections}", f"-d{duration}s", f"--timeout={WRK_TIMEOUT_SECONDS}s", "--latency", url]
    completed = subprocess.run(  # noqa: S603 - fixed argument list, no shell
        command, capture_output=True, text=True, timeout=duration + 60, check=False
    )
    if completed.returncode != 0:
        raise RuntimeError(f"wrk failed ({completed.returncode}): {completed.stderr or completed.stdout}")
    return parse_wrk(completed.stdout)


def percentile(sorted_values: list[float], fraction: float) -> float:
    """Nearest-rank percentile of an already sorted list (NaN when empty)."""
    if not sorted_values:
        return math.nan
    rank = max(1, math.ceil(fraction * len(sorted_values)))
    return sorted_values[rank - 1]


class _Connection:
    """One HTTP/1.1 client connection on a raw socket: keep-alive when the server allows it,
    a new connection when it answers `Connection: close` (as gunicorn's sync worker does)."""

    def __init__(self, host: str, port: int, request: bytes) -> None:
        self.address = (host, port)
        self.request = request
        self.sock: socket.socket | None = None
        self.buffer = b""

    def _open(self) -> socket.socket:
        sock = socket.create_connection(self.address, timeout=WRK_TIMEOUT_SECONDS)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock, self.buffer = sock, b""
        return sock

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    def _read_until(self, sock: socket.socket, marker: bytes) -> int:
        while (end := self.buffer.find(marker)) < 0:
            chunk = sock.recv(65536)
            if not chunk:
                raise ConnectionError("connection closed mid-response")
            self.buffer += chunk
        return end

    def get(self) -> tuple[int, float]:
        """Send the request and read the whole response; returns (status, seconds)."""
        sock = self.sock or self._open()
        started = time.perf_counter()
        sock.sendall(self.request)
        end = self._read_until(sock, b"\r\n\r\n")
        head = self.buffer[:end].decode("latin-1")
        self.buffer = self.buffer[end + 4 :]
        status_line, *header_lines = head.split("\r\n")
        status = int(status_line.split(" ", 2)[1])
        headers = {}
        for line in header_lines:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip().lower()
        length = int(headers.get("content-length", "0"))
        while len(self.buffer) < length:
            chunk = sock.recv(65536)
            if not chunk:
                raise ConnectionError("connection closed mid-body")
            self.buffer += chunk
        self.buffer = self.buffer[length:]
        elapsed = time.perf_counter() - started
        if headers.get("connection") == "close":
            self.close()
        return status, elapsed


def run_python(
    host: str,
    port: int,
    path: str,
    connections: int,
    seconds: float,
    max_requests: int | None = None,
    headers: dict[str, str] | None = None,
) -> LoadResult:
    """`connections` threads, each sending one request at a time (with `headers` added), until
    `seconds` pass or `max_requests` are sent, whichever comes first."""
    extra = "".join(f"{name}: {value}\r\n" for name, value in (headers or {}).items())
    request = (
        f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUser-Agent: cruddur-bench\r\nAccept: */*\r\n{extra}\r\n"
    ).encode()
    tickets = itertools.count()
    limit = max_requests if max_requests is not None else math.inf
    started = time.perf_counter()
    deadline = started + seconds
    latencies: list[list[float]] = [[] for _ in range(connections)]
    errors = [0] * connections

    def client(index: int) -> None:
        connection = _Connection(host, port, request)
        mine = latencies[index]
        try:
            while next(tickets) < limit and time.perf_counter() < deadline:
                try:
                    status, elapsed = connection.get()
                except OSError:
                    errors[index] += 1
                    connection.close()
                    continue
                if status == 200:
                    mine.append(elapsed)
                else:
                    errors[index] += 1
        finally:
            connection.close()

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(connections)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(seconds + 2 * WRK_TIMEOUT_SECONDS)
    elapsed = time.perf_counter() - started
    ordered = sorted(itertools.chain.from_iterable(latencies))
    return LoadResult(
        requests=len(ordered),
        errors=sum(errors),
        seconds=elapsed,
        p50_ms=percentile(ordered, 0.50) * 1000,
        p99_ms=percentile(ordered, 0.99) * 1000,
    )
