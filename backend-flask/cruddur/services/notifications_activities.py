"""Activities by others that mention the current user or reply to one of their activities."""

from __future__ import annotations

from cruddur.services import Deps
from cruddur.store import Activity


def notifications_activities(deps: Deps) -> list[Activity]:
    with deps.service("notifications-activities") as (span, now):
        results = deps.store.notifications(deps.user_handle, now)
        span.set("app.result_length", len(results))
        return results
