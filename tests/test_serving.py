"""The service as users run it: gunicorn from backend-flask/, several workers, one database file."""

from __future__ import annotations

import contextlib
import http.client
import json
import socket
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlsplit

import requests

from tests.support.server import Gunicorn


def test_gunicorn_serves_the_seeded_feed_and_keeps_writes_across_workers(tmp_path):
    env = {"DATABASE_URL": str(tmp_path / "served.sqlite3")}
    with Gunicorn(env, tmp_path / "gunicorn.log", workers=3) as server:
        feed = requests.get(f"{server.url}/api/activities/home", timeout=5)
        assert feed.status_code == 200
        assert "Cloud is fun!" in [item["message"] for item in feed.json()]

        def post(n: int) -> str:
            response = requests.post(
                f"{server.url}/api/activities", json={"message": f"crud #{n}", "ttl": "1-day"}, timeout=10
            )
            assert response.status_code == 200, response.text
            return response.json()["uuid"]

        with ThreadPoolExecutor(max_workers=8) as pool:
            created = set(pool.map(post, range(40)))
        assert len(created) == 40
        for _ in range(6):  # several reads, so several workers answer
            home = {item["uuid"] for item in requests.get(f"{server.url}/api/activities/home", timeout=5).json()}
            assert created <= home

    with Gunicorn(env, tmp_path / "restarted.log") as restarted:
        home = {item["uuid"] for item in requests.get(f"{restarted.url}/api/activities/home", timeout=5).json()}
        assert created <= home


def test_bad_input_over_real_http_is_json(tmp_path):
    with Gunicorn({"DATABASE_URL": str(tmp_path / "db.sqlite3")}, tmp_path / "gunicorn.log") as server:
        too_big = requests.post(
            f"{server.url}/api/activities",
            data=b'{"message": "' + b"x" * 200_000 + b'"}',
            headers={"Content-Type": "application/json"},
            timeout=5,
        )
        assert too_big.status_code == 413 and too_big.json()["error"] == "payload_too_large"
        missing = requests.get(f"{server.url}/nowhere", timeout=5)
        assert missing.status_code == 404 and missing.json()["error"] == "not_found"


def test_graceful_stop_is_quick_with_no_telemetry(tmp_path):
    server = Gunicorn({"DATABASE_URL": str(tmp_path / "db.sqlite3")}, tmp_path / "gunicorn.log").wait_ready()
    assert server.stop() < 10
    assert server.process.returncode == 0


def post_chunked(url: str, path: str, body: bytes, chunk: int = 16 * 1024) -> tuple[int, dict]:
    """POST with `Transfer-Encoding: chunked` and no Content-Length, as a streaming client does.

    A server that refuses the body answers before reading all of it and closes, so sending may
    fail half-way (EPIPE, reset); the answer it sent first is still read.
    """
    parts = urlsplit(url)
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {parts.netloc}\r\nContent-Type: application/json\r\n"
        "Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    ).encode()
    pieces = [body[i : i + chunk] for i in range(0, len(body), chunk)]
    chunks = b"".join(b"%x\r\n%s\r\n" % (len(piece), piece) for piece in pieces)
    with socket.create_connection((parts.hostname, parts.port), timeout=10) as connection:
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            connection.sendall(head + chunks + b"0\r\n\r\n")
        response = http.client.HTTPResponse(connection)
        response.begin()
        return response.status, json.loads(response.read())


def padded(size: int) -> bytes:
    """A valid activity of exactly `size` bytes (JSON allows the trailing spaces)."""
    body = json.dumps({"message": "sent in chunks", "ttl": "1-day"}).encode()
    return body + b" " * (size - len(body))


def test_a_chunked_body_over_the_limit_is_413_naming_the_limit_and_its_setting(tmp_path):
    env = {"DATABASE_URL": str(tmp_path / "db.sqlite3"), "CRUDDUR_MAX_BODY_BYTES": "100"}
    with Gunicorn(env, tmp_path / "gunicorn.log") as server:
        at_limit = post_chunked(server.url, "/api/activities", padded(100))
        over = post_chunked(server.url, "/api/activities", padded(101))
        far_over = post_chunked(server.url, "/api/activities", padded(70_000))
        json_type = {"Content-Type": "application/json"}
        sized = requests.post(f"{server.url}/api/activities", data=padded(101), headers=json_type, timeout=5)
    assert at_limit[0] == 200 and at_limit[1]["message"] == "sent in chunks"
    for status, body in (over, far_over, (sized.status_code, sized.json())):
        assert (status, body["error"]) == (413, "payload_too_large")
        assert "100 bytes" in body["message"] and "CRUDDUR_MAX_BODY_BYTES" in body["message"]


def test_an_unknown_url_is_404_in_our_words(tmp_path):
    with Gunicorn({"DATABASE_URL": str(tmp_path / "db.sqlite3")}, tmp_path / "gunicorn.log") as server:
        missing = requests.get(f"{server.url}/wp-admin/setup-config.php", timeout=5)
    assert missing.status_code == 404
    assert missing.json()["message"] == "Nothing is served at this URL."
