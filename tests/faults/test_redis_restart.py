"""Redis dies and comes back while a workflow runs: the executor reconnects and the workflow completes.

The Redis server is this module's own process, on a free loopback port, killed with SIGKILL and
started again on the same port and files (never the machine's server on 6379). It persists every
write (append-only file, fsync always), as a production Redis for workflow state would, so the
kill loses nothing that was acknowledged. A second executor actor (unnamed, like the one that
tests/dag/test_executor_stores.py kills mid-workflow) keeps its workflows there and runs them on
the session platform's deployments and scheduler.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import ray

from dag.config import ExecutorConfig
from dag.executor import WorkflowExecutor
from dag.records import WorkflowStore, output_key
from state.artifacts import LocalArtifactStore
from state.store import RedisStore
from tests.fakes.stores import OpenedStores
from tests.helpers import llm, start_stored, wait_stored_final, wait_until
from tests.redis_server import RedisServer

pytestmark = pytest.mark.ray


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    if server.process is not None:
        server.kill()


@pytest.fixture(scope="module")
def store(redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory) -> WorkflowStore:
    artifacts = LocalArtifactStore(tmp_path_factory.mktemp("artifacts"))
    return WorkflowStore(RedisStore(redis_server.url, prefix=f"faults-{uuid.uuid4().hex[:8]}"), artifacts)


@pytest.fixture(scope="module")
def executor(platform_url: str, store: WorkflowStore) -> Iterator[Any]:
    scheduler = ray.get_actor("labubu-scheduler", namespace="labubu")
    stores = OpenedStores(store.state, store.artifacts)
    actor = ray.remote(WorkflowExecutor).options(max_concurrency=1000).remote(stores, scheduler, ExecutorConfig())
    yield actor
    ray.kill(actor)


def test_redis_restart_mid_workflow(redis_server: RedisServer, store: WorkflowStore, executor: Any) -> None:
    body = {
        "nodes": {"first": llm("Write a long story about a lighthouse keeper.", 48), "second": llm("Say a word.", 4)},
        "edges": [{"from": "first", "to": "second"}],
    }
    key = start_stored(store, executor, body)
    wait_until(lambda: store.find(key).node("first")["status"] == "running", 120, "the first node to run")  # type: ignore[union-attr]
    redis_server.kill()
    # The first node's output lands in the artifact store (files, not Redis) when its model call
    # ends: from then on the executor has a "completed" record to write, and Redis is down.
    tenant, workflow_id = key.split("/")
    output = output_key(tenant, workflow_id, "first")
    assert store.artifacts.info(output) is None  # the kill landed while the node ran
    wait_until(lambda: store.artifacts.info(output) is not None, 120, "the output")
    time.sleep(2.0)  # the executor's writes meet a closed port for a while
    redis_server.start()

    data = wait_stored_final(store, key)
    assert data["status"] == "completed", data["nodes"]
    assert data["nodes"]["first"]["attempts"] == 1  # the outage cost no model call
    assert data["nodes"]["second"]["status"] == "completed"
    events = store.state.read(key)
    assert [e.id for e in events] == list(range(1, len(events) + 1))
    assert [e.data["status"] for e in events if e.data["type"] == "workflow"] == ["pending", "running", "completed"]
    first = [e.data["status"] for e in events if e.data.get("node_id") == "first"]
    assert first == ["queued", "running", "completed"]
