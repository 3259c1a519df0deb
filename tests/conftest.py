"""Session-wide test settings: offline model hubs, few threads, and one Ray cluster for the run."""

from __future__ import annotations

import os

# Set before anything imports torch, transformers or ray.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fakes.gemini_server import FakeGemini

TEST_JWT_SECRET = "test-secret-for-the-labubu-test-suite-only-0123456789"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def make_token(tenant: str = "acme", sub: str = "alice", role: str = "user", ttl_s: int = 600) -> str:
    from serve_app.auth import issue_token

    return issue_token(TEST_JWT_SECRET, tenant=tenant, sub=sub, role=role, ttl_s=ttl_s)


METRICS_PORT = free_port()


@pytest.fixture(scope="session")
def ray_cluster() -> Iterator[None]:
    """One local Ray cluster for the whole run (RAY_NOTES.md: start-up costs seconds)."""
    import ray

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


def deploy_platform(data_dir: Path, args: dict | None = None, **env: str) -> str:  # type: ignore[type-arg]
    """Deploy the whole application on the session's cluster and wait until it is ready; its URL."""
    from ray import serve

    from serve_app.app import build_app

    os.environ.update(
        {
            "LABUBU_JWT_SECRET": TEST_JWT_SECRET,
            "LABUBU_DATA_DIR": str(data_dir),
            "LABUBU_IMAGE_BACKENDS": "tiny-random",
            "LABUBU_MAX_BODY_BYTES": str(2 * 1024 * 1024),
            # Short, so that tests/serve_app/test_limits.py sees a stalled upload cut off in seconds.
            "LABUBU_BODY_TIMEOUT_S": "5",
            **env,
        }
    )
    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    serve.run(
        build_app({"deployment_options": TEST_DEPLOYMENT_OPTIONS, **(args or {})}), name="labubu", route_prefix="/"
    )
    url = f"http://127.0.0.1:{port}"
    wait_ready(url)
    return url


@pytest.fixture(scope="session")
def session_gemini() -> Iterator[FakeGemini]:
    """The fake Gemini server that is `llm`'s second backend on the session's platform."""
    with FakeGemini() as fake:
        yield fake


@pytest.fixture(scope="session")
def platform_url(ray_cluster: None, tmp_path_factory: pytest.TempPathFactory, session_gemini: FakeGemini) -> str:
    """The whole platform, deployed once with the CPU models and the tiny-random image fixtures.

    `llm` fails over from llama.cpp to a cloud, the fake Gemini: reached only if llama.cpp fails,
    or when a test puts it first (tests/serve_app/test_http_models.py).
    """
    gemini = {"name": "gemini", "options": {"api_key": "fake", "base_url": session_gemini.url}}
    llm = {"backends": [{"name": "llama_cpp"}, gemini]}
    return deploy_platform(tmp_path_factory.mktemp("labubu-data"), args={"services": {"llm": llm}})


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


@pytest.fixture()
def token() -> str:
    return make_token()


@pytest.fixture()
def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}
