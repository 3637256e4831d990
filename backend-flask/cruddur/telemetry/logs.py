"""Logging, configured in one place: one JSON object per record, stamped with the request's trace ids.

The same formatter writes stdout and CloudWatch Logs (and gunicorn's own log, through
`gunicorn.conf.py`), so a line reads the same wherever it is found.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TextIO

from opentelemetry import trace

from cruddur.telemetry.enduser import current_user
from cruddur.telemetry.ids import current_ids
from cruddur.telemetry.scrub import REDACTED, is_sensitive, scrub_mapping, scrub_text

#: Attributes every LogRecord has; anything else on a record came from `extra=` and is written out.
_RECORD_FIELDS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}
_TRACE_FIELDS = ("trace_id", "xray_trace_id", "span_id", "user_id")
_PRIVATE_FIELDS = frozenset({"_cruddur_json"})
#: Libraries that log a line per HTTP call at INFO; their warnings still come through.
QUIET_LOGGERS = ("botocore", "boto3", "urllib3", "s3transfer", "werkzeug")
#: OpenTelemetry's propagators warn once per malformed entry of an incoming trace header, quoting the
#: caller's text (up to 180 times for one `baggage`): a hostile request must not become hundreds of lines.
CALLER_INPUT_LOGGERS = (
    "opentelemetry.baggage.propagation",
    "opentelemetry.trace.propagation.tracecontext",
    "opentelemetry.trace.span",
)


class TraceContextFilter(logging.Filter):
    """Stamps a record with the trace ids and user id of the request it was logged in, once, where it is logged."""

    def filter(self, record: logging.LogRecord) -> bool:
        if hasattr(record, "trace_id"):
            return True
        ids = current_ids()
        if ids is None:
            record.trace_id = record.xray_trace_id = record.span_id = record.user_id = None
            return True
        user = current_user()
        record.user_id = user.id if user is not None else None
        record.trace_id = ids.trace_id_hex
        record.xray_trace_id = ids.xray_trace_id
        context = trace.get_current_span().get_span_context()
        span_id = context.span_id if context.is_valid and context.trace_id == ids.trace_id else ids.span_id
        record.span_id = format(span_id, "016x")
        return True


class JsonFormatter(logging.Formatter):
    """`{"time", "level", "logger", "message", "trace_id", "xray_trace_id", "span_id", "user_id", ...extra}`."""

    def format(self, record: logging.LogRecord) -> str:
        """The record as JSON, made once however many handlers (stdout, CloudWatch) write it."""
        cached = getattr(record, "_cruddur_json", None)
        if cached is None:
            cached = record._cruddur_json = self._format(record)  # type: ignore[attr-defined]
        return cached

    def _format(self, record: logging.LogRecord) -> str:
        return json.dumps(self._entry(record), default=str, ensure_ascii=False)

    def _entry(self, record: logging.LogRecord) -> dict[str, Any]:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in _TRACE_FIELDS:
            if (value := getattr(record, name, None)) is not None:
                entry[name] = value
        for name, value in vars(record).items():
            if name in _RECORD_FIELDS or name in _TRACE_FIELDS or name in _PRIVATE_FIELDS or name in entry:
                continue
            entry[name] = REDACTED if is_sensitive(name) else scrub_mapping(value) if isinstance(value, dict) else value
        if record.exc_info:
            entry["exception"] = scrub_text(self.formatException(record.exc_info))
        elif record.exc_text:
            entry["exception"] = scrub_text(record.exc_text)
        return entry

    def fit(self, record: logging.LogRecord, max_bytes: int) -> str:
        """The record as JSON of at most `max_bytes` UTF-8 bytes, for a backend that limits a line.

        The trace ids come first, then time, level and logger, all whole; then `truncated: true`,
        the message (its start) and the exception (its end, where the error is), each cut with a
        marker saying how much was left out; extra fields stay if they fit, else are left out
        and named in `omitted`.
        """
        entry = self._entry(record)
        head = {name: entry.pop(name) for name in (*_TRACE_FIELDS, "time", "level", "logger") if name in entry}
        message, exception = str(entry.pop("message", "")), entry.pop("exception", None)
        fitted: dict[str, Any] = {**head, "truncated": True, "message": "", **entry}
        if exception is not None:
            fitted["exception"] = ""
        if _json_size(fitted) + 2 * _MARKER_RESERVE > max_bytes and entry:
            for name in entry:
                del fitted[name]
            fitted["omitted"] = sorted(entry)
        budget = max(0, max_bytes - _json_size(fitted))
        message_size = _json_size(message)
        exception_size = _json_size(exception) if exception is not None else 0
        if exception is None:
            message_budget = budget
        elif message_size + exception_size <= budget:
            message_budget = message_size
        else:
            message_budget = max(budget - exception_size, min(message_size, budget // 2))
        fitted["message"] = _cut(message, message_budget, keep_end=False)
        if exception is not None:
            fitted["exception"] = _cut(exception, budget - _json_size(fitted["message"]), keep_end=True)
        return json.dumps(fitted, default=str, ensure_ascii=False)


#: Room kept for "…[N bytes cut]" in a shortened field.
_MARKER_RESERVE = 32


def _json_size(value: Any) -> int:
    """Bytes `value` takes in a line (a string without its quotes)."""
    text = json.dumps(value, default=str, ensure_ascii=False).encode("utf-8", "surrogatepass")
    return len(text) - 2 if isinstance(value, str) else len(text)


def _cut(text: str, budget: int, keep_end: bool) -> str:
    """`text` within `budget` bytes of JSON, its start (or end) kept and a marker where it was cut."""
    full = size = _json_size(text)
    if full <= budget:
        return text
    keep, kept = len(text), text
    room = max(0, budget - _MARKER_RESERVE)
    while keep and size > room:
        keep = min(keep - 1, keep * room // size)
        kept = (text[len(text) - keep :] if keep_end else text[:keep]) if keep else ""
        size = _json_size(kept)
    marker = f"[{full - size} bytes cut]"
    return f"{marker}…{kept}" if keep_end else f"{kept}…{marker}"


def json_handler(handler: logging.Handler, role: str) -> logging.Handler:
    """Give a handler the JSON format and the trace ids: every handler of the app goes through this."""
    handler.setFormatter(JsonFormatter())
    handler.addFilter(TraceContextFilter())
    handler._cruddur_role = role  # type: ignore[attr-defined]
    return handler


def configure_logging(level: str | int, stream: TextIO | None = None) -> None:
    """Root logs JSON to stdout (or `stream`: a CLI command keeps stdout for its own output).
    Idempotent: a second app replaces the console handler the first installed."""
    root = logging.getLogger()
    for handler in [h for h in root.handlers if getattr(h, "_cruddur_role", None) == "stdout"]:
        root.removeHandler(handler)
    root.addHandler(json_handler(logging.StreamHandler(stream or sys.stdout), "stdout"))
    root.setLevel(level)
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    for name in CALLER_INPUT_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)


def add_handler(handler: logging.Handler, role: str) -> None:
    logging.getLogger().addHandler(json_handler(handler, role))


def remove_handler(handler: logging.Handler) -> None:
    logging.getLogger().removeHandler(handler)


def mute_stdout() -> Callable[[], None]:
    """Silence the stdout handler (for a command whose own output is the point); returns the undo."""
    handlers = [h for h in logging.getLogger().handlers if getattr(h, "_cruddur_role", None) == "stdout"]
    levels = [h.level for h in handlers]
    for handler in handlers:
        handler.setLevel(logging.CRITICAL + 1)

    def restore() -> None:
        for handler, level in zip(handlers, levels, strict=True):
            handler.setLevel(level)

    return restore
