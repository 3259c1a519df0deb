"""The workflow executor against the cluster stores: Redis (local server) and S3 (moto's server).

A second executor actor, with its own stores, runs workflows on the session platform's modality
deployments and scheduler; it is killed mid-workflow and resumes from Redis and S3.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
import ray
import redis

from dag.config import ExecutorConfig
from dag.executor import WorkflowExecutor
from dag.records import Status, WorkflowStore
from state.artifacts import S3ArtifactStore
from state.store import RedisStore
from tests.fakes.moto_server import FAKE_AWS_ENV, moto_endpoint  # noqa: F401
from tests.fakes.stores import OpenedStores
from tests.helpers import llm, start_stored, wait_stored_final

pytestmark = pytest.mark.ray

REDIS_URL = "redis://127.0.0.1:6379/14"


@pytest.fixture(scope="module")
def cluster_store(moto_endpoint: str) -> Iterator[WorkflowStore]:  # noqa: F811
    bucket = f"labubu-test-{uuid.uuid4().hex[:8]}"
    boto3.client("s3", endpoint_url=moto_endpoint).create_bucket(Bucket=bucket)
    prefix = f"test-{uuid.uuid4().hex[:8]}"
    yield WorkflowStore(RedisStore(REDIS_URL, prefix=prefix), S3ArtifactStore(bucket, endpoint_url=moto_endpoint))
    client = redis.Redis.from_url(REDIS_URL)
    keys = list(client.scan_iter(f"{prefix}:*"))
    if keys:
        client.delete(*keys)


@pytest.fixture(scope="module")
def executor(platform_url: str, cluster_store: WorkflowStore) -> Any:
    scheduler = ray.get_actor("labubu-scheduler", namespace="labubu")
    return (
        ray.remote(WorkflowExecutor)
        .options(max_restarts=-1, max_concurrency=1000, runtime_env={"env_vars": dict(FAKE_AWS_ENV)})
        .remote(OpenedStores(cluster_store.state, cluster_store.artifacts), scheduler, ExecutorConfig())
    )


def pid(actor: Any) -> int:
    return int(ray.get(actor.__ray_call__.remote(lambda _: os.getpid()), timeout=10))


def kill_and_await_successor(actor: Any, timeout_s: float = 120) -> None:
    """Kill the actor and wait until its successor runs, without calling any of its methods: a
    restarted executor must resume its workflows on its own."""
    killed = pid(actor)
    ray.kill(actor, no_restart=False)
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if pid(actor) != killed:  # `ray.kill` returns while the old process may still answer
                return
        except ray.exceptions.RayError:  # still restarting
            pass
        assert time.monotonic() < deadline
        time.sleep(0.5)


def test_workflow_runs_on_redis_and_s3(cluster_store: WorkflowStore, executor: Any) -> None:
    body = {
        "nodes": {"write": llm("Say a colour."), "speak": {"service": "tts"}, "hear": {"service": "stt"}},
        "edges": [{"from": "write", "to": "speak"}, {"from": "speak", "to": "hear"}],
    }
    key = start_stored(cluster_store, executor, body)
    data = wait_stored_final(cluster_store, key)
    assert data["status"] == "completed"
    record = cluster_store.find(key)
    assert record is not None
    audio = cluster_store.get_output(record, "speak")
    assert audio.content_type == "audio/wav" and len(audio.data) == data["nodes"]["speak"]["output"]["bytes"]
    kinds = [e.data.get("status") for e in cluster_store.state.read(key) if e.data["type"] == "workflow"]
    assert kinds == ["pending", "running", "completed"]
    url = cluster_store.artifacts.url(f"acme/{record.workflow_id}/outputs/n-speak")
    assert url is not None and url.startswith("http")


def test_executor_killed_mid_workflow_resumes_from_redis_and_s3(cluster_store: WorkflowStore, executor: Any) -> None:
    body = {
        "nodes": {"first": llm("Say hello."), "second": llm("Write two sentences about rain.", 96)},
        "edges": [{"from": "first", "to": "second"}],
    }
    key = start_stored(cluster_store, executor, body)
    deadline = time.monotonic() + 120
    while cluster_store.find(key).data["nodes"]["second"]["status"] not in ("queued", "running"):  # type: ignore[union-attr]
        assert time.monotonic() < deadline
        time.sleep(0.05)
    kill_and_await_successor(executor)
    data = wait_stored_final(cluster_store, key)
    assert data["status"] == Status.COMPLETED.value
    assert data["nodes"]["first"]["attempts"] == 1
