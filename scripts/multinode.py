#!/usr/bin/env python3
"""The multi-node proof on one machine: the platform on a two-node Ray cluster, in cluster mode.

    .venv/bin/python scripts/multinode.py            # about 2-4 minutes on 2 cores

It starts a Ray head and a second Ray node with `ray start` (each with a custom resource that only it
has), a moto server for S3, and deploys the CPU Serve config with `serve deploy`, the way an operator
deploys to a real cluster: state in Redis (`LABUBU_REDIS_URL`, a database of its own), artifacts in
S3 (`LABUBU_S3_BUCKET` on moto), `text2pic` pinned to the second node and `pic2text` to the head.
Then it runs a workflow `paint` (text2pic) -> `caption` (pic2text) over HTTP and checks where each
replica ran, that the workflow completed, and that its record is in Redis and its outputs in S3.

The last line on stdout is the evidence as JSON; the exit status is 0 when the proof holds
(tests/deploy/test_multinode.py runs this script and reads that line).

Isolation from anything else on the machine:
- every Ray process keeps its files under a temp dir of its own, and stopping the cluster kills
  exactly the processes whose command line names that dir (`ray stop` would stop every cluster of
  the user);
- every port is a free one picked at start, and the nodes use loopback addresses only. They are
  127.0.0.2 and 127.0.0.3, not 127.0.0.1: once multi-node clusters are enabled, Ray replaces
  127.0.0.1 and localhost in `--node-ip-address` and `--address` with the machine's primary address
  (ray-project/ray#59110), while other loopback addresses are taken as given;
- the Redis keys of the platform are removed from its database before and after, and a lock file
  lets one run at a time use that database (a second run waits).
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # the project and its test fakes, from wherever this runs

import httpx  # noqa: E402
import psutil  # noqa: E402
import yaml  # noqa: E402

from dag.records import output_key, workflow_key  # noqa: E402
from tests.fakes.moto_server import FAKE_AWS_ENV  # noqa: E402

HEAD_IP = "127.0.0.2"
SECOND_IP = "127.0.0.3"
HEAD_RESOURCE = "first_node"
SECOND_RESOURCE = "second_node"
# Which deployment runs on which node: the workflow's first node on the second Ray node, its second
# node on the head, so the image it passes crosses between them through the object store.
PINNED = {"text2pic": SECOND_RESOURCE, "pic2text": HEAD_RESOURCE}
APP = "labubu"
TENANT = "multinode"
JWT_SECRET = "multinode-proof-secret-not-for-production-0123456789"
# Inherited by every process of the cluster: how `LocalCluster.stop` finds them all, and nothing else.
CLUSTER_MARKER = "LABUBU_MULTINODE_CLUSTER"
REDIS_PREFIX = "labubu"  # state.store.RedisStore's default key prefix
LOCK = Path(tempfile.gettempdir()) / "labubu-multinode.lock"


def log(message: str) -> None:
    print(f"[multinode {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def cli(name: str) -> str:
    """A console script of this Python's environment (`ray`, `serve`)."""
    path = Path(sys.executable).parent / name
    if not path.exists():
        raise FileNotFoundError(f"no `{name}` beside {sys.executable}: install ray[serve] into this environment")
    return str(path)


class LocalCluster:
    """Ray nodes started with `ray start` on this machine, all under `root`, stopped by `stop()`."""

    def __init__(self, root: Path, env: dict[str, str]) -> None:
        self.root = root
        self.env = env
        self.gcs_port = free_port()
        self.dashboard_port = free_port()
        self.address = f"{HEAD_IP}:{self.gcs_port}"
        self.dashboard_url = f"http://{HEAD_IP}:{self.dashboard_port}"

    def start_head(self, num_cpus: float, resources: dict[str, float]) -> None:
        self._ray_start(
            "head",
            "--head",
            f"--node-ip-address={HEAD_IP}",
            f"--port={self.gcs_port}",
            # `serve deploy` and the state API talk to the dashboard.
            "--include-dashboard=true",
            f"--dashboard-host={HEAD_IP}",
            f"--dashboard-port={self.dashboard_port}",
            f"--ray-client-server-port={free_port()}",
            num_cpus=num_cpus,
            resources=resources,
        )

    def add_node(self, name: str, ip: str, num_cpus: float, resources: dict[str, float]) -> None:
        self._ray_start(
            name, f"--address={self.address}", f"--node-ip-address={ip}", num_cpus=num_cpus, resources=resources
        )

    def _ray_start(self, name: str, *args: str, num_cpus: float, resources: dict[str, float]) -> None:
        command = [
            cli("ray"),
            "start",
            *args,
            f"--num-cpus={num_cpus}",
            f"--resources={json.dumps(resources)}",
            # Fixed defaults (52365 and so on) would collide with the other node and other clusters.
            f"--dashboard-agent-listen-port={free_port()}",
            f"--metrics-export-port={free_port()}",
            "--object-store-memory=300000000",
            f"--temp-dir={self.root}",
            "--disable-usage-stats",
        ]
        started = time.monotonic()
        output = self.root / f"ray-start-{name}.log"
        with output.open("w") as out:
            result = subprocess.run(command, env=self.env, stdout=out, stderr=subprocess.STDOUT, timeout=300)
        if result.returncode != 0:
            raise RuntimeError(f"`ray start` of {name} failed ({result.returncode}); see {output}")
        log(f"node {name} started in {time.monotonic() - started:.0f} s")

    def state(self, resource: str, **params: str) -> list[dict[str, Any]]:
        """Rows of Ray's state API (`nodes`, `actors`), as `ray list` shows them."""
        response = httpx.get(f"{self.dashboard_url}/api/v0/{resource}", params={"limit": "10000", **params}, timeout=30)
        response.raise_for_status()
        return list(response.json()["data"]["result"]["result"])

    def serve(self, *args: str, timeout_s: float = 120) -> str:
        """Run the `serve` CLI against this cluster; its output."""
        result = subprocess.run(
            [cli("serve"), *args, "--address", self.dashboard_url],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout_s,
        )
        if result.returncode != 0:
            raise RuntimeError(f"serve {' '.join(args)} failed: {result.stdout}\n{result.stderr}")
        return result.stdout

    def processes(self) -> list[psutil.Process]:
        """Every process of this cluster and their children.

        Most name `root` on their command line (logs, sockets, temp dir); the rest (the Ray client
        server, workers after setproctitle) inherit `CLUSTER_MARKER` from `ray start`'s environment.
        """
        me = {os.getpid(), *(parent.pid for parent in psutil.Process().parents())}
        found: dict[int, psutil.Process] = {}
        for process in psutil.process_iter(["pid", "cmdline"]):
            with contextlib.suppress(psutil.Error):
                if process.pid in me:
                    continue
                if any(str(self.root) in part for part in process.info["cmdline"] or ()) or (
                    process.environ().get(CLUSTER_MARKER) == str(self.root)
                ):
                    found[process.pid] = process
                    found.update((child.pid, child) for child in process.children(recursive=True))
        return list(found.values())

    def stop(self) -> int:
        """Terminate this cluster's processes (then kill what is left); how many there were."""
        processes = self.processes()
        for process in processes:
            with contextlib.suppress(psutil.Error):
                process.terminate()
        _, alive = psutil.wait_procs(processes, timeout=15)
        for process in alive:
            with contextlib.suppress(psutil.Error):
                process.kill()
        psutil.wait_procs(alive, timeout=5)
        return len(processes)


def serve_config(http_port: int) -> dict[str, Any]:
    """The CPU default (serve_config.yaml), served from the head, with two deployments pinned to nodes."""
    config = yaml.safe_load((ROOT / "serve_config.yaml").read_text())
    config["proxy_location"] = "HeadOnly"
    config["http_options"] = {"host": HEAD_IP, "port": http_port}
    (app,) = config["applications"]
    for deployment in app["deployments"]:
        resource = PINNED.get(deployment["name"])
        if resource:
            # A sliver of a resource that only one node has: the replica can run nowhere else.
            options = deployment["ray_actor_options"] = dict(deployment["ray_actor_options"])
            options["resources"] = {resource: 0.01}
    return config


def cluster_env(root: Path, redis_url: str, bucket: str, s3_endpoint: str) -> dict[str, str]:
    """The environment of every Ray node (and so of every replica), like a pod's env on Kubernetes."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("LABUBU_", "AWS_", "RAY_ADDRESS"))  # nothing of the caller's leaks in
    }
    env.update(
        {
            CLUSTER_MARKER: str(root),
            # RAY_NOTES.md: Ray 2.60 turns token auth on by default; this cluster lives on loopback only.
            "RAY_AUTH_MODE": "disabled",
            # At 0 (what the single-node suite sets), `ray start --address` refuses to add a node.
            "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "1",
            # A loaded 2-core machine can take longer than the default to start a node's agents.
            "RAY_agent_register_timeout_ms": "120000",
            "LABUBU_JWT_SECRET": JWT_SECRET,
            "LABUBU_DATA_DIR": str(root / "data"),
            "LABUBU_REDIS_URL": redis_url,
            "LABUBU_S3_BUCKET": bucket,
            "LABUBU_S3_ENDPOINT_URL": s3_endpoint,
            "LABUBU_IMAGE_BACKENDS": "tiny-random",
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
            "HF_HUB_DISABLE_TELEMETRY": "1",
            "OMP_NUM_THREADS": "1",
            **FAKE_AWS_ENV,
        }
    )
    return env


@contextlib.contextmanager
def moto_s3(bucket: str) -> Iterator[str]:
    """A moto server on loopback with `bucket` in it; its URL."""
    import boto3
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one line per request otherwise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        url = f"http://{host}:{port}"
        with _env(FAKE_AWS_ENV):
            boto3.client("s3", endpoint_url=url, region_name="us-east-1").create_bucket(Bucket=bucket)
        yield url
    finally:
        server.stop()


@contextlib.contextmanager
def one_run_at_a_time() -> Iterator[None]:
    """Hold the machine-wide lock of this proof: two runs would share (and clear) one Redis database."""
    with LOCK.open("a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log(f"another run holds {LOCK}: waiting for it")
            fcntl.flock(handle, fcntl.LOCK_EX)
        yield  # closing the file (or the process ending) releases the lock


@contextlib.contextmanager
def _env(values: dict[str, str]) -> Iterator[None]:
    saved = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def s3_keys(endpoint: str, bucket: str) -> list[str]:
    import boto3

    with _env(FAKE_AWS_ENV):
        client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
        return [item["Key"] for item in client.list_objects_v2(Bucket=bucket).get("Contents", [])]


def redis_documents_holding(redis_url: str, field: str) -> list[str]:
    """The platform's Redis hashes that hold `field` (a document key, such as a workflow's)."""
    import redis

    client = redis.Redis.from_url(redis_url, decode_responses=True)
    try:
        return sorted(
            key
            for key in client.scan_iter(match=f"{REDIS_PREFIX}:*", count=1000, _type="hash")
            if client.hexists(key, field)
        )
    finally:
        client.close()


def clear_redis(redis_url: str) -> int:
    """Remove the platform's keys from its database; how many there were."""
    import redis

    client = redis.Redis.from_url(redis_url)
    try:
        keys = list(client.scan_iter(match=f"{REDIS_PREFIX}*", count=1000))
        if keys:
            client.delete(*keys)
        return len(keys)
    finally:
        client.close()


def wait_for(what: str, check: Callable[[], Any], timeout_s: float, interval_s: float = 2.0) -> Any:
    """Call `check` until it returns something truthy; that value. Raises TimeoutError with the last answer."""
    deadline = time.monotonic() + timeout_s
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
        except (httpx.HTTPError, RuntimeError, subprocess.TimeoutExpired) as exc:
            last = exc
        else:
            if last:
                return last
        time.sleep(interval_s)
    raise TimeoutError(f"{what}: not within {timeout_s:.0f} s; last: {last!r}")


def wait_ready(url: str, timeout_s: float) -> None:
    def ready() -> bool:
        response = httpx.get(f"{url}/readyz", timeout=10)
        return response.status_code == 200

    wait_for("the platform's /readyz", ready, timeout_s)


def run_workflow(url: str, timeout_s: float) -> dict[str, Any]:
    """`paint` (text2pic) -> `caption` (pic2text) through the public API; the final workflow document."""
    from serve_app.auth import issue_token

    headers = {"Authorization": f"Bearer {issue_token(JWT_SECRET, tenant=TENANT, sub='proof')}"}
    body = {
        "name": "multinode-proof",
        "nodes": {
            "paint": {
                "service": "text2pic",
                "prompt": "a red lighthouse",
                "params": {"width": 64, "height": 64, "steps": 2},
            },
            "caption": {"service": "pic2text", "prompt": "Describe the picture."},
        },
        "edges": [{"from": "paint", "to": "caption"}],
    }
    response = httpx.post(f"{url}/v1/workflows", json=body, headers=headers, timeout=30)
    if response.status_code != 202:
        raise RuntimeError(f"POST /v1/workflows answered {response.status_code}: {response.text}")
    workflow_id = response.json()["workflow_id"]
    log(f"workflow {workflow_id} submitted")

    def final() -> dict[str, Any] | None:
        document = httpx.get(f"{url}/v1/workflows/{workflow_id}", headers=headers, timeout=30).json()
        return document if document["status"] in ("completed", "failed", "cancelled") else None

    document: dict[str, Any] = wait_for(f"workflow {workflow_id}", final, timeout_s, interval_s=1.0)
    image = httpx.get(f"{url}/v1/workflows/{workflow_id}/outputs/paint", headers=headers, timeout=30)
    document["paint_output"] = {
        "status": image.status_code,
        "content_type": image.headers.get("content-type"),
        "bytes": len(image.content),
    }
    return document


def replicas(cluster: LocalCluster) -> dict[str, list[str]]:
    """The node of each running replica of the app, by deployment."""
    placement: dict[str, list[str]] = {}
    for actor in cluster.state("actors", detail="true"):
        name = actor.get("class_name") or ""
        if actor.get("state") == "ALIVE" and name.startswith(f"ServeReplica:{APP}:"):
            placement.setdefault(name.rsplit(":", 1)[1], []).append(actor["node_id"])
    return placement


def prove(
    cluster: LocalCluster,
    config_path: Path,
    http_port: int,
    redis_url: str,
    s3_endpoint: str,
    bucket: str,
    timeout_s: float,
) -> dict[str, Any]:
    """Deploy, run the workflow, gather the evidence; raise ProofFailed if the proof does not hold."""

    def two_nodes() -> list[dict[str, Any]] | None:
        alive = [node for node in cluster.state("nodes", detail="true") if node["state"] == "ALIVE"]
        return alive if len(alive) == 2 else None

    nodes = wait_for("two alive nodes", two_nodes, 60)
    by_resource = {}
    for node in nodes:
        for resource in (HEAD_RESOURCE, SECOND_RESOURCE):
            if resource in node.get("resources_total", {}):
                by_resource[resource] = node["node_id"]
    started = time.monotonic()
    log(cluster.serve("deploy", str(config_path)).strip() or "serve deploy submitted")
    url = f"http://{HEAD_IP}:{http_port}"
    wait_ready(url, timeout_s)
    deploy_s = time.monotonic() - started
    log(f"the platform is ready ({deploy_s:.0f} s after `serve deploy`)")

    started = time.monotonic()
    document = run_workflow(url, timeout_s=180)
    workflow_s = time.monotonic() - started
    placement = replicas(cluster)
    actors = {
        a["class_name"]: a["node_id"]
        for a in cluster.state("actors", detail="true")
        if a.get("state") == "ALIVE" and a.get("class_name") in ("WorkflowExecutor", "SchedulerActor")
    }
    keys = s3_keys(s3_endpoint, bucket)
    evidence = {
        "nodes": {
            n["node_id"]: {
                "ip": n["node_ip"],
                "head": n.get("is_head_node", False),
                "resources": n.get("resources_total", {}),
            }
            for n in nodes
        },
        "tenant": TENANT,
        "head_node": by_resource.get(HEAD_RESOURCE),
        "second_node": by_resource.get(SECOND_RESOURCE),
        "replicas": placement,
        "actors": actors,
        "workflow": {
            "id": document["workflow_id"],
            "status": document["status"],
            "nodes": {
                node_id: {k: node.get(k) for k in ("status", "error", "attempts")}
                for node_id, node in document["nodes"].items()
            },
            "paint_output": document["paint_output"],
        },
        "s3_keys": keys,
        "redis_documents": redis_documents_holding(redis_url, workflow_key(TENANT, document["workflow_id"])),
        "serve_status": cluster.serve("status"),
        "seconds": {"deploy": round(deploy_s, 1), "workflow": round(workflow_s, 1)},
    }
    problems = check(evidence)
    if problems:
        raise ProofFailed(problems, evidence)
    return evidence


class ProofFailed(Exception):
    """Claims of the proof that the evidence contradicts; the evidence goes with them."""

    def __init__(self, problems: list[str], evidence: dict[str, Any]) -> None:
        super().__init__("; ".join(problems))
        self.evidence = evidence


def check(evidence: dict[str, Any]) -> list[str]:
    """The claims of the proof that the evidence contradicts, each with what contradicts it."""
    problems = []
    head, second = evidence["head_node"], evidence["second_node"]
    if not (head and second and head != second):
        problems.append(f"two distinct nodes expected: {evidence['nodes']}")
    placement = evidence["replicas"]
    for service, node, where in (("text2pic", second, "the second node"), ("pic2text", head, "the head")):
        if set(placement.get(service, [])) != {node}:
            problems.append(f"{service} is not on {where} alone: {placement}")
    workflow = evidence["workflow"]
    if workflow["status"] != "completed" or any(n["status"] != "completed" for n in workflow["nodes"].values()):
        problems.append(f"the workflow did not complete: {workflow}")
    output = workflow["paint_output"]
    if not (output["status"] == 200 and output["content_type"] == "image/png" and output["bytes"] > 0):
        problems.append(f"no image from the paint node: {output}")
    # The workflow's record is in Redis, and both outputs in S3: the stores of a cluster, not a node's files.
    if not evidence["redis_documents"]:
        problems.append("the workflow's record is not in Redis")
    for node_id in ("paint", "caption"):
        key = output_key(TENANT, workflow["id"], node_id)
        if key not in evidence["s3_keys"]:
            problems.append(f"no S3 object {key}: {evidence['s3_keys']}")
    return problems


def start_cluster(root: Path, env: dict[str, str], attempts: int = 2) -> LocalCluster:
    """The head and the second node. A loaded machine can make `ray start` time out: then once more."""
    for attempt in range(1, attempts + 1):
        cluster = LocalCluster(root, env)
        try:
            cluster.start_head(num_cpus=2, resources={HEAD_RESOURCE: 1})
            cluster.add_node("second", SECOND_IP, num_cpus=2, resources={SECOND_RESOURCE: 1})
            return cluster
        except BaseException as exc:  # a SIGTERM too: nothing of a half-started cluster stays behind
            stopped = cluster.stop()
            if attempt == attempts or not isinstance(exc, (RuntimeError, subprocess.TimeoutExpired)):
                raise
            log(f"starting the cluster failed ({exc}); stopped its {stopped} processes, trying again")
    raise AssertionError("unreachable")


def run(root: Path, redis_url: str, timeout_s: float) -> dict[str, Any]:
    """The proof, start to end; the evidence. Stops its cluster and clears its Redis keys whatever happens."""
    bucket = f"labubu-multinode-{uuid.uuid4().hex[:8]}"
    http_port = free_port()
    config_path = root / "serve_config.multinode.yaml"
    config_path.write_text(yaml.safe_dump(serve_config(http_port), sort_keys=False))
    cluster: LocalCluster | None = None
    try:
        with moto_s3(bucket) as s3_endpoint:
            clear_redis(redis_url)
            cluster = start_cluster(root, cluster_env(root, redis_url, bucket, s3_endpoint))
            return prove(cluster, config_path, http_port, redis_url, s3_endpoint, bucket, timeout_s)
    finally:
        if cluster is not None:
            log(f"stopped {cluster.stop()} processes of the cluster")
        with contextlib.suppress(Exception):
            log(f"removed {clear_redis(redis_url)} Redis keys")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--redis-url", default="redis://127.0.0.1:6379/14", help="a Redis database for the platform's state alone"
    )
    parser.add_argument("--timeout-s", type=float, default=420, help="how long the deployment may take to become ready")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (logs) even on success")
    args = parser.parse_args(argv)
    # SIGTERM (a test runner's timeout) ends the run through the `finally` clauses, which stop the cluster.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    started = time.monotonic()
    # Short: Ray's Unix socket paths live under it and must stay below 108 bytes.
    root = Path(tempfile.mkdtemp(prefix="lbmn-", dir="/tmp"))
    ok = False
    try:
        with one_run_at_a_time():
            evidence = run(root, args.redis_url, args.timeout_s)
        evidence["seconds"]["total"] = round(time.monotonic() - started, 1)
        ok = True
    except Exception as exc:
        log(f"FAILED: {type(exc).__name__}: {exc}")
        evidence = {**getattr(exc, "evidence", {}), "error": f"{type(exc).__name__}: {exc}", "logs": str(root)}
    finally:
        if ok and not args.keep:
            shutil.rmtree(root, ignore_errors=True)
        else:
            log(f"logs kept in {root}")
    print(json.dumps(evidence, default=str))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
