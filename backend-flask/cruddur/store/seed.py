"""Cruddur's familiar sample data, loaded into a new database relative to the moment it is created."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from cruddur.store import group_handles

USERS = (
    ("andrewbrown", "Andrew Brown"),
    ("worf", "Worf"),
    ("garek", "Garek"),
    ("lore", "Lore"),
    ("bayko", "Bayko"),
)

# uuid, handle, message, created (ago), expires (from now), likes, reply_to
ACTIVITIES = (
    (
        "68f126b0-1ceb-4a33-88be-d90fa7109eee",
        "andrewbrown",
        "Cloud is fun!",
        timedelta(days=2),
        timedelta(days=5),
        5,
        None,
    ),
    (
        "26e12864-1c26-5c3a-9658-97a10f8fea67",
        "worf",
        "This post has no honor!",
        timedelta(days=2) - timedelta(minutes=5),
        timedelta(days=5),
        0,
        "68f126b0-1ceb-4a33-88be-d90fa7109eee",
    ),
    (
        "66e12864-8c26-4c3a-9658-95a10f8fea67",
        "worf",
        "I am out of prune juice",
        timedelta(days=7),
        timedelta(days=9),
        0,
        None,
    ),
    (
        "248959df-3079-4947-b847-9e0892d1bab4",
        "garek",
        "My dear doctor, I am just simple tailor. Are you enjoying your holiday?",
        timedelta(hours=1),
        timedelta(hours=12),
        0,
        None,
    ),
)

# group uuid, other handle, [(message uuid, sender, message, sent (ago))]
CONVERSATIONS = (
    (
        "24b95582-9e7b-4e0a-9ad1-639773ab7552",
        "lore",
        (
            ("0f7c9a6e-3b1f-4a57-9d5e-1f7a4c0e2b11", "lore", "Brother, the Borg await us.", timedelta(hours=3)),
            ("5c1d2e3f-4a5b-4c6d-8e7f-9a0b1c2d3e4f", "andrewbrown", "I will pass, Lore.", timedelta(hours=2)),
        ),
    ),
    (
        "417c360e-c4e6-4fce-873b-d2d71469b4ac",
        "bayko",
        (
            ("4e81c06a-db0f-4281-b4cc-98208537772a", "andrewbrown", "Cloud is fun!", timedelta(hours=1)),
            ("6a2b4c8d-0e1f-4a3b-9c5d-7e9f1a3b5c7d", "andrewbrown", "This platform is great!", timedelta(minutes=30)),
        ),
    ),
)


@dataclass(frozen=True)
class SampleRows:
    """The sample data as rows in the column order of each table's INSERT, the same for every store."""

    users: list[tuple[str, str]]
    #: uuid, handle, message, created_at, expires_at, likes_count, reply_to_activity_uuid
    activities: list[tuple[str, str, str, datetime, datetime, int, str | None]]
    #: uuid, first_handle, second_handle
    message_groups: list[tuple[str, str, str]]
    #: uuid, message_group_uuid, sender_handle, message, created_at
    messages: list[tuple[str, str, str, str, datetime]]


def sample_rows(now: datetime) -> SampleRows:
    """The sample data with its times relative to `now`, the moment the database is seeded."""
    return SampleRows(
        users=list(USERS),
        activities=[
            (uuid, handle, message, now - ago, now + lasts, likes, reply_to)
            for uuid, handle, message, ago, lasts, likes, reply_to in ACTIVITIES
        ],
        message_groups=[
            (group_uuid, *group_handles("andrewbrown", other)) for group_uuid, other, _messages in CONVERSATIONS
        ],
        messages=[
            (uuid, group_uuid, sender, text, now - ago)
            for group_uuid, _other, messages in CONVERSATIONS
            for uuid, sender, text, ago in messages
        ],
    )
