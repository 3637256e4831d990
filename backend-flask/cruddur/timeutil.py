"""One timestamp format for the whole service: ISO 8601, UTC, microseconds, explicit offset.

The fixed width makes stored timestamps sort correctly as text, and clients always see `+00:00`.
"""

from __future__ import annotations

from datetime import UTC, datetime


def utc_now() -> datetime:
    return datetime.now(UTC)


def to_iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="microseconds")
