"""A load generator that runs in its own process, so the service's latency is not the test's GIL.

    python -m tests.support.load http://127.0.0.1:PORT --requests 400 --concurrency 2 --rate 100 \
        --path /api/activities/home --path /rollbar/test

`read` (the default) sends GETs, cycling through the paths; `write` has every client POST
activities, then read each one back and check its message. The run is bounded in count and in
time (`--max-seconds`) and prints one JSON object: statuses, every latency in ms, failures, and
the `X-Amzn-Trace-Id` of every answer.
Only loopback URLs are accepted: this is a test tool, never pointed at another machine.
"""

from __future__ import annotations

import argparse
import http.client
import json
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from urllib.parse import urlsplit

LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "::1"}
MAX_REQUESTS = 20_000
#: Failures are counted in full but described only this many times.
MAX_DESCRIBED_FAILURES = 20


@dataclass
class Tally:
    """What every client thread adds to, under one lock."""

    statuses: dict[str, int] = field(default_factory=dict)
    latencies_ms: list[float] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    failure_count: int = 0
    written: int = 0
    lost: list[str] = field(default_factory=list)
    trace_ids: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, status: str, latency_ms: float, failure: str | None = None, trace: str | None = None) -> None:
        with self.lock:
            self.statuses[status] = self.statuses.get(status, 0) + 1
            self.latencies_ms.append(round(latency_ms, 3))
            if trace is not None:
                self.trace_ids.append(trace)
            if failure is not None:
                self.failure_count += 1
                if len(self.failures) < MAX_DESCRIBED_FAILURES:
                    self.failures.append(failure)


class Client:
    """One connection per request (gunicorn's sync workers close every connection anyway)."""

    def __init__(self, host: str, port: int, timeout: float, tally: Tally) -> None:
        self.host, self.port, self.timeout, self.tally = host, port, timeout, tally

    def call(self, method: str, path: str, body: dict | None = None) -> tuple[int, bytes] | None:
        payload = json.dumps(body).encode() if body is not None else None
        headers = {"Content-Type": "application/json"} if payload is not None else {}
        started = time.perf_counter()
        connection = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
        try:
            connection.request(method, path, body=payload, headers=headers)
            response = connection.getresponse()
            data = response.read()
        except (OSError, http.client.HTTPException) as error:
            elapsed = (time.perf_counter() - started) * 1000
            self.tally.record(type(error).__name__, elapsed, f"{method} {path}: {error!r}")
            return None
        finally:
            connection.close()
        elapsed = (time.perf_counter() - started) * 1000
        failure = None if response.status == 200 else f"{method} {path}: {response.status} {data[:200]!r}"
        self.tally.record(str(response.status), elapsed, failure, response.getheader("X-Amzn-Trace-Id"))
        return response.status, data


def paced(count: int, interval: float, deadline: float):
    """Yield `count` times, one every `interval` seconds (catching up after a slow answer), until `deadline`."""
    start = time.monotonic()
    for index in range(count):
        due = start + index * interval
        now = time.monotonic()
        if now >= deadline:
            return
        if due > now:
            time.sleep(due - now)
        yield index


def read_client(client: Client, paths: list[str], count: int, offset: int, interval: float, deadline: float) -> None:
    for index in paced(count, interval, deadline):
        client.call("GET", paths[(offset + index) % len(paths)])


def write_client(client: Client, name: str, count: int, interval: float, deadline: float) -> None:
    created: list[tuple[str, str]] = []
    for index in paced(count, interval, deadline):
        message = f"load {name} #{index} {uuid.uuid4().hex[:8]}"
        answer = client.call("POST", "/api/activities", {"message": message, "ttl": "7-days"})
        if answer is not None and answer[0] == 200:
            created.append((json.loads(answer[1])["uuid"], message))
    with client.tally.lock:
        client.tally.written += len(created)
    for activity_uuid, message in created:
        if time.monotonic() >= deadline:
            break
        answer = client.call("GET", f"/api/activities/{activity_uuid}")
        if answer is None or answer[0] != 200 or json.loads(answer[1]).get("message") != message:
            with client.tally.lock:
                client.tally.lost.append(activity_uuid)


def run(
    url: str,
    requests: int,
    concurrency: int,
    paths: list[str],
    mode: str,
    rate: float,
    timeout: float,
    max_seconds: float,
) -> dict:
    parts = urlsplit(url)
    if parts.hostname not in LOOPBACK_HOSTS:
        raise SystemExit(f"refusing to load {parts.hostname}: only loopback addresses are allowed")
    if not 0 < requests <= MAX_REQUESTS:
        raise SystemExit(f"--requests must be between 1 and {MAX_REQUESTS}")
    tally = Tally()
    deadline = time.monotonic() + max_seconds
    per_client = [requests // concurrency + (1 if i < requests % concurrency else 0) for i in range(concurrency)]
    interval = concurrency / rate if rate > 0 else 0.0
    threads = []
    for number, count in enumerate(per_client):
        client = Client(parts.hostname, parts.port or 80, timeout, tally)
        if mode == "write":
            target, args = write_client, (client, f"c{number}", count, interval, deadline)
        else:
            target, args = read_client, (client, paths, count, number, interval, deadline)
        threads.append(threading.Thread(target=target, args=args, name=f"load-{number}"))
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return {
        "elapsed_seconds": round(time.monotonic() - started, 3),
        "timed_out": time.monotonic() >= deadline,
        "statuses": tally.statuses,
        "latencies_ms": tally.latencies_ms,
        "failure_count": tally.failure_count,
        "failures": tally.failures,
        "written": tally.written,
        "lost": tally.lost,
        "trace_ids": tally.trace_ids,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url")
    parser.add_argument("--requests", type=int, default=100, help="in all, over every client (POSTs in write mode)")
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--path", action="append", dest="paths", help="GET these in turn (read mode)")
    parser.add_argument("--mode", choices=["read", "write"], default="read")
    parser.add_argument("--rate", type=float, default=0.0, help="requests per second in all; 0 means flat out")
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds one request may take")
    parser.add_argument("--max-seconds", type=float, default=60.0, help="the whole run stops by then")
    options = parser.parse_args(argv)
    result = run(
        options.url,
        options.requests,
        options.concurrency,
        options.paths or ["/api/activities/home"],
        options.mode,
        options.rate,
        options.timeout,
        options.max_seconds,
    )
    json.dump(result, sys.stdout)


if __name__ == "__main__":
    main()
