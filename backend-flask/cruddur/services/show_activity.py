"""One unexpired activity with its replies."""

from __future__ import annotations

from cruddur.services import Deps, NotFound
from cruddur.store import Activity


def show_activity(deps: Deps, activity_uuid: str) -> Activity:
    with deps.service("show-activity") as (span, now):
        span.set("app.activity_uuid", activity_uuid)
        activity = deps.store.get_activity(activity_uuid, now)
        if activity is None:
            raise NotFound("activity_not_found")
        span.set("app.result_length", len(activity["replies"]))
        return activity
