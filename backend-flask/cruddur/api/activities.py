"""`/api/activities`: the feeds, search, posting and replying."""

from __future__ import annotations

from uuid import UUID

from flask import Blueprint, Response, jsonify, request

from cruddur.api.common import deps, json_object
from cruddur.services.create_activity import create_activity
from cruddur.services.create_reply import create_reply
from cruddur.services.home_activities import home_activities
from cruddur.services.notifications_activities import notifications_activities
from cruddur.services.search_activities import search_activities
from cruddur.services.show_activity import show_activity
from cruddur.services.user_activities import user_activities

bp = Blueprint("activities", __name__, url_prefix="/api/activities")


@bp.get("/home")
def home() -> Response:
    return jsonify(home_activities(deps()))


@bp.get("/notifications")
def notifications() -> Response:
    return jsonify(notifications_activities(deps()))


@bp.get("/@<handle>")
def by_user(handle: str) -> Response:
    return jsonify(user_activities(deps(), handle))


@bp.get("/search")
def search() -> Response:
    return jsonify(search_activities(deps(), request.args.get("term")))


@bp.post("")
def create() -> Response:
    body = json_object()
    return jsonify(create_activity(deps(), body.get("message"), body.get("ttl")))


@bp.get("/<uuid:activity_uuid>")
def show(activity_uuid: UUID) -> Response:
    return jsonify(show_activity(deps(), str(activity_uuid)))


@bp.post("/<uuid:activity_uuid>/reply")
def reply(activity_uuid: UUID) -> Response:
    body = json_object()
    return jsonify(create_reply(deps(), str(activity_uuid), body.get("message")))
