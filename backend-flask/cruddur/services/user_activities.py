"""One user's unexpired activities, newest first."""

from __future__ import annotations

from cruddur.services import Deps, NotFound
from cruddur.store import Activity


def user_activities(deps: Deps, handle: str) -> list[Activity]:
    with deps.service("user-activities") as (span, now):
        span.set("app.requested_handle", handle)
        if not deps.store.user_exists(handle):
            raise NotFound("user_not_found")
        results = deps.store.user_activities(handle, now)
        span.set("app.result_length", len(results))
        return results
