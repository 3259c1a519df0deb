"""Both state stores, SQLite and the local Redis server, pass the same tests."""

from __future__ import annotations

import pickle
import signal
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from state.store import RedisStore, SqliteStore, StateStore
from tests.redis_server import RedisServer

REDIS_URL = "redis://127.0.0.1:6379/15"  # the tests' own database number


@pytest.fixture(params=["sqlite", "redis"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StateStore]:
    if request.param == "sqlite":
        yield SqliteStore(tmp_path / "state.sqlite3")
        return
    prefix = f"test-{uuid.uuid4().hex}"
    yield RedisStore(REDIS_URL, prefix=prefix)
    client = redis.Redis.from_url(REDIS_URL)
    keys = list(client.scan_iter(f"{prefix}:*"))
    if keys:
        client.delete(*keys)


def test_documents_round_trip(store: StateStore) -> None:
    assert store.get("tenants", "acme") is None
    store.put("tenants", "acme", {"weight": 2.0, "nested": {"a": [1, 2]}})
    assert store.get("tenants", "acme") == {"weight": 2.0, "nested": {"a": [1, 2]}}
    store.put("tenants", "acme", {"weight": 3.0})
    assert store.get("tenants", "acme") == {"weight": 3.0}
    assert store.delete("tenants", "acme") and not store.delete("tenants", "acme")
    assert store.get("tenants", "acme") is None


def test_items_by_prefix_in_key_order(store: StateStore) -> None:
    for key in ["b/2", "a/1", "b/1", "c*"]:
        store.put("ns", key, {"k": key})
    store.put("other", "b/3", {"k": "x"})
    assert [k for k, _ in store.items("ns", "b/")] == ["b/1", "b/2"]
    assert [k for k, _ in store.items("ns")] == ["a/1", "b/1", "b/2", "c*"]
    assert [k for k, _ in store.items("ns", "c*")] == ["c*"]


def test_event_ids_count_from_one_and_resume(store: StateStore) -> None:
    ids = [store.append("wf-1", {"n": n}) for n in range(5)]
    assert ids == [1, 2, 3, 4, 5]
    assert store.append("wf-2", {"n": 0}) == 1
    assert [e.id for e in store.read("wf-1", after=2)] == [3, 4, 5]
    assert [e.data["n"] for e in store.read("wf-1", after=0, limit=2)] == [0, 1]
    assert store.read("wf-1", after=5) == []
    store.delete_stream("wf-1")
    assert store.read("wf-1") == [] and store.append("wf-1", {}) == 1


def test_put_and_append_share_one_sequence_with_append(store: StateStore) -> None:
    assert store.append("wf", {"n": 0}) == 1
    assert store.put_and_append("docs", "wf", {"status": "running"}, "wf", {"n": 1}) == 2
    assert store.get("docs", "wf") == {"status": "running"}
    assert store.put_and_append("docs", "wf", {"status": "done"}, "wf", {"n": 2}) == 3
    assert store.get("docs", "wf") == {"status": "done"}
    assert [e.data["n"] for e in store.read("wf")] == [0, 1, 2]


def test_put_and_append_is_one_step(tmp_path: Path) -> None:
    """A failing append takes the document's change back with it (SQLite: one transaction)."""
    store = SqliteStore(tmp_path / "state.sqlite3")
    store.put("docs", "wf", {"status": "pending"})
    with pytest.raises(TypeError):
        store.put_and_append("docs", "wf", {"status": "running"}, "wf", {"not json": object()})
    assert store.get("docs", "wf") == {"status": "pending"}
    assert store.read("wf") == []


def test_concurrent_appends_get_distinct_consecutive_ids(store: StateStore) -> None:
    results: list[int] = []
    lock = threading.Lock()

    def writer() -> None:
        for _ in range(20):
            event_id = store.append("busy", {})
            with lock:
                results.append(event_id)

    threads = [threading.Thread(target=writer) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(results) == list(range(1, 81))


def test_increment_adds_to_a_documents_numbers(store: StateStore) -> None:
    assert store.increment("usage", "acme/day", {"requests": 1, "cost": 2.5}) == {"requests": 1, "cost": 2.5}
    assert store.increment("usage", "acme/day", {"requests": 2, "images": 3}) == {
        "requests": 3,
        "cost": 2.5,
        "images": 3,
    }
    assert store.get("usage", "acme/day") == {"requests": 3, "cost": 2.5, "images": 3}
    assert store.increment("usage", "acme/day", {}) == {"requests": 3, "cost": 2.5, "images": 3}


def test_concurrent_increments_are_all_counted(store: StateStore) -> None:
    def writer() -> None:
        for _ in range(25):
            store.increment("usage", "busy", {"requests": 1, "cost": 0.5})

    threads = [threading.Thread(target=writer) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert store.get("usage", "busy") == {"requests": 100, "cost": 50.0}


def test_store_survives_pickling(store: StateStore) -> None:
    store.put("ns", "k", {"v": 1})
    copy = pickle.loads(pickle.dumps(store))
    assert copy.get("ns", "k") == {"v": 1}
    copy.ping()


def test_a_hanging_redis_fails_the_call_instead_of_blocking_it(tmp_path: Path) -> None:
    """A stopped (SIGSTOP) server answers nothing: the call times out; once it runs again, so do calls."""
    server = RedisServer(tmp_path)
    server.start()
    assert server.process is not None
    try:
        store = RedisStore(server.url, timeout_s=0.5)
        store.put("docs", "a", {"n": 1})
        server.process.send_signal(signal.SIGSTOP)
        start = time.monotonic()
        with pytest.raises(redis.TimeoutError):
            store.get("docs", "a")
        assert time.monotonic() - start < 5  # one retry on timeout: about 2 × 0.5 s
        server.process.send_signal(signal.SIGCONT)
        assert store.get("docs", "a") == {"n": 1}
    finally:
        server.process.send_signal(signal.SIGCONT)
        server.kill()
