"""Logs and errors: JSON lines with trace ids, CloudWatch via watchtower, Rollbar, one failure seen once everywhere."""

from __future__ import annotations

import json
import re
import uuid

import boto3
import pytest
from opentelemetry.trace import SpanKind, StatusCode

from cruddur.telemetry import cloudwatch
from tests.support.cloudwatch import log_records

HEX32 = re.compile(r"^[0-9a-f]{32}$")
XRAY_ID = re.compile(r"^1-[0-9a-f]{8}-[0-9a-f]{24}$")


def stdout_records(capsys) -> list[dict]:
    return [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.strip()]


def cloudwatch_events(log_group: str) -> list[dict]:
    """The app's log lines in the group (EMF metric documents, which share the stream, left out)."""
    return [event for event in log_records(log_group) if "_aws" not in event]


def break_home_feed(app, monkeypatch) -> None:
    def broken(*args):
        raise RuntimeError("the disk caught fire")

    monkeypatch.setattr(app.extensions["cruddur"].deps.store, "home_activities", broken)


def test_every_line_is_json_with_the_trace_ids_of_its_request(make_app, capsys):
    client = make_app().test_client()
    capsys.readouterr()
    response = client.get("/api/activities/home", headers={"User-Agent": "curl/8.0", "Authorization": "Bearer x"})
    [access] = [r for r in stdout_records(capsys) if r["logger"] == "cruddur.access"]
    assert set(access) >= {"time", "level", "logger", "message", "trace_id", "xray_trace_id", "span_id", "http"}
    assert access["level"] == "INFO"
    assert HEX32.match(access["trace_id"]) and XRAY_ID.match(access["xray_trace_id"])
    assert response.headers["X-Amzn-Trace-Id"].startswith(f"Root={access['xray_trace_id']};")
    assert access["http"]["method"] == "GET" and access["http"]["path"] == "/api/activities/home"
    assert access["http"]["status"] == 200 and access["http"]["user_agent"] == "curl/8.0"
    assert access["http"]["duration_ms"] > 0 and access["http"]["remote_addr"] == "127.0.0.1"
    assert "Bearer" not in json.dumps(access)


def test_one_access_line_per_request_and_no_health_lines(make_app, capsys, monkeypatch):
    app = make_app()
    app.add_url_rule("/unavailable", view_func=lambda: ({"status": 503}, 503))
    client = app.test_client()
    client.get("/api/health")
    client.post("/api/activities", json={"message": ""})
    break_home_feed(app, monkeypatch)
    client.get("/api/activities/home")
    capsys.readouterr()
    client.get("/api/health")
    client.post("/api/activities", json={"message": ""})
    client.get("/api/activities/home")
    client.get("/unavailable")
    access = [
        (r["http"]["path"], r["http"]["status"], r["level"])
        for r in stdout_records(capsys)
        if r["logger"] == "cruddur.access"
    ]
    assert access == [
        ("/api/activities", 422, "INFO"),
        ("/api/activities/home", 500, "INFO"),  # its failure has its own ERROR line
        ("/unavailable", 503, "ERROR"),  # nothing else says this request failed
    ]


def test_an_unhandled_exception_writes_exactly_one_error_line(make_app, capsys, monkeypatch):
    app = make_app()
    break_home_feed(app, monkeypatch)
    capsys.readouterr()
    trace_id = app.test_client().get("/api/activities/home").get_json()["trace_id"]
    records = [r for r in stdout_records(capsys) if r.get("trace_id") == trace_id]
    [error] = [r for r in records if r["level"] in {"ERROR", "CRITICAL"}]
    assert error["logger"] == "cruddur.telemetry" and "RuntimeError: the disk caught fire" in error["exception"]
    [access] = [r for r in records if r["logger"] == "cruddur.access"]
    assert access["http"]["status"] == 500 and access["level"] == "INFO"


def test_cloudwatch_gets_json_lines_with_trace_ids_in_a_group_with_retention(make_app, aws):
    group = f"cruddur-{uuid.uuid4().hex[:8]}"
    app = make_app({"CLOUDWATCH_LOG_GROUP": group, "CLOUDWATCH_LOG_RETENTION_DAYS": "7"})
    trace_header = app.test_client().get("/api/activities/home").headers["X-Amzn-Trace-Id"]
    app.extensions["cruddur"].telemetry.shutdown()

    [described] = boto3.client("logs").describe_log_groups(logGroupNamePrefix=group)["logGroups"]
    assert described["logGroupName"] == group and described["retentionInDays"] == 7
    events = cloudwatch_events(group)
    [access] = [e for e in events if e["logger"] == "cruddur.access"]
    assert trace_header.startswith(f"Root={access['xray_trace_id']};")
    assert HEX32.match(access["trace_id"]) and access["http"]["status"] == 200
    [stream] = boto3.client("logs").describe_log_streams(logGroupName=group)["logStreams"]
    assert stream["logStreamName"].endswith(f"/backend-flask/{__import__('os').getpid()}")


def test_a_graceful_stop_flushes_the_last_lines_to_cloudwatch(make_app, aws, monkeypatch):
    monkeypatch.setattr(cloudwatch, "SEND_INTERVAL_SECONDS", 60)
    group = f"cruddur-{uuid.uuid4().hex[:8]}"
    app = make_app({"CLOUDWATCH_LOG_GROUP": group})
    client = app.test_client()
    for _ in range(25):
        client.get("/api/activities/home")
    assert boto3.client("logs").describe_log_groups(logGroupNamePrefix=group)["logGroups"] == [], (
        "nothing is sent before the send interval"
    )
    app.extensions["cruddur"].telemetry.shutdown()
    access = [e for e in cloudwatch_events(group) if e["logger"] == "cruddur.access"]
    assert len(access) == 25


def test_no_region_and_no_credentials_leave_cloudwatch_off_with_one_warning(make_app, capsys):
    response = make_app().test_client().get("/api/activities/home")
    assert response.status_code == 200
    warnings = [r for r in stdout_records(capsys) if r["level"] == "WARNING" and "CloudWatch" in r["message"]]
    assert len(warnings) == 1 and "AWS_REGION" in warnings[0]["message"]


def test_a_region_without_credentials_says_credentials_are_missing(make_app, capsys, monkeypatch):
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    assert make_app().test_client().get("/api/activities/home").status_code == 200
    [warning] = [r for r in stdout_records(capsys) if r["level"] == "WARNING" and "CloudWatch" in r["message"]]
    assert "no AWS credentials" in warning["message"]


def test_startup_says_which_tools_are_off(make_app, capsys):
    make_app()
    messages = [r["message"] for r in stdout_records(capsys) if r["logger"] == "cruddur.telemetry"]
    assert any("Rollbar: off" in m and "ROLLBAR_ACCESS_TOKEN" in m for m in messages)
    assert any("CloudWatch Logs: off" in m for m in messages)


def test_rollbar_test_route_sends_the_warning_and_answers_hello_world(make_app, rollbar_api):
    app = make_app({"ROLLBAR_ACCESS_TOKEN": "fake-rollbar-token-0001", "ROLLBAR_ENDPOINT": rollbar_api.endpoint})
    response = app.test_client().get("/rollbar/test")
    assert (response.status_code, response.get_data(as_text=True)) == (200, "Hello World!")
    app.extensions["cruddur"].telemetry.shutdown()
    [item] = rollbar_api.requests
    assert item.path == "/api/1/item/"
    assert item.headers["x-rollbar-access-token"] == "fake-rollbar-token-0001"
    data = item.json()["data"]
    assert data["body"]["message"]["body"] == "Hello World!"
    assert data["level"] == "warning"
    assert data["environment"] == "development"
    assert data["person"] == {"id": "andrewbrown", "username": "andrewbrown"}
    assert data["code_version"]
    assert XRAY_ID.match(data["custom"]["xray_trace_id"]) and HEX32.match(data["custom"]["trace_id"])


def test_rollbar_environment_and_code_version_come_from_their_settings(make_app, rollbar_api):
    app = make_app(
        {
            "ROLLBAR_ACCESS_TOKEN": "fake-rollbar-token-0002",
            "ROLLBAR_ENDPOINT": rollbar_api.url + "/api/1",
            "ROLLBAR_ENVIRONMENT": "staging",
            "ROLLBAR_CODE_VERSION": "abc123",
        }
    )
    app.test_client().get("/rollbar/test")
    app.extensions["cruddur"].telemetry.shutdown()
    [item] = rollbar_api.requests
    assert (item.json()["data"]["environment"], item.json()["data"]["code_version"]) == ("staging", "abc123")


def test_the_rollbar_test_route_is_404_in_production_unless_enabled(make_app, rollbar_api):
    settings = {"ROLLBAR_ACCESS_TOKEN": "fake-rollbar-token-0003", "ROLLBAR_ENDPOINT": rollbar_api.endpoint}
    production = make_app({**settings, "CRUDDUR_ENVIRONMENT": "production", "CRUDDUR_AUTH": "off"})
    response = production.test_client().get("/rollbar/test")
    assert response.status_code == 404 and response.get_json()["error"] == "not_found"
    enabled = make_app(
        {**settings, "CRUDDUR_ENVIRONMENT": "production", "CRUDDUR_AUTH": "off", "CRUDDUR_ROLLBAR_TEST_ROUTE": "true"}
    )
    assert enabled.test_client().get("/rollbar/test").status_code == 200
    enabled.extensions["cruddur"].telemetry.shutdown()
    assert [r.json()["data"]["environment"] for r in rollbar_api.requests] == ["production"]


def test_one_failure_is_seen_once_by_every_tool_under_one_trace_id(
    make_app, aws, rollbar_api, span_exporter, xray_daemon, monkeypatch, capsys
):
    group = f"cruddur-{uuid.uuid4().hex[:8]}"
    app = make_app(
        {
            "TELEMETRY_SPAN_EXPORTER": span_exporter,
            "AWS_XRAY_DAEMON_ADDRESS": xray_daemon.address,
            "CLOUDWATCH_LOG_GROUP": group,
            "ROLLBAR_ACCESS_TOKEN": "fake-rollbar-token-0004",
            "ROLLBAR_ENDPOINT": rollbar_api.endpoint,
        }
    )
    break_home_feed(app, monkeypatch)
    capsys.readouterr()
    response = app.test_client().get("/api/activities/home")
    body = response.get_json()
    app.extensions["cruddur"].telemetry.shutdown()

    trace_id = body["trace_id"]
    xray_trace_id = f"1-{trace_id[:8]}-{trace_id[8:]}"
    assert response.status_code == 500 and body["error"] == "internal_error" and HEX32.match(trace_id)
    assert response.headers["X-Amzn-Trace-Id"].startswith(f"Root={xray_trace_id};")

    [item] = rollbar_api.requests
    data = item.json()["data"]
    assert data["body"]["trace"]["exception"]["class"] == "RuntimeError"
    assert data["custom"] == {"trace_id": trace_id, "xray_trace_id": xray_trace_id}
    assert data["request"]["url"].endswith("/api/activities/home")

    [server] = [s for s in span_exporter.get_finished_spans() if s.kind == SpanKind.SERVER]
    assert format(server.context.trace_id, "032x") == trace_id
    assert server.status.status_code == StatusCode.ERROR
    assert [e.attributes["exception.type"] for e in server.events if e.name == "exception"] == ["RuntimeError"]

    [segment] = xray_daemon.wait_for_segments(1)
    assert segment["trace_id"] == xray_trace_id and segment["fault"] is True
    assert segment["http"]["response"]["status"] == 500
    assert segment["cause"], "the segment carries the cause (a reference to the subsegment's exception)"

    errors = [r for r in stdout_records(capsys) if r["level"] == "ERROR" and r["logger"] == "cruddur.telemetry"]
    assert len(errors) == 1 and errors[0]["trace_id"] == trace_id
    assert "RuntimeError: the disk caught fire" in errors[0]["exception"]
    cloudwatch_errors = [
        e for e in cloudwatch_events(group) if e["logger"] == "cruddur.telemetry" and e["level"] == "ERROR"
    ]
    assert len(cloudwatch_errors) == 1 and cloudwatch_errors[0]["trace_id"] == trace_id


@pytest.mark.parametrize("rollbar_status", [200, 500])
def test_a_burst_of_errors_is_bounded_and_never_waits_on_rollbar(  # a hanging API would hang the test
    make_app, rollbar_api, monkeypatch, rollbar_status
):
    import threading

    rollbar_api.hang = rollbar_status == 200
    rollbar_api.status = rollbar_status
    app = make_app({"ROLLBAR_ACCESS_TOKEN": "fake-rollbar-token-0005", "ROLLBAR_ENDPOINT": rollbar_api.endpoint})
    break_home_feed(app, monkeypatch)
    client = app.test_client()

    def app_threads() -> int:
        # The fake API's own per-connection threads (each retry after a timeout opens one) are not the app's.
        return sum(1 for thread in threading.enumerate() if "process_request_thread" not in thread.name)

    threads_before = app_threads()
    for _ in range(300):
        assert client.get("/api/activities/home").status_code == 500
    assert app_threads() <= threads_before + 1, "one sender thread, not one per item"
    reporter = app.extensions["cruddur"].telemetry.rollbar
    if rollbar_api.hang:
        assert reporter.dropped >= 300 - 101, "beyond the queue, items are dropped, not queued"
    app.extensions["cruddur"].telemetry.shutdown(timeout=1)


def test_sending_to_rollbar_is_not_traced_as_the_apps_own_calls(make_app, rollbar_api, span_exporter):
    app = make_app(
        {
            "TELEMETRY_SPAN_EXPORTER": span_exporter,
            "ROLLBAR_ACCESS_TOKEN": "fake-rollbar-token-0007",
            "ROLLBAR_ENDPOINT": rollbar_api.endpoint,
        }
    )
    app.test_client().get("/rollbar/test")
    app.extensions["cruddur"].telemetry.shutdown()
    assert len(rollbar_api.requests) == 1
    assert [span.name for span in span_exporter.get_finished_spans()] == ["GET /rollbar/test"]
