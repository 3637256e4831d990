"""Shared fixtures, flaskr-style: `app`, `client`, `runner`, and a factory for more apps."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from flask import Flask
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from cruddur import create_app
from tests.support.otlp import FakeOtlpReceiver
from tests.support.xray_daemon import FakeXRayDaemon

#: Variables of the tools the app talks to; a developer's shell must not leak them into a test.
ISOLATED_PREFIXES = ("OTEL_", "HONEYCOMB_", "AWS_", "ROLLBAR_", "CLOUDWATCH_", "CRUDDUR_", "DATABASE_URL")


@pytest.fixture(autouse=True)
def isolated_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith(ISOLATED_PREFIXES):
            monkeypatch.delenv(name)


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
