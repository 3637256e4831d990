"""AWS X-Ray through its SDK, behind one seam so it can move to OpenTelemetry export.

The SDK is in maintenance mode since 2026-02-25 (support ends 2027-02-25). Everything that
touches it is here: the recorder, the middleware, the subsegments the tracing seam opens. With
`CRUDDUR_XRAY_MODE=otel` none of this is used and the OTEL spans reach X-Ray via a collector.

The segment never decides anything itself: it takes the request's trace id, its id, its parent
and its sampling decision from `TraceIds`, which come from the OpenTelemetry server span.
"""

from __future__ import annotations

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
from aws_xray_sdk.ext.util import calculate_segment_name
from flask import Flask, Response, request

from cruddur.telemetry.ids import current_ids
from cruddur.telemetry.settings import XRaySettings

log = logging.getLogger(__name__)

#: At most one warning this often while the daemon cannot be reached.
SEND_FAILURE_WARNING_INTERVAL_SECONDS = 60.0


class QuietUDPEmitter(UDPEmitter):
    """The SDK's non-blocking UDP emitter, minus a traceback per request while the daemon is down."""

    def __init__(self, daemon_address: str) -> None:
        super().__init__(daemon_address)
        self.failures = 0
        self._last_warning = float("-inf")
        self._lock = threading.Lock()

    def send_entity(self, entity: object) -> None:
        try:
            self._send_data(f'{{"format":"json","version":1}}\n{entity.serialize()}')
        except OSError as error:
            with self._lock:
                self.failures += 1
                now = time.monotonic()
                if now - self._last_warning < SEND_FAILURE_WARNING_INTERVAL_SECONDS:
                    return
                self._last_warning = now
            log.warning(
                "X-Ray daemon at %s:%s is not taking segments (%s); %d dropped so far",
                self.ip,
                self.port,
                error,
                self.failures,
            )


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
        plugins=(),
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
            subsegment.set_sql(dict(sql))
        return subsegment

    def end_subsegment(self, subsegment: object) -> None:
        self.recorder.end_subsegment()

    def fail_subsegment(self, subsegment: object, error: BaseException) -> None:
        subsegment.add_exception(error, stacktrace.get_stacktrace(limit=self.recorder.max_trace_back))


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

    def record_exception(self, error: BaseException) -> None:
        """Fault the request's segment with the exception and its stack (the app's 500 handler)."""
        ids = current_ids()
        if ids is None or not ids.sampled:
            return
        segment = self._recorder.current_segment()
        segment.put_http_meta(http.STATUS, 500)
        segment.add_exception(error, stacktrace.get_stacktrace(limit=self._recorder.max_trace_back))
