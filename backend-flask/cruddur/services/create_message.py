"""Send a direct message to another user."""

from __future__ import annotations

from cruddur.services import Deps, ValidationFailed
from cruddur.services.validation import HANDLE_MAX_CHARS, MESSAGE_MAX_CHARS, check_text
from cruddur.store import Message


def create_message(deps: Deps, message: object, user_receiver_handle: object) -> Message:
    with deps.service("create-message") as (span, now):
        errors: list[str] = []
        check_text(errors, "message", message, MESSAGE_MAX_CHARS)
        receiver_errors: list[str] = []
        check_text(receiver_errors, "user_receiver_handle", user_receiver_handle, HANDLE_MAX_CHARS)
        if not receiver_errors and not deps.store.user_exists(user_receiver_handle):
            receiver_errors.append("user_receiver_handle_unknown")
        errors += receiver_errors
        if errors:
            raise ValidationFailed(errors)
        span.set("app.other_handle", user_receiver_handle)
        span.detail("app.message_length", len(message))
        return deps.store.create_message(deps.user_handle, user_receiver_handle, message, now)
