"""The one scrub list: names whose values never reach a log line, span, segment or Rollbar item."""

from __future__ import annotations

import re
from collections.abc import Mapping
from functools import lru_cache
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

REDACTED = "[REDACTED]"

#: Fragments of names that mark a value as secret, compared without case, `-` or `_`.
SENSITIVE_NAME_FRAGMENTS: tuple[str, ...] = (
    "authorization",
    "cookie",
    "password",
    "passwd",
    "secret",
    "token",
    "apikey",
    "accesskey",
    "session",
    "credential",
    "xhoneycombteam",
    "privatekey",
    "signature",
)

_SEPARATORS = re.compile(r"[-_.\s]")


@lru_cache(maxsize=1024)
def is_sensitive(name: str) -> bool:
    """True when a header, field, parameter or attribute name suggests its value is a secret."""
    folded = _SEPARATORS.sub("", name.lower())
    return any(fragment in folded for fragment in SENSITIVE_NAME_FRAGMENTS)


def scrub_mapping(values: Mapping[str, object]) -> dict[str, object]:
    """A copy with every sensitive key's value replaced, nested mappings included."""
    clean: dict[str, object] = {}
    for key, value in values.items():
        if is_sensitive(str(key)):
            clean[key] = REDACTED
        elif isinstance(value, Mapping):
            clean[key] = scrub_mapping(value)
        else:
            clean[key] = value
    return clean


def scrub_query(query: str) -> str:
    """A query string with the values of sensitive parameters replaced."""
    pairs = parse_qsl(query, keep_blank_values=True)
    if not any(is_sensitive(name) for name, _ in pairs):
        return query
    return urlencode([(name, REDACTED if is_sensitive(name) else value) for name, value in pairs], safe="[]")


def scrub_url(url: str) -> str:
    """A URL (or a path with a query) whose sensitive query parameters and credentials are replaced."""
    parts = urlsplit(url)
    netloc = parts.netloc.rsplit("@", 1)[-1] if "@" in parts.netloc else parts.netloc
    if netloc != parts.netloc:
        netloc = f"{REDACTED}@{netloc}"
    return urlunsplit(parts._replace(netloc=netloc, query=scrub_query(parts.query)))
