"""The state store: small JSON documents by namespace and key, and append-only event logs.

Two implementations behind one interface: SQLite in the data directory (the single-machine
default) and Redis (`LABUBU_REDIS_URL`, for a cluster). Documents never expire on their own;
deleting them is explicit. Event logs number their events 1, 2, 3, ... per stream, so a reader can
resume after the last id it saw and miss nothing; `wait_read` blocks until an event arrives (Redis:
`XREAD BLOCK`; SQLite: a signal from appends in this process, and a watcher of the file's
`PRAGMA data_version` for appends from other processes).

Secondary indexes are sorted sets of document keys (`member`, `score`), written in the same step as
the document they describe (`put`, `put_and_append` and `delete` take an `IndexEntry`), so that
listings read one page of keys instead of every document.

Stores connect lazily and reconnect after a fork or unpickling, so a store object can be passed
to a Ray actor or task as an argument.
"""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# The longest one `wait_read` blocks: a Redis client's socket timeout must outlast it.
WAIT_MAX_S = 30.0
# Readers waiting for events hold a thread each, for up to `WAIT_MAX_S`: a pool of their own, so
# that they never starve `asyncio.to_thread`'s small default pool that every other call uses.
_WAITING = ThreadPoolExecutor(max_workers=1024, thread_name_prefix="state-wait")
# Redis and SQLite both take at most this many variables or members per command comfortably.
_BATCH = 500


@dataclass(frozen=True)
class Event:
    id: int
    data: dict[str, Any]


@dataclass(frozen=True)
class IndexEntry:
    """A document's place in the secondary indexes: `member` is in each index of `scores` (at its
    score) and in none of `absent`. Stored with the document; on delete, removed from all of them."""

    member: str
    scores: Mapping[str, float] = field(default_factory=dict)
    absent: tuple[str, ...] = ()

    def names(self) -> tuple[str, ...]:
        return (*self.scores, *self.absent)


class StateStore(ABC):
    """Documents, event logs and secondary indexes; every method is safe to call from several threads."""

    # ---- documents

    @abstractmethod
    def get(self, namespace: str, key: str) -> dict[str, Any] | None: ...

    @abstractmethod
    def get_many(self, namespace: str, keys: Sequence[str]) -> list[dict[str, Any] | None]:
        """The documents of `keys`, in their order (None where one is missing), in one round trip."""

    @abstractmethod
    def put(self, namespace: str, key: str, value: dict[str, Any], index: IndexEntry | None = None) -> None:
        """Store the document and, in the same step, its index entry."""

    @abstractmethod
    def put_many(self, namespace: str, values: Sequence[tuple[str, dict[str, Any], IndexEntry | None]]) -> None:
        """`put` of many documents (and their index entries) in one step: bulk loads."""

    @abstractmethod
    def delete(self, namespace: str, key: str, index: IndexEntry | None = None) -> bool:
        """Delete the document and, in the same step, its member from every index `index` names."""

    @abstractmethod
    def items(self, namespace: str, prefix: str = "") -> list[tuple[str, dict[str, Any]]]:
        """Every (key, document) of the namespace whose key starts with `prefix`, by key."""

    @abstractmethod
    def increment(self, namespace: str, key: str, amounts: Mapping[str, float]) -> dict[str, Any]:
        """Add `amounts` to the document's numbers (a missing document or field counts from 0) in one
        atomic step, so that concurrent writers lose nothing; the document after."""

    # ---- event logs

    @abstractmethod
    def append(self, stream: str, data: dict[str, Any]) -> int:
        """Append an event; its id, one more than the stream's last."""

    @abstractmethod
    def put_and_append(
        self,
        namespace: str,
        key: str,
        value: dict[str, Any],
        stream: str,
        events: Sequence[dict[str, Any]],
        index: IndexEntry | None = None,
    ) -> int:
        """`put` and an `append` of each event as one step: a reader never sees the events without
        the document's change. The last event's id."""

    @abstractmethod
    def read(self, stream: str, after: int = 0, limit: int = 1000) -> list[Event]:
        """The events with ids greater than `after`, in order."""

    @abstractmethod
    def wait_read(self, stream: str, after: int, timeout_s: float, limit: int = 1000) -> list[Event]:
        """`read`, but when there is nothing after `after` yet, block until an event arrives or
        `timeout_s` (at most `WAIT_MAX_S`) has passed; an empty list after the timeout."""

    async def next_events(self, stream: str, after: int, timeout_s: float, limit: int = 1000) -> list[Event]:
        """`wait_read` for a coroutine, on a thread pool of waiting readers of its own."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(_WAITING, self.wait_read, stream, after, timeout_s, limit)

    @abstractmethod
    def delete_stream(self, stream: str) -> None: ...

    @abstractmethod
    def ping(self) -> None:
        """Raise if the store does not answer."""

    # ---- secondary indexes: sorted sets of members (document keys) by score

    @abstractmethod
    def index_apply(self, entries: Sequence[IndexEntry]) -> None:
        """Put each entry's member in its indexes (at their scores) and take it out of its `absent` ones."""

    @abstractmethod
    def index_page(self, index: str, offset: int = 0, limit: int = 20, newest_first: bool = True) -> list[str]:
        """Members by score (highest first unless `newest_first` is false; ties by member, the same way)."""

    @abstractmethod
    def index_count(self, index: str) -> int: ...

    @abstractmethod
    def reindex(self, namespace: str, entry_of: Callable[[str, dict[str, Any]], IndexEntry | None]) -> int:
        """Apply `entry_of(key, document)` to every document of the namespace, each batch atomically
        with respect to writers of the documents (a concurrent `put` is never undone by an entry
        computed from the document before it): the backfill of indexes added to existing data.
        The number of documents indexed."""

    def index_add(self, index: str, member: str, score: float) -> None:
        self.index_apply([IndexEntry(member, {index: score})])

    def index_remove(self, index: str, member: str) -> None:
        self.index_apply([IndexEntry(member, absent=(index,))])

    def __getstate__(self) -> dict[str, Any]:
        # Connections never travel: the receiving process opens its own.
        state = self.__dict__.copy()
        state["_local"] = None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._local = threading.local()


def dumps(value: dict[str, Any]) -> str:
    return json.dumps(value, separators=(",", ":"))


class SqliteStore(StateStore):
    """SQLite in WAL mode: one file, several readers, one writer at a time.

    `poll_s` is how often waiting readers look for appends made by other processes (this file's
    `PRAGMA data_version`, one cheap query for all of them); appends in this process wake them at once.
    """

    def __init__(self, path: str | Path, poll_s: float = 1.0) -> None:
        self.path = str(path)
        self.poll_s = poll_s
        self._local = threading.local()
        Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as db:
            db.executescript(
                """
                CREATE TABLE IF NOT EXISTS documents (
                    namespace TEXT NOT NULL, key TEXT NOT NULL, value TEXT NOT NULL, updated_at REAL NOT NULL,
                    PRIMARY KEY (namespace, key));
                CREATE TABLE IF NOT EXISTS events (
                    stream TEXT NOT NULL, id INTEGER NOT NULL, data TEXT NOT NULL,
                    PRIMARY KEY (stream, id));
                CREATE TABLE IF NOT EXISTS indexes (
                    name TEXT NOT NULL, member TEXT NOT NULL, score REAL NOT NULL,
                    PRIMARY KEY (name, member));
                CREATE INDEX IF NOT EXISTS indexes_by_score ON indexes (name, score, member);
                """
            )

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        return db

    @property
    def db(self) -> sqlite3.Connection:
        connection = getattr(self._local, "db", None)
        if connection is None:
            connection = self._local.db = self._connect()
        return connection

    def get(self, namespace: str, key: str) -> dict[str, Any] | None:
        row = self.db.execute("SELECT value FROM documents WHERE namespace=? AND key=?", (namespace, key)).fetchone()
        return json.loads(row[0]) if row else None

    def get_many(self, namespace: str, keys: Sequence[str]) -> list[dict[str, Any] | None]:
        found = dict(self._rows(self.db, namespace, keys))
        return [json.loads(found[key]) if key in found else None for key in keys]

    @staticmethod
    def _rows(db: sqlite3.Connection, namespace: str, keys: Sequence[str]) -> list[tuple[str, str]]:
        rows: list[tuple[str, str]] = []
        for start in range(0, len(keys), _BATCH):
            chunk = list(keys[start : start + _BATCH])
            marks = ",".join("?" * len(chunk))
            query = f"SELECT key, value FROM documents WHERE namespace=? AND key IN ({marks})"
            rows += db.execute(query, (namespace, *chunk)).fetchall()
        return rows

    def put(self, namespace: str, key: str, value: dict[str, Any], index: IndexEntry | None = None) -> None:
        if index is None:
            self._put(self.db, namespace, key, value)
            return
        with self._transaction() as db:
            self._put(db, namespace, key, value)
            self._index(db, [index])

    def put_many(self, namespace: str, values: Sequence[tuple[str, dict[str, Any], IndexEntry | None]]) -> None:
        with self._transaction() as db:
            for key, value, _ in values:
                self._put(db, namespace, key, value)
            self._index(db, [index for _, _, index in values if index is not None])

    @staticmethod
    def _put(db: sqlite3.Connection, namespace: str, key: str, value: dict[str, Any]) -> None:
        db.execute(
            "INSERT INTO documents (namespace, key, value, updated_at) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (namespace, key) DO UPDATE SET value=excluded.value, updated_at=excluded.updated_at",
            (namespace, key, dumps(value), time.time()),
        )

    def delete(self, namespace: str, key: str, index: IndexEntry | None = None) -> bool:
        with self._transaction() as db:
            cursor = db.execute("DELETE FROM documents WHERE namespace=? AND key=?", (namespace, key))
            if index is not None:
                self._index(db, [IndexEntry(index.member, absent=index.names())])
        return cursor.rowcount > 0

    def items(self, namespace: str, prefix: str = "") -> list[tuple[str, dict[str, Any]]]:
        rows = self.db.execute(
            "SELECT key, value FROM documents WHERE namespace=? AND substr(key, 1, ?)=? ORDER BY key",
            (namespace, len(prefix), prefix),
        ).fetchall()
        return [(key, json.loads(value)) for key, value in rows]

    def increment(self, namespace: str, key: str, amounts: Mapping[str, float]) -> dict[str, Any]:
        with self._transaction() as db:  # the read and the write as one step
            row = db.execute("SELECT value FROM documents WHERE namespace=? AND key=?", (namespace, key)).fetchone()
            value: dict[str, Any] = json.loads(row[0]) if row else {}
            for name, amount in amounts.items():
                value[name] = value.get(name, 0) + amount
            self._put(db, namespace, key, value)
        return value

    def append(self, stream: str, data: dict[str, Any]) -> int:
        with self._transaction() as db:  # the next id and the insert as one step
            event_id = self._append(db, stream, data)
        _signals(self.path).notify(stream)
        return event_id

    def put_and_append(
        self,
        namespace: str,
        key: str,
        value: dict[str, Any],
        stream: str,
        events: Sequence[dict[str, Any]],
        index: IndexEntry | None = None,
    ) -> int:
        with self._transaction() as db:
            self._put(db, namespace, key, value)
            if index is not None:
                self._index(db, [index])
            event_id = 0
            for data in events:
                event_id = self._append(db, stream, data)
        _signals(self.path).notify(stream)
        return event_id

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        db = self.db
        db.execute("BEGIN IMMEDIATE")
        try:
            yield db
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")

    @staticmethod
    def _append(db: sqlite3.Connection, stream: str, data: dict[str, Any]) -> int:
        (last,) = db.execute("SELECT COALESCE(MAX(id), 0) FROM events WHERE stream=?", (stream,)).fetchone()
        db.execute("INSERT INTO events (stream, id, data) VALUES (?, ?, ?)", (stream, last + 1, dumps(data)))
        return int(last + 1)

    def read(self, stream: str, after: int = 0, limit: int = 1000) -> list[Event]:
        rows = self.db.execute(
            "SELECT id, data FROM events WHERE stream=? AND id>? ORDER BY id LIMIT ?", (stream, after, limit)
        ).fetchall()
        return [Event(int(i), json.loads(d)) for i, d in rows]

    def wait_read(self, stream: str, after: int, timeout_s: float, limit: int = 1000) -> list[Event]:
        deadline = time.monotonic() + min(timeout_s, WAIT_MAX_S)
        signals = _signals(self.path)
        # Registered before the first read: an append between the read and the wait still wakes it.
        wake = signals.register(stream, after, self.poll_s)
        try:
            while True:
                events = self.read(stream, after, limit)
                remaining = deadline - time.monotonic()
                if events or remaining <= 0:
                    return events
                wake.wait(remaining)
                wake.clear()
        finally:
            signals.unregister(stream, wake)

    def delete_stream(self, stream: str) -> None:
        self.db.execute("DELETE FROM events WHERE stream=?", (stream,))

    def ping(self) -> None:
        self.db.execute("SELECT 1").fetchone()

    def index_apply(self, entries: Sequence[IndexEntry]) -> None:
        with self._transaction() as db:
            self._index(db, entries)

    @staticmethod
    def _index(db: sqlite3.Connection, entries: Sequence[IndexEntry]) -> None:
        db.executemany(
            "INSERT INTO indexes (name, member, score) VALUES (?, ?, ?) "
            "ON CONFLICT (name, member) DO UPDATE SET score=excluded.score",
            [(name, entry.member, score) for entry in entries for name, score in entry.scores.items()],
        )
        db.executemany(
            "DELETE FROM indexes WHERE name=? AND member=?",
            [(name, entry.member) for entry in entries for name in entry.absent],
        )

    def index_page(self, index: str, offset: int = 0, limit: int = 20, newest_first: bool = True) -> list[str]:
        order = "DESC" if newest_first else "ASC"
        rows = self.db.execute(
            f"SELECT member FROM indexes WHERE name=? ORDER BY score {order}, member {order} LIMIT ? OFFSET ?",
            (index, limit, offset),
        ).fetchall()
        return [member for (member,) in rows]

    def index_count(self, index: str) -> int:
        (count,) = self.db.execute("SELECT COUNT(*) FROM indexes WHERE name=?", (index,)).fetchone()
        return int(count)

    def reindex(self, namespace: str, entry_of: Callable[[str, dict[str, Any]], IndexEntry | None]) -> int:
        keys = [k for (k,) in self.db.execute("SELECT key FROM documents WHERE namespace=?", (namespace,))]
        done = 0
        for start in range(0, len(keys), _BATCH):
            # One write transaction per batch: no document changes between its read and its entries.
            with self._transaction() as db:
                rows = self._rows(db, namespace, keys[start : start + _BATCH])
                entries = [entry_of(key, json.loads(value)) for key, value in rows]
                self._index(db, [entry for entry in entries if entry is not None])
            done += len(rows)
        return done


class _Signals:
    """Wake-ups for readers of one SQLite file in this process: appends here signal the stream's
    waiters at once; a watcher thread (alive while anyone waits) notices other processes' commits
    through `PRAGMA data_version` and wakes the waiters whose streams grew."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.lock = threading.Lock()
        self.waiting: dict[str, dict[threading.Event, int]] = {}  # stream -> {waiter: after}
        self.poll_s = WAIT_MAX_S
        self.poll_changed = threading.Event()
        self.watcher: threading.Thread | None = None

    def register(self, stream: str, after: int, poll_s: float) -> threading.Event:
        wake = threading.Event()
        with self.lock:
            self.waiting.setdefault(stream, {})[wake] = after
            if poll_s < self.poll_s:
                self.poll_s = poll_s
                self.poll_changed.set()
            if self.watcher is None:
                self.watcher = threading.Thread(target=self._watch, name="sqlite-events-watch", daemon=True)
                self.watcher.start()
        return wake

    def unregister(self, stream: str, wake: threading.Event) -> None:
        with self.lock:
            waiters = self.waiting.get(stream, {})
            waiters.pop(wake, None)
            if not waiters:
                self.waiting.pop(stream, None)

    def notify(self, stream: str) -> None:
        with self.lock:
            waiters = list(self.waiting.get(stream, {}))
        for wake in waiters:
            wake.set()

    def _watch(self) -> None:
        db = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
        try:
            (version,) = db.execute("PRAGMA data_version").fetchone()
            while True:
                with self.lock:
                    if not self.waiting:
                        self.watcher, self.poll_s = None, WAIT_MAX_S
                        return
                    poll_s = self.poll_s
                if self.poll_changed.wait(poll_s):
                    self.poll_changed.clear()
                    continue
                (current,) = db.execute("PRAGMA data_version").fetchone()
                if current != version:
                    version = current
                    self._wake_grown(db)
        finally:
            db.close()

    def _wake_grown(self, db: sqlite3.Connection) -> None:
        with self.lock:
            waiting = {stream: dict(waiters) for stream, waiters in self.waiting.items()}
        streams = list(waiting)
        for start in range(0, len(streams), _BATCH):
            chunk = streams[start : start + _BATCH]
            marks = ",".join("?" * len(chunk))
            query = f"SELECT stream, MAX(id) FROM events WHERE stream IN ({marks}) GROUP BY stream"
            for stream, last in db.execute(query, chunk):
                for wake, after in waiting[stream].items():
                    if last > after:
                        wake.set()


_SIGNALS: dict[str, _Signals] = {}
_SIGNALS_LOCK = threading.Lock()


def _signals(path: str) -> _Signals:
    """The one `_Signals` of a file in this process, whichever store objects open it."""
    real = os.path.realpath(path)
    with _SIGNALS_LOCK:
        found = _SIGNALS.get(real)
        if found is None:
            found = _SIGNALS[real] = _Signals(real)
        return found


# Appends the event with the next id of its stream, atomically: ids are `<n>-1`, n = 1, 2, 3, ...
_APPEND_SCRIPT = """
local n = redis.call('INCR', KEYS[2])
redis.call('XADD', KEYS[1], n .. '-1', 'data', ARGV[1])
return n
"""

# Adds numbers to the fields of a JSON document in a hash, atomically (HGET gives false when absent).
_INCREMENT_SCRIPT = """
local current = redis.call('HGET', KEYS[1], ARGV[1])
local doc = current and cjson.decode(current) or {}
for name, amount in pairs(cjson.decode(ARGV[2])) do
  doc[name] = (doc[name] or 0) + amount
end
local encoded = cjson.encode(doc)
redis.call('HSET', KEYS[1], ARGV[1], encoded)
return encoded
"""


class RedisStore(StateStore):
    """Redis: a hash per namespace for documents, a Redis Stream per event log, a sorted set per index."""

    def __init__(self, url: str, prefix: str = "labubu", timeout_s: float = 10.0) -> None:
        self.url = url
        self.prefix = prefix
        # A Redis that hangs (not down: stopped, or a network that drops packets) must fail the
        # call, not block it for ever: model replicas read the admin's backend order per call.
        self.timeout_s = timeout_s
        self._local = threading.local()

    @property
    def redis(self) -> Any:
        client = getattr(self._local, "redis", None)
        if client is None:
            client = self._local.redis = self._client(self.timeout_s)
        return client

    @property
    def blocking(self) -> Any:
        """A client for `XREAD BLOCK`, whose socket outlasts the longest wait by the usual timeout."""
        client = getattr(self._local, "blocking", None)
        if client is None:
            client = self._local.blocking = self._client(self.timeout_s + WAIT_MAX_S)
        return client

    def _client(self, socket_timeout_s: float) -> Any:
        import redis

        return redis.Redis.from_url(
            self.url,
            decode_responses=True,
            health_check_interval=30,
            retry_on_timeout=True,
            socket_timeout=socket_timeout_s,
            socket_connect_timeout=self.timeout_s,
        )

    def _hash(self, namespace: str) -> str:
        return f"{self.prefix}:doc:{namespace}"

    def _zset(self, index: str) -> str:
        return f"{self.prefix}:idx:{index}"

    def get(self, namespace: str, key: str) -> dict[str, Any] | None:
        value = self.redis.hget(self._hash(namespace), key)
        return json.loads(value) if value is not None else None

    def get_many(self, namespace: str, keys: Sequence[str]) -> list[dict[str, Any] | None]:
        if not keys:
            return []
        values = self.redis.hmget(self._hash(namespace), list(keys))
        return [json.loads(value) if value is not None else None for value in values]

    def put(self, namespace: str, key: str, value: dict[str, Any], index: IndexEntry | None = None) -> None:
        if index is None:
            self.redis.hset(self._hash(namespace), key, dumps(value))
        else:
            self.put_many(namespace, [(key, value, index)])

    def put_many(self, namespace: str, values: Sequence[tuple[str, dict[str, Any], IndexEntry | None]]) -> None:
        if not values:
            return
        pipe = self.redis.pipeline(transaction=True)  # MULTI/EXEC: readers see all of it or none
        pipe.hset(self._hash(namespace), mapping={key: dumps(value) for key, value, _ in values})
        self._index(pipe, [index for _, _, index in values if index is not None])
        pipe.execute()

    def delete(self, namespace: str, key: str, index: IndexEntry | None = None) -> bool:
        pipe = self.redis.pipeline(transaction=True)
        pipe.hdel(self._hash(namespace), key)
        if index is not None:
            self._index(pipe, [IndexEntry(index.member, absent=index.names())])
        return bool(pipe.execute()[0])

    def items(self, namespace: str, prefix: str = "") -> list[tuple[str, dict[str, Any]]]:
        found = [
            (key, json.loads(value))
            for key, value in self.redis.hscan_iter(self._hash(namespace), match=f"{_escape_glob(prefix)}*", count=500)
        ]
        return sorted(found, key=lambda item: item[0])

    def increment(self, namespace: str, key: str, amounts: Mapping[str, float]) -> dict[str, Any]:
        encoded = self.redis.eval(_INCREMENT_SCRIPT, 1, self._hash(namespace), key, dumps(dict(amounts)))
        return dict(json.loads(encoded))

    def _stream_keys(self, stream: str) -> list[str]:
        return [f"{self.prefix}:events:{stream}", f"{self.prefix}:events-seq:{stream}"]

    def append(self, stream: str, data: dict[str, Any]) -> int:
        return int(self.redis.eval(_APPEND_SCRIPT, 2, *self._stream_keys(stream), dumps(data)))

    def put_and_append(
        self,
        namespace: str,
        key: str,
        value: dict[str, Any],
        stream: str,
        events: Sequence[dict[str, Any]],
        index: IndexEntry | None = None,
    ) -> int:
        pipe = self.redis.pipeline(transaction=True)
        pipe.hset(self._hash(namespace), key, dumps(value))
        if index is not None:
            self._index(pipe, [index])
        for data in events:
            pipe.eval(_APPEND_SCRIPT, 2, *self._stream_keys(stream), dumps(data))
        results = pipe.execute()
        return int(results[-1]) if events else 0

    def read(self, stream: str, after: int = 0, limit: int = 1000) -> list[Event]:
        entries = self.redis.xrange(self._stream_keys(stream)[0], min=f"({after}-1", max="+", count=limit)
        return [_event(entry_id, fields) for entry_id, fields in entries]

    def wait_read(self, stream: str, after: int, timeout_s: float, limit: int = 1000) -> list[Event]:
        block_ms = max(1, int(min(timeout_s, WAIT_MAX_S) * 1000))  # 0 would block for ever
        found = self.blocking.xread({self._stream_keys(stream)[0]: f"{after}-1"}, count=limit, block=block_ms)
        return [_event(entry_id, fields) for _, entries in found or [] for entry_id, fields in entries]

    def delete_stream(self, stream: str) -> None:
        self.redis.delete(*self._stream_keys(stream))

    def ping(self) -> None:
        self.redis.ping()

    def index_apply(self, entries: Sequence[IndexEntry]) -> None:
        pipe = self.redis.pipeline(transaction=True)
        self._index(pipe, entries)
        pipe.execute()

    def _index(self, pipe: Any, entries: Sequence[IndexEntry]) -> None:
        for entry in entries:
            for name, score in entry.scores.items():
                pipe.zadd(self._zset(name), {entry.member: score})
            for name in entry.absent:
                pipe.zrem(self._zset(name), entry.member)

    def index_page(self, index: str, offset: int = 0, limit: int = 20, newest_first: bool = True) -> list[str]:
        if limit <= 0:  # ZRANGE 0 -1 would be everything
            return []
        return list(self.redis.zrange(self._zset(index), offset, offset + limit - 1, desc=newest_first))

    def index_count(self, index: str) -> int:
        return int(self.redis.zcard(self._zset(index)))

    def reindex(self, namespace: str, entry_of: Callable[[str, dict[str, Any]], IndexEntry | None]) -> int:
        import redis

        hash_key = self._hash(namespace)
        keys = [key for key, _ in self.redis.hscan_iter(hash_key, count=_BATCH)]
        done = 0
        for start in range(0, len(keys), _BATCH):
            chunk = keys[start : start + _BATCH]
            while True:  # optimistic: a write to the namespace during the batch makes it start again
                with self.redis.pipeline(transaction=True) as pipe:
                    try:
                        pipe.watch(hash_key)
                        values = pipe.hmget(hash_key, chunk)
                        pipe.multi()
                        found = [(k, json.loads(v)) for k, v in zip(chunk, values, strict=True) if v is not None]
                        self._index(pipe, [e for e in (entry_of(k, doc) for k, doc in found) if e is not None])
                        pipe.execute()
                        done += len(found)
                        break
                    except redis.WatchError:
                        continue
        return done


def _event(entry_id: str, fields: dict[str, str]) -> Event:
    return Event(int(entry_id.split("-")[0]), json.loads(fields["data"]))


def _escape_glob(text: str) -> str:
    return "".join(f"\\{c}" if c in "*?[]\\" else c for c in text)


def open_store(redis_url: str | None, data_dir: str | Path) -> StateStore:
    """Redis when a URL is configured, else SQLite in the data directory.

    Open it in the process that uses it: a pickled `RedisStore` carries its URL, and the password
    in it, into whatever holds the pickle (Serve's and Ray's stored arguments among them). The
    platform's processes get where the store is instead (`serve_app.settings.StoreLocation`).
    """
    if redis_url:
        return RedisStore(redis_url)
    return SqliteStore(Path(data_dir).expanduser() / "state.sqlite3")
