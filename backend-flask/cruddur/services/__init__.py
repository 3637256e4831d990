"""Use cases, one module each. They never import Flask: they take their dependencies as `Deps`."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime

from cruddur.store import Store
from cruddur.telemetry.tracing import Tracing, WorkSpan
from cruddur.timeutil import to_iso, utc_now


class ServiceError(Exception):
    """A request the service refuses for the client's reason, not a failure of the service."""

    code = "service_error"


class ValidationFailed(ServiceError):
    """Every validation rule the input broke, reported together."""

    code = "validation_failed"

    def __init__(self, codes: list[str]) -> None:
        super().__init__(", ".join(codes))
        self.codes = codes


class NotFound(ServiceError):
    """The thing a request names does not exist (or has expired)."""

    def __init__(self, code: str) -> None:
        super().__init__(code)
        self.code = code


@dataclass(frozen=True)
class Deps:
    """What every service works with; tests hand in fakes."""

    store: Store
    tracing: Tracing
    user_handle: str
    clock: Callable[[], datetime] = utc_now

    @contextmanager
    def service(self, name: str) -> Iterator[tuple[WorkSpan, datetime]]:
        """The span of one use case, with the attributes every use case shares, and its `now`.

        Refusals (`ServiceError`) are recorded as attributes and leave the span's status unset.
        """
        now = self.clock()
        with self.tracing.span(name, expected=(ServiceError,)) as span:
            span.set("app.user_handle", self.user_handle)
            span.detail("app.now", to_iso(now))
            try:
                yield span, now
            except ValidationFailed as refused:
                span.set("app.validation_errors", refused.codes)
                raise
            except NotFound as missing:
                span.set("app.not_found", missing.code)
                raise
