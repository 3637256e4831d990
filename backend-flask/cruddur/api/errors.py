"""One error shape for every failure, from malformed JSON to an unexpected exception.

    {"status": 422, "error": "validation_failed", "message": "...", "errors": ["message_blank"],
     "trace_id": "..."}

`errors` lists every code that applies (all failed validation rules together); `error` names the
failure as a whole; `trace_id` leads to the request in the tracing tools when one is known.
"""

from __future__ import annotations

import logging
import re

from flask import Flask, Response, current_app, jsonify
from werkzeug.exceptions import HTTPException

from cruddur.api.common import ApiError
from cruddur.services import NotFound, ValidationFailed
from cruddur.store import StoreUnavailable

log = logging.getLogger(__name__)

_NON_WORD = re.compile(r"[^a-z0-9]+")

HTTP_ERROR_CODES = {
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
}


def error_response(status: int, code: str, message: str, errors: list[str] | None = None) -> tuple[Response, int]:
    telemetry = current_app.extensions["cruddur"].telemetry
    body = {
        "status": status,
        "error": code,
        "message": message,
        "errors": errors if errors is not None else [code],
        "trace_id": telemetry.current_trace_id(),
    }
    return jsonify(body), status


def _api_error(error: ApiError) -> tuple[Response, int]:
    response, status = error_response(error.status, error.code, error.message)
    response.headers.update(error.headers)
    return response, status


def _validation_failed(error: ValidationFailed) -> tuple[Response, int]:
    return error_response(422, error.code, "The request did not pass validation.", error.codes)


def _not_found(error: NotFound) -> tuple[Response, int]:
    return error_response(404, error.code, "Nothing with that identifier exists, or it has expired.")


def _store_unavailable(error: StoreUnavailable) -> tuple[Response, int]:
    log.warning("database unavailable: %s", error)
    return database_unavailable()


def database_unavailable() -> tuple[Response, int]:
    """The answer while the database is down or too slow: 503, so clients and load balancers retry."""
    return error_response(503, "database_unavailable", "The database does not answer; try again shortly.")


def _http_message(status: int) -> str | None:
    """Our words for the HTTP errors a client meets most, naming what it can change."""
    if status == 404:
        return "Nothing is served at this URL."
    if status == 413:
        limit = current_app.config["MAX_CONTENT_LENGTH"]
        return f"The request body is larger than {limit} bytes, the limit set by CRUDDUR_MAX_BODY_BYTES."
    return None


def _http_error(error: HTTPException) -> tuple[Response, int]:
    status = error.code or 500
    code = HTTP_ERROR_CODES.get(status) or _NON_WORD.sub("_", (error.name or "error").lower()).strip("_")
    message = _http_message(status) or error.description or error.name
    response, status = error_response(status, code, message)
    valid_methods = getattr(error, "valid_methods", None)
    if valid_methods:
        response.headers["Allow"] = ", ".join(valid_methods)
    return response, status


def _unexpected(error: Exception) -> tuple[Response, int]:
    current_app.extensions["cruddur"].telemetry.report_failure(error)
    return error_response(500, "internal_error", "Something went wrong on our side; the trace id leads to it.")


def register_error_handlers(app: Flask) -> None:
    app.register_error_handler(ApiError, _api_error)
    app.register_error_handler(ValidationFailed, _validation_failed)
    app.register_error_handler(NotFound, _not_found)
    app.register_error_handler(StoreUnavailable, _store_unavailable)
    app.register_error_handler(HTTPException, _http_error)
    app.register_error_handler(Exception, _unexpected)
