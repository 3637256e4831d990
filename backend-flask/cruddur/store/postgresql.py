"""The production store: PostgreSQL through psycopg 3, with one bounded connection pool per process.

Instances share one database, so what one writes every other reads at once. The pool is opened on
first use in the process that uses it (a gunicorn worker, after the fork), never inherited. Every
wait is bounded: a connection is given within `connect_timeout` or the request fails with
`StoreUnavailable` (503), and the server cancels any statement running past `statement_timeout`.

The migrations in `migrations/` are applied when the app starts, or, when the database is down
then, by the first request that reaches it; an advisory lock lets many instances start at once.
"""

from __future__ import annotations

import logging
import math
import os
import re
import threading
import time
import uuid as uuidlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict
from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool

from cruddur.store import FEED_LIMIT, REPLY_DEPTH, Activity, Message, MessageGroup, StoreUnavailable, group_handles
from cruddur.store.seed import sample_rows
from cruddur.telemetry.tracing import Database, Tracing
from cruddur.timeutil import to_iso, utc_now

log = logging.getLogger(__name__)

MIGRATIONS = Path(__file__).with_name("migrations")
_MIGRATION_FILE = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")

#: The advisory lock every instance takes to migrate (an arbitrary constant: "cruddur" in ASCII).
MIGRATION_LOCK = 0x6372756464757200

#: A background reconnection gives up after this long and logs it; the next request starts a new one.
RECONNECT_TIMEOUT_SECONDS = 10.0

#: A request that waited at least this long for a connection gets a `db.client.connection.wait` event.
WAIT_WORTH_REPORTING_SECONDS = 0.001

ACTIVITY_COLUMNS = (
    "a.uuid, a.handle, u.display_name, a.message, a.created_at, a.expires_at, a.likes_count, a.reposts_count, "
    "a.reply_to_activity_uuid, "
    "(SELECT count(*) FROM activities c WHERE c.reply_to_activity_uuid = a.uuid) AS replies_count"
)
FROM_ACTIVITIES = "FROM activities a JOIN users u ON u.handle = a.handle"
NEWEST_FIRST = "ORDER BY a.created_at DESC, a.id DESC LIMIT %s"
REPLIES = (
    "WITH RECURSIVE thread (uuid, depth) AS ("  # noqa: S608 - interpolates constants only
    "SELECT uuid, 1 FROM activities WHERE reply_to_activity_uuid = ANY(%s::uuid[]) AND expires_at > %s "
    "UNION ALL SELECT r.uuid, t.depth + 1 FROM activities r JOIN thread t ON r.reply_to_activity_uuid = t.uuid "
    "WHERE t.depth < %s AND r.expires_at > %s) "
    f"SELECT {ACTIVITY_COLUMNS} FROM thread t JOIN activities a ON a.uuid = t.uuid "
    "JOIN users u ON u.handle = a.handle ORDER BY t.depth, a.created_at, a.id"
)


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str


def migrations() -> list[Migration]:
    """The versioned schema changes in the repository, oldest first (`NNNN_name.sql`)."""
    found = []
    for path in sorted(MIGRATIONS.glob("*.sql")):
        match = _MIGRATION_FILE.match(path.name)
        if match is None:
            raise RuntimeError(f"{path.name} is not named NNNN_name.sql")
        found.append(Migration(int(match[1]), match[2], path.read_text()))
    return found


def mention_pattern(handle: str) -> str:
    """`@handle` as a whole word, as a PostgreSQL regular expression (passed as a query parameter)."""
    return rf"(?<![[:alnum:]_@])@{re.escape(handle)}(?![[:alnum:]_])"


def describe(url: str) -> Database:
    """What the tracing tools are told about the database: never the password."""
    params = conninfo_to_dict(url)
    host = str(params.get("host") or params.get("hostaddr") or "localhost")
    port = int(str(params.get("port") or 5432).split(",")[0])
    user = str(params.get("user") or "")
    name = str(params.get("dbname") or user or "postgres")
    return Database(
        system="postgresql",
        namespace=name,
        database_type="PostgreSQL",
        url=f"postgresql://{f'{user}@' if user else ''}{host}:{port}/{name}",
        server_address=host,
        server_port=port,
        user=user or None,
        driver_version=f"psycopg {psycopg.__version__}",
    )


def _activity(row: dict[str, Any]) -> Activity:
    reply_to = row["reply_to_activity_uuid"]
    return {
        "uuid": str(row["uuid"]),
        "display_name": row["display_name"],
        "handle": row["handle"],
        "message": row["message"],
        "created_at": to_iso(row["created_at"]),
        "expires_at": to_iso(row["expires_at"]),
        "likes_count": row["likes_count"],
        "replies_count": row["replies_count"],
        "reposts_count": row["reposts_count"],
        "reply_to_activity_uuid": str(reply_to) if reply_to is not None else None,
        "replies": [],
    }


def _message(row: dict[str, Any]) -> Message:
    return {
        "uuid": str(row["uuid"]),
        "display_name": row["display_name"],
        "handle": row["handle"],
        "message": row["message"],
        "created_at": to_iso(row["created_at"]),
    }


class PostgresStore:
    """The `Store` on a PostgreSQL database, shared by every instance that points at it."""

    system = "postgresql"

    def __init__(
        self,
        url: str,
        tracing: Tracing,
        *,
        pool_size: int,
        connect_timeout: float,
        statement_timeout: float,
    ) -> None:
        self.database = describe(url)
        self._url = url
        self._tracing = tracing
        self._pool_size = pool_size
        self._connect_timeout = connect_timeout
        options = str(conninfo_to_dict(url).get("options") or "")
        self._kwargs: dict[str, Any] = {
            "autocommit": True,
            "row_factory": dict_row,
            # libpq counts whole seconds, two at least.
            "connect_timeout": max(2, math.ceil(connect_timeout)),
            "options": f"{options} -c statement_timeout={round(statement_timeout * 1000)}".strip(),
            "application_name": "backend-flask",
        }
        self._pool: ConnectionPool | None = None
        self._pool_pid = 0
        self._lock = threading.Lock()
        self._setup: tuple[str, bool] | None = None
        self._prepared = False

    # -- start-up, migrations and the pool ---------------------------------------------------

    def prepare(self, now: datetime, user_handle: str, seed: bool) -> bool:
        """Migrate, seed (if `seed`) and add the current user, now if the database answers, else on the
        first request that reaches it. Never fatal: a database that is down must not stop the app."""
        self._setup = (user_handle, seed)
        try:
            with psycopg.connect(self._url, **self._kwargs) as connection:
                self._prepare_on(connection, now)
        except psycopg.OperationalError as error:
            log.warning(
                "database: %s does not answer (%s); the app starts anyway and API requests answer 503 "
                "database_unavailable until it does",
                self.database.url,
                _first_line(error),
            )
            return False
        return True

    def _prepare_on(self, connection: psycopg.Connection[Any], now: datetime) -> None:
        """All of start-up in one transaction under the migration lock, so instances starting
        together migrate and seed one after the other, and the later ones find nothing to do."""
        assert self._setup is not None, "prepare() names the current user first"
        user_handle, seed = self._setup
        with connection.transaction():
            applied = self._migrate(connection)
            if seed:
                self._seed(connection, now)
            connection.execute(
                "INSERT INTO users (handle, display_name) VALUES (%s, %s) ON CONFLICT (handle) DO NOTHING",
                (user_handle, user_handle),
            )
        if applied:
            log.info("database: applied migrations %s to %s", ", ".join(applied), self.database.url)
        self._prepared = True

    def upgrade(self) -> list[str]:
        """Apply the pending migrations (`flask db upgrade`), with no statement time limit: a migration
        of a large table may take long. The names of those applied now."""
        with psycopg.connect(self._url, **self._kwargs) as connection, connection.transaction():
            connection.execute("SET LOCAL statement_timeout = 0")
            return self._migrate(connection)

    def _migrate(self, connection: psycopg.Connection[Any]) -> list[str]:
        """Apply each pending migration inside the caller's transaction, after taking the advisory lock
        (held until that transaction ends)."""
        connection.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
        connection.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations (version integer PRIMARY KEY, name text NOT NULL, "
            "applied_at timestamptz NOT NULL DEFAULT now())"
        )
        done = {row["version"] for row in connection.execute("SELECT version FROM schema_migrations")}
        applied: list[str] = []
        for migration in migrations():
            if migration.version in done:
                continue
            connection.execute(migration.sql)
            connection.execute(
                "INSERT INTO schema_migrations (version, name) VALUES (%s, %s)", (migration.version, migration.name)
            )
            applied.append(f"{migration.version:04d}_{migration.name}")
        return applied

    def seed(self, now: datetime) -> bool:
        with psycopg.connect(self._url, **self._kwargs) as connection, connection.transaction():
            connection.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
            return self._seed(connection, now)

    def _seed(self, connection: psycopg.Connection[Any], now: datetime) -> bool:
        if connection.execute("SELECT 1 FROM meta WHERE key = 'seeded_at'").fetchone() is not None:
            return False
        rows = sample_rows(now)
        with connection.cursor() as cursor:
            cursor.executemany(
                "INSERT INTO users (handle, display_name) VALUES (%s, %s) ON CONFLICT (handle) DO NOTHING",
                rows.users,
            )
            cursor.executemany(
                "INSERT INTO activities (uuid, handle, message, created_at, expires_at, likes_count, "
                "reply_to_activity_uuid) VALUES (%s, %s, %s, %s, %s, %s, %s)",
                rows.activities,
            )
            cursor.executemany(
                "INSERT INTO message_groups (uuid, first_handle, second_handle) VALUES (%s, %s, %s)",
                rows.message_groups,
            )
            cursor.executemany(
                "INSERT INTO messages (uuid, message_group_uuid, sender_handle, message, created_at) "
                "VALUES (%s, %s, %s, %s, %s)",
                rows.messages,
            )
        connection.execute("INSERT INTO meta (key, value) VALUES ('seeded_at', %s)", (to_iso(now),))
        return True

    def _open_pool(self) -> ConnectionPool:
        """This process's pool, opened on first use. A pool inherited through a fork is left alone:
        its threads did not survive the fork and its connections belong to the parent."""
        pool = self._pool
        if pool is not None and self._pool_pid == os.getpid():
            return pool
        with self._lock:
            if self._pool is None or self._pool_pid != os.getpid():
                self._pool = ConnectionPool(
                    self._url,
                    kwargs=self._kwargs,
                    min_size=1,
                    max_size=self._pool_size,
                    open=False,
                    timeout=self._connect_timeout,
                    reconnect_timeout=RECONNECT_TIMEOUT_SECONDS,
                    reconnect_failed=self._cannot_connect,
                    name=f"cruddur-{os.getpid()}",
                    num_workers=2,
                )
                self._pool.open(wait=False)
                self._pool_pid = os.getpid()
            return self._pool

    def _cannot_connect(self, _pool: ConnectionPool) -> None:
        log.warning(
            "database: no connection to %s for %.0f s; API requests answer 503 database_unavailable "
            "and each new one tries again",
            self.database.url,
            RECONNECT_TIMEOUT_SECONDS,
        )

    def close(self) -> None:
        """Close this process's pool (at shutdown), waiting briefly for connections in use."""
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None and self._pool_pid == os.getpid():
            pool.close(timeout=self._connect_timeout)

    @contextmanager
    def _connection(self) -> Iterator[psycopg.Connection[Any]]:
        """A pooled connection for one store call; any failure to reach the database becomes
        `StoreUnavailable`, and a wait for a free connection becomes a span event."""
        pool = self._open_pool()
        started = time.monotonic()
        try:
            connection = pool.getconn()
        except psycopg.OperationalError as error:
            raise StoreUnavailable(f"no database connection within {self._connect_timeout:g} s") from error
        waited = time.monotonic() - started
        if waited >= WAIT_WORTH_REPORTING_SECONDS:
            self._tracing.event(
                "db.client.connection.wait",
                {"db.client.connection.wait_time": waited, "db.client.connection.pool.name": pool.name},
            )
        try:
            if not self._prepared:
                with self._lock:
                    if not self._prepared:
                        self._prepare_on(connection, utc_now())
            yield connection
        except psycopg.OperationalError as error:
            raise StoreUnavailable(_first_line(error)) from error
        finally:
            pool.putconn(connection)

    # -- queries ----------------------------------------------------------------------------

    def _select(
        self, connection: psycopg.Connection[Any], operation: str, sql: str, params: Sequence[object] = ()
    ) -> list[dict[str, Any]]:
        with self._tracing.query(operation, sql, self.database) as span:
            rows = connection.execute(sql, params).fetchall()
            span.detail("db.response.returned_rows", len(rows))
            return rows

    def _with_replies(
        self, connection: psycopg.Connection[Any], activities: list[Activity], now: datetime
    ) -> list[Activity]:
        """Fill each activity's `replies`, `REPLY_DEPTH` levels deep at most, in one recursive query."""
        if not activities:
            return activities
        rows = self._select(
            connection, "SELECT", REPLIES, ([item["uuid"] for item in activities], now, REPLY_DEPTH, now)
        )
        by_uuid = {item["uuid"]: item for item in activities}
        for row in rows:
            reply = by_uuid[str(row["uuid"])] = _activity(row)
            by_uuid[reply["reply_to_activity_uuid"]]["replies"].append(reply)
        return activities

    def _feed(self, where: str, params: Sequence[object], now: datetime) -> list[Activity]:
        """One query for the activities and one for all their replies: two round trips, whatever the size."""
        with self._connection() as connection:
            rows = self._select(
                connection,
                "SELECT",
                f"SELECT {ACTIVITY_COLUMNS} {FROM_ACTIVITIES} WHERE a.expires_at > %s AND {where} {NEWEST_FIRST}",
                [now, *params, FEED_LIMIT],
            )
            return self._with_replies(connection, [_activity(row) for row in rows], now)

    def ping(self) -> None:
        with self._connection() as connection:
            self._select(connection, "SELECT", "SELECT 1")

    def user_exists(self, handle: str) -> bool:
        if "\x00" in handle:  # PostgreSQL text cannot hold U+0000, so no handle contains it.
            return False
        with self._connection() as connection:
            return bool(self._select(connection, "SELECT", "SELECT 1 FROM users WHERE handle = %s", (handle,)))

    def ensure_user(self, handle: str, display_name: str) -> None:
        """A read on the usual path (the user exists); an insert, safe against a concurrent one, the first time."""
        with self._connection() as connection:
            if self._select(connection, "SELECT", "SELECT 1 FROM users WHERE handle = %s", (handle,)):
                return
            self._insert(
                connection,
                "INSERT INTO users (handle, display_name) VALUES (%s, %s) ON CONFLICT (handle) DO NOTHING",
                (handle, display_name),
            )

    def home_activities(self, now: datetime) -> list[Activity]:
        return self._feed("a.reply_to_activity_uuid IS NULL", (), now)

    def notifications(self, handle: str, now: datetime) -> list[Activity]:
        return self._feed(
            "a.handle != %s AND (a.message ~* %s OR a.reply_to_activity_uuid IN "
            "(SELECT p.uuid FROM activities p WHERE p.handle = %s))",
            (handle, mention_pattern(handle), handle),
            now,
        )

    def user_activities(self, handle: str, now: datetime) -> list[Activity]:
        return self._feed("a.handle = %s", (handle,), now)

    def search_activities(self, term: str, now: datetime) -> list[Activity]:
        if "\x00" in term:  # no stored text contains U+0000
            return []
        return self._feed("strpos(lower(a.message), lower(%s)) > 0", (term,), now)

    def get_activity(self, uuid: str, now: datetime) -> Activity | None:
        found = self._feed("a.uuid = %s", (uuid,), now)
        return found[0] if found else None

    def _insert(self, connection: psycopg.Connection[Any], sql: str, params: Sequence[object]) -> int:
        with self._tracing.query("INSERT", sql, self.database):
            return connection.execute(sql, params).rowcount

    def create_activity(self, handle: str, message: str, now: datetime, expires_at: datetime) -> Activity:
        new_uuid = str(uuidlib.uuid4())
        with self._connection() as connection:
            self._insert(
                connection,
                "INSERT INTO activities (uuid, handle, message, created_at, expires_at) VALUES (%s, %s, %s, %s, %s)",
                (new_uuid, handle, message, now, expires_at),
            )
        created = self.get_activity(new_uuid, now)
        assert created is not None, "an activity just written is readable"
        return created

    def create_reply(self, handle: str, reply_to_uuid: str, message: str, now: datetime) -> Activity | None:
        new_uuid = str(uuidlib.uuid4())
        with self._connection() as connection:
            written = self._insert(
                connection,
                "INSERT INTO activities (uuid, handle, message, created_at, expires_at, reply_to_activity_uuid) "
                "SELECT %s, %s, %s, %s, p.expires_at, p.uuid FROM activities p WHERE p.uuid = %s AND p.expires_at > %s",
                (new_uuid, handle, message, now, reply_to_uuid, now),
            )
        if not written:
            return None
        return self.get_activity(new_uuid, now)

    def message_groups(self, handle: str) -> list[MessageGroup]:
        with self._connection() as connection:
            rows = self._select(
                connection,
                "SELECT",
                "SELECT g.uuid, u.handle, u.display_name, m.message, m.created_at FROM message_groups g "
                "JOIN users u ON u.handle = CASE WHEN g.first_handle = %s THEN g.second_handle ELSE g.first_handle END "
                "JOIN LATERAL (SELECT message, created_at, id FROM messages WHERE message_group_uuid = g.uuid "
                "ORDER BY created_at DESC, id DESC LIMIT 1) m ON true "
                "WHERE %s IN (g.first_handle, g.second_handle) "
                "ORDER BY m.created_at DESC, m.id DESC LIMIT %s",
                (handle, handle, FEED_LIMIT),
            )
        return [_message(row) for row in rows]

    def messages_between(self, handle: str, other_handle: str) -> list[Message]:
        with self._connection() as connection:
            rows = self._select(
                connection,
                "SELECT",
                "SELECT * FROM (SELECT m.uuid, m.sender_handle AS handle, u.display_name, m.message, m.created_at, "
                "m.id AS position FROM messages m "
                "JOIN message_groups g ON g.uuid = m.message_group_uuid "
                "JOIN users u ON u.handle = m.sender_handle "
                "WHERE g.first_handle = %s AND g.second_handle = %s "
                "ORDER BY m.created_at DESC, m.id DESC LIMIT %s) latest ORDER BY created_at, position",
                (*group_handles(handle, other_handle), FEED_LIMIT),
            )
        return [_message(row) for row in rows]

    def create_message(self, sender_handle: str, receiver_handle: str, message: str, now: datetime) -> Message:
        """One statement: the conversation is created if it is new (the no-op update makes a concurrent
        first message wait for, then join, the other's conversation instead of losing this one)."""
        first, second = group_handles(sender_handle, receiver_handle)
        new_uuid = str(uuidlib.uuid4())
        with self._connection() as connection:
            [row] = self._select(
                connection,
                "INSERT",
                "WITH conversation AS (INSERT INTO message_groups (uuid, first_handle, second_handle) "
                "VALUES (%s, %s, %s) ON CONFLICT (first_handle, second_handle) "
                "DO UPDATE SET first_handle = excluded.first_handle RETURNING uuid) "
                "INSERT INTO messages (uuid, message_group_uuid, sender_handle, message, created_at) "
                "SELECT %s, conversation.uuid, %s, %s, %s FROM conversation "
                "RETURNING (SELECT display_name FROM users WHERE handle = sender_handle) AS display_name",
                (str(uuidlib.uuid4()), first, second, new_uuid, sender_handle, message, now),
            )
        return {
            "uuid": new_uuid,
            "display_name": row["display_name"],
            "handle": sender_handle,
            "message": message,
            "created_at": to_iso(now),
        }


def _first_line(error: BaseException) -> str:
    return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
