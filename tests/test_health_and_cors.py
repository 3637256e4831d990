"""The health check, and what a browser on the frontend's origin is allowed to send."""

from __future__ import annotations

import pytest


def test_health_is_ok_when_the_store_answers(client):
    response = client.get("/api/health")
    assert response.status_code == 200
    assert response.get_json()["status"] == "ok"


def test_health_is_503_json_when_the_store_does_not(app, client, monkeypatch):
    def unreachable():
        raise OSError("database is locked")

    monkeypatch.setattr(app.extensions["cruddur"].deps.store, "ping", unreachable)
    response = client.get("/api/health")
    assert response.status_code == 503
    assert response.get_json()["error"] == "database_unavailable"


def test_preflight_from_the_frontend_allows_trace_headers(make_app):
    client = make_app({"FRONTEND_URL": "https://3000-cruddur.example.test"}).test_client()
    response = client.options(
        "/api/activities",
        headers={
            "Origin": "https://3000-cruddur.example.test",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type, traceparent, tracestate, "
            "x-amzn-trace-id, if-modified-since",
        },
    )
    assert response.headers["Access-Control-Allow-Origin"] == "https://3000-cruddur.example.test"
    allowed = {h.strip().lower() for h in response.headers["Access-Control-Allow-Headers"].split(",")}
    assert allowed == {"content-type", "traceparent", "tracestate", "x-amzn-trace-id", "if-modified-since"}


@pytest.mark.parametrize("requested", ["content-type", "authorization,content-type"])
def test_the_frontends_preflight_is_cached_by_the_browser(make_app, requested):
    """What the React frontend's `fetch(url, {method: "POST", headers: {Accept: "application/json",
    "Content-Type": "application/json"}})` sends first (Accept is safelisted, so not listed), and
    with the Cognito bearer token (`Authorization`) once users sign in."""
    client = make_app().test_client()
    response = client.options(
        "/api/activities",
        headers={
            "Origin": "http://localhost:3000",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": requested,
            "Sec-Fetch-Mode": "cors",
            "Referer": "http://localhost:3000/",
        },
    )
    assert response.status_code == 200
    assert response.headers["Access-Control-Allow-Origin"] == "http://localhost:3000"
    assert "POST" in response.headers["Access-Control-Allow-Methods"]
    allowed = {h.strip() for h in response.headers["Access-Control-Allow-Headers"].lower().split(",")}
    assert allowed == set(requested.split(","))
    assert int(response.headers["Access-Control-Max-Age"]) == 7200, "Chromium's cap; the browser skips later preflights"
    assert "Access-Control-Max-Age" not in client.get("/api/activities/home").headers, "only preflights carry it"


def test_other_origins_get_no_cors_grant(client):
    response = client.get("/api/activities/home", headers={"Origin": "https://evil.example.test"})
    assert "Access-Control-Allow-Origin" not in response.headers


def test_the_backend_origin_is_allowed_too(make_app):
    client = make_app({"BACKEND_URL": "https://4567-cruddur.example.test"}).test_client()
    response = client.get("/api/activities/home", headers={"Origin": "https://4567-cruddur.example.test"})
    assert response.headers["Access-Control-Allow-Origin"] == "https://4567-cruddur.example.test"
