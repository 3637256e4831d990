"""AWS X-Ray through its SDK, behind one seam so it can move to OpenTelemetry export.

The SDK is in maintenance mode since 2026-02-25 (support ends 2027-02-25). Everything that
touches it is here: the recorder, the middleware, the subsegments the tracing seam opens. With
`CRUDDUR_XRAY_MODE=otel` none of this is used and the OTEL spans reach X-Ray via a collector.

The segment never decides anything itself: it takes the request's trace id, its id, its parent
and its sampling decision from `TraceIds`, which come from the OpenTelemetry server span.
"""

from __future__ import annotations

import errno
import json
import logging
import random
import threading
import time
from collections.abc import Mapping

from aws_xray_sdk.core.emitters.udp_emitter import UDPEmitter
from aws_xray_sdk.core.models import http
from aws_xray_sdk.core.models.entity import Entity
from aws_xray_sdk.core.models.trace_header import TraceHeader
from aws_xray_sdk.core.recorder import AWSXRayRecorder
from aws_xray_sdk.core.utils import stacktrace
from aws_xray_sdk.ext.flask.middleware import XRayMiddleware
from aws_xray_sdk.ext.util import calculate_segment_name, get_hostname, strip_url
from flask import Flask, Response, request
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor

from cruddur.telemetry.counts import ToolCounts
from cruddur.telemetry.enduser import EndUser
from cruddur.telemetry.ids import current_ids
from cruddur.telemetry.settings import XRaySettings

log = logging.getLogger(__name__)

#: At most one warning of each kind this often while segments cannot be sent.
SEND_FAILURE_WARNING_INTERVAL_SECONDS = 60.0
#: The largest UDP payload over IPv4 (65,535 bytes less the IP and UDP headers). A larger datagram
#: is refused whole (`Message too long`), and the X-Ray daemon reads at most 64 KB per datagram.
MAX_DATAGRAM_BYTES = 65_507
PROTOCOL_HEADER = '{"format":"json","version":1}\n'
#: Characters of SQL a subsegment's `sanitized_query` keeps; the OTEL span keeps the statement whole.
MAX_SANITIZED_QUERY_CHARS = 2048
TRUNCATED = "…"


def split_document(document: dict, budget: int) -> list[tuple[str, str]]:
    """(name, JSON) documents of at most `budget` bytes that together hold `document` and its subtree.

    The SDK streams subsegments out by count only; a segment over the UDP limit is lost whole. As the
    Java SDK's emitter does, such a document keeps as many of its subsegments inline as fit and each
    other one becomes its own subsegment document (`type`, `parent_id` and `trace_id` are already on
    it), recursively. A document still over `budget` with no subsegment left is returned as it is,
    for the caller to report. JSON from `json.dumps` is ASCII, so its length is its size in bytes.
    """
    children = document.pop("subsegments", None) or []
    text = json.dumps(document, default=str)
    documents: list[tuple[str, str]] = []
    kept: list[str] = []
    size = len(text) + len(',"subsegments":[]')
    for child in children:
        child_text = json.dumps(child, default=str)
        if size + len(child_text) + 1 <= budget:
            kept.append(child_text)
            size += len(child_text) + 1
        elif len(child_text) <= budget:
            documents.append((child.get("name", ""), child_text))
        else:
            documents.extend(split_document(child, budget))
    if kept:
        text = f'{text[:-1]},"subsegments":[{",".join(kept)}]}}'
    documents.append((document.get("name", ""), text))
    return documents


class QuietUDPEmitter(UDPEmitter):
    """The SDK's non-blocking UDP emitter, minus a traceback per request while the daemon is down,
    and with documents over the datagram limit split by size rather than lost.

    `counts` counts documents (segments, subsegments the SDK streams on their own, and the parts
    of a split one): a UDP send has no queue, so each is sent or dropped at once.
    """

    def __init__(self, daemon_address: str) -> None:
        super().__init__(daemon_address)
        self.counts = ToolCounts()
        self.failures = 0
        self._last_warning: dict[str, float] = {}
        self._lock = threading.Lock()

    def send_entity(self, entity: Entity) -> None:
        document = entity.serialize()
        if len(PROTOCOL_HEADER) + len(document) <= MAX_DATAGRAM_BYTES:
            self._send(entity.name, document)
            return
        for name, part in split_document(entity.to_dict(), MAX_DATAGRAM_BYTES - len(PROTOCOL_HEADER)):
            self._send(name, part)

    def _send(self, name: str, document: str) -> None:
        size = len(PROTOCOL_HEADER) + len(document)
        if size > MAX_DATAGRAM_BYTES:
            self._dropped(
                "oversize",
                "X-Ray: the %d-byte document of %r is over the %d-byte UDP datagram limit even on its own; "
                "dropped (%d dropped so far)",
                size,
                name,
                MAX_DATAGRAM_BYTES,
            )
            return
        try:
            self._send_data(PROTOCOL_HEADER + document)
            self.counts.add(queued=1, sent=1)
        except OSError as error:
            if error.errno == errno.EMSGSIZE:
                self._dropped(
                    "oversize",
                    "X-Ray: this system refused the %d-byte datagram of %r as too long (%s); "
                    "dropped (%d dropped so far)",
                    size,
                    name,
                    error,
                )
            else:
                self._dropped(
                    "unreachable",
                    "X-Ray daemon at %s:%s is not taking segments (%s); %d dropped so far",
                    self.ip,
                    self.port,
                    error,
                )

    def _dropped(self, kind: str, message: str, *args: object) -> None:
        self.counts.add(queued=1, dropped=1)
        with self._lock:
            self.failures += 1
            failures = self.failures
            now = time.monotonic()
            if now - self._last_warning.get(kind, float("-inf")) < SEND_FAILURE_WARNING_INTERVAL_SECONDS:
                return
            self._last_warning[kind] = now
        log.warning(message, *args, failures)


def _random_entity_id(_entity: Entity) -> str:
    return format(random.getrandbits(64), "016x")


def build_recorder(settings: XRaySettings) -> AWSXRayRecorder:
    """A recorder for this app: our own instance, so tests and apps never share configuration.

    The SDK draws every entity id from `os.urandom`, a system call that lets a busy export thread
    take the GIL mid-request; the ids of a request's entities are the OTEL spans' anyway, so the
    placeholder is drawn from `random` instead (process-wide: it is the SDK's one id generator).
    """
    Entity._generate_random_id = _random_entity_id
    recorder = AWSXRayRecorder()
    recorder.configure(
        service=settings.service_name,
        sampling=False,
        context_missing="LOG_ERROR",
        daemon_address=settings.daemon_address,
        emitter=QuietUDPEmitter(settings.daemon_address),
        dynamic_naming=settings.dynamic_naming,
        plugins=settings.plugins,
    )
    return recorder


class XRaySubsegments:
    """The X-Ray side of the tracing seam: subsegments that carry the OTEL span's id."""

    def __init__(self, recorder: AWSXRayRecorder) -> None:
        self.recorder = recorder

    def begin_subsegment(self, name: str, span_id: int | None, sql: Mapping[str, str] | None) -> object | None:
        subsegment = self.recorder.begin_subsegment(name, "remote" if sql else "local")
        if subsegment is None:
            return None
        if span_id:
            subsegment.id = format(span_id, "016x")
        if sql:
            sql = dict(sql)
            query = sql.get("sanitized_query")
            if query and len(query) > MAX_SANITIZED_QUERY_CHARS:
                sql["sanitized_query"] = query[:MAX_SANITIZED_QUERY_CHARS] + TRUNCATED
            subsegment.set_sql(sql)
        return subsegment

    def end_subsegment(self, subsegment: object) -> None:
        self.recorder.end_subsegment()

    def fail_subsegment(self, subsegment: object, error: BaseException) -> None:
        subsegment.add_exception(error, stacktrace.get_stacktrace(limit=self.recorder.max_trace_back))

    def note(self, key: str, value: object) -> None:
        entity = self.recorder.get_trace_entity()
        if entity is not None:
            entity.put_metadata(key, value, "app")


#: The instrumentation whose client spans are the app's outgoing HTTP calls.
REQUESTS_SCOPE = "opentelemetry.instrumentation.requests"


class OutgoingCallSubsegments(SpanProcessor):
    """An X-Ray subsegment for each outgoing `requests` call, with the OTEL client span's id.

    The call carries `X-Amzn-Trace-Id: …;Parent=<client span id>` (and the same id in `traceparent`);
    without an X-Ray document of that id, the callee's segment would point at nothing. As the SDK's
    own `requests` patch does (`aws_xray_sdk/ext/requests/patch.py`), the subsegment is remote, named
    after the host, with the URL (without its query), method and status, and a fault when the call
    failed. It begins when the client span starts and ends when it ends: the span is current for the
    whole call, so the subsegment nests where the span does.
    """

    def __init__(self, recorder: AWSXRayRecorder) -> None:
        self.recorder = recorder
        self._open: dict[int, Entity] = {}

    def on_start(self, span: Span, parent_context: object = None) -> None:
        if span.instrumentation_scope is None or span.instrumentation_scope.name != REQUESTS_SCOPE:
            return
        ids = current_ids()
        if ids is None or not ids.sampled or self.recorder.current_segment() is None:
            return
        attributes = span.attributes
        url = str(attributes.get("url.full") or attributes.get("http.url") or "")
        subsegment = self.recorder.begin_subsegment(get_hostname(url), "remote")
        if subsegment is None:
            return
        subsegment.id = format(span.context.span_id, "016x")
        self._open[span.context.span_id] = subsegment

    def on_end(self, span: ReadableSpan) -> None:
        if not self._open:
            return
        subsegment = self._open.pop(span.context.span_id, None)
        if subsegment is None:
            return
        attributes = span.attributes
        url = attributes.get("url.full") or attributes.get("http.url")
        subsegment.put_http_meta(http.URL, strip_url(str(url)) if url else None)
        subsegment.put_http_meta(http.METHOD, attributes.get("http.request.method") or attributes.get("http.method"))
        status = attributes.get("http.response.status_code") or attributes.get("http.status_code")
        if status:
            subsegment.put_http_meta(http.STATUS, status)
        failure = next((event for event in span.events if event.name == "exception"), None)
        if failure is not None:
            # The type only: a connection error's message repeats the URL, query string and all.
            error_type = str(failure.attributes.get("exception.type", "Exception")).rsplit(".", 1)[-1]
            subsegment.add_exception(type(error_type, (Exception,), {})(), [], remote=True)
        if self.recorder.current_subsegment() is subsegment:
            self.recorder.end_subsegment(span.end_time / 1e9 if span.end_time else None)


class LinkedXRayMiddleware(XRayMiddleware):
    """`XRayMiddleware` whose segment is the OTEL server span under another name.

    Same trace id, same id, same parent, same sampling decision; requests excluded from tracing
    (the health check) get no segment at all.
    """

    def __init__(self, app: Flask, recorder: AWSXRayRecorder) -> None:
        super().__init__(app, recorder)

    def _before_request(self) -> None:
        ids = current_ids()
        if ids is None:
            return
        segment = self._recorder.begin_segment(
            name=calculate_segment_name(request.host, self._recorder),
            traceid=ids.xray_trace_id,
            parent_id=ids.parent_span_id_hex,
            sampling=1 if ids.sampled else 0,
        )
        segment.id = ids.span_id_hex
        segment.trace_id = ids.xray_trace_id
        segment.save_origin_trace_header(
            TraceHeader(root=ids.xray_trace_id, parent=ids.parent_span_id_hex, sampled=int(ids.sampled))
        )
        if not ids.sampled:
            return
        segment.put_http_meta(http.URL, f"{request.scheme}://{request.host}{request.path}")
        segment.put_http_meta(http.METHOD, request.method)
        segment.put_http_meta(http.USER_AGENT, request.headers.get("User-Agent"))
        forwarded_for = request.headers.get("X-Forwarded-For")
        segment.put_http_meta(http.CLIENT_IP, forwarded_for or request.remote_addr)
        if forwarded_for:
            segment.put_http_meta(http.X_FORWARDED_FOR, True)

    def _after_request(self, response: Response) -> Response:
        ids = current_ids()
        if ids is None or not ids.sampled:
            return response
        segment = self._recorder.current_segment()
        segment.put_http_meta(http.STATUS, response.status_code)
        if response.content_length is not None:
            segment.put_http_meta(http.CONTENT_LENGTH, response.content_length)
        return response

    def _teardown_request(self, exception: BaseException | None) -> None:
        if current_ids() is None:
            return
        super()._teardown_request(exception)

    def identify(self, user: EndUser) -> None:
        """The request's user: the segment's indexed `user` field (the id) and the handle as an annotation."""
        ids = current_ids()
        if ids is None or not ids.sampled:
            return
        segment = self._recorder.current_segment()
        if segment is None:
            return
        segment.set_user(user.id)
        segment.put_annotation("app_user_handle", user.handle)

    def record_exception(self, error: BaseException) -> None:
        """Fault the request's segment with the exception and its stack (the app's 500 handler)."""
        ids = current_ids()
        if ids is None or not ids.sampled:
            return
        segment = self._recorder.current_segment()
        segment.put_http_meta(http.STATUS, 500)
        segment.add_exception(error, stacktrace.get_stacktrace(limit=self._recorder.max_trace_back))
