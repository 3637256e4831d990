"""The service as users run it: gunicorn from backend-flask/, several workers, one database file."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

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
