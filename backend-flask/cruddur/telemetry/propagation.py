"""Continuing a caller's trace from every header real callers send.

A W3C `traceparent` wins when it is valid. Otherwise `X-Amzn-Trace-Id` is read as the X-Ray SDK
reads it (`aws_xray_sdk/core/models/trace_header.py`), not as OpenTelemetry's `AwsXRayPropagator`
does: that propagator drops a header without `Parent` (what a load balancer sends:
`Self=1-…;Root=1-…`) or with `Sampled=?`, so the request would start a new trace. Here a valid
`Root` is always kept as the trace id; a missing or invalid `Parent` makes the server span a root
span of that trace; a `Sampled` other than `0` or `1` leaves the decision to our sampler.

OpenTelemetry has no span context for "this trace id, no parent, no decision", so the caller is
kept in the extracted context (`xray_caller`): the sampler reads it to decide, and the tracer's
id generator reads it to give a root server span the caller's trace id.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.propagators.aws import AwsXRayPropagator
from opentelemetry.propagators.textmap import (
    CarrierT,
    Getter,
    Setter,
    TextMapPropagator,
    default_getter,
    default_setter,
)
from opentelemetry.sdk.extension.aws.trace import AwsXRayIdGenerator
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

XRAY_HEADER = "X-Amzn-Trace-Id"
_ROOT = re.compile(r"1-([0-9a-f]{8})-([0-9a-f]{24})")
_PARENT = re.compile(r"[0-9a-f]{16}")
_CALLER_KEY = otel_context.create_key("cruddur-xray-caller")


@dataclass(frozen=True, slots=True)
class XRayCaller:
    """What an `X-Amzn-Trace-Id` header says: a trace id, maybe a parent, maybe a decision."""

    trace_id: int
    parent_span_id: int | None
    sampled: bool | None


def parse_xray_header(header: str) -> XRayCaller | None:
    """The caller in an X-Ray header, or None without a valid `Root`.

    Like the SDK: `;`-separated `key=value`, the last of a key wins, `Self` and unknown keys are
    ignored, `Sampled` other than `0`/`1` (`?`, absent) means "decide here". Unlike the SDK, one
    malformed field (a trailing `;`) does not void the whole header, and ids must be well-formed.
    """
    root = parent = sampled = None
    for field in header.split(";"):
        key, _, value = field.partition("=")
        key = key.strip()
        if key == "Root":
            root = value.strip()
        elif key == "Parent":
            parent = value.strip()
        elif key == "Sampled":
            sampled = value.strip()
    match = _ROOT.fullmatch(root) if root else None
    if match is None:
        return None
    trace_id = int(match[1] + match[2], 16)
    if trace_id == 0:
        return None
    parent_id = int(parent, 16) if parent and _PARENT.fullmatch(parent) else None
    return XRayCaller(trace_id, parent_id or None, {"1": True, "0": False}.get(sampled or ""))


def xray_caller(context: Context | None = None) -> XRayCaller | None:
    """The X-Ray caller a request's context was extracted from, when that header was in charge."""
    return otel_context.get_value(_CALLER_KEY, context)


class CallerPropagator(TextMapPropagator):
    """Extracts `traceparent` (which wins) or `X-Amzn-Trace-Id`; injects both."""

    def __init__(self) -> None:
        self._w3c = TraceContextTextMapPropagator()
        self._xray = AwsXRayPropagator()

    def extract(
        self, carrier: CarrierT, context: Context | None = None, getter: Getter[CarrierT] = default_getter
    ) -> Context:
        extracted = self._w3c.extract(carrier, context, getter)
        if trace.get_current_span(extracted).get_span_context().is_valid:
            return extracted
        headers = getter.get(carrier, XRAY_HEADER)
        caller = parse_xray_header(headers[0]) if headers and len(headers) == 1 else None
        if caller is None:
            return extracted
        if caller.parent_span_id is not None:
            flags = TraceFlags(TraceFlags.SAMPLED if caller.sampled else TraceFlags.DEFAULT)
            parent = SpanContext(caller.trace_id, caller.parent_span_id, is_remote=True, trace_flags=flags)
            extracted = trace.set_span_in_context(NonRecordingSpan(parent), extracted)
        return otel_context.set_value(_CALLER_KEY, caller, extracted)

    def inject(
        self, carrier: CarrierT, context: Context | None = None, setter: Setter[CarrierT] = default_setter
    ) -> None:
        self._w3c.inject(carrier, context, setter)
        self._xray.inject(carrier, context, setter)

    @property
    def fields(self) -> set[str]:
        return self._w3c.fields | self._xray.fields


class CallerTraceIdGenerator(AwsXRayIdGenerator):
    """X-Ray-compatible ids; a root span started in a context extracted from an X-Ray caller
    without a `Parent` (a load balancer) takes the caller's trace id.

    The tracer asks for a trace id without passing the context, so this reads the current one:
    OpenTelemetry's `_start_internal_or_server_span` attaches the extracted context before it starts
    the server span (tests/test_continuation.py fails if that ever changes).
    """

    def generate_trace_id(self) -> int:
        caller = otel_context.get_value(_CALLER_KEY)
        return caller.trace_id if caller is not None else super().generate_trace_id()
