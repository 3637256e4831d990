"""Traces are continued from every caller that sends one, in the shapes real callers send.

An AWS load balancer adds `X-Amzn-Trace-Id: Self=1-…;Root=1-…` (no Parent, no decision); other callers
send `Root=…;Parent=…;Sampled=?` or no `Sampled`. The X-Ray SDK keeps such a Root and decides locally
(`aws_xray_sdk/core/models/trace_header.py`, `ext/util.py calculate_sampling_decision`); so do we,
checked on what each backend receives: the OTLP bytes, the X-Ray datagram and the response header.
"""

from __future__ import annotations

import json
import time

import pytest
import requests

from tests.support.recording import RecordingServer
from tests.support.server import free_port
from tests.support.xray_daemon import walk

NOW = f"{int(time.time()):08x}"
CALLER_TRACE = f"{NOW}bd862e3fe1be46a994272793"
CALLER_ROOT = f"1-{CALLER_TRACE[:8]}-{CALLER_TRACE[8:]}"
CALLER_SPAN = "53995c3f42cd8ad8"
#: What an Application Load Balancer sends: its own `Self` id, and the Root of the trace.
ALB_HEADER = f"Self=1-{NOW}-0123456789abcdef01234567;Root={CALLER_ROOT}"
HOME = "/api/activities/home"


@pytest.fixture
def backends(make_app, otlp_receiver, xray_daemon):
    """An app exporting OTLP to the fake receiver and segments to the fake daemon; settings on top."""

    def build(**settings: str):
        return make_app(
            {
                "OTEL_EXPORTER_OTLP_ENDPOINT": otlp_receiver.url,
                "AWS_XRAY_DAEMON_ADDRESS": xray_daemon.address,
                **settings,
            }
        )

    return build


def served(app, header: str, **headers: str):
    """The response, then every span the OTLP receiver got for it (after a flush)."""
    response = app.test_client().get(HOME, headers={"X-Amzn-Trace-Id": header, **headers})
    app.extensions["cruddur"].telemetry.shutdown()
    return response


def served_path(app, path: str):
    response = app.test_client().get(path)
    app.extensions["cruddur"].telemetry.shutdown()
    return response


def server_spans(otlp_receiver) -> list:
    return [span for span in otlp_receiver.spans() if span.name == f"GET {HOME}"]


@pytest.mark.parametrize(
    ("header", "parent"),
    [
        (ALB_HEADER, None),
        (f"Root={CALLER_ROOT}", None),
        (f"Root={CALLER_ROOT};Parent={CALLER_SPAN};Sampled=?", CALLER_SPAN),
        (f"Root={CALLER_ROOT};Parent={CALLER_SPAN}", CALLER_SPAN),
        (f"Root={CALLER_ROOT}; Parent={CALLER_SPAN}; Sampled=?;", CALLER_SPAN),
        (f"Sampled=?;Parent={CALLER_SPAN};Root={CALLER_ROOT};Lineage=a87bd80c:1", CALLER_SPAN),
    ],
    ids=["alb", "root-only", "sampled-question", "no-sampled", "spaces-trailing-semicolon", "any-order"],
)
def test_the_callers_root_is_kept_and_the_decision_is_made_here(backends, otlp_receiver, xray_daemon, header, parent):
    response = served(backends(), header)

    assert response.status_code == 200
    assert response.headers["X-Amzn-Trace-Id"] == f"Root={CALLER_ROOT};Sampled=1", "keep-all keeps it"
    [server] = server_spans(otlp_receiver)
    assert server.trace_id.hex() == CALLER_TRACE
    assert (server.parent_span_id.hex() or None) == parent
    assert {span.trace_id.hex() for span in otlp_receiver.spans()} == {CALLER_TRACE}
    [segment] = xray_daemon.wait_for_segments(1)
    assert segment["trace_id"] == CALLER_ROOT
    assert segment.get("parent_id") == parent
    assert segment["id"] == server.span_id.hex()


@pytest.mark.parametrize(
    "header",
    [ALB_HEADER, f"Root={CALLER_ROOT};Parent={CALLER_SPAN};Sampled=?", f"Root={CALLER_ROOT};Parent={CALLER_SPAN}"],
    ids=["alb", "sampled-question", "no-sampled"],
)
def test_an_open_decision_is_the_samplers(backends, otlp_receiver, xray_daemon, header):
    """With a sampler that keeps no root, a caller who left the decision open is dropped by both tools."""
    response = served(backends(OTEL_TRACES_SAMPLER="parentbased_always_off"), header)

    assert response.headers["X-Amzn-Trace-Id"] == f"Root={CALLER_ROOT};Sampled=0"
    assert otlp_receiver.spans() == []
    assert xray_daemon.wait_for_segments(1, timeout=0.3) == []


@pytest.mark.parametrize(
    ("header", "parent"),
    [(f"Root={CALLER_ROOT};Sampled=1", None), (f"Root={CALLER_ROOT};Parent={CALLER_SPAN};Sampled=1", CALLER_SPAN)],
    ids=["root-only", "with-parent"],
)
def test_a_callers_decision_stands(backends, otlp_receiver, xray_daemon, header, parent):
    response = served(backends(OTEL_TRACES_SAMPLER="parentbased_always_off"), header)

    assert response.headers["X-Amzn-Trace-Id"] == f"Root={CALLER_ROOT};Sampled=1"
    [server] = server_spans(otlp_receiver)
    assert server.trace_id.hex() == CALLER_TRACE and (server.parent_span_id.hex() or None) == parent
    [segment] = xray_daemon.wait_for_segments(1)
    assert segment["trace_id"] == CALLER_ROOT and segment.get("parent_id") == parent


def test_a_callers_no_stands_without_a_parent(backends, otlp_receiver, xray_daemon):
    response = served(backends(), f"Root={CALLER_ROOT};Sampled=0")

    assert response.headers["X-Amzn-Trace-Id"] == f"Root={CALLER_ROOT};Sampled=0"
    assert otlp_receiver.spans() == []
    assert xray_daemon.wait_for_segments(1, timeout=0.3) == []


def test_traceparent_wins_over_an_xray_header(backends, otlp_receiver, xray_daemon):
    w3c_trace, w3c_span = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    response = served(backends(), ALB_HEADER, traceparent=f"00-{w3c_trace}-{w3c_span}-01")

    assert response.headers["X-Amzn-Trace-Id"] == f"Root=1-{w3c_trace[:8]}-{w3c_trace[8:]};Sampled=1"
    [server] = server_spans(otlp_receiver)
    assert server.trace_id.hex() == w3c_trace and server.parent_span_id.hex() == w3c_span
    [segment] = xray_daemon.wait_for_segments(1)
    assert segment["parent_id"] == w3c_span


def test_an_invalid_root_starts_a_new_trace_and_ignores_the_parent(backends, otlp_receiver, xray_daemon):
    response = served(backends(), f"Root=1-{NOW}-BD862E3FE1BE46A994272793;Parent={CALLER_SPAN};Sampled=1")

    root = response.headers["X-Amzn-Trace-Id"].split(";")[0].removeprefix("Root=")
    assert root != CALLER_ROOT.upper() and root.startswith("1-")
    [server] = server_spans(otlp_receiver)
    assert not server.parent_span_id
    [segment] = xray_daemon.wait_for_segments(1)
    assert segment["trace_id"] == root and "parent_id" not in segment


@pytest.mark.parametrize(
    ("settings", "header", "sampled", "parent"),
    [
        ({}, ALB_HEADER, 1, None),
        ({}, f"Root={CALLER_ROOT};Parent={CALLER_SPAN};Sampled=?", 1, CALLER_SPAN),
        ({"OTEL_TRACES_SAMPLER": "parentbased_always_off"}, ALB_HEADER, 0, None),
        ({"OTEL_TRACES_SAMPLER": "parentbased_always_off"}, f"Root={CALLER_ROOT};Sampled=1", 1, None),
    ],
    ids=["alb", "sampled-question", "alb-sampler-says-no", "caller-says-yes"],
)
def test_without_opentelemetry_xray_continues_the_same_way(make_app, xray_daemon, settings, header, sampled, parent):
    app = make_app({"OTEL_SDK_DISABLED": "true", "AWS_XRAY_DAEMON_ADDRESS": xray_daemon.address, **settings})
    response = app.test_client().get(HOME, headers={"X-Amzn-Trace-Id": header})

    assert response.headers["X-Amzn-Trace-Id"] == f"Root={CALLER_ROOT};Sampled={sampled}"
    segments = xray_daemon.wait_for_segments(1, timeout=5 if sampled else 0.3)
    if sampled:
        [segment] = segments
        assert segment["trace_id"] == CALLER_ROOT and segment.get("parent_id") == parent
    else:
        assert segments == []


# --- outgoing calls ---------------------------------------------------------------------------------


def outgoing_app(backends, url: str):
    app = backends()

    @app.get("/test/outgoing")
    def outgoing():
        try:
            requests.get(url, timeout=2)
        except requests.ConnectionError:
            return {"ok": False}
        return {"ok": True}

    return app


def test_an_outgoing_calls_parent_is_an_xray_subsegment(backends, otlp_receiver, xray_daemon):
    downstream = RecordingServer()
    try:
        app = outgoing_app(backends, f"{downstream.url}/downstream?token=canary-secret-0003&page=2")
        response = served_path(app, "/test/outgoing")
    finally:
        downstream.close()

    assert response.get_json() == {"ok": True}
    [call] = downstream.requests
    fields = dict(field.split("=", 1) for field in call.headers["x-amzn-trace-id"].split(";"))
    [client] = [span for span in otlp_receiver.spans() if span.kind == span.SPAN_KIND_CLIENT]
    assert fields["Parent"] == client.span_id.hex()
    assert call.headers["traceparent"] == f"00-{client.trace_id.hex()}-{client.span_id.hex()}-01"
    [segment] = xray_daemon.wait_for_segments(1)
    documents = {entity["id"]: entity for _, entity in walk(segment)}
    subsegment = documents[fields["Parent"]]
    assert fields["Root"] == segment["trace_id"]
    assert subsegment in segment["subsegments"], "under the request's segment, where the span is"
    assert subsegment["namespace"] == "remote" and subsegment["name"] == "127.0.0.1"
    assert subsegment["http"]["request"] == {"url": f"{downstream.url}/downstream", "method": "GET"}
    assert subsegment["http"]["response"]["status"] == 200
    assert "canary-secret-0003" not in json.dumps(segment)


def test_a_failed_outgoing_call_is_a_faulted_subsegment(backends, xray_daemon):
    closed = free_port()
    app = outgoing_app(backends, f"http://127.0.0.1:{closed}/nothing?token=canary-secret-0004")
    assert served_path(app, "/test/outgoing").get_json() == {"ok": False}

    [segment] = xray_daemon.wait_for_segments(1)
    [call] = [entity for _, entity in walk(segment) if entity.get("namespace") == "remote"]
    assert call["fault"] is True
    assert call["cause"]["exceptions"][0]["type"] == "ConnectionError"
    assert call["http"]["request"]["url"] == f"http://127.0.0.1:{closed}/nothing"
    assert "canary-secret-0004" not in json.dumps(segment)


def test_a_failed_outgoing_calls_exception_reaches_opentelemetry_scrubbed(backends, otlp_receiver):
    """The `requests` instrumentation records the exception of a failed call, whose text quotes the
    URL with its query (`Max retries exceeded with url: /nothing?token=...`)."""
    closed = free_port()
    app = outgoing_app(backends, f"http://127.0.0.1:{closed}/nothing?token=canary-secret-0005&page=2")
    assert served_path(app, "/test/outgoing").get_json() == {"ok": False}

    [client] = [span for span in otlp_receiver.spans() if span.kind == span.SPAN_KIND_CLIENT]
    [event] = [event for event in client.events if event.name == "exception"]
    recorded = {attribute.key: attribute.value.string_value for attribute in event.attributes}
    assert recorded["exception.type"].endswith("ConnectionError")
    assert "/nothing?" in recorded["exception.message"] and "page=2" in recorded["exception.message"]
    assert not [export for export in otlp_receiver.exports if b"canary-secret-0005" in export.raw]


def test_an_outgoing_call_in_a_service_span_nests_under_its_subsegment(backends, xray_daemon):
    downstream = RecordingServer()
    app = backends()
    tracing = app.extensions["cruddur"].telemetry.tracing

    @app.get("/test/nested")
    def nested():
        with tracing.span("call-downstream"):
            requests.get(f"{downstream.url}/downstream", timeout=2)
        return {"ok": True}

    try:
        served_path(app, "/test/nested")
    finally:
        downstream.close()
    [call] = downstream.requests
    parent = dict(field.split("=", 1) for field in call.headers["x-amzn-trace-id"].split(";"))["Parent"]
    [segment] = xray_daemon.wait_for_segments(1)
    [service] = segment["subsegments"]
    assert service["name"] == "call-downstream"
    assert [entity["id"] for entity in service["subsegments"]] == [parent]
