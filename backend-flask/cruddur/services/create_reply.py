"""Reply to an unexpired activity; the reply expires with it."""

from __future__ import annotations

from cruddur.services import Deps, NotFound, ValidationFailed
from cruddur.services.validation import REPLY_MAX_CHARS, check_text
from cruddur.store import Activity


def create_reply(deps: Deps, activity_uuid: str, message: object) -> Activity:
    with deps.service("create-reply") as (span, now):
        span.set("app.reply_to_activity_uuid", activity_uuid)
        errors: list[str] = []
        check_text(errors, "message", message, REPLY_MAX_CHARS)
        if errors:
            raise ValidationFailed(errors)
        span.detail("app.message_length", len(message))
        reply = deps.store.create_reply(deps.user_handle, activity_uuid, message, now)
        if reply is None:
            raise NotFound("activity_not_found")
        span.set("app.activity_uuid", reply["uuid"])
        return reply
