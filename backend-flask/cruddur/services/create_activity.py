"""Post a new activity that expires after its time to live."""

from __future__ import annotations

from datetime import timedelta

from cruddur.services import Deps, ValidationFailed
from cruddur.services.validation import ACTIVITY_MAX_CHARS, TTL_HOURS, check_text, check_ttl
from cruddur.store import Activity


def create_activity(deps: Deps, message: object, ttl: object) -> Activity:
    with deps.service("create-activity") as (span, now):
        errors: list[str] = []
        check_text(errors, "message", message, ACTIVITY_MAX_CHARS)
        check_ttl(errors, ttl)
        if errors:
            raise ValidationFailed(errors)
        span.set("app.ttl", ttl)
        span.detail("app.message_length", len(message))
        activity = deps.store.create_activity(deps.user_handle, message, now, now + timedelta(hours=TTL_HOURS[ttl]))
        span.set("app.activity_uuid", activity["uuid"])
        return activity
