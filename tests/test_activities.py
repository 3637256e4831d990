"""The activity routes, as a client sees them: status codes and JSON."""

from __future__ import annotations

from datetime import datetime

import pytest

#: The API contract holds on either store.
pytestmark = pytest.mark.both_stores

ACTIVITY_FIELDS = {
    "uuid",
    "display_name",
    "handle",
    "message",
    "created_at",
    "expires_at",
    "likes_count",
    "replies_count",
    "reposts_count",
    "replies",
    "reply_to_activity_uuid",
}
CLOUD_IS_FUN = "68f126b0-1ceb-4a33-88be-d90fa7109eee"


def assert_utc_iso(value: str) -> None:
    parsed = datetime.fromisoformat(value)
    assert parsed.utcoffset() is not None and parsed.utcoffset().total_seconds() == 0, value
    assert value.endswith("+00:00")


def post_activity(client, message: str, ttl: str = "7-days"):
    return client.post("/api/activities", json={"message": message, "ttl": ttl})


def test_home_is_the_seeded_feed_newest_first(client):
    response = client.get("/api/activities/home")
    assert response.status_code == 200
    feed = response.get_json()
    assert [item["message"] for item in feed] == [
        "My dear doctor, I am just simple tailor. Are you enjoying your holiday?",
        "Cloud is fun!",
        "I am out of prune juice",
    ]
    for item in feed:
        assert set(item) == ACTIVITY_FIELDS
        assert_utc_iso(item["created_at"])
        assert_utc_iso(item["expires_at"])
    cloud = feed[1]
    assert (cloud["display_name"], cloud["handle"], cloud["likes_count"], cloud["replies_count"]) == (
        "Andrew Brown",
        "andrewbrown",
        5,
        1,
    )
    [reply] = cloud["replies"]
    assert reply["message"] == "This post has no honor!"
    assert reply["handle"] == "worf"
    assert reply["reply_to_activity_uuid"] == CLOUD_IS_FUN
    assert set(reply) == ACTIVITY_FIELDS


def test_a_posted_activity_shows_up_first_on_the_next_read(client):
    created = post_activity(client, "Crud that expires 🚀")
    assert created.status_code == 200
    body = created.get_json()
    assert set(body) == ACTIVITY_FIELDS
    assert (body["handle"], body["message"], body["replies"], body["replies_count"]) == (
        "andrewbrown",
        "Crud that expires 🚀",
        [],
        0,
    )
    assert client.get("/api/activities/home").get_json()[0]["uuid"] == body["uuid"]
    assert client.get(f"/api/activities/{body['uuid']}").get_json() == body


@pytest.mark.parametrize(
    ("ttl", "hours"),
    [("30-days", 720), ("7-days", 168), ("3-days", 72), ("1-day", 24), ("12-hours", 12), ("3-hours", 3), ("1-hour", 1)],
)
def test_ttl_sets_the_expiry(client, ttl, hours):
    body = post_activity(client, "ttl", ttl).get_json()
    lifetime = datetime.fromisoformat(body["expires_at"]) - datetime.fromisoformat(body["created_at"])
    assert lifetime.total_seconds() == hours * 3600


@pytest.mark.parametrize(
    ("body", "errors"),
    [
        ({"message": "", "ttl": "7-days"}, ["message_blank"]),
        ({"message": "   ", "ttl": "7-days"}, ["message_blank"]),
        ({"ttl": "7-days"}, ["message_blank"]),
        ({"message": "x" * 281, "ttl": "7-days"}, ["message_exceed_max_chars"]),
        ({"message": "hello"}, ["ttl_blank"]),
        ({"message": "hello", "ttl": "2-weeks"}, ["ttl_invalid"]),
        ({"message": "hello", "ttl": 7}, ["ttl_invalid"]),
        ({"message": 42, "ttl": "7-days"}, ["message_invalid"]),
        ({"message": ["a"], "ttl": None}, ["message_invalid", "ttl_blank"]),
        ({"message": "", "ttl": "forever"}, ["message_blank", "ttl_invalid"]),
        ({"message": "x" * 300, "ttl": ""}, ["message_exceed_max_chars", "ttl_blank"]),
    ],
)
def test_every_failed_rule_is_reported_together(client, body, errors):
    response = client.post("/api/activities", json=body)
    assert response.status_code == 422
    assert response.get_json()["error"] == "validation_failed"
    assert response.get_json()["errors"] == errors


def test_the_280_limit_counts_characters_not_bytes(client):
    assert post_activity(client, "🦄" * 280).status_code == 200
    assert post_activity(client, "é" * 280).status_code == 200
    assert post_activity(client, "🦄" * 281).get_json()["errors"] == ["message_exceed_max_chars"]


def test_a_lone_surrogate_is_invalid_not_a_crash(client):
    response = client.post(
        "/api/activities", data='{"message": "\\ud800", "ttl": "1-day"}', content_type="application/json"
    )
    assert response.status_code == 422
    assert response.get_json()["errors"] == ["message_invalid"]


def test_notifications_are_replies_to_and_mentions_of_the_current_user(client):
    notified = client.get("/api/activities/notifications").get_json()
    assert [item["message"] for item in notified] == ["This post has no honor!"]
    assert notified[0]["reply_to_activity_uuid"] == CLOUD_IS_FUN


def test_user_activities(client):
    response = client.get("/api/activities/@worf")
    assert response.status_code == 200
    assert {item["message"] for item in response.get_json()} == {"This post has no honor!", "I am out of prune juice"}
    assert all(item["handle"] == "worf" for item in response.get_json())


def test_unknown_user_is_404(client):
    response = client.get("/api/activities/@nobody")
    assert response.status_code == 404
    assert response.get_json()["error"] == "user_not_found"


def test_search_ignores_case(client):
    response = client.get("/api/activities/search", query_string={"term": "PRUNE"})
    assert response.status_code == 200
    assert [item["message"] for item in response.get_json()] == ["I am out of prune juice"]
    assert client.get("/api/activities/search?term=nothing-like-this").get_json() == []


def test_search_treats_like_wildcards_as_text(client):
    assert client.get("/api/activities/search", query_string={"term": "%"}).get_json() == []
    assert client.get("/api/activities/search", query_string={"term": "_"}).get_json() == []


@pytest.mark.parametrize("query", ["", "?term=", "?term=%20%20"])
def test_search_without_a_term_is_422(client, query):
    response = client.get(f"/api/activities/search{query}")
    assert response.status_code == 422
    assert response.get_json()["errors"] == ["search_term_blank"]


def test_show_activity_includes_its_replies(client):
    response = client.get(f"/api/activities/{CLOUD_IS_FUN}")
    assert response.status_code == 200
    body = response.get_json()
    assert body["message"] == "Cloud is fun!"
    assert [reply["message"] for reply in body["replies"]] == ["This post has no honor!"]


@pytest.mark.parametrize("path", ["00000000-0000-4000-8000-000000000000", "not-a-uuid"])
def test_unknown_activity_is_404(client, path):
    response = client.get(f"/api/activities/{path}")
    assert response.status_code == 404
    assert response.is_json


def test_reply_is_added_to_the_activity(client):
    response = client.post(f"/api/activities/{CLOUD_IS_FUN}/reply", json={"message": "Qapla'!"})
    assert response.status_code == 200
    reply = response.get_json()
    assert reply["reply_to_activity_uuid"] == CLOUD_IS_FUN
    assert reply["handle"] == "andrewbrown"
    shown = client.get(f"/api/activities/{CLOUD_IS_FUN}").get_json()
    assert shown["replies_count"] == 2
    assert [r["message"] for r in shown["replies"]] == ["This post has no honor!", "Qapla'!"]
    assert reply["expires_at"] == shown["expires_at"]


def test_reply_to_an_unknown_activity_is_404(client):
    response = client.post("/api/activities/00000000-0000-4000-8000-000000000000/reply", json={"message": "hello?"})
    assert response.status_code == 404
    assert response.get_json()["error"] == "activity_not_found"


@pytest.mark.parametrize(
    ("body", "errors"),
    [
        ({}, ["message_blank"]),
        ({"message": "y" * 1025}, ["message_exceed_max_chars"]),
        ({"message": 1}, ["message_invalid"]),
    ],
)
def test_reply_validation(client, body, errors):
    assert client.post(f"/api/activities/{CLOUD_IS_FUN}/reply", json={"message": "z" * 1024}).status_code == 200
    response = client.post(f"/api/activities/{CLOUD_IS_FUN}/reply", json=body)
    assert response.status_code == 422
    assert response.get_json()["errors"] == errors
