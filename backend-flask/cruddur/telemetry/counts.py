"""What each tool was given, sent and lost: one shape for the app's log and for metrics.

Each tool keeps its own `ToolCounts`, in its own module, where its items are queued, sent and
dropped; `Telemetry.tool_counts()` gathers them. For every tool:

- `queued`: items handed to the tool to send (spans, segments, log lines, Rollbar items),
  including those it then had to drop;
- `sent`: items its backend accepted;
- `dropped`: items lost on the way (queue full, failed after retries, rejected by the backend,
  still unsent when the shutdown deadline came).

`queued - sent - dropped` is what is still on its way. Counts are cumulative for this process: a
forked worker starts from zero.
"""

from __future__ import annotations

import functools
import logging
import os
import threading
import weakref
from collections.abc import Callable

FIELDS = ("queued", "sent", "dropped")


class ToolCounts:
    """Three counters for one tool, safe to add to from any thread (requests, senders)."""

    __slots__ = ("__weakref__", "_lock", "dropped", "queued", "sent")

    def __init__(self) -> None:
        self._reset()
        os.register_at_fork(after_in_child=functools.partial(_reset_in_child, weakref.ref(self)))

    def _reset(self) -> None:
        self._lock = threading.Lock()
        self.queued = self.sent = self.dropped = 0

    def add(self, queued: int = 0, sent: int = 0, dropped: int = 0) -> None:
        with self._lock:
            self.queued += queued
            self.sent += sent
            self.dropped += dropped

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return {"queued": self.queued, "sent": self.sent, "dropped": self.dropped}


def _reset_in_child(reference: weakref.ReferenceType[ToolCounts]) -> None:
    counts = reference()
    if counts is not None:
        counts._reset()


Counts = dict[str, dict[str, int]]


def describe(counts: Counts) -> str:
    """`opentelemetry 120 queued, 118 sent, 2 dropped; xray ...`, for people reading the line."""
    return "; ".join(f"{tool} " + ", ".join(f"{c[name]} {name}" for name in FIELDS) for tool, c in counts.items())


class CountsReporter:
    """Logs every tool's counts every `interval` seconds, from its own thread, when they changed.

    Its lines go to stdout and not to CloudWatch Logs (the handler leaves out this logger): a line
    sent there would change CloudWatch's counts, and so be reported again, forever.
    """

    def __init__(self, read: Callable[[], Counts], interval: float, logger: logging.Logger) -> None:
        self._read = read
        self._interval = interval
        self._log = logger
        self._stopped = threading.Event()
        self._last: Counts = {}
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """(Re)start the thread: at start-up, and in a worker forked from a master that built the app."""
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name="telemetry-counts", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopped.set()

    def _run(self) -> None:
        stopped = self._stopped
        while not stopped.wait(self._interval):
            self.report()

    def report(self) -> None:
        """One line, if anything changed since the last: WARNING when more was dropped, else INFO."""
        counts = self._read()
        if counts == self._last:
            return
        more_dropped = any(c["dropped"] > self._last.get(tool, {}).get("dropped", 0) for tool, c in counts.items())
        self._last = counts
        self._log.log(
            logging.WARNING if more_dropped else logging.INFO,
            "telemetry counts: %s",
            describe(counts),
            extra={"telemetry": counts},
        )
