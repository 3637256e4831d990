"""The local trace file: spans and the log lines of their traces, kept on disk for `telemetry trace`.

In development, with no exporter configured, this is where OpenTelemetry sends: a JSON-lines file
(`{"span": ...}` or `{"log": ...}` per line) in the instance folder, so a trace can be read with
no Docker and no account. It is bounded: past `max_bytes` the file becomes `<name>.1`, replacing
the older one, so at most two generations are kept and the oldest spans go first. Several gunicorn
workers append to it; each batch is written under an exclusive lock on `<name>.lock`.

The request path only appends to memory: spans are written by the batch processor's thread, and
a log line waits in a bounded buffer for the next batch.
"""

from __future__ import annotations

import collections
import contextlib
import fcntl
import json
import logging
import os
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

#: One generation of the file; with the previous one, the file never holds more than twice this.
MAX_BYTES = 4 * 1024 * 1024
#: Log lines waiting for the next batch of spans, per process; beyond this the oldest are dropped.
MAX_PENDING_LOG_LINES = 2_000
#: How soon a finished span reaches the file (the batch processor's delay): `curl`, then read it.
EXPORT_DELAY_MILLIS = 200


def _hex(value: int | None, digits: int) -> str | None:
    return format(value, f"0{digits}x") if value else None


def _attributes(attributes: Any) -> dict[str, Any]:
    return {key: list(value) if isinstance(value, tuple) else value for key, value in (attributes or {}).items()}


def span_record(span: ReadableSpan) -> dict[str, Any]:
    """A finished span as the file keeps it: ids in hex, times in epoch nanoseconds."""
    context = span.get_span_context()
    return {
        "trace_id": _hex(context.trace_id, 32),
        "span_id": _hex(context.span_id, 16),
        "parent_id": _hex(span.parent.span_id, 16) if span.parent else None,
        "name": span.name,
        "kind": span.kind.name,
        "start": span.start_time,
        "end": span.end_time,
        "status": span.status.status_code.name,
        "status_message": span.status.description,
        "attributes": _attributes(span.attributes),
        "events": [
            {"name": event.name, "time": event.timestamp, "attributes": _attributes(event.attributes)}
            for event in span.events
        ],
        "service": span.resource.attributes.get("service.name"),
    }


class LocalTraceFile:
    """Appends lines to the bounded file, safely across processes; reads both generations back."""

    def __init__(self, path: Path, max_bytes: int = MAX_BYTES) -> None:
        self.path = Path(path)
        self.previous = self.path.with_name(self.path.name + ".1")
        self.lock_path = self.path.with_name(self.path.name + ".lock")
        self.max_bytes = max_bytes

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        with open(self.lock_path, "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def append(self, lines: Sequence[str]) -> None:
        """Write whole lines at the end, starting a new generation first when this one is full."""
        if not lines:
            return
        data = "".join(line + "\n" for line in lines).encode()
        with self._locked():
            try:
                full = self.path.stat().st_size >= self.max_bytes
            except FileNotFoundError:
                full = False
            if full:
                os.replace(self.path, self.previous)
            descriptor = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                os.write(descriptor, data)
            finally:
                os.close(descriptor)

    def records(self) -> Iterator[dict[str, Any]]:
        """Every record, oldest first; a line cut short (a writer killed mid-write) is skipped."""
        for path in (self.previous, self.path):
            try:
                handle = open(path, encoding="utf-8", errors="replace")  # noqa: SIM115 - closed below
            except FileNotFoundError:
                continue
            with handle:
                for line in handle:
                    with contextlib.suppress(ValueError):
                        record = json.loads(line)
                        if isinstance(record, dict):
                            yield record


class PendingLogLines(logging.Handler):
    """Keeps the JSON log lines of traced requests until the next batch of spans is written."""

    def __init__(self, limit: int = MAX_PENDING_LOG_LINES) -> None:
        super().__init__()
        self.lines: collections.deque[str] = collections.deque(maxlen=limit)

    def emit(self, record: logging.LogRecord) -> None:
        if getattr(record, "trace_id", None) is None:
            return
        try:
            self.lines.append(self.format(record))
        except Exception:  # a log line must never break the request that logs it
            self.handleError(record)

    def drain(self) -> list[str]:
        drained = []
        while True:
            try:
                drained.append(self.lines.popleft())
            except IndexError:
                return drained


class LocalSpanExporter(SpanExporter):
    """Writes each batch of spans, and the log lines logged meanwhile, to the local trace file."""

    def __init__(self, file: LocalTraceFile, log_lines: PendingLogLines | None = None) -> None:
        self.file = file
        self.log_lines = log_lines
        self._lock = threading.Lock()
        self._warned = False

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        lines = [json.dumps({"span": span_record(span)}, default=str, ensure_ascii=False) for span in spans]
        with self._lock:
            if self.log_lines is not None:
                # Each pending line is already JSON, made once by the app's formatter.
                lines.extend(f'{{"log": {line}}}' for line in self.log_lines.drain())
            try:
                self.file.append(lines)
            except OSError as error:
                if not self._warned:  # once: a read-only folder must not become a line per batch
                    self._warned = True
                    logging.getLogger(__name__).warning("the local trace file cannot be written: %s", error)
                return SpanExportResult.FAILURE
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        """Whatever was logged after the last batch is written too."""
        self.export([])

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return True


@dataclass
class Trace:
    """One trace from the file: its spans (in the order they ended) and its log lines."""

    trace_id: str
    spans: list[dict[str, Any]] = field(default_factory=list)
    logs: list[dict[str, Any]] = field(default_factory=list)

    @property
    def last_seen(self) -> int:
        return max((span.get("end") or 0 for span in self.spans), default=0)

    def as_dict(self) -> dict[str, Any]:
        return {"trace_id": self.trace_id, "spans": self.spans, "logs": self.logs}


def read_traces(file: LocalTraceFile) -> dict[str, Trace]:
    """Every trace with at least one span in the file, by trace id, with its log lines."""
    traces: dict[str, Trace] = {}
    logs: list[dict[str, Any]] = []
    for record in file.records():
        if isinstance(span := record.get("span"), dict) and span.get("trace_id"):
            traces.setdefault(span["trace_id"], Trace(span["trace_id"])).spans.append(span)
        elif isinstance(line := record.get("log"), dict) and line.get("trace_id"):
            logs.append(line)
    for line in logs:
        if (trace := traces.get(line["trace_id"])) is not None:
            trace.logs.append(line)
    return traces


def latest(traces: dict[str, Trace], count: int) -> list[Trace]:
    """The `count` traces that finished last, oldest of them first."""
    return sorted(traces.values(), key=lambda trace: trace.last_seen)[-count:]
