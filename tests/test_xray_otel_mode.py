"""`CRUDDUR_XRAY_MODE=otel`: the X-Ray SDK stays off, and the OpenTelemetry spans are fit for X-Ray.

In this mode the spans reach X-Ray through the collector's `awsxray` exporter (otel/collector-xray.yaml),
which accepts only X-Ray trace ids: the first 8 hex digits are the epoch second the trace began.
The fake daemon listens where `AWS_XRAY_DAEMON_ADDRESS` points, so a segment the SDK sent would be seen.
"""

from __future__ import annotations

import json
import time

import pytest
from opentelemetry.trace import SpanKind

from cruddur import create_app
from cruddur.config import ConfigError
from tests.support.stores import query_span_name

REQUESTS = [
    ("get", "/api/activities/home", None, 200),
    ("post", "/api/activities", {"message": "", "ttl": "never"}, 422),
    ("get", "/api/activities/00000000-0000-4000-8000-000000000000", None, 404),
    ("post", "/api/messages", {"message": "m", "user_receiver_handle": "lore"}, 200),
]


@pytest.fixture
def otel_mode_app(make_app, span_exporter, xray_daemon):
    return make_app(
        {
            "CRUDDUR_XRAY_MODE": "otel",
            "AWS_XRAY_DAEMON_ADDRESS": xray_daemon.address,
            "TELEMETRY_SPAN_EXPORTER": span_exporter,
        }
    )


def epoch_of(trace_hex: str) -> int:
    return int(trace_hex[:8], 16)


def xray_header(trace_hex: str) -> str:
    return f"Root=1-{trace_hex[:8]}-{trace_hex[8:]};Sampled=1"


def telemetry_lines(out: str) -> list[str]:
    lines = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    return [line["message"] for line in lines if line["logger"] == "cruddur.telemetry"]


def test_no_segment_reaches_the_daemon(otel_mode_app, xray_daemon):
    client = otel_mode_app.test_client()
    for method, path, body, status in REQUESTS:
        assert getattr(client, method)(path, json=body).status_code == status
    assert xray_daemon.wait_for_segments(1, timeout=0.5) == []
    assert xray_daemon.documents == []
    assert xray_daemon.malformed == []
    telemetry = otel_mode_app.extensions["cruddur"].telemetry
    assert telemetry.xray_middleware is None
    assert telemetry.tracing.xray is None


def test_the_same_setup_in_sdk_mode_does_reach_the_daemon(make_app, span_exporter, xray_daemon):
    """The control for the test above: the fake daemon hears the SDK when the mode is sdk."""
    app = make_app(
        {
            "CRUDDUR_XRAY_MODE": "sdk",
            "AWS_XRAY_DAEMON_ADDRESS": xray_daemon.address,
            "TELEMETRY_SPAN_EXPORTER": span_exporter,
        }
    )
    app.test_client().get("/api/activities/home")
    assert len(xray_daemon.wait_for_segments(1)) == 1


def test_spans_keep_xray_trace_ids_and_the_response_header(otel_mode_app, span_exporter):
    client = otel_mode_app.test_client()
    headers = []
    before = int(time.time())
    for method, path, body, _ in REQUESTS:
        headers.append(getattr(client, method)(path, json=body).headers["X-Amzn-Trace-Id"])
    after = int(time.time())

    spans = span_exporter.get_finished_spans()
    servers = [span for span in spans if span.kind is SpanKind.SERVER]
    assert len(servers) == len(REQUESTS)
    trace_ids = [format(server.context.trace_id, "032x") for server in servers]
    assert len(set(trace_ids)) == len(REQUESTS), "each request is its own trace"
    for trace_hex in trace_ids:
        assert before <= epoch_of(trace_hex) <= after, f"{trace_hex} does not start with the epoch second"
    assert headers == [xray_header(trace_hex) for trace_hex in trace_ids]
    assert {format(span.context.trace_id, "032x") for span in spans} == set(trace_ids)


def test_an_incoming_xray_header_is_continued(otel_mode_app, span_exporter):
    caller = f"{int(time.time()):08x}bd862e3fe1be46a9"
    caller_trace = caller + "94272793"
    header = f"Root=1-{caller_trace[:8]}-{caller_trace[8:]};Parent=53995c3f42cd8ad8;Sampled=1"
    response = otel_mode_app.test_client().get("/api/activities/home", headers={"X-Amzn-Trace-Id": header})
    assert response.headers["X-Amzn-Trace-Id"] == xray_header(caller_trace)
    [server] = [span for span in span_exporter.get_finished_spans() if span.kind is SpanKind.SERVER]
    assert format(server.context.trace_id, "032x") == caller_trace
    assert format(server.parent.span_id, "016x") == "53995c3f42cd8ad8"


def test_startup_says_xray_is_off_because_of_the_mode(make_app, xray_daemon, capsys):
    make_app({"CRUDDUR_XRAY_MODE": "otel", "AWS_XRAY_DAEMON_ADDRESS": xray_daemon.address})
    messages = telemetry_lines(capsys.readouterr().out)
    [xray] = [message for message in messages if message.startswith("telemetry: AWS X-Ray:")]
    assert xray.startswith("telemetry: AWS X-Ray: off")
    assert "CRUDDUR_XRAY_MODE=otel" in xray
    assert "awsxray" in xray


def test_the_mode_wins_over_a_daemon_address_and_an_enabled_sdk(make_app, xray_daemon):
    app = make_app(
        {"CRUDDUR_XRAY_MODE": " OTEL ", "AWS_XRAY_DAEMON_ADDRESS": xray_daemon.address, "AWS_XRAY_SDK_ENABLED": "true"}
    )
    assert app.test_client().get("/api/activities/home").status_code == 200
    assert xray_daemon.wait_for_segments(1, timeout=0.3) == []


def test_an_unknown_mode_stops_the_start(database_url):
    with pytest.raises(ConfigError, match="CRUDDUR_XRAY_MODE"):
        create_app({"TESTING": True, "DATABASE_URL": database_url, "CRUDDUR_XRAY_MODE": "daemon"})


def test_otlp_export_in_otel_mode_carries_what_the_awsxray_exporter_needs(make_app, otlp_receiver, xray_daemon):
    """The real OTLP/HTTP exporter, as the backend talks to the xray-otel profile's collector."""
    app = make_app(
        {
            "CRUDDUR_XRAY_MODE": "otel",
            "AWS_XRAY_DAEMON_ADDRESS": xray_daemon.address,
            "OTEL_EXPORTER_OTLP_ENDPOINT": otlp_receiver.url,
        }
    )
    before = int(time.time())
    response = app.test_client().get("/api/activities/home")
    after = int(time.time())
    app.extensions["cruddur"].telemetry.shutdown()

    [export] = otlp_receiver.exports
    assert export.path == "/v1/traces"
    # The X-Ray segment of a server span is named after service.name, as in the SDK mode.
    assert export.resource_attributes()["service.name"] == "backend-flask"
    spans = export.spans()
    assert {span.name for span in spans} >= {"GET /api/activities/home", "home-activities", query_span_name(app)}
    [trace_hex] = {span.trace_id.hex() for span in spans}
    assert before <= epoch_of(trace_hex) <= after
    assert response.headers["X-Amzn-Trace-Id"] == xray_header(trace_hex)
    [service] = [span for span in spans if span.name == "home-activities"]
    attributes = {kv.key: kv.value for kv in service.attributes}
    assert attributes["app.user_handle"].string_value == "andrewbrown"
    assert attributes["app.result_length"].int_value == 3
    assert xray_daemon.documents == []
    assert xray_daemon.malformed == []
