"""`/api/message_groups` and `/api/messages`: direct messages between two users."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify

from cruddur.api.common import deps, json_object
from cruddur.services.create_message import create_message
from cruddur.services.message_groups import message_groups
from cruddur.services.messages import messages

bp = Blueprint("messages", __name__, url_prefix="/api")


@bp.get("/message_groups")
def groups() -> Response:
    return jsonify(message_groups(deps()))


@bp.get("/messages/@<handle>")
def conversation(handle: str) -> Response:
    return jsonify(messages(deps(), handle))


@bp.post("/messages")
def send() -> Response:
    body = json_object()
    return jsonify(create_message(deps(), body.get("message"), body.get("user_receiver_handle")))
