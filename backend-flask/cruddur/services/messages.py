"""The messages between the current user and one other person, oldest first."""

from __future__ import annotations

from cruddur.services import Deps, NotFound
from cruddur.store import Message


def messages(deps: Deps, other_handle: str) -> list[Message]:
    with deps.service("messages") as (span, _now):
        span.set("app.other_handle", other_handle)
        if not deps.store.user_exists(other_handle):
            raise NotFound("user_not_found")
        results = deps.store.messages_between(deps.user_handle, other_handle)
        span.set("app.result_length", len(results))
        return results
