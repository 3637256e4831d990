"""The home feed: every unexpired top-level activity, newest first."""

from __future__ import annotations

from cruddur.services import Deps
from cruddur.store import Activity


def home_activities(deps: Deps) -> list[Activity]:
    with deps.service("home-activities") as (span, now):
        results = deps.store.home_activities(now)
        span.set("app.result_length", len(results))
        return results
