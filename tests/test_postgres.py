"""PostgreSQL in production: observed like everything else, and never a hang when the database is not there.

Each test has a database of its own on the test server (`tests/support/postgres.py`); a
`TcpProxy` in front of it plays a database that is down, comes back, or accepts and never answers.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterator

import pytest
from opentelemetry.trace import SpanKind

from cruddur.store.postgresql import migrations
from tests.support.postgres import PostgresServer
from tests.support.tcp_proxy import TcpProxy
from tests.support.xray_daemon import walk

#: Connect timeout for these tests (libpq's minimum is 2 s); the generous bound on any 503 below.
CONNECT_TIMEOUT = 2
WELL_UNDER_15_SECONDS = 10


@pytest.fixture
def proxy(postgres: PostgresServer) -> Iterator[TcpProxy]:
    proxy = TcpProxy(*postgres.address)
    yield proxy
    proxy.close()


def via(proxy: TcpProxy, postgres: PostgresServer, database: str) -> str:
    return postgres.url_for(database, port=proxy.port)


def timed(client, path: str):
    started = time.monotonic()
    response = client.get(path)
    return response, time.monotonic() - started


def assert_database_unavailable(response) -> None:
    assert response.status_code == 503
    assert response.is_json and response.get_json()["error"] == "database_unavailable"


# --- failure and recovery -------------------------------------------------------------------


def test_down_at_start_the_app_starts_answers_503_and_recovers_without_restart(make_app, postgres, database, proxy):
    app = make_app({"DATABASE_URL": via(proxy, postgres, database), "CRUDDUR_DB_CONNECT_TIMEOUT": str(CONNECT_TIMEOUT)})
    client = app.test_client()

    health, health_seconds = timed(client, "/api/health")
    home, home_seconds = timed(client, "/api/activities/home")
    assert_database_unavailable(health)
    assert_database_unavailable(home)
    assert health_seconds < CONNECT_TIMEOUT + 1 and home_seconds < CONNECT_TIMEOUT + 1

    proxy.up()
    deadline = time.monotonic() + 20
    while (home := client.get("/api/activities/home")).status_code != 200 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert home.status_code == 200
    assert len(home.get_json()) == 3, "the migrations and the seed ran when the database came back"
    assert client.get("/api/health").get_json()["store"] == "postgresql"


def test_a_database_that_accepts_and_never_answers_is_a_503_in_seconds(make_app, postgres, database, proxy):
    proxy.silent()
    started = time.monotonic()
    app = make_app({"DATABASE_URL": via(proxy, postgres, database), "CRUDDUR_DB_CONNECT_TIMEOUT": str(CONNECT_TIMEOUT)})
    assert time.monotonic() - started < WELL_UNDER_15_SECONDS, "start-up does not hang on it either"
    client = app.test_client()
    for path in ("/api/activities/home", "/api/messages/@bayko", "/api/health"):
        response, seconds = timed(client, path)
        assert_database_unavailable(response)
        assert seconds < WELL_UNDER_15_SECONDS


def test_an_exhausted_pool_and_a_blocked_query_are_503s_in_seconds(make_app, postgres, database):
    app = make_app(
        {
            "DATABASE_URL": postgres.url_for(database),
            "CRUDDUR_DB_POOL_SIZE": "1",
            "CRUDDUR_DB_CONNECT_TIMEOUT": str(CONNECT_TIMEOUT),
            "CRUDDUR_DB_STATEMENT_TIMEOUT": "2",
        }
    )
    results: list[tuple[object, float]] = []
    with postgres.connect(database) as blocker:
        blocker.execute("BEGIN")
        blocker.execute("LOCK TABLE activities IN ACCESS EXCLUSIVE MODE")
        threads = [
            threading.Thread(target=lambda: results.append(timed(app.test_client(), "/api/activities/home")))
            for _ in range(3)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        blocker.execute("ROLLBACK")
    assert len(results) == 3
    for response, seconds in results:
        assert_database_unavailable(response)
        assert seconds < WELL_UNDER_15_SECONDS
    assert app.test_client().get("/api/activities/home").status_code == 200


def test_a_log_line_says_when_the_database_cannot_be_reached(make_app, postgres, database, proxy, caplog):
    caplog.set_level(logging.WARNING)
    app = make_app({"DATABASE_URL": via(proxy, postgres, database), "CRUDDUR_DB_CONNECT_TIMEOUT": str(CONNECT_TIMEOUT)})
    app.test_client().get("/api/activities/home")
    messages = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert any("does not answer" in m and f"127.0.0.1:{proxy.port}/{database}" in m for m in messages)
    assert any(r.name == "psycopg.pool" and "error connecting" in r.getMessage() for r in caplog.records)
    assert any("database unavailable" in m for m in messages), "each 503 says why, under its trace id"


# --- migrations -----------------------------------------------------------------------------


def test_instances_starting_together_migrate_once(make_app, postgres, database):
    url = postgres.url_for(database)
    errors: list[BaseException] = []

    def start() -> None:
        try:
            make_app({"DATABASE_URL": url})
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=start) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    with postgres.connect(database) as connection:
        versions = [row[0] for row in connection.execute("SELECT version FROM schema_migrations ORDER BY version")]
        assert versions == [m.version for m in migrations()]
        assert connection.execute("SELECT count(*) FROM users WHERE handle = 'andrewbrown'").fetchone()[0] == 1
        assert connection.execute("SELECT count(*) FROM activities").fetchone()[0] == 4, "seeded once"


def test_db_upgrade_applies_what_is_pending(make_app, postgres, database):
    app = make_app({"DATABASE_URL": postgres.url_for(database)})
    with postgres.connect(database) as connection:
        connection.execute("DELETE FROM schema_migrations")
        connection.execute("DROP TABLE messages, message_groups, activities, users, meta")
    result = app.test_cli_runner().invoke(args=["db", "upgrade"])
    assert result.exit_code == 0 and result.output.strip() == "applied 0001_initial"
    assert app.test_cli_runner().invoke(args=["db", "upgrade"]).output.strip() == "the schema is up to date"


def test_db_upgrade_says_why_it_failed(make_app, postgres, database, proxy):
    app = make_app({"DATABASE_URL": via(proxy, postgres, database), "CRUDDUR_DB_CONNECT_TIMEOUT": str(CONNECT_TIMEOUT)})
    result = app.test_cli_runner().invoke(args=["db", "upgrade"])
    assert result.exit_code == 1 and "the migrations could not be applied" in result.output


# --- observed like everything else ----------------------------------------------------------

CANARY_PASSWORD = "canary-pw-not-a-real-secret"
POSTED = "a posted message that is a value, never SQL"


def test_each_query_is_one_span_and_one_subsegment_with_the_same_id_and_no_values(
    make_app, postgres, database, span_exporter, xray_daemon, capsys
):
    """The password in DATABASE_URL (ignored by trust authentication) and the posted text reach no span,
    no segment, no log line."""
    url = postgres.url_for(database).replace("@", f":{CANARY_PASSWORD}@", 1)
    app = make_app(
        {"DATABASE_URL": url, "TELEMETRY_SPAN_EXPORTER": span_exporter, "AWS_XRAY_DAEMON_ADDRESS": xray_daemon.address}
    )
    client = app.test_client()
    assert client.post("/api/activities", json={"message": POSTED, "ttl": "1-day"}).status_code == 200
    assert client.get("/api/activities/home").status_code == 200
    segments = xray_daemon.wait_for_segments(2)

    queries = {
        format(s.context.span_id, "016x"): s for s in span_exporter.get_finished_spans() if s.kind == SpanKind.CLIENT
    }
    subsegments = {e["id"]: e for segment in segments for _, e in walk(segment) if "sql" in e}
    assert queries and set(queries) == set(subsegments), "one span and one subsegment per query, same ids"
    for span_id, span in queries.items():
        attributes = dict(span.attributes)
        assert attributes["db.system.name"] == "postgresql"
        assert attributes["db.namespace"] == database
        assert attributes["server.address"] == "127.0.0.1"
        assert "%s" in attributes["db.query.text"] or attributes["db.query.text"] == "SELECT 1"
        sql = subsegments[span_id]["sql"]
        assert sql["database_type"] == "PostgreSQL"
        assert sql["url"] == f"postgresql://postgres@127.0.0.1:5432/{database}"
        assert sql["sanitized_query"] == attributes["db.query.text"]
        assert subsegments[span_id]["namespace"] == "remote"

    everything = json.dumps([dict(s.attributes) for s in span_exporter.get_finished_spans()]) + json.dumps(segments)
    captured = capsys.readouterr()
    assert POSTED not in json.dumps([dict(s.attributes) for s in queries.values()]) + json.dumps(subsegments)
    for text in (everything, captured.out, captured.err):
        assert CANARY_PASSWORD not in text
    assert '"logger": "psycopg' not in captured.out, "no line per connection checkout"
    assert app.extensions["cruddur"].deps.store.database.url.count(":") == 2, "scheme and port, no password"


def test_the_password_is_in_no_log_line_when_the_database_is_down(make_app, postgres, database, proxy, capsys):
    url = via(proxy, postgres, database).replace("@", f":{CANARY_PASSWORD}@", 1)
    app = make_app({"DATABASE_URL": url, "CRUDDUR_DB_CONNECT_TIMEOUT": str(CONNECT_TIMEOUT)})
    assert_database_unavailable(app.test_client().get("/api/activities/home"))
    app.test_cli_runner().invoke(args=["db", "upgrade"])
    captured = capsys.readouterr()
    assert "does not answer" in captured.out
    assert CANARY_PASSWORD not in captured.out + captured.err


def test_a_request_that_waited_for_a_connection_carries_a_span_event(
    make_app, postgres, database, span_exporter, xray_daemon
):
    app = make_app(
        {
            "DATABASE_URL": postgres.url_for(database),
            "CRUDDUR_DB_POOL_SIZE": "1",
            "TELEMETRY_SPAN_EXPORTER": span_exporter,
            "AWS_XRAY_DAEMON_ADDRESS": xray_daemon.address,
        }
    )
    statuses: list[int] = []

    def read() -> None:
        statuses.append(app.test_client().get("/api/activities/home").status_code)

    with postgres.connect(database) as blocker:
        blocker.execute("BEGIN")
        blocker.execute("LOCK TABLE activities IN ACCESS EXCLUSIVE MODE")
        first = threading.Thread(target=read)
        first.start()
        time.sleep(0.3)
        second = threading.Thread(target=read)
        second.start()
        time.sleep(0.3)
        blocker.execute("ROLLBACK")
        first.join(30)
        second.join(30)
    assert statuses == [200, 200]
    waits = [e for s in span_exporter.get_finished_spans() for e in s.events if e.name == "db.client.connection.wait"]
    assert max(e.attributes["db.client.connection.wait_time"] for e in waits) > 0.2, "the second waited for the first"
    noted = [
        entity["metadata"]["app"]["db.client.connection.wait_time"]
        for segment in xray_daemon.wait_for_segments(2)
        for _, entity in walk(segment)
        if "db.client.connection.wait_time" in entity.get("metadata", {}).get("app", {})
    ]
    assert max(noted) > 0.2, "X-Ray has it too, as metadata of the work that waited"
