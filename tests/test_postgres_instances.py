"""Beyond one machine: two instances (two gunicorn masters on two ports) against one PostgreSQL database.

What one writes the other reads at once; concurrent writers spread over both lose nothing; and
`kill -9` of one instance under load loses no write it answered 200.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests

from tests.support.postgres import PostgresServer
from tests.support.server import Gunicorn

WRITERS = 20
WRITES_EACH = 5


@pytest.fixture
def two_instances(postgres: PostgresServer, database: str, tmp_path: Path) -> Iterator[tuple[Gunicorn, Gunicorn]]:
    """Started together, so they also migrate and seed the new database at the same moment; the second
    is preloaded (the app is built in the master, and each worker opens its own pool after the fork)."""
    env = {"DATABASE_URL": postgres.url_for(database), "WEB_CONCURRENCY": "2"}
    first = Gunicorn(env, tmp_path / "first.log", workers=2)
    second = Gunicorn(env, tmp_path / "second.log", workers=2, extra_args=("--preload",))
    try:
        yield first.wait_ready(), second.wait_ready()
    finally:
        first.stop()
        second.stop()


def stored_uuids(postgres: PostgresServer, database: str) -> set[str]:
    with postgres.connect(database) as connection:
        return {str(row[0]) for row in connection.execute("SELECT uuid FROM activities")}


def test_each_instance_reads_what_the_other_wrote_at_once(two_instances):
    first, second = two_instances
    posted = requests.post(
        f"{first.url}/api/activities", json={"message": "from the first", "ttl": "1-day"}, timeout=15
    )
    assert posted.status_code == 200
    assert requests.get(f"{second.url}/api/activities/{posted.json()['uuid']}", timeout=15).json() == posted.json()

    sent = requests.post(
        f"{second.url}/api/messages", json={"message": "from the second", "user_receiver_handle": "bayko"}, timeout=15
    )
    assert requests.get(f"{first.url}/api/messages/@bayko", timeout=15).json()[-1] == sent.json()
    assert len(requests.get(f"{second.url}/api/activities/home", timeout=15).json()) == 4, "seeded once, not twice"


def test_concurrent_writers_spread_over_both_lose_nothing(two_instances, postgres, database):
    first, second = two_instances

    def write(number: int) -> str:
        instance = (first, second)[number % 2]
        response = requests.post(
            f"{instance.url}/api/activities", json={"message": f"write {number}", "ttl": "1-day"}, timeout=30
        )
        assert response.status_code == 200, response.text
        return response.json()["uuid"]

    with ThreadPoolExecutor(WRITERS) as pool:
        written = set(pool.map(write, range(WRITERS * WRITES_EACH)))
    assert len(written) == WRITERS * WRITES_EACH
    assert written <= stored_uuids(postgres, database)
    feed = {a["uuid"] for a in requests.get(f"{first.url}/api/activities/@andrewbrown", timeout=15).json()}
    assert len(feed & written) == min(len(written), 100), "the other instance's writes are in this one's feed"


def kill_instance(server: Gunicorn) -> None:
    """`kill -9` of a whole instance, master and workers, as when its container is killed."""
    pid = server.process.pid
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    for process in [pid, *map(int, children)]:
        with contextlib.suppress(ProcessLookupError):
            os.kill(process, signal.SIGKILL)
    server.process.wait()


def test_kill_9_of_one_instance_under_load_loses_no_answered_write(two_instances, postgres, database):
    first, second = two_instances
    answered: list[str] = []
    lock = threading.Lock()
    stop = threading.Event()

    def writer(number: int) -> None:
        count = 0
        while not stop.is_set():
            instance = (first, second)[(number + count) % 2]
            count += 1
            try:
                response = requests.post(
                    f"{instance.url}/api/activities", json={"message": f"load {number}", "ttl": "1-day"}, timeout=30
                )
            except requests.RequestException:
                continue
            if response.status_code == 200:
                with lock:
                    answered.append(response.json()["uuid"])

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(WRITERS)]
    for thread in threads:
        thread.start()
    time.sleep(2)
    kill_instance(first)
    time.sleep(2)
    stop.set()
    for thread in threads:
        thread.join(60)

    assert len(answered) > WRITERS, "the load ran"
    missing = set(answered) - stored_uuids(postgres, database)
    assert not missing, f"{len(missing)} writes answered 200 are not in the database"
    assert requests.get(f"{second.url}/api/health", timeout=15).status_code == 200, "the other instance carries on"
