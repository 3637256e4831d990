"""What leaves the process: OTLP/HTTP to a local receiver, segments to a local daemon, and when."""

from __future__ import annotations

import json

import pytest
import requests

from tests.support.server import Gunicorn
from tests.support.stores import query_span_name


def flush(app) -> None:
    app.extensions["cruddur"].telemetry.shutdown()


def test_a_honeycomb_key_alone_exports_to_honeycomb_with_the_team_header(make_app, otlp_receiver):
    app = make_app(
        {"HONEYCOMB_API_KEY": "hcaik_fake_key_for_tests_0000wxyz", "HONEYCOMB_API_ENDPOINT": otlp_receiver.url}
    )
    app.test_client().get("/api/activities/home")
    flush(app)
    [export] = otlp_receiver.exports
    assert export.path == "/v1/traces"
    assert export.headers["x-honeycomb-team"] == "hcaik_fake_key_for_tests_0000wxyz"
    assert export.headers["content-type"] == "application/x-protobuf"
    assert "x-honeycomb-dataset" not in export.headers
    names = {span.name for span in export.spans()}
    assert {"GET /api/activities/home", "home-activities", query_span_name(app)} <= names
    resource = export.resource_attributes()
    assert resource["service.name"] == "backend-flask"
    assert resource["deployment.environment"] == "development"
    assert resource["service.version"]
    [service] = [span for span in export.spans() if span.name == "home-activities"]
    attributes = {kv.key: kv.value for kv in service.attributes}
    assert attributes["app.result_length"].int_value == 3
    assert attributes["app.user_handle"].string_value == "andrewbrown"


def test_a_classic_key_sends_the_dataset_header(make_app, otlp_receiver):
    app = make_app(
        {
            "HONEYCOMB_API_KEY": "fakeclassickey0000000000000000ab",
            "HONEYCOMB_API_ENDPOINT": otlp_receiver.url,
            "HONEYCOMB_DATASET": "cruddur-dev",
            "OTEL_SERVICE_NAME": "cruddur-backend",
            "CRUDDUR_ENVIRONMENT": "staging",
        }
    )
    app.test_client().get("/api/activities/home")
    flush(app)
    [export] = otlp_receiver.exports
    assert export.headers["x-honeycomb-dataset"] == "cruddur-dev"
    assert export.resource_attributes()["service.name"] == "cruddur-backend"
    assert export.resource_attributes()["deployment.environment"] == "staging"


def test_the_standard_otlp_endpoint_wins_over_the_honeycomb_key(make_app, otlp_receiver):
    app = make_app(
        {
            "HONEYCOMB_API_KEY": "hcaik_fake_key_for_tests_0000wxyz",
            "HONEYCOMB_API_ENDPOINT": "http://127.0.0.1:9/never",
            "OTEL_EXPORTER_OTLP_ENDPOINT": otlp_receiver.url + "/",
            "OTEL_EXPORTER_OTLP_HEADERS": "x-collector-token=fake%20token,x-team=cruddur",
        }
    )
    app.test_client().get("/api/activities/home")
    flush(app)
    [export] = otlp_receiver.exports
    assert export.path == "/v1/traces"
    assert export.headers["x-collector-token"] == "fake token"
    assert export.headers["x-team"] == "cruddur"
    assert "x-honeycomb-team" not in export.headers


def test_a_traces_endpoint_is_used_as_given(make_app, otlp_receiver):
    app = make_app({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": otlp_receiver.url + "/custom/path"})
    app.test_client().get("/api/activities/home")
    flush(app)
    assert [export.path for export in otlp_receiver.exports] == ["/custom/path"]


def test_otel_sdk_disabled_exports_nothing_but_xray_still_works(make_app, otlp_receiver, xray_daemon):
    app = make_app(
        {
            "OTEL_SDK_DISABLED": "true",
            "HONEYCOMB_API_KEY": "hcaik_fake_key_for_tests_0000wxyz",
            "HONEYCOMB_API_ENDPOINT": otlp_receiver.url,
            "AWS_XRAY_DAEMON_ADDRESS": xray_daemon.address,
        }
    )
    traceparent = "00-5759e988bd862e3fe1be46a994272793-53995c3f42cd8ad8-01"
    response = app.test_client().get("/api/activities/home", headers={"traceparent": traceparent})
    flush(app)
    assert otlp_receiver.exports == []
    [segment] = xray_daemon.wait_for_segments(1)
    assert segment["trace_id"] == "1-5759e988-bd862e3fe1be46a994272793"
    assert segment["parent_id"] == "53995c3f42cd8ad8"
    assert [sub["name"] for sub in segment["subsegments"]] == ["home-activities"]
    assert response.headers["X-Amzn-Trace-Id"] == "Root=1-5759e988-bd862e3fe1be46a994272793;Sampled=1"


def test_xray_sdk_disabled_sends_no_segments(make_app, xray_daemon):
    app = make_app({"AWS_XRAY_SDK_ENABLED": "false", "AWS_XRAY_DAEMON_ADDRESS": xray_daemon.address})
    response = app.test_client().get("/api/activities/home")
    assert response.status_code == 200
    assert xray_daemon.wait_for_segments(1, timeout=0.3) == []
    assert response.headers["X-Amzn-Trace-Id"].startswith("Root=1-")


def test_with_no_configuration_the_app_serves_and_says_what_is_off(make_app, capsys):
    response = make_app().test_client().get("/api/activities/home")
    assert response.status_code == 200
    assert response.headers["X-Amzn-Trace-Id"].startswith("Root=1-")
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    messages = [line["message"] for line in lines if line["logger"] == "cruddur.telemetry"]
    assert any("OpenTelemetry: off" in m and "HONEYCOMB_API_KEY" in m for m in messages)
    assert any("AWS X-Ray: off" in m and "AWS_XRAY_DAEMON_ADDRESS" in m for m in messages)


def test_dynamic_naming_and_tracing_name(make_app, xray_daemon):
    named = make_app({"AWS_XRAY_DAEMON_ADDRESS": xray_daemon.address, "AWS_XRAY_TRACING_NAME": "cruddur-api"})
    named.test_client().get("/api/activities/home")
    dynamic = make_app({"AWS_XRAY_DAEMON_ADDRESS": xray_daemon.address, "AWS_XRAY_URL": "*.example.test"})
    dynamic.test_client().get("/api/activities/home", headers={"Host": "api.example.test"})
    assert [s["name"] for s in xray_daemon.wait_for_segments(2)] == ["cruddur-api", "api.example.test"]


@pytest.mark.parametrize("mode", ["ok", "hang"])
def test_sigterm_exports_every_finished_span_within_the_deadline(tmp_path, otlp_receiver, mode):
    otlp_receiver.mode = mode
    env = {
        "DATABASE_URL": str(tmp_path / "db.sqlite3"),
        "OTEL_EXPORTER_OTLP_ENDPOINT": otlp_receiver.url,
        "OTEL_BSP_SCHEDULE_DELAY": "60000",
        "OTEL_EXPORTER_OTLP_TIMEOUT": "30",
        "CRUDDUR_SHUTDOWN_TIMEOUT": "3",
    }
    server = Gunicorn(env, tmp_path / "gunicorn.log").wait_ready()
    for _ in range(5):
        assert requests.get(f"{server.url}/api/activities/home", timeout=5).status_code == 200
    assert otlp_receiver.spans() == [], "a 60 s schedule exports nothing before the stop"
    took = server.stop()
    assert took < 3 + 5, server.output()
    if mode == "ok":
        names = [span.name for span in otlp_receiver.spans()]
        assert names.count("GET /api/activities/home") == 5 and names.count("home-activities") == 5
    else:
        assert "did not finish flushing before the deadline" in server.output()


def test_a_preloaded_app_exports_from_its_forked_workers(tmp_path, otlp_receiver):
    env = {"DATABASE_URL": str(tmp_path / "db.sqlite3"), "OTEL_EXPORTER_OTLP_ENDPOINT": otlp_receiver.url}
    with Gunicorn(env, tmp_path / "gunicorn.log", workers=2, extra_args=("--preload",)) as server:
        for _ in range(4):
            assert requests.get(f"{server.url}/api/activities/home", timeout=5).status_code == 200
    names = [span.name for span in otlp_receiver.spans()]
    assert names.count("GET /api/activities/home") == 4
