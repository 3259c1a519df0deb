"""Workflow figures: orchestration overhead, 8 MB passing, and 50 concurrent workflows.

(a) A chain of 10 `llm` nodes and a fan-out/fan-in of 8 run as workflows, against the same model
    requests (rebuilt from the workflow's outputs) made directly through the deployment's handle
    from this process, in sequence (chain) and in parallel (fan): the overhead per node, median of
    several runs.
(b) 8 MB handed from one Ray actor to another through the object store, through the S3 artifact
    store (moto's server on loopback) and through Redis (the local server), side by side.
(c) 50 workflows of 5 nodes from 5 tenants at once: how many complete, fail or are lost, and the time.

    .venv/bin/python benchmarks/workflows.py [--runs 5]

Last line: {"overhead_per_node_ms_p50": {"chain": x, "fan": x}, "pass_8mb_ms": {...}, "concurrent": {...}}
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import time
import uuid
from datetime import datetime
from typing import Any

import httpx
import ray
from _platform import client as platform_client  # noqa: I001  (beside this file; sets up the path and env)
from _platform import start_platform

from modalities import build_request
from modalities.base import TEXT_TYPE, Output, compose
from modalities.transport import handle_for

PROMPT = "Say OK."
PARAMS = {"max_tokens": 2, "temperature": 0, "seed": 1}
EIGHT_MB = 8 * 1024 * 1024
REDIS_URL = "redis://127.0.0.1:6379/13"


def node(prompt: str = PROMPT) -> dict[str, Any]:
    return {"service": "llm", "prompt": prompt, "params": PARAMS}


def chain_body(n: int) -> dict[str, Any]:
    return {
        "nodes": {f"n{i}": node() for i in range(n)},
        "edges": [{"from": f"n{i}", "to": f"n{i + 1}", "prompt": PROMPT} for i in range(n - 1)],
    }


def fan_body(width: int) -> dict[str, Any]:
    nodes = {"source": node(), "sink": node(), **{f"b{i}": node() for i in range(width)}}
    edges = [{"from": "source", "to": f"b{i}"} for i in range(width)]
    edges += [{"from": f"b{i}", "to": "sink"} for i in range(width)]
    return {"nodes": nodes, "edges": edges}


def elapsed_s(record: dict[str, Any]) -> float:
    """From submission to the last node's end, from the workflow's own timestamps."""

    def parse(value: str) -> float:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()

    end = max(parse(n["finished_at"]) for n in record["nodes"].values())
    return end - parse(record["created_at"])


def run_workflow(client: httpx.Client, body: dict[str, Any], timeout_s: float = 300) -> dict[str, Any]:
    workflow_id = client.post("/v1/workflows", json=body).raise_for_status().json()["workflow_id"]
    deadline = time.monotonic() + timeout_s
    while True:
        record = client.get(f"/v1/workflows/{workflow_id}").json()
        if record["status"] in ("completed", "failed", "cancelled"):
            return dict(record)
        if time.monotonic() > deadline:
            raise TimeoutError(workflow_id)
        time.sleep(0.05)


def replayed_requests(client: httpx.Client, record: dict[str, Any], body: dict[str, Any]) -> dict[str, Any]:
    """The model request each node of a finished workflow made, rebuilt from the outputs its parents
    gave it with the executor's own composition (`modalities.build_request`).

    The direct calls must be these very requests: replaying one fixed prompt instead would let
    llama.cpp reuse its cached prompt on every call while the workflow's nodes, whose prompts grow
    with their parents' outputs, could not, and the difference would be counted as orchestration.
    """
    workflow_id = record["workflow_id"]
    outputs = {
        node: Output(client.get(f"/v1/workflows/{workflow_id}/outputs/{node}").content, TEXT_TYPE)
        for node in body["nodes"]
    }
    requests = {}
    for node_id, spec in body["nodes"].items():
        parts: list[str | Output] = [spec["prompt"]]
        for edge in body["edges"]:
            if edge["to"] == node_id:
                parts += [edge.get("prompt", ""), outputs[edge["from"]]]
        text, media = compose(parts)
        requests[node_id] = build_request(spec["service"], spec["params"], text, media)
    return requests


def direct_calls(handle: Any, stages: list[list[Any]]) -> float:
    """Seconds to make the requests directly through the deployment's handle: the stages one after
    the other, the requests of a stage in parallel. Each call takes the transport the executor's
    would (`handle_for`: by value when small), so the difference is orchestration alone."""

    async def go() -> float:
        start = time.perf_counter()
        for stage in stages:
            await asyncio.gather(*(handle_for(handle, request).run.remote(request) for request in stage))
        return time.perf_counter() - start

    return asyncio.run(go())


def overhead(client: httpx.Client, handle: Any, runs: int) -> dict[str, float]:
    """Per node: (median workflow time − median direct time of the same requests) / nodes.

    Medians of each side, not of per-run differences: one model call can take twice its usual time
    on a busy machine, in either, and a difference of two noisy runs carries both runs' noise.
    """
    times: dict[str, tuple[list[float], list[float]]] = {"chain": ([], []), "fan": ([], [])}
    run_workflow(client, chain_body(2))  # warm up
    for _ in range(runs):
        body = chain_body(10)
        record = run_workflow(client, body)
        requests = replayed_requests(client, record, body)
        times["chain"][0].append(elapsed_s(record))
        times["chain"][1].append(direct_calls(handle, [[requests[f"n{i}"]] for i in range(10)]))
        body = fan_body(8)
        record = run_workflow(client, body)
        requests = replayed_requests(client, record, body)
        # The fan's critical path: source, then the 8 branches in parallel, then sink.
        branches = [requests[f"b{i}"] for i in range(8)]
        times["fan"][0].append(elapsed_s(record))
        times["fan"][1].append(direct_calls(handle, [[requests["source"]], branches, [requests["sink"]]]))
    return {
        name: (statistics.median(workflow) - statistics.median(direct)) / 10 * 1000
        for name, (workflow, direct) in times.items()
    }


@ray.remote(num_cpus=0)
class Endpoint:
    """One end of a hand-over: makes 8 MB or takes it, through each medium."""

    def __init__(self, s3_endpoint: str, bucket: str) -> None:
        import boto3
        import redis

        self.s3 = boto3.client("s3", endpoint_url=s3_endpoint)
        self.bucket = bucket
        self.redis = redis.Redis.from_url(REDIS_URL)

    def make(self) -> bytes:
        return os.urandom(EIGHT_MB)

    def take(self, data: bytes) -> int:
        return len(data)

    def make_s3(self, key: str) -> str:
        self.s3.put_object(Bucket=self.bucket, Key=key, Body=os.urandom(EIGHT_MB))
        return key

    def take_s3(self, key: str) -> int:
        return len(self.s3.get_object(Bucket=self.bucket, Key=key)["Body"].read())

    def make_redis(self, key: str) -> str:
        self.redis.set(key, os.urandom(EIGHT_MB))
        return key

    def take_redis(self, key: str) -> int:
        size = len(self.redis.get(key) or b"")
        self.redis.delete(key)
        return size


def pass_8mb(runs: int) -> dict[str, float]:
    """Median ms for producer → consumer of 8 MB, minus making the bytes (the same in all three)."""
    import boto3
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    env = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}
    os.environ.update(env)
    bucket = f"bench-{uuid.uuid4().hex[:8]}"
    boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket=bucket)
    options = {"runtime_env": {"env_vars": env}}
    producer = Endpoint.options(**options).remote(endpoint, bucket)
    consumer = Endpoint.options(**options).remote(endpoint, bucket)
    times: dict[str, list[float]] = {"object_store": [], "s3": [], "redis": [], "make": []}
    for i in range(runs + 1):
        start = time.perf_counter()
        ray.get(producer.make.remote())
        make = time.perf_counter() - start
        start = time.perf_counter()
        assert ray.get(consumer.take.remote(producer.make.remote())) == EIGHT_MB
        object_store = time.perf_counter() - start
        start = time.perf_counter()
        assert ray.get(consumer.take_s3.remote(producer.make_s3.remote(f"k{i}"))) == EIGHT_MB
        s3 = time.perf_counter() - start
        start = time.perf_counter()
        assert ray.get(consumer.take_redis.remote(producer.make_redis.remote(f"bench:{uuid.uuid4().hex}"))) == EIGHT_MB
        redis_s = time.perf_counter() - start
        if i:  # the first round warms connections up
            for name, value in (("object_store", object_store), ("s3", s3), ("redis", redis_s), ("make", make)):
                times[name].append(value * 1000)
    server.stop()
    make_ms = statistics.median(times.pop("make"))
    return {name: max(0.0, statistics.median(values) - make_ms) for name, values in times.items()}


def concurrent(base: str, count: int = 50, tenants: int = 5, timeout_s: float = 900) -> dict[str, Any]:
    """`count` five-node workflows from `tenants` tenants, all submitted at once."""
    body = {
        "nodes": {"a": node("Name an animal."), "b": node(), "c": node(), "d": node(), "e": node()},
        "edges": [
            {"from": "a", "to": "b"},
            {"from": "b", "to": "c"},
            {"from": "a", "to": "d"},
            {"from": "d", "to": "e"},
        ],
    }
    clients = [platform_client(base, f"tenant-{t}") for t in range(tenants)]
    start = time.monotonic()
    submitted = []
    for i in range(count):
        client = clients[i % tenants]
        submitted.append((client, client.post("/v1/workflows", json=body).raise_for_status().json()["workflow_id"]))
    outcome = {"completed": 0, "failed": 0, "cancelled": 0}
    pending = list(submitted)
    while pending and time.monotonic() - start < timeout_s:
        still = []
        for client, workflow_id in pending:
            status = client.get(f"/v1/workflows/{workflow_id}").json().get("status")
            if status in outcome:
                outcome[status] += 1
            else:
                still.append((client, workflow_id))
        pending = still
        time.sleep(0.5)
    seconds = time.monotonic() - start
    return {
        "workflows": count,
        "completed": outcome["completed"],
        "failed": outcome["failed"] + outcome["cancelled"],
        "lost": len(pending),
        "seconds": round(seconds, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--port", type=int, default=8312)
    args = parser.parse_args()

    from ray import serve

    # Generous tenant limits: the benchmark measures orchestration, not quotas.
    scheduler = {"tenant_defaults": {"max_concurrency": 64, "rate_per_s": 1000, "burst": 1000}}
    base = start_platform(args.port, {"scheduler": scheduler})
    client = platform_client(base)
    handle = serve.get_deployment_handle("llm", app_name="labubu")

    per_node = overhead(client, handle, args.runs)
    passing = pass_8mb(args.runs)
    load = concurrent(base)

    label = "orchestration overhead per node (median)"
    print(f"{label:<44} chain {per_node['chain']:7.1f} ms   fan {per_node['fan']:7.1f} ms")
    print(
        f"{'8 MB between two nodes (median)':<44} object store {passing['object_store']:6.1f} ms   "
        f"S3 {passing['s3']:6.1f} ms   Redis {passing['redis']:6.1f} ms"
    )
    print(
        f"{'50 concurrent 5-node workflows, 5 tenants':<44} completed {load['completed']}  failed {load['failed']}  "
        f"lost {load['lost']}  in {load['seconds']} s"
    )
    print(
        json.dumps(
            {
                "overhead_per_node_ms_p50": {k: round(v, 2) for k, v in per_node.items()},
                "pass_8mb_ms": {k: round(v, 2) for k, v in passing.items()},
                "concurrent": load,
            }
        )
    )
    ray.shutdown()


if __name__ == "__main__":
    main()
