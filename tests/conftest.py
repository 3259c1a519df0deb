"""Session-wide test settings: offline model hubs, few threads, and one Ray cluster for the run."""

from __future__ import annotations

import os

# Set before anything imports torch, transformers or ray.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")

import contextlib
import socket
import time
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from common.serve_env import SERVE_REQUEST_PATH_ENV
from state.store import RedisStore, SqliteStore, StateStore
from tests.fakes.gemini_server import FakeGemini

TEST_JWT_SECRET = "test-secret-for-the-labubu-test-suite-only-0123456789"
# Distinctive, so that tests/serve_app/test_secrets.py can look for them in what Serve shows.
TEST_API_KEY_SECRET = "test-api-key-secret-of-the-labubu-suite-7f3e9a1c"
TEST_GEMINI_KEY = "test-gemini-key-of-the-labubu-suite-2b8d4e6f"  # the fake Gemini takes any key

# The secrets of every process of the session's cluster, as a pod has them from its Secrets, and
# Serve's request-path options. Ray workers inherit the raylet's environment, fixed when `ray.init`
# starts it: they are set around the cluster's start and only there, so that unit tests see the
# test process's own environment. Serve's direct ingress too, as clusters run it behind HAProxy
# (common/serve_env.py): the ingress replica also serves HTTP on its own port, beside Serve's proxy,
# which every other test calls (tests/serve_app/test_haproxy.py calls the replica through HAProxy).
# A stopping ingress replica then drains for a while, for load balancers to let go of it; here no
# balancer follows the replicas, so 1 s instead of 30 (a redeploy's swap would wait them out).
CLUSTER_SECRETS = {
    "LABUBU_JWT_SECRET": TEST_JWT_SECRET,
    "LABUBU_API_KEY_SECRET": TEST_API_KEY_SECRET,
    "GEMINI_API_KEY": TEST_GEMINI_KEY,
}
DIRECT_INGRESS_ENV = {"RAY_SERVE_ENABLE_DIRECT_INGRESS": "1", "RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S": "1"}
CLUSTER_ENV = {**SERVE_REQUEST_PATH_ENV, **DIRECT_INGRESS_ENV, **CLUSTER_SECRETS}
REDIS_URL = "redis://127.0.0.1:6379/15"  # the tests' own database number of the machine's Redis


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def make_token(tenant: str = "acme", sub: str = "alice", role: str = "user", ttl_s: int = 600) -> str:
    from serve_app.auth import issue_token

    return issue_token(TEST_JWT_SECRET, tenant=tenant, sub=sub, role=role, ttl_s=ttl_s)


METRICS_PORT = free_port()


@contextlib.contextmanager
def platform_environment(env: Mapping[str, str]) -> Iterator[None]:
    """While the block runs, the process environment has `env` and none of the caller's own platform
    settings or cloud keys (which would reach every Ray worker, or win over the tests' app args)."""
    saved = dict(os.environ)
    for key in saved:
        if key.startswith("LABUBU_") or key in ("GEMINI_API_KEY", "GOOGLE_API_KEY"):
            del os.environ[key]
    os.environ.update(env)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


@pytest.fixture(scope="session")
def ray_cluster() -> Iterator[None]:
    """One local Ray cluster for the whole run (RAY_NOTES.md: start-up costs seconds)."""
    import ray

    with platform_environment(CLUSTER_ENV):
        ray.init(
            address="local",  # always a new cluster of our own, never a leftover one
            num_cpus=4,
            include_dashboard=False,
            _node_ip_address="127.0.0.1",
            _metrics_export_port=METRICS_PORT,  # Ray's Prometheus endpoint, scraped by the metrics test
            log_to_driver=False,
        )
    yield
    ray.shutdown()  # serve.shutdown() first would only add seconds


# `tts` autoscales quickly, so that a test can watch a backlog add a replica and take it away again.
TEST_DEPLOYMENT_OPTIONS = {
    "tts": {
        "autoscaling_config": {
            "min_replicas": 1,
            "max_replicas": 2,
            "target_ongoing_requests": 1,
            "upscale_delay_s": 1,
            "downscale_delay_s": 4,
            "metrics_interval_s": 0.5,
            "look_back_period_s": 2,
        }
    }
}


def platform_args(data_dir: Path, args: dict | None = None) -> dict:  # type: ignore[type-arg]
    """The session platform's app args: its settings but the secrets, which are the cluster's (`CLUSTER_SECRETS`)."""
    return {
        "data_dir": str(data_dir),
        "image_backends": "tiny-random",
        "max_body_bytes": 2 * 1024 * 1024,
        # Short, so that tests/serve_app/test_limits.py sees a stalled upload cut off in seconds.
        "body_timeout_s": 5,
        # WebRTC calls (tests/console/test_talk.py) stay on loopback.
        "realtime_ice_addresses": ["127.0.0.1"],
        "deployment_options": TEST_DEPLOYMENT_OPTIONS,
        **(args or {}),
    }


def build_platform(data_dir: Path, args: dict | None = None) -> Any:  # type: ignore[type-arg]
    """The application with the session's settings and `args`, as the cluster's builder would make it."""
    from serve_app.app import build_app

    with platform_environment({}):
        return build_app(platform_args(data_dir, args))


def deploy_platform(data_dir: Path, args: dict | None = None) -> str:  # type: ignore[type-arg]
    """Deploy the whole application on the session's cluster and wait until it is ready; its URL."""
    from ray import serve

    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    serve.run(build_platform(data_dir, args), name="labubu", route_prefix="/")
    url = f"http://127.0.0.1:{port}"
    wait_ready(url)
    return url


@pytest.fixture(scope="session")
def session_gemini() -> Iterator[FakeGemini]:
    """The fake Gemini server that is `llm`'s second backend on the session's platform."""
    with FakeGemini() as fake:
        yield fake


@pytest.fixture(scope="session")
def platform_data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The data directory of the session's platform, for the tests that look into its stores."""
    return tmp_path_factory.mktemp("labubu-data")


@pytest.fixture(scope="session")
def platform_url(ray_cluster: None, platform_data_dir: Path, session_gemini: FakeGemini) -> str:
    """The whole platform, deployed once with the CPU models and the tiny-random image fixtures.

    `llm` fails over from llama.cpp to a cloud, the fake Gemini: reached only if llama.cpp fails,
    or when a test puts it first (tests/serve_app/test_http_models.py).
    """
    return deploy_platform(platform_data_dir, args=session_args(session_gemini))


def session_args(gemini: FakeGemini) -> dict[str, Any]:
    """The app args of the session's platform (a test that redeploys it starts from them)."""
    cloud = {"name": "gemini", "options": {"base_url": gemini.url}}  # its key: GEMINI_API_KEY
    return {"services": {"llm": {"backends": [{"name": "llama_cpp"}, cloud]}}}


def wait_ready(url: str, timeout_s: float = 120.0) -> None:
    import httpx

    deadline = time.monotonic() + timeout_s
    last = None
    while time.monotonic() < deadline:
        try:
            last = httpx.get(f"{url}/readyz", timeout=10)
            if last.status_code == 200:
                return
        except httpx.HTTPError as exc:
            last = exc
        time.sleep(0.5)
    raise RuntimeError(f"the platform did not become ready: {last!r} {getattr(last, 'text', '')}")


@pytest.fixture(params=["sqlite", "redis"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StateStore]:
    """Each state store in turn: SQLite in the test's folder, and the local Redis server under a
    prefix of its own, removed afterwards (tests/state/test_store.py holds both to one contract)."""
    import redis

    if request.param == "sqlite":
        yield SqliteStore(tmp_path / "state.sqlite3")
        return
    prefix = f"test-{uuid.uuid4().hex}"
    yield RedisStore(REDIS_URL, prefix=prefix)
    client = redis.Redis.from_url(REDIS_URL)
    keys = list(client.scan_iter(f"{prefix}:*"))
    if keys:
        client.delete(*keys)


@pytest.fixture()
def token() -> str:
    return make_token()


@pytest.fixture()
def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}
