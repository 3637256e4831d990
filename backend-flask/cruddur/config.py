"""Settings read from the environment once, when the app is built.

Every setting is named after the environment variable that sets it, so `create_app(config)` takes
overrides under the same names (tests pass `{"DATABASE_URL": ..., "HONEYCOMB_API_KEY": ...}`), and
the telemetry modules read the standard variables of their ecosystems from the same merged view.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_USER_HANDLE = "andrewbrown"
DEFAULT_FRONTEND_URL = "http://localhost:3000"
DEFAULT_BACKEND_URL = "http://localhost:4567"
DEFAULT_MAX_BODY_BYTES = 64 * 1024
DEFAULT_DB_POOL_SIZE = 4
DEFAULT_DB_CONNECT_TIMEOUT = 5.0
DEFAULT_DB_STATEMENT_TIMEOUT = 5.0

#: `DATABASE_URL` schemes that select the PostgreSQL store.
POSTGRES_SCHEMES = ("postgresql://", "postgres://")

TRUE_WORDS = frozenset({"1", "true", "yes", "on"})
FALSE_WORDS = frozenset({"0", "false", "no", "off"})


class ConfigError(ValueError):
    """A setting has a value the app cannot work with; raised at start-up, never on a request."""


def flag(environ: Mapping[str, str], name: str, default: bool) -> bool:
    """Read a boolean variable the way users write them (true/false, 1/0, yes/no, on/off)."""
    raw = environ.get(name, "").strip().lower()
    if not raw:
        return default
    if raw in TRUE_WORDS:
        return True
    if raw in FALSE_WORDS:
        return False
    raise ConfigError(f"{name}={raw!r} is not a boolean (use true or false)")


def positive_number(
    environ: Mapping[str, str], name: str, default: float | None, parse: type[int] | type[float] = float
) -> float | None:
    """Read a number greater than zero (`parse=int` for a whole one), or the default when unset."""
    raw = environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = parse(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a {'whole number' if parse is int else 'number'}") from None
    if value <= 0:
        raise ConfigError(f"{name}={raw!r} must be greater than zero")
    return value


def positive_int(environ: Mapping[str, str], name: str, default: int | None) -> int | None:
    """Read a whole number greater than zero, or the default when the variable is unset."""
    return positive_number(environ, name, default, int)


def is_postgres_url(database_url: str | None) -> bool:
    """Whether `DATABASE_URL` names a PostgreSQL server rather than a SQLite file."""
    return bool(database_url) and database_url.startswith(POSTGRES_SCHEMES)


def sqlite_path(database_url: str | None, instance_path: str) -> Path:
    """Resolve `DATABASE_URL` (a `sqlite:///` URL or a plain file path) to the database file.

    The default file's folder (the instance folder) is created; a folder named in `DATABASE_URL`
    must exist already, so a typo is an error at start rather than a new tree of folders."""
    default = Path(instance_path) / "cruddur.sqlite3"
    if not database_url:
        return default
    if database_url.startswith("sqlite:///"):
        path = Path(database_url.removeprefix("sqlite:///"))
    elif "://" in database_url:
        scheme = database_url.split("://", 1)[0]
        raise ConfigError(
            f"DATABASE_URL uses {scheme}://, which no store here speaks "
            "(use postgresql://user@host/db, sqlite:///path/to/file.db, or leave DATABASE_URL unset)"
        )
    else:
        path = Path(database_url)
    if not path.parent.is_dir():
        raise ConfigError(
            f"DATABASE_URL={database_url!r}: the folder {str(path.parent)!r} does not exist "
            "(create it, or leave DATABASE_URL unset for backend-flask/instance/cruddur.sqlite3)"
        )
    return path


@dataclass(frozen=True)
class Settings:
    """What the app needs to know about its surroundings; built once by `create_app`."""

    environ: Mapping[str, str] = field(repr=False)
    database_url: str | None
    user_handle: str
    frontend_url: str
    backend_url: str
    environment: str
    max_body_bytes: int
    db_pool_size: int
    db_connect_timeout: float
    db_statement_timeout: float

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> Settings:
        return cls(
            environ=dict(environ),
            database_url=environ.get("DATABASE_URL") or None,
            user_handle=environ.get("CRUDDUR_USER_HANDLE") or DEFAULT_USER_HANDLE,
            frontend_url=environ.get("FRONTEND_URL") or DEFAULT_FRONTEND_URL,
            backend_url=environ.get("BACKEND_URL") or DEFAULT_BACKEND_URL,
            environment=environ.get("CRUDDUR_ENVIRONMENT") or "development",
            max_body_bytes=positive_int(environ, "CRUDDUR_MAX_BODY_BYTES", DEFAULT_MAX_BODY_BYTES),
            db_pool_size=positive_int(environ, "CRUDDUR_DB_POOL_SIZE", DEFAULT_DB_POOL_SIZE),
            db_connect_timeout=positive_number(environ, "CRUDDUR_DB_CONNECT_TIMEOUT", DEFAULT_DB_CONNECT_TIMEOUT),
            db_statement_timeout=positive_number(environ, "CRUDDUR_DB_STATEMENT_TIMEOUT", DEFAULT_DB_STATEMENT_TIMEOUT),
        )

    @property
    def is_production(self) -> bool:
        return self.environment == "production"

    @property
    def seeds_sample_data(self) -> bool:
        """Only a development database gets the sample users and posts when it is first created."""
        return self.environment == "development"


def merged_environ(overrides: Mapping[str, object] | None) -> dict[str, str]:
    """The process environment with a caller's overrides: a string sets a variable, None unsets it.

    Other values (`TESTING=True`, `MAX_CONTENT_LENGTH=...`) are Flask settings, not variables.
    """
    environ = dict(os.environ)
    for key, value in (overrides or {}).items():
        if isinstance(value, str):
            environ[key] = value
        elif value is None:
            environ.pop(key, None)
    return environ
