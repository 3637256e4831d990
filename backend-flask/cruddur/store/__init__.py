"""Persistence behind one small interface, so PostgreSQL can replace SQLite without touching services."""

from __future__ import annotations

from datetime import datetime
from typing import Protocol, TypedDict


class Activity(TypedDict):
    uuid: str
    display_name: str
    handle: str
    message: str
    created_at: str
    expires_at: str
    likes_count: int
    replies_count: int
    reposts_count: int
    reply_to_activity_uuid: str | None
    replies: list[Activity]


class Message(TypedDict):
    uuid: str
    display_name: str
    handle: str
    message: str
    created_at: str


#: A conversation as listed: the other person, and the latest message and when it was sent.
MessageGroup = Message


def group_handles(handle: str, other_handle: str) -> tuple[str, str]:
    """A conversation's two handles in a fixed order, so each pair of people has exactly one."""
    first, second = sorted((handle, other_handle))
    return first, second


#: The most items a feed, search or conversation returns; newer ones win.
FEED_LIMIT = 100

#: How many levels of replies an activity embeds; a client reads deeper ones by showing the deepest embedded
#: reply (whose `replies_count` still counts them). JSON encoders recurse once per level, so without a bound a
#: chain of some 450 replies made every response holding its first activity a 500, and each read of it took
#: one query per level.
REPLY_DEPTH = 32


class StoreUnavailable(Exception):
    """The database cannot serve this request now (down, unreachable, too slow, no free connection).

    The API answers 503 `database_unavailable`; the next request tries again, so the app recovers
    by itself when the database returns.
    """


class Store(Protocol):
    """What the services need from persistence. Every read takes `now` so expiry is one rule."""

    def ping(self) -> None: ...

    def user_exists(self, handle: str) -> bool: ...

    def ensure_user(self, handle: str, display_name: str) -> None:
        """Create the user on first sight (a verified token's username); an existing user is left as it is."""
        ...

    def home_activities(self, now: datetime) -> list[Activity]: ...

    def notifications(self, handle: str, now: datetime) -> list[Activity]: ...

    def user_activities(self, handle: str, now: datetime) -> list[Activity]: ...

    def search_activities(self, term: str, now: datetime) -> list[Activity]: ...

    def get_activity(self, uuid: str, now: datetime) -> Activity | None: ...

    def create_activity(self, handle: str, message: str, now: datetime, expires_at: datetime) -> Activity: ...

    def create_reply(self, handle: str, reply_to_uuid: str, message: str, now: datetime) -> Activity | None: ...

    def message_groups(self, handle: str) -> list[MessageGroup]: ...

    def messages_between(self, handle: str, other_handle: str) -> list[Message]: ...

    def create_message(self, sender_handle: str, receiver_handle: str, message: str, now: datetime) -> Message: ...


class ManagedStore(Store, Protocol):
    """A store as the app factory, the CLI and the server see it: the services' interface plus its life."""

    #: The database system, as OpenTelemetry names it (`db.system.name`): `sqlite` or `postgresql`.
    system: str

    def prepare(self, now: datetime, user_handle: str, seed: bool) -> bool:
        """Apply the migrations, load the sample data once if `seed`, and make sure the current user
        exists; True when done, False when the database cannot be reached (tried again later)."""
        ...

    def upgrade(self) -> list[str]:
        """Apply the pending migrations; the names of those applied now."""
        ...

    def seed(self, now: datetime) -> bool:
        """Load the sample data unless this database already has it; True when it was loaded now."""
        ...

    def close(self) -> None: ...
