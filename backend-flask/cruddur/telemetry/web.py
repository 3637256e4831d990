"""The per-request part of telemetry: the request's `TraceIds`, its response header, its access line,
and its metrics (duration by route and status, requests in flight).

Hooks run in this order: OpenTelemetry's server span starts, then `RequestTelemetry` reads its
ids (or, with OpenTelemetry off, continues the caller's trace or starts one, sampled by the same
sampler), then the X-Ray segment begins with those ids. Teardown runs in reverse.
"""

from __future__ import annotations

import logging
import time

from flask import Flask, Response, request
from opentelemetry import trace
from opentelemetry.instrumentation.wsgi import wsgi_getter
from opentelemetry.sdk.extension.aws.trace import AwsXRayIdGenerator
from opentelemetry.sdk.trace.sampling import Sampler
from opentelemetry.trace import SpanKind
from opentelemetry.util.http import ExcludeList

from cruddur.telemetry.enduser import reset_current_user, set_current_user
from cruddur.telemetry.ids import TraceIds, reset_current_ids, set_current_ids
from cruddur.telemetry.metrics import RequestMetrics
from cruddur.telemetry.otel import PROPAGATOR
from cruddur.telemetry.propagation import xray_caller

XRAY_RESPONSE_HEADER = "X-Amzn-Trace-Id"
_STATE_KEY = "cruddur.telemetry"

access_log = logging.getLogger("cruddur.access")


def ids_from_otel_span() -> TraceIds | None:
    """The ids of the active OpenTelemetry server span, when there is a valid one."""
    span = trace.get_current_span()
    context = span.get_span_context()
    if not context.is_valid:
        return None
    parent = getattr(span, "parent", None)
    return TraceIds(context.trace_id, context.span_id, parent.span_id if parent else None, context.trace_flags.sampled)


class _RequestState:
    __slots__ = ("failure_logged", "ids", "route", "started", "status", "token", "user_token")

    def __init__(self, ids: TraceIds, token: object) -> None:
        self.ids = ids
        self.token = token
        # No user until `Telemetry.identify` names one; cleared after the access line, which carries it.
        self.user_token = set_current_user(None)
        self.started = time.perf_counter()
        self.status = 0
        self.route: str | None = None
        self.failure_logged = False


def note_failure_logged() -> None:
    """The request's failure has its ERROR line (with the traceback): its access line is not a second one."""
    state: _RequestState | None = request.environ.get(_STATE_KEY)
    if state is not None:
        state.failure_logged = True


class RequestTelemetry:
    """Gives every traced request its ids, its `X-Amzn-Trace-Id` header and one access log line, and
    records its metrics when they are on (here rather than in the Flask instrumentation, which records
    them only when it also traces: metrics must work for CloudWatch alone)."""

    def __init__(self, app: Flask, sampler: Sampler, excluded_urls: ExcludeList, otel_on: bool) -> None:
        self.metrics: RequestMetrics | None = None
        self._sampler = sampler
        self._excluded = excluded_urls
        self._otel_on = otel_on
        self._ids = AwsXRayIdGenerator()
        app.before_request(self._begin)
        app.after_request(self._respond)
        app.teardown_request(self._finish)

    def _begin(self) -> None:
        if self._otel_on:
            # OpenTelemetry applied the same exclusions: no server span means an excluded request.
            ids = ids_from_otel_span()
            if ids is None:
                return
        elif self._excluded.url_disabled(request.url):
            return
        else:
            ids = self._ids_without_otel()
        state = request.environ[_STATE_KEY] = _RequestState(ids, set_current_ids(ids))
        if self.metrics is not None:
            rule = request.url_rule
            state.route = rule.rule if rule is not None else None
            self.metrics.started()

    def _ids_without_otel(self) -> TraceIds:
        """Continue the caller's trace or start one, and sample it as OpenTelemetry would."""
        caller_context = PROPAGATOR.extract(request.environ, getter=wsgi_getter)
        caller = trace.get_current_span(caller_context).get_span_context()
        if caller.is_valid:
            trace_id = caller.trace_id
        else:
            xray = xray_caller(caller_context)
            trace_id = xray.trace_id if xray is not None else self._ids.generate_trace_id()
        decision = self._sampler.should_sample(
            caller_context,
            trace_id,
            f"{request.method} {request.path}",
            SpanKind.SERVER,
            {"http.host": request.host, "http.method": request.method, "http.target": request.path},
        )
        return TraceIds(
            trace_id,
            self._ids.generate_span_id(),
            caller.span_id if caller.is_valid else None,
            decision.decision.is_sampled(),
        )

    def _respond(self, response: Response) -> Response:
        state: _RequestState | None = request.environ.get(_STATE_KEY)
        if state is not None:
            state.status = response.status_code
            response.headers[XRAY_RESPONSE_HEADER] = state.ids.xray_header()
        return response

    def _finish(self, exception: BaseException | None) -> None:
        state: _RequestState | None = request.environ.pop(_STATE_KEY, None)
        if state is None:
            return
        status = 500 if exception is not None else state.status
        seconds = time.perf_counter() - state.started
        try:
            if self.metrics is not None:
                self.metrics.finished(request.method, state.route, status, seconds)
            self._log_access(status, seconds, state.failure_logged)
        finally:
            reset_current_user(state.user_token)
            reset_current_ids(state.token)

    def _log_access(self, status: int, seconds: float, failure_logged: bool) -> None:
        access_log.log(
            logging.ERROR if status >= 500 and not failure_logged else logging.INFO,
            "%s %s %s",
            request.method,
            request.path,
            status,
            extra={
                "http": {
                    "method": request.method,
                    "path": request.path,
                    "status": status,
                    "duration_ms": round(seconds * 1000, 3),
                    "remote_addr": request.remote_addr,
                    "user_agent": request.user_agent.string or None,
                }
            },
        )
