"""The embedded store: stdlib `sqlite3`, one file, shared safely by every gunicorn worker.

WAL mode lets readers in other workers carry on while one writes; writes take the lock up front
(`BEGIN IMMEDIATE`) and wait up to `BUSY_TIMEOUT_MS` for it. Each thread of each process has its
own connection, opened on first use, so nothing opened before a fork is used after it.
"""

from __future__ import annotations

import os
import re
import sqlite3
import threading
import time
import uuid as uuidlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

from cruddur.store import FEED_LIMIT, REPLY_DEPTH, Activity, Message, MessageGroup, group_handles
from cruddur.store.seed import sample_rows
from cruddur.telemetry.tracing import Database, Tracing
from cruddur.timeutil import to_iso

BUSY_TIMEOUT_MS = 10_000

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS users (
    handle TEXT PRIMARY KEY,
    display_name TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS activities (
    uuid TEXT PRIMARY KEY,
    handle TEXT NOT NULL REFERENCES users (handle),
    message TEXT NOT NULL,
    created_at TEXT NOT NULL,
    expires_at TEXT NOT NULL,
    likes_count INTEGER NOT NULL DEFAULT 0,
    reposts_count INTEGER NOT NULL DEFAULT 0,
    reply_to_activity_uuid TEXT REFERENCES activities (uuid)
);
CREATE INDEX IF NOT EXISTS activities_by_reply_to ON activities (reply_to_activity_uuid, created_at);
CREATE INDEX IF NOT EXISTS activities_by_handle ON activities (handle, created_at);
CREATE INDEX IF NOT EXISTS activities_by_created ON activities (created_at);
CREATE TABLE IF NOT EXISTS message_groups (
    uuid TEXT PRIMARY KEY,
    first_handle TEXT NOT NULL REFERENCES users (handle),
    second_handle TEXT NOT NULL REFERENCES users (handle),
    UNIQUE (first_handle, second_handle)
);
CREATE TABLE IF NOT EXISTS messages (
    uuid TEXT PRIMARY KEY,
    message_group_uuid TEXT NOT NULL REFERENCES message_groups (uuid),
    sender_handle TEXT NOT NULL REFERENCES users (handle),
    message TEXT NOT NULL,
    created_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS messages_by_group ON messages (message_group_uuid, created_at);
"""

ACTIVITY_COLUMNS = (
    "a.uuid, a.handle, u.display_name, a.message, a.created_at, a.expires_at, a.likes_count, a.reposts_count, "
    "a.reply_to_activity_uuid, "
    "(SELECT COUNT(*) FROM activities c WHERE c.reply_to_activity_uuid = a.uuid) AS replies_count"
)
FROM_ACTIVITIES = "FROM activities a JOIN users u ON u.handle = a.handle"
NEWEST_FIRST = "ORDER BY a.created_at DESC, a.rowid DESC LIMIT ?"


def _enable_wal(connection: sqlite3.Connection) -> None:
    """Switch the file to WAL mode, waiting for other workers as long as any statement would.

    SQLite answers this pragma "database is locked" at once, busy timeout or not, while another
    connection holds the file: of two processes preparing a new file at the same moment, one lost
    in 97 of 200 tries. A gunicorn worker that loses fails to boot, and gunicorn then stops.
    """
    deadline = time.monotonic() + BUSY_TIMEOUT_MS / 1000
    while True:
        try:
            connection.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as error:
            if error.sqlite_errorname != "SQLITE_BUSY" or time.monotonic() > deadline:
                raise
        time.sleep(0.01)


def _mentions(message: str, handle: str) -> bool:
    return re.search(rf"(?<![\w@])@{re.escape(handle)}(?![\w])", message, re.IGNORECASE) is not None


def _contains(message: str, term: str) -> bool:
    return term.casefold() in message.casefold()


def _activity(row: sqlite3.Row) -> Activity:
    return {
        "uuid": row["uuid"],
        "display_name": row["display_name"],
        "handle": row["handle"],
        "message": row["message"],
        "created_at": row["created_at"],
        "expires_at": row["expires_at"],
        "likes_count": row["likes_count"],
        "replies_count": row["replies_count"],
        "reposts_count": row["reposts_count"],
        "reply_to_activity_uuid": row["reply_to_activity_uuid"],
        "replies": [],
    }


class SQLiteStore:
    """The `Store` on one SQLite file."""

    system = "sqlite"

    def __init__(self, path: Path, tracing: Tracing) -> None:
        self.path = path
        self.database = Database(
            system="sqlite",
            namespace=path.stem,
            database_type="sqlite",
            url=path.name,
            driver_version=f"sqlite3 {sqlite3.sqlite_version}",
        )
        self._tracing = tracing
        self._local = threading.local()

    def prepare(self, now: datetime, user_handle: str, seed: bool) -> bool:
        """Create the tables, load the sample data once per file if `seed` (race-free across workers),
        and make sure the configured current user exists. Not traced: it is start-up, not a request."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        connection = self._connection()
        _enable_wal(connection)
        connection.executescript(SCHEMA)
        with self._transaction() as conn:
            if seed:
                self._seed(conn, now)
            conn.execute(
                "INSERT INTO users (handle, display_name) VALUES (?, ?) ON CONFLICT (handle) DO NOTHING",
                (user_handle, user_handle),
            )
        return True

    def upgrade(self) -> list[str]:
        """The SQLite schema is created, idempotently, when the app starts: nothing is ever pending."""
        return []

    def seed(self, now: datetime) -> bool:
        with self._transaction() as conn:
            return self._seed(conn, now)

    def _seed(self, conn: sqlite3.Connection, now: datetime) -> bool:
        if conn.execute("SELECT 1 FROM meta WHERE key = 'seeded_at'").fetchone() is not None:
            return False
        rows = sample_rows(now)
        conn.executemany(
            "INSERT INTO users (handle, display_name) VALUES (?, ?) ON CONFLICT (handle) DO NOTHING", rows.users
        )
        conn.executemany(
            "INSERT INTO activities (uuid, handle, message, created_at, expires_at, likes_count, "
            "reply_to_activity_uuid) VALUES (?, ?, ?, ?, ?, ?, ?)",
            [(*row[:3], to_iso(row[3]), to_iso(row[4]), *row[5:]) for row in rows.activities],
        )
        conn.executemany(
            "INSERT INTO message_groups (uuid, first_handle, second_handle) VALUES (?, ?, ?)", rows.message_groups
        )
        conn.executemany(
            "INSERT INTO messages (uuid, message_group_uuid, sender_handle, message, created_at) "
            "VALUES (?, ?, ?, ?, ?)",
            [(*row[:4], to_iso(row[4])) for row in rows.messages],
        )
        conn.execute("INSERT INTO meta (key, value) VALUES ('seeded_at', ?)", (to_iso(now),))
        return True

    def close(self) -> None:
        """Close this thread's connection; other threads' close when they end."""
        connection: sqlite3.Connection | None = getattr(self._local, "connection", None)
        if connection is not None and self._local.pid == os.getpid():
            connection.close()
        self._local.connection = None

    def _connection(self) -> sqlite3.Connection:
        connection: sqlite3.Connection | None = getattr(self._local, "connection", None)
        if connection is None or self._local.pid != os.getpid():
            connection = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None)
            connection.row_factory = sqlite3.Row
            connection.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
            connection.execute("PRAGMA foreign_keys=ON")
            connection.execute("PRAGMA synchronous=NORMAL")
            connection.create_function("mentions", 2, _mentions, deterministic=True)
            connection.create_function("contains_text", 2, _contains, deterministic=True)
            self._local.connection = connection
            self._local.pid = os.getpid()
        return connection

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        connection = self._connection()
        connection.execute("BEGIN IMMEDIATE")
        try:
            yield connection
        except BaseException:
            connection.execute("ROLLBACK")
            raise
        connection.execute("COMMIT")

    def _select(self, sql: str, params: Sequence[object] = ()) -> list[sqlite3.Row]:
        with self._tracing.query("SELECT", sql, self.database) as span:
            rows = self._connection().execute(sql, params).fetchall()
            span.detail("db.response.returned_rows", len(rows))
            return rows

    def _insert(self, connection: sqlite3.Connection, sql: str, params: Sequence[object]) -> None:
        with self._tracing.query("INSERT", sql, self.database):
            connection.execute(sql, params)

    def _with_replies(self, activities: list[Activity], now: datetime) -> list[Activity]:
        """Fill each activity's `replies`, `REPLY_DEPTH` levels deep at most, in one recursive query."""
        if not activities:
            return activities
        marks = ",".join("?" * len(activities))
        rows = self._select(
            "WITH RECURSIVE thread (uuid, depth) AS ("  # noqa: S608 - interpolates placeholders and constants only
            f"SELECT uuid, 1 FROM activities WHERE reply_to_activity_uuid IN ({marks}) AND expires_at > ? "
            "UNION ALL SELECT r.uuid, t.depth + 1 FROM activities r JOIN thread t ON r.reply_to_activity_uuid = t.uuid "
            "WHERE t.depth < ? AND r.expires_at > ?) "
            f"SELECT {ACTIVITY_COLUMNS} FROM thread t JOIN activities a ON a.uuid = t.uuid "
            "JOIN users u ON u.handle = a.handle ORDER BY t.depth, a.created_at, a.rowid",
            [*(item["uuid"] for item in activities), to_iso(now), REPLY_DEPTH, to_iso(now)],
        )
        by_uuid = {item["uuid"]: item for item in activities}
        for row in rows:
            reply = by_uuid[row["uuid"]] = _activity(row)
            by_uuid[reply["reply_to_activity_uuid"]]["replies"].append(reply)
        return activities

    def _feed(self, where: str, params: Sequence[object], now: datetime) -> list[Activity]:
        rows = self._select(
            f"SELECT {ACTIVITY_COLUMNS} {FROM_ACTIVITIES} WHERE a.expires_at > ? AND {where} {NEWEST_FIRST}",
            [to_iso(now), *params, FEED_LIMIT],
        )
        return self._with_replies([_activity(row) for row in rows], now)

    def ping(self) -> None:
        self._select("SELECT 1")

    def user_exists(self, handle: str) -> bool:
        return bool(self._select("SELECT 1 FROM users WHERE handle = ?", (handle,)))

    def ensure_user(self, handle: str, display_name: str) -> None:
        if self.user_exists(handle):
            return
        with self._transaction() as connection:
            self._insert(
                connection,
                "INSERT INTO users (handle, display_name) VALUES (?, ?) ON CONFLICT (handle) DO NOTHING",
                (handle, display_name),
            )

    def home_activities(self, now: datetime) -> list[Activity]:
        return self._feed("a.reply_to_activity_uuid IS NULL", (), now)

    def notifications(self, handle: str, now: datetime) -> list[Activity]:
        return self._feed(
            "a.handle != ? AND (mentions(a.message, ?) OR a.reply_to_activity_uuid IN "
            "(SELECT p.uuid FROM activities p WHERE p.handle = ?))",
            (handle, handle, handle),
            now,
        )

    def user_activities(self, handle: str, now: datetime) -> list[Activity]:
        return self._feed("a.handle = ?", (handle,), now)

    def search_activities(self, term: str, now: datetime) -> list[Activity]:
        return self._feed("contains_text(a.message, ?)", (term,), now)

    def get_activity(self, uuid: str, now: datetime) -> Activity | None:
        found = self._feed("a.uuid = ?", (uuid,), now)
        return found[0] if found else None

    def create_activity(self, handle: str, message: str, now: datetime, expires_at: datetime) -> Activity:
        new_uuid = str(uuidlib.uuid4())
        with self._transaction() as connection:
            self._insert(
                connection,
                "INSERT INTO activities (uuid, handle, message, created_at, expires_at) VALUES (?, ?, ?, ?, ?)",
                (new_uuid, handle, message, to_iso(now), to_iso(expires_at)),
            )
        created = self.get_activity(new_uuid, now)
        assert created is not None, "an activity just written is readable"
        return created

    def create_reply(self, handle: str, reply_to_uuid: str, message: str, now: datetime) -> Activity | None:
        new_uuid = str(uuidlib.uuid4())
        with self._transaction() as connection:
            parent = connection.execute(
                "SELECT expires_at FROM activities WHERE uuid = ? AND expires_at > ?", (reply_to_uuid, to_iso(now))
            ).fetchone()
            if parent is None:
                return None
            self._insert(
                connection,
                "INSERT INTO activities (uuid, handle, message, created_at, expires_at, reply_to_activity_uuid) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (new_uuid, handle, message, to_iso(now), parent["expires_at"], reply_to_uuid),
            )
        return self.get_activity(new_uuid, now)

    def message_groups(self, handle: str) -> list[MessageGroup]:
        rows = self._select(
            "SELECT g.uuid, u.handle, u.display_name, m.message, m.created_at "
            "FROM message_groups g "
            "JOIN users u ON u.handle = CASE WHEN g.first_handle = ? THEN g.second_handle ELSE g.first_handle END "
            "JOIN messages m ON m.rowid = (SELECT rowid FROM messages WHERE message_group_uuid = g.uuid "
            "ORDER BY created_at DESC, rowid DESC LIMIT 1) "
            "WHERE ? IN (g.first_handle, g.second_handle) "
            "ORDER BY m.created_at DESC, m.rowid DESC LIMIT ?",
            (handle, handle, FEED_LIMIT),
        )
        return [_message(row) for row in rows]

    def messages_between(self, handle: str, other_handle: str) -> list[Message]:
        rows = self._select(
            "SELECT * FROM (SELECT m.uuid, m.sender_handle AS handle, u.display_name, m.message, m.created_at, "
            "m.rowid AS position FROM messages m "
            "JOIN message_groups g ON g.uuid = m.message_group_uuid "
            "JOIN users u ON u.handle = m.sender_handle "
            "WHERE g.first_handle = ? AND g.second_handle = ? "
            "ORDER BY m.created_at DESC, m.rowid DESC LIMIT ?) ORDER BY created_at, position",
            (*group_handles(handle, other_handle), FEED_LIMIT),
        )
        return [_message(row) for row in rows]

    def create_message(self, sender_handle: str, receiver_handle: str, message: str, now: datetime) -> Message:
        first, second = group_handles(sender_handle, receiver_handle)
        new_uuid = str(uuidlib.uuid4())
        with self._transaction() as connection:
            self._insert(
                connection,
                "INSERT INTO message_groups (uuid, first_handle, second_handle) VALUES (?, ?, ?) "
                "ON CONFLICT (first_handle, second_handle) DO NOTHING",
                (str(uuidlib.uuid4()), first, second),
            )
            self._insert(
                connection,
                "INSERT INTO messages (uuid, message_group_uuid, sender_handle, message, created_at) "
                "SELECT ?, uuid, ?, ?, ? FROM message_groups WHERE first_handle = ? AND second_handle = ?",
                (new_uuid, sender_handle, message, to_iso(now), first, second),
            )
            sender = connection.execute("SELECT display_name FROM users WHERE handle = ?", (sender_handle,)).fetchone()
        return {
            "uuid": new_uuid,
            "display_name": sender["display_name"],
            "handle": sender_handle,
            "message": message,
            "created_at": to_iso(now),
        }


def _message(row: sqlite3.Row) -> Message:
    return {
        "uuid": row["uuid"],
        "display_name": row["display_name"],
        "handle": row["handle"],
        "message": row["message"],
        "created_at": row["created_at"],
    }
