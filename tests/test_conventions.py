"""Names and attributes follow today's OpenTelemetry conventions, read from the OTLP bytes Honeycomb gets."""

from __future__ import annotations

import pytest

from cruddur.config import ConfigError


def flush(app) -> None:
    app.extensions["cruddur"].telemetry.shutdown()


def exported_app(make_app, otlp_receiver, **settings: str):
    return make_app({"OTEL_EXPORTER_OTLP_ENDPOINT": otlp_receiver.url, **settings})


def test_the_resource_names_the_environment_under_both_keys(make_app, otlp_receiver):
    app = exported_app(make_app, otlp_receiver, CRUDDUR_ENVIRONMENT="staging")
    app.test_client().get("/api/activities/home")
    flush(app)
    resource = otlp_receiver.exports[0].resource_attributes()
    assert resource["deployment.environment.name"] == "staging"
    assert resource["deployment.environment"] == "staging"


def test_otel_resource_attributes_win_over_the_codes_defaults(make_app, otlp_receiver):
    app = exported_app(
        make_app,
        otlp_receiver,
        CRUDDUR_ENVIRONMENT="staging",
        OTEL_RESOURCE_ATTRIBUTES="deployment.environment.name=prod-eu,service.version=2026.12.1,team=cruddur%20core",
    )
    app.test_client().get("/api/activities/home")
    flush(app)
    resource = otlp_receiver.exports[0].resource_attributes()
    assert resource["deployment.environment.name"] == "prod-eu"
    assert resource["service.version"] == "2026.12.1"
    assert resource["team"] == "cruddur core"
    assert resource["service.name"] == "backend-flask"


def test_the_process_environment_is_read_the_same_way(make_app, otlp_receiver, monkeypatch):
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment=legacy-name")
    app = exported_app(make_app, otlp_receiver)
    app.test_client().get("/api/activities/home")
    flush(app)
    resource = otlp_receiver.exports[0].resource_attributes()
    assert resource["deployment.environment"] == "legacy-name"
    assert resource["deployment.environment.name"] == "development"


def test_the_service_name_setting_wins_over_the_resource_attribute(make_app, otlp_receiver, xray_daemon):
    app = exported_app(
        make_app,
        otlp_receiver,
        OTEL_RESOURCE_ATTRIBUTES="service.name=from-attributes",
        AWS_XRAY_DAEMON_ADDRESS=xray_daemon.address,
    )
    app.test_client().get("/api/activities/home")
    flush(app)
    assert otlp_receiver.exports[0].resource_attributes()["service.name"] == "from-attributes"
    [segment] = xray_daemon.wait_for_segments(1)
    assert segment["name"] == "from-attributes", "X-Ray names the service as OpenTelemetry does"

    otlp_receiver.exports.clear()
    app = exported_app(
        make_app,
        otlp_receiver,
        OTEL_RESOURCE_ATTRIBUTES="service.name=from-attributes",
        OTEL_SERVICE_NAME="from-setting",
    )
    app.test_client().get("/api/activities/home")
    flush(app)
    assert otlp_receiver.exports[0].resource_attributes()["service.name"] == "from-setting"


@pytest.mark.parametrize(
    "bsp",
    [
        {"OTEL_BSP_MAX_QUEUE_SIZE": "100"},
        {"OTEL_BSP_MAX_QUEUE_SIZE": "1"},
        {"OTEL_BSP_MAX_QUEUE_SIZE": "100", "OTEL_BSP_MAX_EXPORT_BATCH_SIZE": "100"},
        {"OTEL_BSP_MAX_EXPORT_BATCH_SIZE": "2048"},
        {"OTEL_BSP_MAX_QUEUE_SIZE": "4096", "OTEL_BSP_MAX_EXPORT_BATCH_SIZE": "1000", "OTEL_BSP_SCHEDULE_DELAY": "50"},
    ],
)
def test_every_valid_batch_setting_starts_and_exports(make_app, otlp_receiver, bsp):
    app = exported_app(make_app, otlp_receiver, **bsp)
    assert app.test_client().get("/api/activities/home").status_code == 200
    flush(app)
    assert any(span.name == "GET /api/activities/home" for span in otlp_receiver.spans())


@pytest.mark.parametrize(
    "bsp",
    [
        {"OTEL_BSP_MAX_QUEUE_SIZE": "100", "OTEL_BSP_MAX_EXPORT_BATCH_SIZE": "101"},
        {"OTEL_BSP_MAX_EXPORT_BATCH_SIZE": "4096"},
    ],
)
def test_a_batch_larger_than_the_queue_is_refused_at_start_with_both_names(make_app, otlp_receiver, bsp):
    with pytest.raises(ConfigError, match=r"OTEL_BSP_MAX_EXPORT_BATCH_SIZE=.*OTEL_BSP_MAX_QUEUE_SIZE"):
        exported_app(make_app, otlp_receiver, **bsp)


def span_attributes(span) -> dict:
    return {kv.key: getattr(kv.value, kv.value.WhichOneof("value")) for kv in span.attributes}


@pytest.mark.parametrize(
    ("host", "address"),
    [("cruddur.test:4567", "cruddur.test"), ("cruddur.test", "cruddur.test"), ("[::1]:4567", "::1")],
)
def test_server_spans_carry_the_stable_http_attributes(make_app, otlp_receiver, host, address):
    app = exported_app(make_app, otlp_receiver)
    app.test_client().get("/api/activities/@worf?token=canary-secret-0001", headers={"Host": host})
    flush(app)
    [server] = [span for span in otlp_receiver.spans() if span.kind == span.SPAN_KIND_SERVER]
    attributes = span_attributes(server)
    assert server.name == "GET /api/activities/@<handle>"
    assert attributes["http.request.method"] == "GET"
    assert attributes["url.path"] == "/api/activities/@worf"
    assert attributes["http.route"] == "/api/activities/@<handle>"
    assert attributes["http.response.status_code"] == 200
    assert attributes["server.address"] == address
    assert attributes["client.address"] == "127.0.0.1"
    assert "canary-secret-0001" not in attributes["url.query"], "the scrub hook reads the new names too"
    assert not {"http.method", "http.target", "http.status_code", "http.url"} & set(attributes)


@pytest.mark.parametrize(
    ("method", "path", "status", "name"),
    [
        ("GET", "/wp-admin/setup-config.php", 404, "GET"),
        ("POST", "/.env", 404, "POST"),
        ("DELETE", "/api/activities/home", 405, "DELETE"),
        ("GET", "/api/activities/home", 200, "GET /api/activities/home"),
    ],
)
def test_a_request_no_route_matches_is_named_by_its_method(make_app, otlp_receiver, method, path, status, name):
    app = exported_app(make_app, otlp_receiver)
    assert app.test_client().open(path, method=method).status_code == status
    flush(app)
    [server] = [span for span in otlp_receiver.spans() if span.kind == span.SPAN_KIND_SERVER]
    assert server.name == name
    assert span_attributes(server)["url.path"] == path


#: Serves a few requests in a fresh process (the conventions are chosen once per process) and prints
#: the server spans' attributes and what the sampler kept.
CONVENTIONS_PROBE = """
import json, sys
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from cruddur import create_app

exporter = InMemorySpanExporter()
app = create_app({"TESTING": True, "DATABASE_URL": sys.argv[1], "TELEMETRY_SPAN_EXPORTER": exporter,
                  "CRUDDUR_SAMPLING_RULE": sys.argv[2], "CRUDDUR_LOG_LEVEL": "ERROR"})
client = app.test_client()
home = [client.get("/api/activities/home").headers["X-Amzn-Trace-Id"] for _ in range(3)]
client.get("/api/message_groups?token=canary-secret-0002&page=2")
spans = [dict(span.attributes) for span in exporter.get_finished_spans() if span.kind.name == "SERVER"]
print(json.dumps({"home": home, "spans": spans}))
"""


@pytest.mark.parametrize(
    ("opt_in", "new", "old"),
    [(None, True, False), ("http/dup", True, True), ("database", False, True), ("http", True, False)],
)
def test_each_choice_of_conventions_keeps_the_sampler_and_the_scrub_list_working(tmp_path, opt_in, new, old):
    """Unset: the stable names. The user's choice wins: `http/dup` writes both, a value without
    `http` the old names only. The sampler matches its rule and the scrub list cleans URLs under each."""
    import json
    import os
    import sys

    from tests.conftest import ISOLATED_PREFIXES
    from tests.support.server import BACKEND, run_in_backend

    rule = tmp_path / "rule.json"
    rule.write_text(
        json.dumps(
            {
                "SamplingRule": {
                    "RuleName": "NoHome",
                    "FixedRate": 0,
                    "ReservoirSize": 0,
                    "HTTPMethod": "GET",
                    "URLPath": "/api/activities/home",
                }
            }
        )
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(ISOLATED_PREFIXES)}
    if opt_in is not None:
        env["OTEL_SEMCONV_STABILITY_OPT_IN"] = opt_in
    probe = run_in_backend(
        [sys.executable, "-c", CONVENTIONS_PROBE, str(tmp_path / "db.sqlite3"), str(rule)],
        {**env, "PYTHONPATH": str(BACKEND)},
        60,
    )
    assert probe.returncode == 0, probe.stderr[-2000:]
    result = json.loads(probe.stdout.strip().splitlines()[-1])
    assert all(header.endswith("Sampled=0") for header in result["home"]), "the rule matched method and path"
    [span] = result["spans"]
    assert ("http.request.method" in span and "url.path" in span and "http.response.status_code" in span) is new
    assert ("http.method" in span and "http.target" in span and "http.status_code" in span) is old
    assert "canary-secret-0002" not in json.dumps(span)
    assert "page=2" in json.dumps(span)
