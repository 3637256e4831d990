"""Hostile trace headers: a malformed, oversized or hostile `traceparent`, `tracestate`, `baggage` or
`X-Amzn-Trace-Id` is ignored safely (a valid X-Ray `Root` beside hostile fields is still kept, as the
X-Ray SDK keeps it; see tests/test_continuation.py).

The request succeeds; it gets a fresh trace id in X-Ray format (the epoch second, then 24 random hex
digits) in its response header, on its server span and on its X-Ray segment; nothing of the header
comes back in the response; every log line stays one JSON object; no error or exception is logged.
Values reach the app through the WSGI environ directly, as a server hands them over (latin-1 text),
so CR/LF and other bytes a client library would refuse can be tried too.
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from flask import Flask
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from cruddur import create_app
from tests.conftest import ISOLATED_PREFIXES
from tests.support.xray_daemon import FakeXRayDaemon

HOME = "/api/activities/home"
TRACE_HEADER = re.compile(r"^Root=1-([0-9a-f]{8})-([0-9a-f]{24});Sampled=[01]$")
VALID_TRACE = "5759e988bd862e3fe1be46a994272793"
VALID_SPAN = "53995c3f42cd8ad8"
VALID_TRACEPARENT = f"00-{VALID_TRACE}-{VALID_SPAN}-01"
VALID_XRAY = f"Root=1-{VALID_TRACE[:8]}-{VALID_TRACE[8:]};Parent={VALID_SPAN};Sampled=1"
ENVIRON_KEYS = {
    "traceparent": "HTTP_TRACEPARENT",
    "tracestate": "HTTP_TRACESTATE",
    "baggage": "HTTP_BAGGAGE",
    "x-amzn-trace-id": "HTTP_X_AMZN_TRACE_ID",
}
SCRIPT = "<script>alert('pwned')</script>"
CRLF = "\r\nSet-Cookie: pwned=1\r\nX-Injected: yes"

#: (id, headers, markers that must never come back). Every one of these must start a new trace.
NEW_TRACE_CASES = [
    ("traceparent-garbage", {"traceparent": "garbage"}, ["garbage"]),
    ("traceparent-not-hex", {"traceparent": f"00-{'z' * 32}-{'z' * 16}-01"}, ["zzzzzzzz"]),
    ("traceparent-zero-trace", {"traceparent": f"00-{'0' * 32}-{VALID_SPAN}-01"}, [VALID_SPAN]),
    ("traceparent-zero-span", {"traceparent": f"00-{VALID_TRACE}-{'0' * 16}-01"}, [VALID_TRACE]),
    ("traceparent-version-ff", {"traceparent": f"ff-{VALID_TRACE}-{VALID_SPAN}-01"}, [VALID_TRACE]),
    ("traceparent-v00-extra-field", {"traceparent": f"{VALID_TRACEPARENT}-extra"}, [VALID_TRACE, "extra"]),
    ("traceparent-uppercase", {"traceparent": VALID_TRACEPARENT.upper()}, [VALID_TRACE.upper()]),
    ("traceparent-10kb", {"traceparent": "00-" + "a" * 10_000}, ["a" * 64]),
    ("traceparent-10kb-tail", {"traceparent": f"{VALID_TRACEPARENT}-{'x' * 10_000}"}, [VALID_TRACE, "x" * 64]),
    ("traceparent-script", {"traceparent": SCRIPT}, ["<script>", "pwned"]),
    ("traceparent-crlf", {"traceparent": VALID_TRACEPARENT + CRLF}, [VALID_TRACE, "pwned", "Injected"]),
    ("traceparent-nul", {"traceparent": f"00-{VALID_TRACE}\x00-{VALID_SPAN}-01"}, [VALID_TRACE, "\x00"]),
    ("traceparent-latin1", {"traceparent": "00-" + "\xe9" * 32 + "-" + "\xff" * 16 + "-01"}, ["\xe9\xe9", "\xff\xff"]),
    ("xray-root-zzzz", {"x-amzn-trace-id": "Root=1-zzzz"}, ["zzzz"]),
    ("xray-root-not-hex", {"x-amzn-trace-id": "Root=1-zzzzzzzz-zzzzzzzzzzzzzzzzzzzzzzzz;Sampled=1"}, ["zzzzzzzz"]),
    ("xray-negative-root", {"x-amzn-trace-id": "Root=1--759e988-bd862e3fe1be46a994272793;Sampled=1"}, ["-759e988"]),
    ("xray-dozens-of-keys", {"x-amzn-trace-id": ";".join(f"Key{i}=<b>{i}</b>" for i in range(60))}, ["<b>"]),
    ("xray-10kb", {"x-amzn-trace-id": "Root=1-" + "f" * 10_000}, ["f" * 64]),
    ("xray-crlf", {"x-amzn-trace-id": "Root=1-zzzz" + CRLF}, ["pwned", "Injected"]),
    ("xray-latin1", {"x-amzn-trace-id": "Root=1-\xe9\xe9\xe9\xe9\xe9\xe9\xe9\xe9-" + "\xff" * 24}, ["\xe9\xe9"]),
    ("xray-no-equals", {"x-amzn-trace-id": "Root"}, []),
    (
        "both-hostile",
        {"traceparent": SCRIPT, "x-amzn-trace-id": SCRIPT + CRLF, "tracestate": SCRIPT, "baggage": SCRIPT},
        ["<script>", "pwned"],
    ),
    ("tracestate-without-traceparent", {"tracestate": f"congo={VALID_TRACE}"}, [VALID_TRACE]),
    ("baggage-10kb", {"baggage": "k=" + "v" * 10_000}, ["v" * 64]),
    ("baggage-script-and-crlf", {"baggage": f"user={SCRIPT},{CRLF}"}, ["<script>", "pwned"]),
]

#: An X-Ray header whose Root is valid: the Root is kept as the trace id, as the X-Ray SDK keeps it,
#: whatever else the header holds; a malformed Parent is no parent; an unknown Sampled is decided here.
#: (id, header, the parent span id kept, markers that must never come back)
ROOT_KEPT_CASES = [
    ("xray-sampled-question", VALID_XRAY.replace("Sampled=1", "Sampled=?"), VALID_SPAN, []),
    ("xray-sampled-garbage", VALID_XRAY.replace("Sampled=1", "Sampled=<b>yes</b>"), VALID_SPAN, ["<b>"]),
    ("xray-parent-script", f"Root=1-{VALID_TRACE[:8]}-{VALID_TRACE[8:]};Parent={SCRIPT}", None, [SCRIPT]),
    ("xray-parent-crlf", f"Root=1-{VALID_TRACE[:8]}-{VALID_TRACE[8:]};Parent={VALID_SPAN}{CRLF}", None, ["pwned"]),
    ("xray-self-script", f"Self={SCRIPT};Root=1-{VALID_TRACE[:8]}-{VALID_TRACE[8:]};Lineage=<b>", None, [SCRIPT]),
    ("xray-root-10kb-neighbour", f"Root=1-{VALID_TRACE[:8]}-{VALID_TRACE[8:]};Junk={'j' * 10_000}", None, ["j" * 64]),
]

#: A valid traceparent (continued, as it must be) with a hostile companion header. A malformed tracestate
#: is dropped whole; `k=<script>...` is well-formed W3C (printable ASCII without `,` or `=`), so it is kept
#: for the span, but it is never echoed either.
CONTINUED_CASES = [
    ("tracestate-10kb", {"tracestate": "k=" + "v" * 10_000}, ["v" * 64], True),
    ("tracestate-script", {"tracestate": f"k={SCRIPT}"}, ["<script>"], False),
    ("tracestate-dozens-of-keys", {"tracestate": ",".join(f"k{i}=v{i}" for i in range(60))}, ["k59=v59"], True),
    ("tracestate-crlf", {"tracestate": "k=v" + CRLF}, ["pwned", "Injected"], True),
    ("baggage-hundreds-of-keys", {"baggage": ",".join(f"k{i}=v{i}" for i in range(300))}, ["k299=v299"], True),
    ("baggage-script", {"baggage": f"{SCRIPT}={SCRIPT}"}, ["<script>"], True),
]


class RecordList(logging.Handler):
    """Every record logged while a request is served, to look for errors and exceptions."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def records():
    handler = RecordList()
    logging.getLogger().addHandler(handler)
    yield handler.records
    logging.getLogger().removeHandler(handler)


def environ(headers: dict[str, str]) -> dict[str, str]:
    return {ENVIRON_KEYS[name]: value for name, value in headers.items()}


def server_span(span_exporter):
    [span] = [s for s in span_exporter.get_finished_spans() if s.kind == SpanKind.SERVER]
    return span


def assert_nothing_echoed(response, clean_header_names: set[str], markers: list[str], values: list[str]) -> None:
    assert set(response.headers.keys()) == clean_header_names, "no header added, none injected"
    body = response.get_data(as_text=True)
    header_text = "\n".join(f"{name}: {value}" for name, value in response.headers.items())
    for text in [*markers, *(value for value in values if len(value) >= 8)]:
        assert text not in body, f"{text[:40]!r} came back in the body"
        assert text not in header_text, f"{text[:40]!r} came back in a header"


def assert_logs_clean(capsys, records: list[logging.LogRecord]) -> None:
    """Every stdout line is one JSON object (nothing broke a line), and nothing failed."""
    for line in capsys.readouterr().out.splitlines():
        if line.strip():
            json.loads(line)
    failures = [r for r in records if r.levelno >= logging.ERROR or r.exc_info]
    assert failures == [], [r.getMessage()[:200] for r in failures]


@dataclass
class TracedApp:
    app: Flask
    spans: InMemorySpanExporter
    daemon: FakeXRayDaemon


@pytest.fixture(scope="module")
def traced(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TracedApp]:
    """One app for the module (building one with X-Ray takes a few tenths of a second), with OpenTelemetry
    exporting to memory and X-Ray to a fake daemon, built without the developer's telemetry settings."""
    spans, daemon = InMemorySpanExporter(), FakeXRayDaemon()
    with pytest.MonkeyPatch.context() as patch:
        for name in list(os.environ):
            if name.startswith(ISOLATED_PREFIXES):
                patch.delenv(name)
        app = create_app(
            {
                "TESTING": True,
                "DATABASE_URL": str(tmp_path_factory.mktemp("hostile") / "cruddur.sqlite3"),
                "TELEMETRY_SPAN_EXPORTER": spans,
                "AWS_XRAY_DAEMON_ADDRESS": daemon.address,
            }
        )
    yield TracedApp(app, spans, daemon)
    app.extensions["cruddur"].telemetry.shutdown()
    daemon.close()


@pytest.fixture
def traced_app(traced: TracedApp) -> Flask:
    traced.spans.clear()
    traced.daemon.documents.clear()
    return traced.app


@pytest.fixture
def span_exporter(traced: TracedApp) -> InMemorySpanExporter:
    return traced.spans


@pytest.fixture
def xray_daemon(traced: TracedApp) -> FakeXRayDaemon:
    return traced.daemon


@pytest.fixture
def clean_header_names(traced_app: Flask, span_exporter, xray_daemon) -> set[str]:
    names = set(traced_app.test_client().get(HOME).headers.keys())
    xray_daemon.wait_for_segments(1)
    xray_daemon.documents.clear()
    span_exporter.clear()
    return names


@pytest.mark.parametrize(
    ("headers", "markers"), [case[1:] for case in NEW_TRACE_CASES], ids=[c[0] for c in NEW_TRACE_CASES]
)
def test_a_hostile_trace_header_gets_a_fresh_trace(
    traced_app, span_exporter, xray_daemon, clean_header_names, capsys, records, headers, markers
):
    response = traced_app.test_client().get(HOME, environ_overrides=environ(headers))

    assert response.status_code == 200
    match = TRACE_HEADER.match(response.headers["X-Amzn-Trace-Id"])
    assert match, response.headers["X-Amzn-Trace-Id"]
    epoch, _ = match.groups()
    assert abs(int(epoch, 16) - time.time()) < 600, "a new X-Ray id starts with the current epoch second"
    trace_id = "".join(match.groups())
    span = server_span(span_exporter)
    assert span.parent is None, "a new trace, not the caller's"
    assert format(span.context.trace_id, "032x") == trace_id
    [segment] = xray_daemon.wait_for_segments(1)
    assert segment["trace_id"] == f"1-{trace_id[:8]}-{trace_id[8:]}" and "parent_id" not in segment
    assert_nothing_echoed(response, clean_header_names, markers, list(headers.values()))
    assert_logs_clean(capsys, records)


@pytest.mark.parametrize(
    ("headers", "markers", "drops_tracestate"),
    [case[1:] for case in CONTINUED_CASES],
    ids=[c[0] for c in CONTINUED_CASES],
)
def test_a_hostile_companion_header_leaves_a_valid_traceparent_in_charge(
    traced_app, span_exporter, xray_daemon, clean_header_names, capsys, records, headers, markers, drops_tracestate
):
    headers = {"traceparent": VALID_TRACEPARENT, **headers}
    response = traced_app.test_client().get(HOME, environ_overrides=environ(headers))

    assert response.status_code == 200
    assert response.headers["X-Amzn-Trace-Id"] == f"Root=1-{VALID_TRACE[:8]}-{VALID_TRACE[8:]};Sampled=1"
    span = server_span(span_exporter)
    assert span.parent is not None and format(span.parent.span_id, "016x") == VALID_SPAN
    if drops_tracestate:
        assert len(span.context.trace_state) == 0, "a malformed tracestate is dropped whole"
    [segment] = xray_daemon.wait_for_segments(1)
    assert segment["parent_id"] == VALID_SPAN
    assert_nothing_echoed(response, clean_header_names, markers, [v for k, v in headers.items() if k != "traceparent"])
    assert_logs_clean(capsys, records)


@pytest.mark.parametrize(
    ("header", "parent", "markers"), [case[1:] for case in ROOT_KEPT_CASES], ids=[c[0] for c in ROOT_KEPT_CASES]
)
def test_a_hostile_xray_header_with_a_valid_root_keeps_the_root(
    traced_app, span_exporter, xray_daemon, clean_header_names, capsys, records, header, parent, markers
):
    response = traced_app.test_client().get(HOME, environ_overrides=environ({"x-amzn-trace-id": header}))

    assert response.status_code == 200
    xray_root = f"1-{VALID_TRACE[:8]}-{VALID_TRACE[8:]}"
    assert response.headers["X-Amzn-Trace-Id"] == f"Root={xray_root};Sampled=1", "kept: every request is"
    span = server_span(span_exporter)
    assert format(span.context.trace_id, "032x") == VALID_TRACE
    assert (format(span.parent.span_id, "016x") if span.parent else None) == parent
    [segment] = xray_daemon.wait_for_segments(1)
    assert segment["trace_id"] == xray_root and segment.get("parent_id") == parent
    assert_nothing_echoed(response, clean_header_names, markers, [header])
    assert_logs_clean(capsys, records)


def test_a_hostile_baggage_header_does_not_multiply_log_lines(traced_app, records):
    hostile = ",".join(f"<script>{i}" for i in range(400))  # 4.7 KB: within gunicorn's 8190-byte field limit
    response = traced_app.test_client().get(HOME, headers={"baggage": hostile})
    assert response.status_code == 200
    lines = [r for r in records if r.name != "cruddur.access"]
    assert len(lines) <= 1, f"{len(lines)} log lines for one request, e.g. {lines[0].getMessage()[:80]!r}"


# --- generated header values --------------------------------------------------------------------------

#: What a WSGI server hands over: any latin-1 text, bounded in size.
wsgi_text = st.text(alphabet=st.characters(min_codepoint=0, max_codepoint=255), max_size=300)
hex_ish = st.text(alphabet="0123456789abcdefABCDEF_+- zx", max_size=34)
near_traceparent = st.builds(
    lambda version, trace, span, flags, tail: f"{version}-{trace}-{span}-{flags}{tail}",
    st.sampled_from(["00", "01", "ff", "0", "000", "zz"]),
    hex_ish,
    hex_ish,
    st.sampled_from(["01", "00", "ff", "1", "x"]),
    st.sampled_from(["", "-", "-extra", "\r\n", " "]),
)
near_xray = st.lists(
    st.tuples(
        st.sampled_from(["Root", "Parent", "Sampled", "Self", "Lineage", "", " Root"]) | wsgi_text.map(lambda t: t[:8]),
        st.sampled_from(["1-5759e988-bd862e3fe1be46a994272793", VALID_SPAN, "1", "0", "?"]) | hex_ish,
    ),
    max_size=8,
).map(lambda pairs: ";".join(f"{key}={value}" for key, value in pairs))

traceparent_values = wsgi_text | near_traceparent
xray_values = wsgi_text | near_xray
generated = settings(
    max_examples=150, deadline=None, database=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


XRAY_ROOT = re.compile(r"1-[0-9a-f]{8}-[0-9a-f]{24}")


def xray_callers_root(header: str) -> tuple[str | None, str | None]:
    """The trace id (32 hex) a header's last `Root` names when it is well-formed and not zero, and
    its last `Sampled`: what the X-Ray SDK would continue (keys and values stripped of blanks)."""
    fields: dict[str, str] = {}
    for field in header.split(";"):
        key, _, value = field.partition("=")
        fields[key.strip()] = value.strip()
    root = fields.get("Root", "")
    trace_id = root[2:].replace("-", "")
    if not XRAY_ROOT.fullmatch(root) or int(trace_id, 16) == 0:
        return None, None
    return trace_id, fields.get("Sampled")


def check_generated(app, span_exporter, records, headers: dict[str, str]) -> None:
    """The same promises for any value: 200, the same body, only the usual headers, one well-formed trace id:
    a caller's valid X-Ray Root, else a traceparent's or a fresh one."""
    span_exporter.clear()
    records.clear()
    response = app.test_client().get("/rollbar/test", environ_overrides=environ(headers))
    assert response.status_code == 200
    assert response.get_data(as_text=True) == "Hello World!", "the body never carries the header"
    assert set(response.headers.keys()) == {"Content-Type", "Content-Length", "X-Amzn-Trace-Id"}
    assert response.headers["Content-Type"] == "text/plain; charset=utf-8"
    match = TRACE_HEADER.match(response.headers["X-Amzn-Trace-Id"])
    assert match, response.headers["X-Amzn-Trace-Id"]
    trace_id = "".join(match.groups())
    caller_root, caller_sampled = xray_callers_root(headers.get("x-amzn-trace-id", ""))
    if caller_root is not None:
        assert trace_id == caller_root, "a valid Root is kept"
    servers = [s for s in span_exporter.get_finished_spans() if s.kind == SpanKind.SERVER]
    if response.headers["X-Amzn-Trace-Id"].endswith("Sampled=0"):
        assert servers == [] and caller_sampled == "0", "everything is kept unless the caller said no"
    else:
        [span] = servers
        assert format(span.context.trace_id, "032x") == trace_id, "one trace id everywhere"
        if span.parent is None and caller_root is None:
            assert abs(int(match.group(1), 16) - time.time()) < 600, "a fresh id is an X-Ray id of now"
    failures = [r for r in records if r.levelno >= logging.ERROR or r.exc_info]
    assert failures == [], [r.getMessage()[:200] for r in failures]


@generated
@given(value=traceparent_values, state=st.none() | wsgi_text)
def test_any_traceparent_is_served_with_one_well_formed_trace_id(traced_app, span_exporter, records, value, state):
    headers = {"traceparent": value} | ({"tracestate": state} if state is not None else {})
    check_generated(traced_app, span_exporter, records, headers)


@generated
@given(value=xray_values, baggage=st.none() | wsgi_text)
def test_any_xray_header_is_served_with_one_well_formed_trace_id(traced_app, span_exporter, records, value, baggage):
    headers = {"x-amzn-trace-id": value} | ({"baggage": baggage} if baggage is not None else {})
    check_generated(traced_app, span_exporter, records, headers)
