"""The one trace id of a request, in the forms each tool writes it.

OpenTelemetry generates X-Ray-compatible ids (`AwsXRayIdGenerator`: the first 32 bits are the
epoch second), so the same 128-bit number is a W3C trace id (`trace_id`, 32 hex) and an X-Ray
trace id (`xray_trace_id`, `1-xxxxxxxx-yyyyyyyyyyyyyyyyyyyyyyyy`). The request's ids are kept in a
context variable, so log records, Rollbar items and error bodies can read them anywhere.
"""

from __future__ import annotations

import re
from contextvars import ContextVar
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class TraceIds:
    """A request's trace id, the id of its server span (= its X-Ray segment), and its caller's span."""

    trace_id: int
    span_id: int
    parent_span_id: int | None
    sampled: bool

    @property
    def trace_id_hex(self) -> str:
        return format(self.trace_id, "032x")

    @property
    def xray_trace_id(self) -> str:
        hex_id = self.trace_id_hex
        return f"1-{hex_id[:8]}-{hex_id[8:]}"

    @property
    def span_id_hex(self) -> str:
        return format(self.span_id, "016x")

    @property
    def parent_span_id_hex(self) -> str | None:
        return format(self.parent_span_id, "016x") if self.parent_span_id else None

    def xray_header(self) -> str:
        """The `X-Amzn-Trace-Id` response header: the trace a client can look up, and if it was kept."""
        return f"Root={self.xray_trace_id};Sampled={int(self.sampled)}"


_current: ContextVar[TraceIds | None] = ContextVar("cruddur_trace_ids", default=None)


def current_ids() -> TraceIds | None:
    """The ids of the request being served, or None outside a traced request."""
    return _current.get()


def set_current_ids(ids: TraceIds | None) -> object:
    return _current.set(ids)


def reset_current_ids(token: object) -> None:
    _current.reset(token)


_XRAY_ID = re.compile(r"\b1-([0-9a-f]{8})-([0-9a-f]{24})\b", re.IGNORECASE)
_HEX_ID = re.compile(r"(?<![0-9a-f])[0-9a-f]{32}(?![0-9a-f])", re.IGNORECASE)


def find_trace_id(text: str) -> str | None:
    """The trace id (32 hex) in whatever a user copied: `Root=1-…;Sampled=1` from the response
    header, a 32-hex id, an error body, a `traceparent` or a JSON log line."""
    if match := _XRAY_ID.search(text):
        return (match[1] + match[2]).lower()
    if match := _HEX_ID.search(text):
        return match[0].lower()
    return None
