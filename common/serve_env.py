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
"""

SERVE_REQUEST_PATH_ENV = {
    "RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD": "0",
    "RAY_SERVE_RUN_ROUTER_IN_SEPARATE_LOOP": "0",
}
