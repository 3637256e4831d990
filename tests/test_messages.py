"""Direct messages: conversations, reading one, sending."""

from __future__ import annotations

import pytest

#: The API contract holds on either store.
pytestmark = pytest.mark.both_stores


def test_message_groups_are_the_seeded_conversations(client):
    response = client.get("/api/message_groups")
    assert response.status_code == 200
    groups = response.get_json()
    assert [(g["handle"], g["display_name"]) for g in groups] == [("bayko", "Bayko"), ("lore", "Lore")]
    assert {g["uuid"] for g in groups} == {
        "417c360e-c4e6-4fce-873b-d2d71469b4ac",
        "24b95582-9e7b-4e0a-9ad1-639773ab7552",
    }
    assert all(set(g) == {"uuid", "display_name", "handle", "message", "created_at"} for g in groups)
    assert groups[0]["message"] == "This platform is great!"


def test_messages_with_bayko_oldest_first(client):
    response = client.get("/api/messages/@bayko")
    assert response.status_code == 200
    assert [(m["handle"], m["message"]) for m in response.get_json()] == [
        ("andrewbrown", "Cloud is fun!"),
        ("andrewbrown", "This platform is great!"),
    ]


def test_messages_with_an_unknown_user_is_404(client):
    response = client.get("/api/messages/@nobody")
    assert response.status_code == 404
    assert response.get_json()["error"] == "user_not_found"


def test_a_sent_message_shows_in_the_conversation_and_moves_it_up(client):
    response = client.post("/api/messages", json={"message": "Brother, no.", "user_receiver_handle": "lore"})
    assert response.status_code == 200
    sent = response.get_json()
    assert (sent["handle"], sent["display_name"], sent["message"]) == ("andrewbrown", "Andrew Brown", "Brother, no.")
    assert client.get("/api/messages/@lore").get_json()[-1] == sent
    assert client.get("/api/message_groups").get_json()[0]["handle"] == "lore"


def test_a_first_message_starts_a_conversation(client):
    client.post("/api/messages", json={"message": "Today is a good day", "user_receiver_handle": "worf"})
    groups = client.get("/api/message_groups").get_json()
    assert (groups[0]["handle"], groups[0]["message"]) == ("worf", "Today is a good day")


@pytest.mark.parametrize(
    ("body", "errors"),
    [
        ({"user_receiver_handle": "lore"}, ["message_blank"]),
        ({"message": "m" * 1025, "user_receiver_handle": "lore"}, ["message_exceed_max_chars"]),
        ({"message": "hi"}, ["user_receiver_handle_blank"]),
        ({"message": "hi", "user_receiver_handle": ""}, ["user_receiver_handle_blank"]),
        ({"message": "hi", "user_receiver_handle": 5}, ["user_receiver_handle_invalid"]),
        ({"message": "hi", "user_receiver_handle": "nobody"}, ["user_receiver_handle_unknown"]),
        ({}, ["message_blank", "user_receiver_handle_blank"]),
    ],
)
def test_message_validation(client, body, errors):
    response = client.post("/api/messages", json=body)
    assert response.status_code == 422
    assert response.get_json()["errors"] == errors
