"""Throwaway PostgreSQL databases for tests, on the server at `CRUDDUR_TEST_DATABASE_URL`.

By default that is the project machines' PostgreSQL at 127.0.0.1:5432 (user `postgres`, trust
authentication). Each test gets a database of its own, created empty and dropped afterwards.
"""

from __future__ import annotations

import os
import uuid

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

DEFAULT_SERVER_URL = "postgresql://postgres@127.0.0.1:5432/postgres"

#: Read when the tests start: the test environment itself is scrubbed of CRUDDUR_* variables.
SERVER_URL = os.environ.get("CRUDDUR_TEST_DATABASE_URL") or DEFAULT_SERVER_URL


class PostgresServer:
    """A server on which tests may create and drop databases."""

    def __init__(self, url: str = SERVER_URL) -> None:
        self.url = url

    def problem(self) -> str | None:
        """Why this server cannot be used, or None when it answers."""
        try:
            with psycopg.connect(self.url, connect_timeout=3, autocommit=True) as connection:
                connection.execute("SELECT 1")
        except psycopg.Error as error:
            return str(error).strip().splitlines()[0]
        return None

    @property
    def address(self) -> tuple[str, int]:
        params = conninfo_to_dict(self.url)
        return str(params.get("host", "127.0.0.1")), int(params.get("port", 5432))

    def url_for(self, name: str, port: int | None = None) -> str:
        """A URL for database `name` on this server, in the postgresql:// form DATABASE_URL takes;
        with `port`, through that loopback port instead (a `TcpProxy` in front of the server)."""
        params = conninfo_to_dict(self.url)
        user = params.get("user", "")
        password = f":{params['password']}" if params.get("password") else ""
        host, port = ("127.0.0.1", port) if port else self.address
        return f"postgresql://{user}{password}@{host}:{port}/{name}"

    def create_database(self) -> str:
        name = f"cruddur_test_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self.url, autocommit=True) as connection:
            connection.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return name

    def drop_database(self, name: str) -> None:
        with psycopg.connect(self.url, autocommit=True) as connection:
            connection.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))

    def connect(self, name: str) -> psycopg.Connection:
        """A direct connection to one of the test databases, to look at what the app wrote."""
        return psycopg.connect(make_conninfo(self.url, dbname=name), autocommit=True)
