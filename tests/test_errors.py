"""Bad input never gives a 500 or HTML: every failure answers in the one JSON error shape."""

from __future__ import annotations

import pytest

ERROR_FIELDS = {"status", "error", "message", "errors", "trace_id"}


def assert_error(response, status: int, code: str) -> dict:
    assert response.status_code == status
    assert response.mimetype == "application/json"
    body = response.get_json()
    assert set(body) == ERROR_FIELDS
    assert (body["status"], body["error"]) == (status, code)
    assert code in body["errors"] or body["error"] == "validation_failed"
    return body


@pytest.mark.parametrize(
    "path", ["/api/activities", "/api/messages", "/api/activities/68f126b0-1ceb-4a33-88be-d90fa7109eee/reply"]
)
def test_malformed_json_is_400(client, path):
    assert_error(client.post(path, data="{not json", content_type="application/json"), 400, "malformed_json")


@pytest.mark.parametrize("body", ["[]", '"text"', "42", "null", "true"])
def test_a_body_that_is_not_an_object_is_400(client, body):
    assert_error(client.post("/api/activities", data=body, content_type="application/json"), 400, "body_not_object")


def test_invalid_utf8_is_400(client):
    assert_error(
        client.post("/api/messages", data=b'{"message": "\xff"}', content_type="application/json"),
        400,
        "malformed_json",
    )


def test_deeply_nested_json_is_400_not_a_crash(client):
    deep = "[" * 20000 + "]" * 20000
    assert_error(client.post("/api/activities", data=deep, content_type="application/json"), 400, "malformed_json")


def test_a_body_that_is_not_json_is_415(client):
    response = client.post(
        "/api/activities", data="message=hi&ttl=1-day", content_type="application/x-www-form-urlencoded"
    )
    assert_error(response, 415, "unsupported_media_type")


def test_a_body_over_the_limit_is_413(client):
    response = client.post(
        "/api/activities", data='{"message": "' + "x" * 70_000 + '"}', content_type="application/json"
    )
    assert_error(response, 413, "payload_too_large")


def test_the_body_limit_is_configurable(make_app):
    client = make_app({"CRUDDUR_MAX_BODY_BYTES": "100"}).test_client()
    assert_error(client.post("/api/activities", json={"message": "m" * 200, "ttl": "1-day"}), 413, "payload_too_large")


@pytest.mark.parametrize("path", ["/nope", "/api/activities/home/extra", "/api", "/rollbar/tes"])
def test_unknown_route_is_404_json(client, path):
    assert_error(client.get(path), 404, "not_found")


def test_wrong_method_is_405_with_allow(client):
    response = client.delete("/api/activities/home")
    assert_error(response, 405, "method_not_allowed")
    assert set(response.headers["Allow"].split(", ")) == {"GET", "HEAD", "OPTIONS"}


def test_an_unexpected_exception_is_a_500_json(app, client, monkeypatch):
    store = app.extensions["cruddur"].deps.store

    def broken(*args, **kwargs):
        raise RuntimeError("the disk caught fire")

    monkeypatch.setattr(store, "home_activities", broken)
    body = assert_error(client.get("/api/activities/home"), 500, "internal_error")
    assert "disk" not in body["message"]
