"""The tracing seam the services and the store use: one span, in every tracer that is on.

Spans are made only inside a request that is being traced and was sampled: work outside a
request (start-up, the CLI) or in a dropped request costs a context-variable read.

A service writes `with tracing.span("home-activities") as span: span.set(...)` and gets an
OpenTelemetry span and an X-Ray subsegment with the same name, the same id and the same
attributes, both always closed. With no tracer on, the span is a no-op and costs almost nothing.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from cruddur.telemetry.ids import current_ids
from cruddur.telemetry.scrub import REDACTED, is_sensitive, scrub_exception

if TYPE_CHECKING:
    from opentelemetry.trace import Span, Tracer

AttributeValue = str | bool | int | float | Sequence[str]

_ANNOTATION_KEY = re.compile(r"[^A-Za-z0-9_]")


class SubsegmentSink(Protocol):
    """The X-Ray side of the seam (`cruddur.telemetry.xray.XRayTracing`)."""

    def begin_subsegment(self, name: str, span_id: int | None, sql: Mapping[str, str] | None) -> object | None: ...

    def end_subsegment(self, subsegment: object) -> None: ...

    def fail_subsegment(self, subsegment: object, error: BaseException) -> None: ...

    def note(self, key: str, value: AttributeValue) -> None:
        """Metadata on the entity in progress (X-Ray has no span events)."""
        ...


@dataclass(frozen=True)
class Database:
    """Where a store's queries go, described once for both tools (OTEL's stable database conventions
    and X-Ray's `sql` block). Nothing here may hold a password: it is sent with every query."""

    #: `db.system.name`: `sqlite` or `postgresql`.
    system: str
    #: `db.namespace`: the database's name.
    namespace: str
    #: X-Ray's `sql.database_type`.
    database_type: str
    #: X-Ray's `sql.url`: where the database is, without credentials.
    url: str
    server_address: str | None = None
    server_port: int | None = None
    user: str | None = None
    driver_version: str | None = None
    attributes: Mapping[str, AttributeValue] = field(init=False, repr=False)
    sql: Mapping[str, str] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        attributes: dict[str, AttributeValue] = {"db.system.name": self.system, "db.namespace": self.namespace}
        if self.server_address:
            attributes["server.address"] = self.server_address
        if self.server_port:
            attributes["server.port"] = self.server_port
        sql = {"database_type": self.database_type, "url": self.url}
        if self.user:
            sql["user"] = self.user
        if self.driver_version:
            sql["driver_version"] = self.driver_version
        object.__setattr__(self, "attributes", attributes)
        object.__setattr__(self, "sql", sql)


class WorkSpan:
    """What a service sees: attributes go to the OTEL span and, as annotations, to X-Ray."""

    __slots__ = ("_otel", "_xray")

    def __init__(self, otel: Span | None, xray: object | None) -> None:
        self._otel = otel
        self._xray = xray

    def set(self, key: str, value: AttributeValue) -> None:
        """An attribute worth searching on: an OTEL attribute and an indexed X-Ray annotation."""
        if is_sensitive(key):
            value = REDACTED
        if self._otel is not None:
            self._otel.set_attribute(key, value)
        if self._xray is not None:
            if isinstance(value, str | bool | int | float):
                self._xray.put_annotation(_ANNOTATION_KEY.sub("_", key), value)
            else:
                self._xray.put_metadata(key, list(value), "app")

    def detail(self, key: str, value: AttributeValue) -> None:
        """An attribute for reading, not searching: an OTEL attribute and X-Ray metadata."""
        if is_sensitive(key):
            value = REDACTED
        if self._otel is not None:
            self._otel.set_attribute(key, value)
        if self._xray is not None:
            self._xray.put_metadata(key, value if isinstance(value, str | bool | int | float) else list(value), "app")

    def details(self, attributes: Mapping[str, AttributeValue]) -> None:
        for key, value in attributes.items():
            self.detail(key, value)


class Tracing:
    """Opens matching spans in OpenTelemetry and X-Ray; either, both or neither may be on."""

    def __init__(self, tracer: Tracer | None = None, xray: SubsegmentSink | None = None) -> None:
        self.tracer = tracer
        self.xray = xray

    @contextmanager
    def span(
        self,
        name: str,
        *,
        attributes: Mapping[str, AttributeValue] | None = None,
        expected: tuple[type[BaseException], ...] = (),
        kind: SpanKind = SpanKind.INTERNAL,
        sql: Mapping[str, str] | None = None,
        leaf: bool = False,
        xray_name: str | None = None,
    ) -> Iterator[WorkSpan]:
        """A unit of work. Exceptions in `expected` (a client's mistake) leave the status unset;
        any other marks the span ERROR with the exception recorded, and is re-raised. A `leaf`
        span (one that never has children, such as a query) is not made the current span.
        `xray_name` names the X-Ray subsegment when it must differ from the span's name."""
        ids = current_ids()
        if ids is None or not ids.sampled or (self.tracer is None and self.xray is None):
            yield _NO_SPAN
            return
        if attributes:
            attributes = {key: REDACTED if is_sensitive(key) else value for key, value in attributes.items()}
        if self.tracer is None:
            with self._subsegment(xray_name or name, None, sql, attributes, expected) as work:
                yield work
            return
        started = (
            _ending(self.tracer.start_span(name, kind=kind, attributes=attributes))
            if leaf
            else self.tracer.start_as_current_span(
                name, kind=kind, attributes=attributes, record_exception=False, set_status_on_exception=False
            )
        )
        with started as otel_span:
            span_id = otel_span.get_span_context().span_id if otel_span.is_recording() else None
            with self._subsegment(xray_name or name, span_id, sql, attributes, expected, otel_span) as work:
                yield work

    def query(self, operation: str, statement: str, database: Database) -> AbstractContextManager[WorkSpan]:
        """A database call: an OTEL client span named `{operation} {database}` with the stable `db.*`
        attributes, and an X-Ray SQL subsegment named after the database alone, as the SDK's database
        patches and the collector's `awsxray` exporter name it: the service map draws one node per
        subsegment name, so one database is one node whatever the statement. `statement` holds
        placeholders, never values."""
        return self.span(
            f"{operation} {database.namespace}",
            kind=SpanKind.CLIENT,
            attributes={**database.attributes, "db.query.text": statement},
            sql={**database.sql, "sanitized_query": statement},
            leaf=True,
            xray_name=database.namespace,
        )

    def event(self, name: str, attributes: Mapping[str, AttributeValue]) -> None:
        """Something that happened during the current span (a wait, a retry): an OTEL span event, and
        metadata on the X-Ray entity in progress. Nothing outside a sampled request."""
        ids = current_ids()
        if ids is None or not ids.sampled:
            return
        if self.tracer is not None:
            trace.get_current_span().add_event(name, attributes)
        if self.xray is not None:
            for key, value in attributes.items():
                self.xray.note(key, value)

    @contextmanager
    def _subsegment(
        self,
        name: str,
        span_id: int | None,
        sql: Mapping[str, str] | None,
        attributes: Mapping[str, AttributeValue] | None,
        expected: tuple[type[BaseException], ...],
        otel_span: Span | None = None,
    ) -> Iterator[WorkSpan]:
        subsegment = self.xray.begin_subsegment(name, span_id, sql) if self.xray is not None else None
        if subsegment is not None and attributes and not sql:
            WorkSpan(None, subsegment).details(attributes)
        work = WorkSpan(otel_span, subsegment)
        try:
            yield work
        except expected:
            raise
        except Exception as error:
            scrub_exception(error)
            if otel_span is not None:
                otel_span.record_exception(error)
                otel_span.set_status(Status(StatusCode.ERROR, type(error).__name__))
            if subsegment is not None:
                self.xray.fail_subsegment(subsegment, error)
            raise
        finally:
            if subsegment is not None:
                self.xray.end_subsegment(subsegment)


@contextmanager
def _ending(span: Span) -> Iterator[Span]:
    """Ends a span that was never made current."""
    try:
        yield span
    finally:
        span.end()


_NO_SPAN = WorkSpan(None, None)
