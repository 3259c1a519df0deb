"""No secret travels as a Serve application arg, a deployment argument or an actor argument.

Serve stores an application's args and each deployment's arguments in clear, in the GCS (Redis
under KubeRay), and shows them in `serve status` and the dashboard; Ray stores actor arguments the
same way. Each process reads its secrets from its own environment instead (serve_app/settings.py).

Each check also finds a value that is not secret in the same place, so that it would see a secret
there too.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import cloudpickle
import pytest

from serve_app.app import build_app
from serve_app.settings import Settings
from tests.conftest import CLUSTER_SECRETS, TEST_API_KEY_SECRET, TEST_GEMINI_KEY, TEST_JWT_SECRET
from tests.fakes.gemini_server import FakeGemini
from tests.helpers import wait_until

# What a cluster's environment holds, each value distinctive enough to be found anywhere.
REDIS_PASSWORD = "redis-password-of-the-secrets-test-51c0"
SECRETS = {
    "LABUBU_JWT_SECRET": "jwt-secret-of-the-secrets-test-a93f",
    "LABUBU_API_KEY_SECRET": "api-key-secret-of-the-secrets-test-0d27",
    "LABUBU_REDIS_URL": f"redis://:{REDIS_PASSWORD}@127.0.0.1:1/1",  # connected lazily: never contacted
    "GEMINI_API_KEY": "gemini-key-of-the-secrets-test-e61b",
    "AWS_SECRET_ACCESS_KEY": "aws-secret-of-the-secrets-test-7c4e",
}
GEMINI_URL = "http://gemini.invalid:4321"  # a backend option: not secret


def leaked(blob: bytes | str, secrets: list[str]) -> list[str]:
    text = blob if isinstance(blob, str) else blob.decode("latin-1")
    return [secret for secret in secrets if secret in text]


@pytest.fixture()
def cluster_secrets(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)
    yield [REDIS_PASSWORD, *(v for k, v in SECRETS.items() if k != "LABUBU_REDIS_URL")]


def test_the_built_application_holds_no_secret(cluster_secrets: list[str], tmp_path: Path) -> None:
    """Every deployment's arguments as `build_app` binds them and Serve serializes them to store them."""
    from ray.serve._private.build_app import build_app as build_for_serve

    gemini = {"name": "gemini", "options": {"base_url": GEMINI_URL}}
    app = build_app({"data_dir": str(tmp_path), "services": {"llm": {"backends": [{"name": "llama_cpp"}, gemini]}}})
    deployments = build_for_serve(app, name="labubu").deployments
    blob = b"".join(
        d._replica_config.serialized_init_args + d._replica_config.serialized_init_kwargs for d in deployments
    )
    assert GEMINI_URL.encode() in blob and str(tmp_path).encode() in blob
    assert leaked(blob, cluster_secrets) == []
    assert not list(tmp_path.iterdir())  # the builder made no secret either: the replicas have theirs


def test_the_actors_arguments_hold_no_secret(cluster_secrets: list[str], tmp_path: Path) -> None:
    """What an ingress replica, which does hold the secrets, hands the scheduler and the executor."""
    settings = Settings.load({"data_dir": str(tmp_path), "scheduler": {"lease_s": 17}})
    assert settings.jwt_secret == SECRETS["LABUBU_JWT_SECRET"] and REDIS_PASSWORD in settings.redis_url
    stores = settings.stores()
    arguments = (settings.scheduler_config(), stores.state, stores, settings.executor_config("labubu"))
    blob = cloudpickle.dumps(arguments)
    assert str(tmp_path).encode() in blob
    assert leaked(blob, cluster_secrets) == []
    assert type(stores.state()).__name__ == "RedisStore"  # the receiving process finds Redis in its own env


# ---------------------------------------------------------------- the deployed platform


def serve_views() -> dict[str, str]:
    """The deployed application as Serve shows and stores it."""
    import ray
    from ray import serve
    from ray.experimental.internal_kv import _internal_kv_get, _internal_kv_list

    status = serve.status()
    controller = serve.context._global_client._controller
    # What the dashboard's /api/serve/applications/ (and `serve status -v`) return.
    details = ray.get(controller.get_serve_instance_details.remote())
    # What Serve checkpoints to the GCS (Redis under KubeRay): deployments with their pickled arguments.
    keys = _internal_kv_list(b"", namespace=b"serve")
    checkpoint = b"".join(_internal_kv_get(key, namespace=b"serve") or b"" for key in keys)
    return {
        "serve.status()": json.dumps(status.to_dict() if hasattr(status, "to_dict") else repr(status), default=str),
        "instance details": json.dumps(details, default=str),
        "GCS checkpoint": checkpoint.decode("latin-1"),
    }


def gemini_status(platform_url: str) -> str | None:
    """The status of `llm`'s Gemini backend as its replicas report it, once one has."""
    import httpx

    from tests.conftest import make_token

    headers = {"Authorization": f"Bearer {make_token(role='admin')}"}
    answer = httpx.get(f"{platform_url}/v1/admin/models", headers=headers, timeout=60)
    assert answer.status_code == 200, answer.text  # the ingress verified a token signed with the JWT secret
    (gemini,) = [b for b in answer.json()["services"]["llm"]["backends"] if b["name"] == "gemini"]
    return gemini["status"] if gemini["replicas"] else None


@pytest.mark.ray
def test_the_deployed_platform_shows_and_stores_no_secret(platform_url: str, session_gemini: FakeGemini) -> None:
    """The session's platform has the cluster's secrets in its processes' environment (tests/conftest.py)."""
    assert set(CLUSTER_SECRETS.values()) == {TEST_JWT_SECRET, TEST_API_KEY_SECRET, TEST_GEMINI_KEY}
    # The replicas do hold them: the JWT secret verifies tokens, and Gemini loaded with GEMINI_API_KEY.
    wait_until(lambda: gemini_status(platform_url) is not None, timeout_s=60)
    assert gemini_status(platform_url) == "ready"

    views = serve_views()
    assert '"labubu"' in views["instance details"] and "look_back_period_s" in views["instance details"]
    assert session_gemini.url in views["GCS checkpoint"]  # the llm deployment's config: its arguments are there
    for view, text in views.items():
        assert leaked(text, [TEST_JWT_SECRET, TEST_API_KEY_SECRET, TEST_GEMINI_KEY]) == [], view
