"""What is written stays written: across app instances on one file, and until it expires."""

from __future__ import annotations

import multiprocessing
import sqlite3
from datetime import timedelta
from pathlib import Path

import pytest

from cruddur.config import ConfigError, sqlite_path
from cruddur.services import Deps, NotFound
from cruddur.services.create_activity import create_activity
from cruddur.services.create_reply import create_reply
from cruddur.services.home_activities import home_activities
from cruddur.services.show_activity import show_activity


def test_writes_survive_a_restart(make_app):
    first = make_app().test_client()
    activity = first.post("/api/activities", json={"message": "still here?", "ttl": "1-day"}).get_json()
    reply = first.post(f"/api/activities/{activity['uuid']}/reply", json={"message": "yes"}).get_json()
    message = first.post("/api/messages", json={"message": "hi", "user_receiver_handle": "bayko"}).get_json()

    second = make_app().test_client()
    assert second.get(f"/api/activities/{activity['uuid']}").get_json()["replies"] == [reply]
    assert second.get("/api/messages/@bayko").get_json()[-1] == message
    assert len(second.get("/api/activities/home").get_json()) == 4, "the seed is loaded once, not per start"


def test_the_default_database_lives_in_the_instance_folder(tmp_path):
    assert sqlite_path(None, str(tmp_path / "instance")) == tmp_path / "instance" / "cruddur.sqlite3"


@pytest.mark.parametrize("url", ["sqlite:///{path}", "{path}"])
def test_database_url_forms(make_app, tmp_path, url):
    path = tmp_path / "other.db"
    make_app({"DATABASE_URL": url.format(path=path)})
    assert path.exists()


@pytest.mark.parametrize("url", ["sqlite:///{path}", "{path}"])
def test_a_database_url_in_a_missing_folder_is_refused_not_created(make_app, tmp_path, url):
    missing = tmp_path / "typo" / "data"
    with pytest.raises(ConfigError, match=r"DATABASE_URL=.*typo/data' does not exist"):
        make_app({"DATABASE_URL": url.format(path=missing / "cruddur.db")})
    assert not (tmp_path / "typo").exists()


def test_the_default_instance_folder_is_still_created(tmp_path):
    from cruddur.store.sqlite import SQLiteStore
    from cruddur.telemetry.tracing import Tracing
    from cruddur.timeutil import utc_now

    path = sqlite_path(None, str(tmp_path / "instance"))
    SQLiteStore(path, Tracing()).prepare(utc_now(), "andrewbrown", seed=False)
    assert path.exists()


def _prepare_together(path: str, barrier) -> str | None:
    """One gunicorn worker's start-up on `path`, released at the same moment as the others."""
    from cruddur.store.sqlite import SQLiteStore
    from cruddur.telemetry.tracing import Tracing
    from cruddur.timeutil import utc_now

    store = SQLiteStore(Path(path), Tracing())
    barrier.wait()
    try:
        store.prepare(utc_now(), "andrewbrown", seed=True)
    except Exception as error:
        return repr(error)
    return None


def test_workers_preparing_a_new_file_at_the_same_moment_all_start(tmp_path):
    """`make run`'s two workers share a file nobody created yet; the one that lost the race to
    switch it to WAL failed to boot (about one try in two), and gunicorn stopped altogether."""
    fork = multiprocessing.get_context("fork")
    with fork.Manager() as manager, fork.Pool(2) as pool:
        for attempt in range(20):
            path = str(tmp_path / f"new-{attempt}.sqlite3")
            barrier = manager.Barrier(2)
            assert pool.starmap(_prepare_together, [(path, barrier)] * 2) == [None, None], f"attempt {attempt}"
    with sqlite3.connect(path) as connection:
        assert connection.execute("SELECT COUNT(*) FROM meta WHERE key = 'seeded_at'").fetchone() == (1,)


def test_a_database_url_no_store_speaks_is_refused_at_start(make_app):
    with pytest.raises(ConfigError, match="mysql://"):
        make_app({"DATABASE_URL": "mysql://cruddur@localhost/cruddur"})


class SteppingClock:
    def __init__(self, start):
        self.now = start

    def __call__(self):
        return self.now


def test_expired_activities_leave_the_feed(app):
    state = app.extensions["cruddur"]
    clock = SteppingClock(state.deps.clock())
    deps = Deps(store=state.deps.store, tracing=state.deps.tracing, user_handle="andrewbrown", clock=clock)

    short = create_activity(deps, "gone in an hour", "1-hour")
    long = create_activity(deps, "here for a day", "1-day")
    reply = create_reply(deps, short["uuid"], "me too")
    assert {short["uuid"], long["uuid"]} <= {a["uuid"] for a in home_activities(deps)}

    clock.now += timedelta(hours=1, seconds=1)
    feed = {a["uuid"] for a in home_activities(deps)}
    assert short["uuid"] not in feed and long["uuid"] in feed
    for gone in (short["uuid"], reply["uuid"]):
        with pytest.raises(NotFound):
            show_activity(deps, gone)
    with pytest.raises(NotFound):
        create_reply(deps, short["uuid"], "too late")

    clock.now += timedelta(days=10)
    assert home_activities(deps) == []
