"""What every blueprint shares: the services' dependencies and strict JSON body parsing."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

from flask import current_app, g, request
from werkzeug.exceptions import RequestEntityTooLarge

from cruddur.services import Deps
from cruddur.telemetry.enduser import EndUser


class ApiError(Exception):
    """A request the API refuses before any service runs (bad body, wrong media type)."""

    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}


def set_request_user(user: EndUser) -> None:
    """The user this request acts for (set by `cruddur.api.auth` before any route runs)."""
    g.cruddur_user = user


def deps() -> Deps:
    """The services' dependencies for this request: the app's, acting for the request's user."""
    base: Deps = current_app.extensions["cruddur"].deps
    user: EndUser | None = g.get("cruddur_user")
    if user is None or user.handle == base.user_handle:
        return base
    return replace(base, user_handle=user.handle)


def json_object() -> dict[str, Any]:
    """The request body as a JSON object, or an `ApiError` that says what is wrong with it."""
    if not request.is_json:
        raise ApiError(415, "unsupported_media_type", "Send a JSON body with Content-Type: application/json.")
    raw = request.get_data(cache=True)
    if request.content_length is None and _more_than_allowed(raw):
        raise RequestEntityTooLarge()
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError):
        raise ApiError(400, "malformed_json", "The request body is not valid JSON.") from None
    if not isinstance(body, dict):
        raise ApiError(400, "body_not_object", "The request body must be a JSON object.")
    return body


def _more_than_allowed(raw: bytes) -> bool:
    """Whether a body sent without Content-Length (chunked) went on past the limit.

    Werkzeug reads such a body up to `MAX_CONTENT_LENGTH` and stops there without a word, so a body
    over the limit would arrive cut (and fail as malformed JSON). One byte more, read from the
    server's own stream, tells a body of exactly the limit from a longer one.
    """
    limit = request.max_content_length
    return limit is not None and len(raw) >= limit and bool(request.environ["wsgi.input"].read(1))
