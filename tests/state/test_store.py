"""Both state stores, SQLite and the local Redis server, pass the same tests."""

from __future__ import annotations

import asyncio
import concurrent.futures
import pickle
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import redis

from state.store import IndexEntry, RedisStore, SqliteStore, StateStore
from tests.redis_server import RedisServer


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
    assert store.put_and_append("docs", "wf", {"status": "running"}, "wf", [{"n": 1}]) == 2
    assert store.get("docs", "wf") == {"status": "running"}
    # Several events with one change of the document (the executor's merged saves): the last id.
    assert store.put_and_append("docs", "wf", {"status": "done"}, "wf", [{"n": 2}, {"n": 3}]) == 4
    assert store.get("docs", "wf") == {"status": "done"}
    assert [e.data["n"] for e in store.read("wf")] == [0, 1, 2, 3]
    assert [e.id for e in store.read("wf")] == [1, 2, 3, 4]


def test_put_and_append_is_one_step(tmp_path: Path) -> None:
    """A failing append takes the document's change back with it (SQLite: one transaction)."""
    store = SqliteStore(tmp_path / "state.sqlite3")
    store.put("docs", "wf", {"status": "pending"})
    with pytest.raises(TypeError):
        store.put_and_append("docs", "wf", {"status": "running"}, "wf", [{"n": 1}, {"not json": object()}])
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
        # In a thread, so that a call that blocks fails the test (after 30 s) instead of hanging it.
        pool = concurrent.futures.ThreadPoolExecutor(1)
        with pytest.raises(redis.TimeoutError):
            pool.submit(store.get, "docs", "a").result(timeout=30)
        pool.shutdown(wait=False)
        server.process.send_signal(signal.SIGCONT)
        assert store.get("docs", "a") == {"n": 1}
    finally:
        server.process.send_signal(signal.SIGCONT)
        server.kill()


# ---------------------------------------------------------------- secondary indexes


def test_index_add_remove_page_and_count(store: StateStore) -> None:
    for member, score in [("a", 1.0), ("b", 3.0), ("c", 2.0), ("d", 2.0)]:
        store.index_add("idx", member, score)
    store.index_add("other", "z", 9.0)
    assert store.index_count("idx") == 4 and store.index_count("missing") == 0
    # Highest score first; equal scores by member, the same way round.
    assert store.index_page("idx", 0, 10) == ["b", "d", "c", "a"]
    assert store.index_page("idx", 0, 10, newest_first=False) == ["a", "c", "d", "b"]
    assert store.index_page("idx", 1, 2) == ["d", "c"]
    assert store.index_page("idx", 4, 2) == [] and store.index_page("idx", 0, 0) == []
    store.index_add("idx", "a", 5.0)  # a member is once in an index: adding again moves it
    assert store.index_page("idx", 0, 1) == ["a"] and store.index_count("idx") == 4
    store.index_remove("idx", "a")
    store.index_remove("idx", "never-there")
    assert store.index_page("idx", 0, 10) == ["b", "d", "c"] and store.index_page("other") == ["z"]


def test_documents_and_their_index_entries_change_in_one_step(store: StateStore) -> None:
    running = IndexEntry("wf", {"all": 1.0, "running": 1.0}, absent=("done",))
    store.put("docs", "wf", {"status": "running"}, running)
    assert store.index_page("all") == ["wf"] and store.index_page("running") == ["wf"]
    done = IndexEntry("wf", {"all": 1.0, "done": 1.0}, absent=("running",))
    assert store.put_and_append("docs", "wf", {"status": "done"}, "wf", [{"n": 1}], done) == 1
    assert store.index_page("running") == [] and store.index_page("done") == ["wf"]
    assert store.get("docs", "wf") == {"status": "done"}
    assert store.delete("docs", "wf", done)
    assert store.get("docs", "wf") is None
    assert [store.index_count(name) for name in ("all", "done", "running")] == [0, 0, 0]


def test_put_many_and_get_many(store: StateStore) -> None:
    values = [(f"k{i}", {"n": i}, IndexEntry(f"k{i}", {"all": float(i)})) for i in range(1200)]
    store.put_many("docs", values)
    assert store.index_count("all") == 1200 and store.index_page("all", 0, 2) == ["k1199", "k1198"]
    assert store.get_many("docs", ["k5", "nope", "k1100"]) == [{"n": 5}, None, {"n": 1100}]
    assert store.get_many("docs", []) == []


def test_a_failing_put_takes_its_index_entry_back(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "state.sqlite3")
    with pytest.raises(TypeError):
        store.put("docs", "wf", {"bad": object()}, IndexEntry("wf", {"all": 1.0}))
    assert store.index_count("all") == 0


def test_reindex_indexes_every_document(store: StateStore) -> None:
    for i in range(1100):  # more than one batch
        store.put("docs", f"k{i}", {"even": i % 2 == 0})
    store.put("other", "x", {"even": True})

    def entry(key: str, doc: dict[str, object]) -> IndexEntry | None:
        return IndexEntry(key, {"even": 1.0}) if doc["even"] else None

    assert store.reindex("docs", entry) == 1100
    assert store.index_count("even") == 550 and "x" not in store.index_page("even", 0, 1000)


# ---------------------------------------------------------------- waiting for events


def test_wait_read_answers_at_once_when_events_are_there_and_empty_after_its_timeout(store: StateStore) -> None:
    store.append("wf", {"n": 1})
    assert [e.data for e in store.wait_read("wf", 0, 30)] == [{"n": 1}]
    assert store.wait_read("wf", 1, 0.2) == []


def wake_on_append(reader: StateStore, writer: StateStore) -> None:
    """A reader blocked in `wait_read` gets the event that `writer` appends, long before its timeout
    (and long before any fallback poll): the wait returns the event, not an empty timeout."""
    writer.append("wf", {"n": 1})
    pool = concurrent.futures.ThreadPoolExecutor(1)
    waiting = pool.submit(reader.wait_read, "wf", 1, 25.0)
    time.sleep(0.3)  # let it block (if it has not, the append below is still what it must return)
    assert not waiting.done()
    writer.put_and_append("docs", "wf", {"status": "running"}, "wf", [{"n": 2}])
    assert [e.data for e in waiting.result(timeout=10)] == [{"n": 2}]
    pool.shutdown()


def test_a_waiting_reader_wakes_on_an_append(store: StateStore) -> None:
    if isinstance(store, SqliteStore):  # no fallback poll could explain the wake
        store = SqliteStore(store.path, poll_s=60)
    wake_on_append(store, store)


def test_a_waiting_sqlite_reader_wakes_on_another_store_objects_append(tmp_path: Path) -> None:
    wake_on_append(SqliteStore(tmp_path / "s.sqlite3", poll_s=60), SqliteStore(tmp_path / "s.sqlite3"))


def test_a_waiting_sqlite_reader_sees_another_process_append(tmp_path: Path) -> None:
    """No signal crosses processes: the watcher of the file's data_version wakes the reader."""
    path = tmp_path / "s.sqlite3"
    reader = SqliteStore(path, poll_s=0.2)
    reader.append("wf", {"n": 1})
    pool = concurrent.futures.ThreadPoolExecutor(1)
    waiting = pool.submit(reader.wait_read, "wf", 1, 25.0)
    code = f"from state.store import SqliteStore; SqliteStore({str(path)!r}).append('wf', {{'n': 2}})"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).resolve().parents[2])
    assert [e.data for e in waiting.result(timeout=20)] == [{"n": 2}]
    pool.shutdown()


async def test_next_events_waits_without_the_default_thread_pool(store: StateStore) -> None:
    """Many idle streams must not take the threads every `asyncio.to_thread` call needs."""
    waiters = [asyncio.create_task(store.next_events(f"wf-{i}", 0, 3.0)) for i in range(40)]
    await asyncio.sleep(0.3)
    assert await asyncio.wait_for(asyncio.to_thread(lambda: 42), timeout=5) == 42
    store.append("wf-7", {"n": 1})
    assert [e.data for e in await asyncio.wait_for(waiters[7], timeout=10)] == [{"n": 1}]
    for waiter in waiters:
        waiter.cancel()
