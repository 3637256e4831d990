"""One trace, two tracers: the OTEL spans and the X-Ray segment of a request are the same tree."""

from __future__ import annotations

import pytest
import requests
from flask import Flask
from opentelemetry.trace import SpanKind, StatusCode

from tests.support.recording import RecordingServer
from tests.support.xray_daemon import walk

CLOUD_IS_FUN = "68f126b0-1ceb-4a33-88be-d90fa7109eee"
CALLER_TRACE = "5759e988bd862e3fe1be46a994272793"
CALLER_SPAN = "53995c3f42cd8ad8"


def hex_id(value: int, width: int) -> str:
    return format(value, f"0{width}x")


def xray_form(trace_hex: str) -> str:
    return f"1-{trace_hex[:8]}-{trace_hex[8:]}"


@pytest.fixture
def traced_app(make_app, span_exporter, xray_daemon) -> Flask:
    return make_app({"TELEMETRY_SPAN_EXPORTER": span_exporter, "AWS_XRAY_DAEMON_ADDRESS": xray_daemon.address})


def spans_by_name(exporter) -> dict[str, list]:
    found: dict[str, list] = {}
    for span in exporter.get_finished_spans():
        found.setdefault(span.name, []).append(span)
    return found


def test_a_request_is_a_server_span_with_a_service_span_and_query_spans(traced_app, span_exporter):
    store = traced_app.extensions["cruddur"].deps.store
    response = traced_app.test_client().get("/api/activities/home")
    spans = spans_by_name(span_exporter)
    [server] = spans["GET /api/activities/home"]
    [service] = spans["home-activities"]
    queries = spans[f"SELECT {store.database.namespace}"]

    assert server.kind == SpanKind.SERVER and server.parent is None
    assert service.kind == SpanKind.INTERNAL and service.parent.span_id == server.context.span_id
    assert service.attributes["app.user_handle"] == "andrewbrown"
    assert service.attributes["app.result_length"] == len(response.get_json()) == 3
    assert service.attributes["app.now"].endswith("+00:00")
    assert service.status.status_code == StatusCode.UNSET
    assert queries and all(q.kind == SpanKind.CLIENT for q in queries)
    assert all(q.parent.span_id == service.context.span_id for q in queries)
    assert queries[0].attributes["db.system.name"] == store.system
    assert queries[0].attributes["db.namespace"] == store.database.namespace
    assert "FROM activities" in queries[0].attributes["db.query.text"]
    assert server.resource.attributes["service.name"] == "backend-flask"


@pytest.mark.parametrize(
    ("method", "path", "body", "span_name"),
    [
        ("get", "/api/activities/notifications", None, "notifications-activities"),
        ("get", "/api/activities/@worf", None, "user-activities"),
        ("get", "/api/activities/search?term=fun", None, "search-activities"),
        ("post", "/api/activities", {"message": "m", "ttl": "1-day"}, "create-activity"),
        ("get", f"/api/activities/{CLOUD_IS_FUN}", None, "show-activity"),
        ("post", f"/api/activities/{CLOUD_IS_FUN}/reply", {"message": "m"}, "create-reply"),
        ("get", "/api/message_groups", None, "message-groups"),
        ("get", "/api/messages/@bayko", None, "messages"),
        ("post", "/api/messages", {"message": "m", "user_receiver_handle": "lore"}, "create-message"),
    ],
)
def test_every_service_has_its_own_span(traced_app, span_exporter, method, path, body, span_name):
    response = getattr(traced_app.test_client(), method)(path, json=body)
    assert response.status_code == 200
    [span] = spans_by_name(span_exporter)[span_name]
    assert span.attributes["app.user_handle"] == "andrewbrown"


def test_a_rejected_request_carries_its_validation_errors_without_error_status(traced_app, span_exporter):
    response = traced_app.test_client().post("/api/activities", json={"message": "", "ttl": "never"})
    assert response.status_code == 422
    [span] = spans_by_name(span_exporter)["create-activity"]
    assert span.attributes["app.validation_errors"] == ("message_blank", "ttl_invalid")
    assert span.status.status_code == StatusCode.UNSET


def test_a_failed_service_marks_its_span_and_segment_as_errors(traced_app, span_exporter, xray_daemon, monkeypatch):
    def broken(*args):
        raise RuntimeError("the disk caught fire")

    monkeypatch.setattr(traced_app.extensions["cruddur"].deps.store, "home_activities", broken)
    response = traced_app.test_client().get("/api/activities/home")
    assert response.status_code == 500
    spans = spans_by_name(span_exporter)
    [service] = spans["home-activities"]
    [server] = spans["GET /api/activities/home"]
    for span in (service, server):
        assert span.status.status_code == StatusCode.ERROR
        [event] = [e for e in span.events if e.name == "exception"]
        assert event.attributes["exception.type"] == "RuntimeError"
    [segment] = xray_daemon.wait_for_segments(1)
    assert segment["fault"] is True
    [subsegment] = segment["subsegments"]
    assert subsegment["name"] == "home-activities" and subsegment["fault"] is True
    assert subsegment["cause"]["exceptions"][0]["type"] == "RuntimeError"
    assert subsegment["cause"]["exceptions"][0]["stack"]


def test_the_xray_segment_is_the_server_span(traced_app, span_exporter, xray_daemon):
    database = traced_app.extensions["cruddur"].deps.store.database
    response = traced_app.test_client().get("/api/activities/home")
    [segment] = xray_daemon.wait_for_segments(1)
    spans = {hex_id(s.context.span_id, 16): s for s in span_exporter.get_finished_spans()}
    [server] = [s for s in spans.values() if s.kind == SpanKind.SERVER]
    trace_hex = hex_id(server.context.trace_id, 32)

    assert segment["name"] == "backend-flask"
    assert segment["trace_id"] == xray_form(trace_hex)
    assert response.headers["X-Amzn-Trace-Id"] == f"Root={xray_form(trace_hex)};Sampled=1"
    assert segment["http"]["response"]["status"] == 200
    assert segment["id"] == hex_id(server.context.span_id, 16)
    for depth, entity in walk(segment):
        if depth:
            span = spans[entity["id"]]
            # A query's subsegment is named after its database (one service-map node), its span not.
            assert entity["name"] == (database.namespace if "sql" in entity else span.name)
            assert hex_id(span.parent.span_id, 16) == entity["parent_id"]
    names = [entity["name"] for _, entity in walk(segment)]
    assert names[:2] == ["backend-flask", "home-activities"] and database.namespace in names
    [service] = [e for _, e in walk(segment) if e["name"] == "home-activities"]
    assert service["annotations"] == {"app_user_handle": "andrewbrown", "app_result_length": 3}
    [query, *_] = [e for _, e in walk(segment) if e["name"] == database.namespace]
    assert query["namespace"] == "remote" and query["sql"]["database_type"] == database.database_type


def test_an_incoming_traceparent_is_continued_by_both_tools(traced_app, span_exporter, xray_daemon):
    traceparent = f"00-{CALLER_TRACE}-{CALLER_SPAN}-01"
    response = traced_app.test_client().get("/api/activities/home", headers={"traceparent": traceparent})
    [server] = [s for s in span_exporter.get_finished_spans() if s.kind == SpanKind.SERVER]
    [segment] = xray_daemon.wait_for_segments(1)
    assert hex_id(server.context.trace_id, 32) == CALLER_TRACE
    assert hex_id(server.parent.span_id, 16) == CALLER_SPAN and server.parent.is_remote
    assert segment["trace_id"] == xray_form(CALLER_TRACE)
    assert segment["parent_id"] == CALLER_SPAN
    assert segment["id"] == hex_id(server.context.span_id, 16)
    assert response.headers["X-Amzn-Trace-Id"].startswith(f"Root={xray_form(CALLER_TRACE)};")


def test_an_incoming_xray_header_is_continued_by_both_tools(traced_app, span_exporter, xray_daemon):
    header = f"Root={xray_form(CALLER_TRACE)};Parent={CALLER_SPAN};Sampled=1"
    response = traced_app.test_client().get("/api/activities/home", headers={"X-Amzn-Trace-Id": header})
    [server] = [s for s in span_exporter.get_finished_spans() if s.kind == SpanKind.SERVER]
    [segment] = xray_daemon.wait_for_segments(1)
    assert hex_id(server.context.trace_id, 32) == CALLER_TRACE
    assert segment["trace_id"] == xray_form(CALLER_TRACE) and segment["parent_id"] == CALLER_SPAN
    assert response.headers["X-Amzn-Trace-Id"] == f"Root={xray_form(CALLER_TRACE)};Sampled=1"


def test_an_unsampled_caller_is_dropped_by_both_but_keeps_its_trace_id(traced_app, span_exporter, xray_daemon):
    traceparent = f"00-{CALLER_TRACE}-{CALLER_SPAN}-00"
    response = traced_app.test_client().get("/api/activities/home", headers={"traceparent": traceparent})
    assert response.status_code == 200
    assert response.headers["X-Amzn-Trace-Id"] == f"Root={xray_form(CALLER_TRACE)};Sampled=0"
    assert span_exporter.get_finished_spans() == ()
    assert xray_daemon.wait_for_segments(1, timeout=0.3) == []


def test_an_outgoing_requests_call_carries_both_headers(traced_app, span_exporter):
    downstream = RecordingServer()

    @traced_app.get("/test/outgoing")
    def outgoing():
        requests.get(f"{downstream.url}/downstream", timeout=2)
        return {"ok": True}

    try:
        assert traced_app.test_client().get("/test/outgoing").status_code == 200
    finally:
        downstream.close()
    [call] = downstream.requests
    [client] = [s for s in span_exporter.get_finished_spans() if s.kind == SpanKind.CLIENT and s.name == "GET"]
    trace_hex, client_span = hex_id(client.context.trace_id, 32), hex_id(client.context.span_id, 16)
    assert call.headers["traceparent"] == f"00-{trace_hex}-{client_span}-01"
    assert call.headers["x-amzn-trace-id"] == f"Root={xray_form(trace_hex)};Parent={client_span};Sampled=1"


def test_the_health_check_is_neither_traced_nor_segmented(traced_app, span_exporter, xray_daemon):
    response = traced_app.test_client().get("/api/health")
    assert response.status_code == 200
    assert "X-Amzn-Trace-Id" not in response.headers
    assert span_exporter.get_finished_spans() == ()
    assert xray_daemon.wait_for_segments(1, timeout=0.3) == []


def test_excluded_urls_from_the_environment_are_honoured(make_app, span_exporter, xray_daemon):
    app = make_app(
        {
            "TELEMETRY_SPAN_EXPORTER": span_exporter,
            "AWS_XRAY_DAEMON_ADDRESS": xray_daemon.address,
            "OTEL_PYTHON_FLASK_EXCLUDED_URLS": "message_groups",
        }
    )
    client = app.test_client()
    assert client.get("/api/message_groups").status_code == 200
    assert client.get("/api/health").status_code == 200
    assert span_exporter.get_finished_spans() == ()
    client.get("/api/activities/home")
    assert len(xray_daemon.wait_for_segments(1)) == 1
