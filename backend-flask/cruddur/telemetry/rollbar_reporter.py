"""Rollbar, initialised by the factory and sent from one worker thread through a bounded queue.

pyrollbar's default handler starts a thread per item; its blocking handler would hold a request
on Rollbar's API. Here the item is built (and scrubbed) on the request thread, where the request
and the exception are at hand, and a payload handler moves it to a queue that one thread sends
from. A burst beyond the queue's size is dropped and counted, never queued without limit.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from pathlib import Path
from typing import Any

import rollbar
from opentelemetry.instrumentation.utils import suppress_instrumentation
from rollbar.lib.transform import Transform

from cruddur.telemetry.counts import ToolCounts
from cruddur.telemetry.enduser import current_user
from cruddur.telemetry.ids import current_ids
from cruddur.telemetry.scrub import REDACTED, SENSITIVE_NAME_FRAGMENTS, SENSITIVE_NAMES, is_sensitive, scrub_url
from cruddur.telemetry.settings import RollbarSettings

log = logging.getLogger(__name__)

MAX_QUEUED_ITEMS = 100
#: Seconds one call to Rollbar's API may take.
API_TIMEOUT_SECONDS = 3
_STOP = object()
#: pyrollbar's configuration is process-wide, so one reporter at a time owns its payload hook.
_active_reporter: RollbarReporter | None = None


#: Payload keys whose values are URLs: pyrollbar's own `url_fields`.
URL_KEYS = frozenset({"url", "link", "href"})


class ScrubSensitiveNames(Transform):
    """Applies the one scrub list to every key path in a Rollbar payload (headers, params, body) and
    to the query of every URL in it (`request.url`): pyrollbar's own URL scrubbing knows only exact
    names, so `?mytoken=` or `?x-amz-security-token=` would pass."""

    priority = 25

    def default(self, o: Any, key: tuple | None = None) -> Any:
        if key and any(is_sensitive(str(part)) for part in key):
            return REDACTED
        if key and isinstance(o, str) and str(key[-1]).lower() in URL_KEYS:
            return scrub_url(o)
        return o


class RollbarReporter:
    """Reports exceptions and messages with the request, the person and the trace ids."""

    def __init__(self, settings: RollbarSettings, max_queued: int = MAX_QUEUED_ITEMS) -> None:
        self.settings = settings
        self.counts = ToolCounts()
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=max_queued)
        self._abandoned = threading.Event()
        rollbar.init(
            settings.access_token,
            settings.environment,
            scrub_fields=[
                *SENSITIVE_NAME_FRAGMENTS,
                *sorted(SENSITIVE_NAMES),
                "set-cookie",
                "x-api-key",
                "api_key",
                "access_token",
            ],
            handler="blocking",
            endpoint=settings.endpoint,
            code_version=settings.code_version,
            timeout=API_TIMEOUT_SECONDS,
            root=str(Path(__file__).resolve().parents[2]),
            allow_logging_basic_config=False,
            locals={"enabled": False},
            capture_ip="anonymize",
            custom_transforms=[ScrubSensitiveNames()],
            suppress_reinit_warning=True,
        )
        # pyrollbar keeps one global configuration and ignores these on a second `init`:
        # the newest app in the process is the one reporting.
        rollbar.SETTINGS.update(access_token=settings.access_token, environment=settings.environment)
        global _active_reporter
        if _active_reporter is not None:
            rollbar.events.remove_payload_handler(_active_reporter._enqueue)
        _active_reporter = self
        rollbar.events.add_payload_handler(self._enqueue)
        self._start_worker()

    @property
    def dropped(self) -> int:
        return self.counts.dropped

    def _start_worker(self) -> None:
        self._worker = threading.Thread(target=self._send_queued, name="rollbar-sender", daemon=True)
        self._worker.start()

    def after_fork(self) -> None:
        self._queue = queue.Queue(maxsize=self._queue.maxsize)
        self._start_worker()

    def _trace_data(self) -> dict[str, str]:
        ids = current_ids()
        return {"trace_id": ids.trace_id_hex, "xray_trace_id": ids.xray_trace_id} if ids else {}

    def _person(self) -> dict[str, dict[str, str]]:
        """The request's user as Rollbar's `person` (id and username; never an email), when known."""
        user = current_user()
        return {"person": {"id": user.id, "username": user.handle}} if user else {}

    def report_exception(self, error: BaseException, request: Any) -> None:
        rollbar.report_exc_info(
            (type(error), error, error.__traceback__),
            request=request,
            extra_data=self._trace_data(),
            payload_data=self._person(),
        )

    def report_message(self, message: str, level: str, request: Any) -> None:
        rollbar.report_message(
            message, level, request=request, extra_data=self._trace_data(), payload_data=self._person()
        )

    def _enqueue(self, payload: dict, **_: Any) -> bool:
        """pyrollbar's payload hook: queue the item for the sender thread; pyrollbar sends nothing."""
        try:
            self._queue.put_nowait(payload)
        except queue.Full:
            self.counts.add(queued=1, dropped=1)
            dropped = self.counts.dropped
            if dropped == 1 or dropped % 100 == 0:
                log.warning("Rollbar: %d items dropped while the API could not keep up", dropped)
        else:
            self.counts.add(queued=1)
        return False

    def _send_queued(self) -> None:
        """The sender thread: its HTTP calls are Rollbar's, not the app's, so they are not traced."""
        with suppress_instrumentation():
            self._send_until_stopped()

    def _send_until_stopped(self) -> None:
        """Send until told to stop; once abandoned at the shutdown deadline, drop what is left and end."""
        while True:
            try:
                payload = self._queue.get(timeout=1.0)
            except queue.Empty:
                if self._abandoned.is_set():
                    return
                continue
            try:
                if payload is _STOP:
                    return
                if self._abandoned.is_set() or not self._send(payload):
                    self.counts.add(dropped=1)
                else:
                    self.counts.add(sent=1)
            finally:
                self._queue.task_done()

    def _send(self, payload: dict) -> bool:
        """Post one item; True when Rollbar took it.

        `rollbar.send_payload` swallows every failure, so the item API is called the way it calls
        it (`_serialize_payload`, `_post_api`: pyrollbar 1.5), to learn the outcome: a result on
        success, None when throttled (429) or for a 502, an exception for any other error.
        """
        try:
            result = rollbar._post_api(
                "item/", rollbar._serialize_payload(payload), access_token=self.settings.access_token
            )
        except Exception as error:
            log.warning("Rollbar: an item was not sent: %s", error)
            return False
        return result is not None

    def flush_and_close(self, deadline: float) -> None:
        """Send what is queued, then stop the sender; the caller bounds how long this may take."""
        rollbar.events.remove_payload_handler(self._enqueue)
        while True:
            try:
                self._queue.put(_STOP, timeout=max(0.01, deadline - time.monotonic()))
                break
            except queue.Full:
                if time.monotonic() >= deadline:
                    break
        self._worker.join(max(0.0, deadline - time.monotonic()))
        if self._worker.is_alive():
            self._abandoned.set()
            log.warning("Rollbar: the API did not take every item before the shutdown deadline")
