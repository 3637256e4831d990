"""The input rules, each adding its error code to a list so all failures are reported together."""

from __future__ import annotations

#: `ttl` choices for a new activity, in hours.
TTL_HOURS = {
    "30-days": 30 * 24,
    "7-days": 7 * 24,
    "3-days": 3 * 24,
    "1-day": 24,
    "12-hours": 12,
    "3-hours": 3,
    "1-hour": 1,
}
ACTIVITY_MAX_CHARS = 280
REPLY_MAX_CHARS = 1024
MESSAGE_MAX_CHARS = 1024
SEARCH_TERM_MAX_CHARS = 280
HANDLE_MAX_CHARS = 64


def is_text(value: object) -> bool:
    """A JSON string that can be stored and sent back: lone surrogates (`"\\ud800"`) cannot, and
    PostgreSQL's text cannot hold U+0000 (`"\\u0000"`), so neither store takes it."""
    if not isinstance(value, str) or "\x00" in value:
        return False
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def check_text(errors: list[str], field: str, value: object, max_chars: int) -> None:
    """Blank, not a string, or longer than `max_chars` characters (code points, not bytes)."""
    if value is None or (isinstance(value, str) and not value.strip()):
        errors.append(f"{field}_blank")
    elif not is_text(value):
        errors.append(f"{field}_invalid")
    elif len(value) > max_chars:
        errors.append(f"{field}_exceed_max_chars")


def check_ttl(errors: list[str], value: object) -> None:
    if value is None or value == "":
        errors.append("ttl_blank")
    elif not isinstance(value, str) or value not in TTL_HOURS:
        errors.append("ttl_invalid")
