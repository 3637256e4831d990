"""The user a request acts for, as the four tools record it, kept beside the request's trace ids.

`Telemetry.identify` sets it once the request's token is verified; log lines (`user_id`) and
Rollbar items (`person`) read it wherever they are made, and `RequestTelemetry` clears it when
the request ends. It holds the token's `sub` and the handle, never the token or an email.
"""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class EndUser:
    """Who a request acts for: `id` is stable (Cognito's `sub`), `handle` is what the app shows."""

    id: str
    handle: str


_current: ContextVar[EndUser | None] = ContextVar("cruddur_end_user", default=None)


def current_user() -> EndUser | None:
    """The user of the request being served, or None (outside a request, or not identified)."""
    return _current.get()


def set_current_user(user: EndUser | None) -> object:
    return _current.set(user)


def reset_current_user(token: object) -> None:
    _current.reset(token)
