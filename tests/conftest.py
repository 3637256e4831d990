"""Shared fixtures, flaskr-style: `app`, `client`, `runner`, and a factory for more apps."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from flask import Flask
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from cruddur import create_app
from tests.support.cognito import FakeUserPool
from tests.support.otlp import FakeOtlpReceiver
from tests.support.recording import RecordingServer
from tests.support.xray_daemon import FakeXRayDaemon

#: Variables of the tools the app talks to; a developer's shell must not leak them into a test.
ISOLATED_PREFIXES = ("OTEL_", "HONEYCOMB_", "AWS_", "ROLLBAR_", "CLOUDWATCH_", "CRUDDUR_", "COGNITO_", "DATABASE_URL")


@pytest.fixture(autouse=True)
def isolated_environment(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    """No developer settings, and no AWS credential lookup that could leave this machine."""
    for name in list(os.environ):
        if name.startswith(ISOLATED_PREFIXES):
            monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))


@pytest.fixture
def database_url(tmp_path) -> str:
    return str(tmp_path / "cruddur.sqlite3")


@pytest.fixture
def make_app(database_url: str) -> Iterator[Callable[..., Flask]]:
    """Build apps on one database file; each is shut down at the end of the test."""
    apps: list[Flask] = []

    def make(config: dict[str, Any] | None = None) -> Flask:
        app = create_app({"TESTING": True, "DATABASE_URL": database_url, **(config or {})})
        apps.append(app)
        return app

    yield make
    for app in apps:
        app.extensions["cruddur"].telemetry.shutdown()


@pytest.fixture
def otlp_receiver() -> Iterator[FakeOtlpReceiver]:
    receiver = FakeOtlpReceiver()
    yield receiver
    receiver.close()


@pytest.fixture
def xray_daemon() -> Iterator[FakeXRayDaemon]:
    daemon = FakeXRayDaemon()
    yield daemon
    daemon.close()


@pytest.fixture(scope="session")
def moto_server() -> Iterator[str]:
    """moto's server, standing in for CloudWatch Logs (and STS) at a loopback URL."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def aws(moto_server: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """AWS settings pointing at moto. boto3 reads credentials from the real environment, so they are set there."""
    for name, value in {
        "AWS_REGION": "us-east-1",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": "fake-access-key-id",
        "AWS_SECRET_ACCESS_KEY": "fake-secret-for-tests",
        "AWS_ENDPOINT_URL": moto_server,
        "AWS_EC2_METADATA_DISABLED": "true",
    }.items():
        monkeypatch.setenv(name, value)
    return moto_server


@pytest.fixture
def rollbar_api() -> Iterator[RecordingServer]:
    """A local stand-in for Rollbar's item API; `url` is what ROLLBAR_ENDPOINT takes."""
    server = RecordingServer(reply={"err": 0, "result": {"id": None, "uuid": "00000000-0000-4000-8000-000000000000"}})
    server.endpoint = f"{server.url}/api/1/"
    yield server
    server.close()


@pytest.fixture
def user_pool() -> Iterator[FakeUserPool]:
    """A stand-in Cognito user pool: `settings` for the app, `token(...)` for the requests."""
    pool = FakeUserPool()
    yield pool
    pool.close()


@pytest.fixture
def span_exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
def app(make_app: Callable[..., Flask]) -> Flask:
    return make_app()


@pytest.fixture
def client(app: Flask):
    return app.test_client()


@pytest.fixture
def runner(app: Flask):
    return app.test_cli_runner()
