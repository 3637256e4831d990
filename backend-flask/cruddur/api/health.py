"""`/api/health`: answers 200 when the store does, for load balancers and the container HEALTHCHECK."""

from __future__ import annotations

import logging

from flask import Blueprint, Response, current_app, jsonify

from cruddur.api.errors import database_unavailable

bp = Blueprint("health", __name__, url_prefix="/api")
log = logging.getLogger(__name__)


@bp.get("/health")
def health() -> Response | tuple[Response, int]:
    state = current_app.extensions["cruddur"]
    try:
        state.deps.store.ping()
    except Exception as error:
        log.warning("health check: the store does not answer: %s", error)
        return database_unavailable()
    return jsonify(status="ok", store=state.deps.store.system, version=state.version)
