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
