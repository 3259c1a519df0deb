"""What the benchmarks share: the platform deployed on a private local Ray cluster, and a client."""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx  # noqa: E402

from common.serve_env import SERVE_REQUEST_PATH_ENV  # noqa: E402

SECRET = "benchmark-secret-0123456789-0123456789-0123456789"


def token(tenant: str, role: str = "user") -> str:
    from serve_app.auth import issue_token

    return issue_token(SECRET, tenant=tenant, role=role)


def client(base: str, tenant: str = "bench") -> httpx.Client:
    return httpx.Client(base_url=base, headers={"Authorization": f"Bearer {token(tenant)}"}, timeout=300)


def start_platform(port: int, args: dict[str, Any] | None = None) -> str:
    """A new local Ray cluster with the whole platform (CPU models, tiny-random images); its URL once ready."""
    import ray
    from ray import serve

    from serve_app.app import build_app

    os.environ.update(
        SERVE_REQUEST_PATH_ENV,  # as `make run` and the manifests run Serve
        LABUBU_JWT_SECRET=SECRET,
        LABUBU_DATA_DIR=tempfile.mkdtemp(prefix="labubu-bench-"),
        LABUBU_IMAGE_BACKENDS="tiny-random",
    )
    ray.init(address="local", include_dashboard=False, _node_ip_address="127.0.0.1", log_to_driver=False)
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    serve.run(build_app(args or {}), name="labubu", route_prefix="/")
    base = f"http://127.0.0.1:{port}"
    while httpx.get(f"{base}/readyz", timeout=30).status_code != 200:
        time.sleep(0.5)
    return base


def admitted_llm_calls(base: str, tenant: str) -> int:
    """The `llm` calls the scheduler granted to `tenant` today, from its usage statistics (which
    count only admitted calls): a benchmark checks with it that every call it made was admitted."""
    with client(base, tenant) as http:
        items = http.get("/v1/usage", params={"days": 1}).raise_for_status().json()["items"]
    return sum(int(item["requests"]) for item in items if item["service"] == "llm")


def percentile(values: list[float], q: float) -> float:
    """The `q` quantile (0..1) of `values`, the nearest rank."""
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]
