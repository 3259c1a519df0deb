"""The state store: small JSON documents by namespace and key, and append-only event logs.

Two implementations behind one interface: SQLite in the data directory (the single-machine
default) and Redis (`LABUBU_REDIS_URL`, for a cluster). Documents never expire on their own;
deleting them is explicit. Event logs number their events 1, 2, 3, ... per stream, so a reader can
resume after the last id it saw and miss nothing.

Stores connect lazily and reconnect after a fork or unpickling, so a store object can be passed
to a Ray actor or task as an argument.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Event:
    id: int
    data: dict[str, Any]


class StateStore(ABC):
    """Documents and event logs; every method is safe to call from several threads."""

    # ---- documents

    @abstractmethod
    def get(self, namespace: str, key: str) -> dict[str, Any] | None: ...

    @abstractmethod
    def put(self, namespace: str, key: str, value: dict[str, Any]) -> None: ...

    @abstractmethod
    def delete(self, namespace: str, key: str) -> bool: ...

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
    def put_and_append(self, namespace: str, key: str, value: dict[str, Any], stream: str, data: dict[str, Any]) -> int:
        """`put` and `append` as one step: a reader never sees the event without the document's change."""

    @abstractmethod
    def read(self, stream: str, after: int = 0, limit: int = 1000) -> list[Event]:
        """The events with ids greater than `after`, in order."""

    @abstractmethod
    def delete_stream(self, stream: str) -> None: ...

    @abstractmethod
    def ping(self) -> None:
        """Raise if the store does not answer."""

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
    """SQLite in WAL mode: one file, several readers, one writer at a time."""

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
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

    def put(self, namespace: str, key: str, value: dict[str, Any]) -> None:
        self._put(self.db, namespace, key, value)

    @staticmethod
    def _put(db: sqlite3.Connection, namespace: str, key: str, value: dict[str, Any]) -> None:
        db.execute(
            "INSERT INTO documents (namespace, key, value, updated_at) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (namespace, key) DO UPDATE SET value=excluded.value, updated_at=excluded.updated_at",
            (namespace, key, dumps(value), time.time()),
        )

    def delete(self, namespace: str, key: str) -> bool:
        cursor = self.db.execute("DELETE FROM documents WHERE namespace=? AND key=?", (namespace, key))
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
            return self._append(db, stream, data)

    def put_and_append(self, namespace: str, key: str, value: dict[str, Any], stream: str, data: dict[str, Any]) -> int:
        with self._transaction() as db:
            self._put(db, namespace, key, value)
            return self._append(db, stream, data)

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

    def delete_stream(self, stream: str) -> None:
        self.db.execute("DELETE FROM events WHERE stream=?", (stream,))

    def ping(self) -> None:
        self.db.execute("SELECT 1").fetchone()


# Appends the event with the next id of its stream, atomically: ids are `<n>-1`, n = 1, 2, 3, ...
_APPEND_SCRIPT = """
local n = redis.call('INCR', KEYS[2])
redis.call('XADD', KEYS[1], n .. '-1', 'data', ARGV[1])
return n
"""
# The same, after setting a document's field, in one atomic step.
_PUT_AND_APPEND_SCRIPT = """
redis.call('HSET', KEYS[3], ARGV[2], ARGV[3])
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
    """Redis: a hash per namespace for documents, a Redis Stream per event log."""

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
            import redis

            client = self._local.redis = redis.Redis.from_url(
                self.url,
                decode_responses=True,
                health_check_interval=30,
                retry_on_timeout=True,
                socket_timeout=self.timeout_s,
                socket_connect_timeout=self.timeout_s,
            )
        return client

    def _hash(self, namespace: str) -> str:
        return f"{self.prefix}:doc:{namespace}"

    def get(self, namespace: str, key: str) -> dict[str, Any] | None:
        value = self.redis.hget(self._hash(namespace), key)
        return json.loads(value) if value is not None else None

    def put(self, namespace: str, key: str, value: dict[str, Any]) -> None:
        self.redis.hset(self._hash(namespace), key, dumps(value))

    def delete(self, namespace: str, key: str) -> bool:
        return bool(self.redis.hdel(self._hash(namespace), key))

    def items(self, namespace: str, prefix: str = "") -> list[tuple[str, dict[str, Any]]]:
        found = [
            (key, json.loads(value))
            for key, value in self.redis.hscan_iter(self._hash(namespace), match=f"{_escape_glob(prefix)}*", count=500)
        ]
        return sorted(found, key=lambda item: item[0])

    def increment(self, namespace: str, key: str, amounts: Mapping[str, float]) -> dict[str, Any]:
        encoded = self.redis.eval(_INCREMENT_SCRIPT, 1, self._hash(namespace), key, dumps(dict(amounts)))
        return json.loads(encoded)  # type: ignore[no-any-return]

    def _stream_keys(self, stream: str) -> list[str]:
        return [f"{self.prefix}:events:{stream}", f"{self.prefix}:events-seq:{stream}"]

    def append(self, stream: str, data: dict[str, Any]) -> int:
        return int(self.redis.eval(_APPEND_SCRIPT, 2, *self._stream_keys(stream), dumps(data)))

    def put_and_append(self, namespace: str, key: str, value: dict[str, Any], stream: str, data: dict[str, Any]) -> int:
        keys = [*self._stream_keys(stream), self._hash(namespace)]
        return int(self.redis.eval(_PUT_AND_APPEND_SCRIPT, 3, *keys, dumps(data), key, dumps(value)))

    def read(self, stream: str, after: int = 0, limit: int = 1000) -> list[Event]:
        entries = self.redis.xrange(self._stream_keys(stream)[0], min=f"({after}-1", max="+", count=limit)
        return [Event(int(entry_id.split("-")[0]), json.loads(fields["data"])) for entry_id, fields in entries]

    def delete_stream(self, stream: str) -> None:
        self.redis.delete(*self._stream_keys(stream))

    def ping(self) -> None:
        self.redis.ping()


def _escape_glob(text: str) -> str:
    return "".join(f"\\{c}" if c in "*?[]\\" else c for c in text)


def open_store(redis_url: str | None, data_dir: str | Path) -> StateStore:
    """Redis when a URL is configured, else SQLite in the data directory."""
    if redis_url:
        return RedisStore(redis_url)
    return SqliteStore(Path(data_dir).expanduser() / "state.sqlite3")
