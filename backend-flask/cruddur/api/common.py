"""What every blueprint shares: the services' dependencies and strict JSON body parsing."""

from __future__ import annotations

import json
from typing import Any

from flask import current_app, request

from cruddur.services import Deps


class ApiError(Exception):
    """A request the API refuses before any service runs (bad body, wrong media type)."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


def deps() -> Deps:
    """The services' dependencies for the app serving this request."""
    return current_app.extensions["cruddur"].deps


def json_object() -> dict[str, Any]:
    """The request body as a JSON object, or an `ApiError` that says what is wrong with it."""
    if not request.is_json:
        raise ApiError(415, "unsupported_media_type", "Send a JSON body with Content-Type: application/json.")
    raw = request.get_data(cache=True)
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError):
        raise ApiError(400, "malformed_json", "The request body is not valid JSON.") from None
    if not isinstance(body, dict):
        raise ApiError(400, "body_not_object", "The request body must be a JSON object.")
    return body
