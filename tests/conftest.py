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
from tests.support.postgres import PostgresServer
from tests.support.recording import RecordingServer
from tests.support.xray_daemon import FakeXRayDaemon

#: Variables of the tools the app talks to; a developer's shell must not leak them into a test.
ISOLATED_PREFIXES = ("OTEL_", "HONEYCOMB_", "AWS_", "ROLLBAR_", "CLOUDWATCH_", "CRUDDUR_", "COGNITO_", "DATABASE_URL")


@pytest.fixture(autouse=True)
def isolated_environment(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    """No developer settings, and no AWS credential lookup that could leave this machine. No local
    trace file either: a test that wants one names its own."""
    for name in list(os.environ):
        if name.startswith(ISOLATED_PREFIXES):
            monkeypatch.delenv(name)
    monkeypatch.setenv("CRUDDUR_LOCAL_TRACES", "false")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))


STORES = ("sqlite", "postgresql")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--store",
        choices=STORES,
        default="sqlite",
        help="the store the app under test uses (tests marked both_stores run on both anyway)",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "both_stores: run on SQLite and on PostgreSQL, whatever --store says")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "store_kind" in metafunc.fixturenames and metafunc.definition.get_closest_marker("both_stores"):
        metafunc.parametrize("store_kind", STORES, indirect=True)


_postgres_skipped: list[str] = []


@pytest.fixture(scope="session")
def postgres() -> PostgresServer:
    """The PostgreSQL server tests create their databases on. Without one, PostgreSQL tests skip
    locally (with one line at the end of the run) and fail under CI=true."""
    server = PostgresServer()
    problem = server.problem()
    if problem is not None:
        reason = f"no PostgreSQL at {server.url} ({problem}); set CRUDDUR_TEST_DATABASE_URL to run these tests"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(reason)
        _postgres_skipped.append(reason)
        pytest.skip(reason)
    return server


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if _postgres_skipped:
        terminalreporter.write_line(f"PostgreSQL tests skipped: {_postgres_skipped[0]}", yellow=True)


@pytest.fixture
def store_kind(request: pytest.FixtureRequest) -> str:
    return getattr(request, "param", None) or request.config.getoption("--store")


@pytest.fixture
def database(postgres: PostgresServer) -> Iterator[str]:
    """A fresh PostgreSQL database's name, dropped afterwards (for tests that build their own URLs)."""
    name = postgres.create_database()
    yield name
    postgres.drop_database(name)


@pytest.fixture
def database_url(store_kind: str, tmp_path, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh database for this test: a SQLite file, or a PostgreSQL database dropped afterwards."""
    if store_kind == "sqlite":
        yield str(tmp_path / "cruddur.sqlite3")
        return
    server: PostgresServer = request.getfixturevalue("postgres")
    name = server.create_database()
    yield server.url_for(name)
    server.drop_database(name)


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
        app.extensions["cruddur"].deps.store.close()


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
