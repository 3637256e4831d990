"""The current user's conversations, the most recently active first."""

from __future__ import annotations

from cruddur.services import Deps
from cruddur.store import MessageGroup


def message_groups(deps: Deps) -> list[MessageGroup]:
    with deps.service("message-groups") as (span, _now):
        results = deps.store.message_groups(deps.user_handle)
        span.set("app.result_length", len(results))
        return results
