"""`GET /rollbar/test`: the course's check that Rollbar receives items.

Anyone who can reach it can spend the Rollbar quota, so in production it answers 404 unless
`CRUDDUR_ROLLBAR_TEST_ROUTE=true`.
"""

from __future__ import annotations

import logging

from flask import Blueprint, Response, abort, current_app

bp = Blueprint("rollbar_test", __name__)
log = logging.getLogger(__name__)

MESSAGE = "Hello World!"


@bp.get("/rollbar/test")
def rollbar_test() -> Response:
    telemetry = current_app.extensions["cruddur"].telemetry
    if not telemetry.settings.rollbar.test_route:
        abort(404)
    if not telemetry.report_message(MESSAGE, "warning"):
        log.info("rollbar test: Rollbar is off (set ROLLBAR_ACCESS_TOKEN), nothing was sent")
    return Response(MESSAGE, mimetype="text/plain")
