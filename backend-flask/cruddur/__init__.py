"""Cruddur's API: `create_app()` builds a Flask app with its store, routes and telemetry.

Importing this package does nothing else: no network, no tracer, no files written.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import click
from flask import Flask
from flask_cors import CORS

from cruddur import telemetry
from cruddur.api import auth as api_auth
from cruddur.auth import AuthSettings
from cruddur.config import Settings, is_postgres_url, merged_environ, sqlite_path
from cruddur.services import Deps
from cruddur.store import ManagedStore
from cruddur.store.cli import db_cli
from cruddur.store.sqlite import SQLiteStore
from cruddur.telemetry import Telemetry
from cruddur.telemetry.cli import telemetry_cli
from cruddur.telemetry.tracing import Tracing
from cruddur.timeutil import utc_now
from cruddur.version import code_version

#: Request headers a browser may send: JSON, caching, the bearer token, and trace context in both formats.
CORS_ALLOW_HEADERS = [
    "authorization",
    "content-type",
    "if-modified-since",
    "traceparent",
    "tracestate",
    "x-amzn-trace-id",
]
CORS_EXPOSE_HEADERS = ["location", "link", "x-amzn-trace-id", "traceresponse", "www-authenticate"]
#: How long a browser may reuse a preflight's answer: without it, the frontend's every JSON POST
#: costs an OPTIONS round trip first. Two hours is the most Chromium keeps (Firefox keeps a day).
CORS_MAX_AGE_SECONDS = 7200
#: Flask setting: True builds the app for a CLI command (no tool starts, stdout left to the command),
#: False to serve; unset, `create_app` tells from the `flask` command line that is loading it.
FOR_COMMAND = "CRUDDUR_FOR_COMMAND"
#: Built-in `flask` commands that load the app to serve it or to work with it live.
SERVING_COMMANDS = frozenset({"run", "shell"})


@dataclass(frozen=True)
class CruddurState:
    """What one app instance owns, in `app.extensions["cruddur"]`."""

    settings: Settings
    deps: Deps
    telemetry: Telemetry
    version: str


def create_app(config: Mapping[str, Any] | None = None) -> Flask:
    """Build the app. `config` overrides environment variables by name (None unsets one) and
    carries Flask settings such as `TESTING`."""
    app = Flask(__name__)
    settings = Settings.from_environ(merged_environ(config))
    auth_settings = AuthSettings.from_environ(settings.environ, settings.environment, settings.user_handle)
    app.config.from_mapping(MAX_CONTENT_LENGTH=settings.max_body_bytes)
    app.config.from_mapping({key: value for key, value in (config or {}).items() if value is not None})

    version = code_version(settings.environ)
    for_command = app.config.get(FOR_COMMAND)
    app_telemetry = telemetry.init_app(
        app, settings, version, for_command=_built_for_a_command() if for_command is None else for_command
    )
    store = build_store(settings, app.instance_path, app_telemetry.tracing)
    store.prepare(utc_now(), settings.user_handle, seed=settings.seeds_sample_data)

    app.extensions["cruddur"] = CruddurState(
        settings=settings,
        deps=Deps(store=store, tracing=app_telemetry.tracing, user_handle=settings.user_handle),
        telemetry=app_telemetry,
        version=version,
    )
    CORS(
        app,
        resources={r"/api/*": {"origins": [settings.frontend_url, settings.backend_url]}},
        allow_headers=CORS_ALLOW_HEADERS,
        expose_headers=CORS_EXPOSE_HEADERS,
        methods=["OPTIONS", "GET", "HEAD", "POST"],
        max_age=CORS_MAX_AGE_SECONDS,
    )
    api_auth.init_app(app, auth_settings, app_telemetry)
    _register_routes(app)
    app.cli.add_command(telemetry_cli)
    app.cli.add_command(db_cli)
    return app


def build_store(settings: Settings, instance_path: str, tracing: Tracing) -> ManagedStore:
    """PostgreSQL for a `postgresql://` (or `postgres://`) `DATABASE_URL`, else the embedded SQLite file."""
    if is_postgres_url(settings.database_url):
        # Imported here: an app on SQLite never loads psycopg.
        from cruddur.store.postgresql import PostgresStore

        return PostgresStore(
            settings.database_url,
            tracing,
            pool_size=settings.db_pool_size,
            connect_timeout=settings.db_connect_timeout,
            statement_timeout=settings.db_statement_timeout,
        )
    return SQLiteStore(sqlite_path(settings.database_url, instance_path), tracing)


def _built_for_a_command() -> bool:
    """Whether `flask --app app <command>` is building the app to run one of the app's commands
    (`telemetry status`, ...). Flask loads the app inside the click context of the command group for
    those; `flask run` and `flask shell` load it inside their own, to serve or explore it."""
    context = click.get_current_context(silent=True)
    return context is not None and context.command.name not in SERVING_COMMANDS


def _register_routes(app: Flask) -> None:
    from cruddur.api import activities, health, messages, rollbar_test
    from cruddur.api.errors import register_error_handlers

    app.register_blueprint(activities.bp)
    app.register_blueprint(messages.bp)
    app.register_blueprint(health.bp)
    app.register_blueprint(rollbar_test.bp)
    register_error_handlers(app)
