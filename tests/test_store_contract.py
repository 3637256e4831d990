"""The store contract: SQLite and PostgreSQL answer every call the same way, so the two cannot drift.

Each test runs on both stores (`both_stores`), through the `Store` interface the services use.
"""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from opentelemetry.trace import SpanKind

from cruddur.store import FEED_LIMIT, REPLY_DEPTH, Store
from cruddur.timeutil import to_iso, utc_now

pytestmark = pytest.mark.both_stores

SEEDED_TOP_LEVEL = 3


@pytest.fixture
def store(app):
    return app.extensions["cruddur"].deps.store


def later(hours: float = 24):
    return utc_now() + timedelta(hours=hours)


def test_times_come_back_exactly_as_written(store):
    now = utc_now().replace(microsecond=123456)
    created = store.create_activity("worf", "on time", now, now + timedelta(hours=1))
    assert created["created_at"] == to_iso(now) and created["expires_at"] == to_iso(now + timedelta(hours=1))
    assert created["created_at"].endswith(".123456+00:00")


def test_activities_written_in_the_same_microsecond_read_newest_written_first(store):
    now = utc_now()
    written = [store.create_activity("worf", f"tie {n}", now, later())["uuid"] for n in range(3)]
    assert [a["uuid"] for a in store.home_activities(now)][:3] == written[::-1]


def test_a_feed_is_two_queries_however_many_activities_and_replies(make_app, span_exporter):
    app = make_app({"TELEMETRY_SPAN_EXPORTER": span_exporter})
    store = app.extensions["cruddur"].deps.store
    now = utc_now()
    for n in range(20):
        parent = store.create_activity("worf", f"post {n}", now, later())
        reply = store.create_reply("garek", parent["uuid"], "a reply", now)
        store.create_reply("lore", reply["uuid"], "a reply to the reply", now)
    span_exporter.clear()

    feed = app.test_client().get("/api/activities/home").get_json()
    queries = [s for s in span_exporter.get_finished_spans() if s.kind == SpanKind.CLIENT]
    assert len(feed) == 20 + SEEDED_TOP_LEVEL
    assert feed[0]["replies"][0]["replies"][0]["message"] == "a reply to the reply"
    assert len(queries) == 2
    assert {q.attributes["db.system.name"] for q in queries} == {store.system}


def test_replies_are_embedded_to_the_depth_bound(store):
    now = utc_now()
    chain = [store.create_activity("worf", "root", now, later())["uuid"]]
    for n in range(REPLY_DEPTH + 2):
        chain.append(store.create_reply("garek", chain[-1], f"reply {n}", now)["uuid"])
    node = store.get_activity(chain[0], now)
    for _ in range(REPLY_DEPTH):
        [node] = node["replies"]
    assert node["uuid"] == chain[REPLY_DEPTH] and node["replies"] == [] and node["replies_count"] == 1


def test_expired_activities_and_their_replies_are_gone(store):
    now = utc_now()
    short = store.create_activity("worf", "brief", now, now + timedelta(minutes=1))
    reply = store.create_reply("garek", short["uuid"], "briefer", now)
    assert reply["expires_at"] == short["expires_at"], "a reply lives as long as what it answers"
    after = now + timedelta(minutes=2)
    assert store.get_activity(short["uuid"], after) is None
    assert store.get_activity(reply["uuid"], after) is None
    assert store.create_reply("garek", short["uuid"], "too late", after) is None
    assert short["uuid"] not in {a["uuid"] for a in store.home_activities(after)}


def test_a_reply_to_an_unknown_activity_is_none(store):
    assert store.create_reply("garek", "00000000-0000-4000-8000-000000000000", "hello?", utc_now()) is None


def test_mentions_are_whole_handles_in_any_case(store):
    now = utc_now()
    mentions = {
        "hello @AndrewBrown!": True,
        "(@andrewbrown)": True,
        "@andrewbrownie is someone else": False,
        "@andrewbrown_2 too": False,
        "mail me at x@andrewbrown": False,
        "@@andrewbrown": False,
    }
    uuids = {store.create_activity("worf", text, now, later())["uuid"]: text for text in mentions}
    found = {a["uuid"] for a in store.notifications("andrewbrown", now)}
    assert {uuids[u] for u in found if u in uuids} == {text for text, hit in mentions.items() if hit}


def test_a_handle_is_matched_as_text_not_as_a_pattern(store):
    now = utc_now()
    exact = store.create_activity("worf", "thanks @a.b+c", now, later())
    store.create_activity("worf", "thanks @aXbbbc", now, later())
    assert [a["uuid"] for a in store.notifications("a.b+c", now)] == [exact["uuid"]]


def test_notifications_leave_out_the_users_own_posts_and_include_replies_to_them(store):
    now = utc_now()
    mine = store.create_activity("andrewbrown", "me, @andrewbrown", now, later())
    reply = store.create_reply("worf", mine["uuid"], "no mention", now)
    found = {a["uuid"] for a in store.notifications("andrewbrown", now)}
    assert reply["uuid"] in found and mine["uuid"] not in found


@pytest.mark.parametrize("term", ["100%", "a_b", "a.b", "(x", "[y]", "\\z", "ü"])
def test_search_finds_the_term_as_text(store, term):
    now = utc_now()
    hit = store.create_activity("worf", f"before {term.upper()} after", now, later())
    store.create_activity("worf", "100 abc axb ( x [ y ] z u", now, later())
    assert [a["uuid"] for a in store.search_activities(term, now)] == [hit["uuid"]]


def test_a_user_is_created_on_first_sight_and_then_left_as_it_is(store):
    assert not store.user_exists("newcomer")
    store.ensure_user("newcomer", "New Comer")
    store.ensure_user("newcomer", "Another Name")
    created = store.create_activity("newcomer", "hello", utc_now(), later())
    assert (created["handle"], created["display_name"]) == ("newcomer", "New Comer")
    store.ensure_user("worf", "Not Worf")
    assert store.create_activity("worf", "still me", utc_now(), later())["display_name"] == "Worf"


def test_the_store_has_every_method_of_the_interface(store):
    missing = [name for name in vars(Store) if not name.startswith("_") and not callable(getattr(store, name, None))]
    assert missing == []


def test_text_that_cannot_be_stored_matches_nothing(store):
    now = utc_now()
    assert store.user_exists("worf\x00") is False
    assert store.search_activities("\x00", now) == []


def test_a_feed_is_the_newest_hundred(store):
    now = utc_now()
    for n in range(FEED_LIMIT + 5):
        store.create_activity("worf", f"flood {n}", now + timedelta(microseconds=n), later())
    feed = store.user_activities("worf", now + timedelta(seconds=1))
    assert len(feed) == FEED_LIMIT and feed[0]["message"] == f"flood {FEED_LIMIT + 4}"


def test_conversations_are_ordered_by_their_latest_message(store):
    now = utc_now()
    store.create_message("andrewbrown", "worf", "first", now)
    store.create_message("lore", "andrewbrown", "second", now + timedelta(seconds=1))
    groups = store.message_groups("andrewbrown")
    assert [(g["handle"], g["message"]) for g in groups[:2]] == [("lore", "second"), ("worf", "first")]
    assert [m["message"] for m in store.messages_between("worf", "andrewbrown")] == ["first"]


def test_concurrent_first_messages_share_one_conversation_and_lose_nothing(store):
    now = utc_now()
    start = threading.Barrier(8)
    errors: list[BaseException] = []

    def send(n: int) -> None:
        start.wait()
        try:
            store.create_message("worf" if n % 2 else "garek", "garek" if n % 2 else "worf", f"m{n}", now)
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=send, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert sorted(m["message"] for m in store.messages_between("worf", "garek")) == [f"m{n}" for n in range(8)]
    assert [g["handle"] for g in store.message_groups("worf")].count("garek") == 1


def test_start_up_is_idempotent_and_seeds_once(make_app, store):
    store.prepare(utc_now(), "andrewbrown", seed=True)
    again = make_app().extensions["cruddur"].deps.store
    assert again.seed(utc_now()) is False
    assert len(again.home_activities(utc_now())) == SEEDED_TOP_LEVEL
    assert again.upgrade() == []


def test_outside_development_the_database_starts_empty_until_seeded(make_app):
    app = make_app({"CRUDDUR_ENVIRONMENT": "production", "CRUDDUR_AUTH": "off", "CRUDDUR_USER_HANDLE": "newcomer"})
    store = app.extensions["cruddur"].deps.store
    assert store.home_activities(utc_now()) == []
    assert store.user_exists("newcomer") and not store.user_exists("worf")

    runner = app.test_cli_runner()
    assert runner.invoke(args=["db", "seed"]).output.strip() == "loaded the sample data"
    assert runner.invoke(args=["db", "seed"]).output.strip() == "the sample data is already there"
    assert len(store.home_activities(utc_now())) == SEEDED_TOP_LEVEL


def test_db_upgrade_reports_an_up_to_date_schema(app):
    result = app.test_cli_runner().invoke(args=["db", "upgrade"])
    assert result.exit_code == 0 and result.output.strip() == "the schema is up to date"
