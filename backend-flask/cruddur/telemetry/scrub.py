"""The one scrub list: names whose values never reach a log line, span, segment or Rollbar item.

Every tool's output goes through it: log records, span attributes (URLs, captured headers), X-Ray
metadata, Rollbar payloads (their `request.url` too), and the message of an exception before any
tool records it.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterable, Mapping
from functools import lru_cache
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

REDACTED = "[REDACTED]"

#: Fragments of names that mark a value as secret, compared without case, `-`, `_` or `.`
#: (`X-Amz-Security-Token`, `mytoken`, `X-Amz-Credential`, `X-Amz-Signature`, `id_jwt` among them).
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
    "jwt",
)

#: Whole names that mark a value as secret, where the fragment would also catch innocent names
#: (`status_code`, `design`, `hotplug`): an OAuth `code`, a signed URL's `sig`, a one-time `otp`.
SENSITIVE_NAMES: frozenset[str] = frozenset({"code", "sig", "otp"})

_SEPARATORS = re.compile(r"[-_.\s]")


@lru_cache(maxsize=1024)
def is_sensitive(name: str) -> bool:
    """True when a header, field, parameter or attribute name suggests its value is a secret."""
    folded = _SEPARATORS.sub("", name.lower())
    return folded in SENSITIVE_NAMES or any(fragment in folded for fragment in SENSITIVE_NAME_FRAGMENTS)


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


#: `name=value` in free text (a URL's query, a DSN, `key=value` logs): the value ends at a separator.
_NAME_VALUE = re.compile(r"(?P<name>[A-Za-z0-9_.\-]+)=(?P<value>[^&\s'\";,)\]}>]+)")
#: The user information of a URL in free text: `scheme://user:password@`.
_URL_CREDENTIALS = re.compile(r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.\-]*://)[^/@\s]+@")
#: Shorter values a request sends under a sensitive name are not looked for in exception messages.
MIN_SECRET_LENGTH = 4


def scrub_text(text: str, secrets: Iterable[str] = ()) -> str:
    """Free text (an exception message) without the given secret values, the values of sensitive
    `name=value` pairs, or the credentials of URLs in it."""
    for secret in secrets:
        if secret in text:
            text = text.replace(secret, REDACTED)
    if "@" in text:
        text = _URL_CREDENTIALS.sub(rf"\g<scheme>{REDACTED}@", text)
    if "=" in text:
        text = _NAME_VALUE.sub(
            lambda match: f"{match['name']}={REDACTED}" if is_sensitive(match["name"]) else match[0], text
        )
    return text


def _sensitive_values(values: object, sensitive: bool = False) -> Iterable[str]:
    """The strings in a parsed body that sit under a sensitive key, at any depth."""
    if isinstance(values, Mapping):
        for key, value in values.items():
            yield from _sensitive_values(value, sensitive or is_sensitive(str(key)))
    elif isinstance(values, list):
        for value in values:
            yield from _sensitive_values(value, sensitive)
    elif sensitive and isinstance(values, str | int | float) and not isinstance(values, bool):
        yield str(values)


def request_secrets(request: Any) -> tuple[str, ...]:
    """The values a request sent under a sensitive name (query, headers, form or JSON body) and
    every cookie value: what must not come back in an exception message. Longest first."""
    values: list[str] = []
    for name, value in request.args.items(multi=True):
        if is_sensitive(name):
            values.append(value)
    for name, value in request.headers.items():
        if is_sensitive(name):
            values += [value, value.rsplit(None, 1)[-1]]  # `Bearer <token>`: the token alone too
    values += request.cookies.values()
    # A body that cannot be read (too large, the client gone) holds nothing to look for.
    with contextlib.suppress(Exception):
        if request.mimetype == "application/x-www-form-urlencoded":
            values += (value for name, value in request.form.items(multi=True) if is_sensitive(name))
        values += _sensitive_values(request.get_json(silent=True))
    return tuple(sorted({value for value in values if len(value) >= MIN_SECRET_LENGTH}, key=len, reverse=True))


def scrub_exception(error: BaseException) -> BaseException:
    """Scrub, in place, the messages of an exception and of those it was raised from or during,
    before a tool records it: the current request's secret values (`request_secrets`) and the
    sensitive `name=value` pairs and URL credentials in them. Done once per exception; an exception
    whose `__str__` ignores its arguments keeps its message."""
    if getattr(error, "_cruddur_scrubbed", False):
        return error
    from flask import has_request_context, request  # the failure path only; the rest of scrub is Flask-free

    secrets = request_secrets(request) if has_request_context() else ()
    pending, seen = [error], set()
    while pending:
        current = pending.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        args = tuple(scrub_text(arg, secrets) if isinstance(arg, str) else arg for arg in current.args)
        if args != current.args:
            current.args = args
        notes = getattr(current, "__notes__", None)
        if isinstance(notes, list):
            notes[:] = [scrub_text(note, secrets) if isinstance(note, str) else note for note in notes]
        with contextlib.suppress(AttributeError):  # an exception class with __slots__
            current._cruddur_scrubbed = True  # type: ignore[attr-defined]
        pending += [linked for linked in (current.__cause__, current.__context__) if linked is not None]
    return error
