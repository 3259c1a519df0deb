"""Tenant quotas through the real scheduler actor (API.md, "Admin"): an admin's settings apply to
the next admission, an interactive call over its tenant's quota is a 429 with `Retry-After` in
whole seconds, and a submission past `max_queued` is a 429 too."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from modalities import SERVICES
from tests.conftest import make_token
from tests.helpers import wait_until
from tests.ingress.conftest import InProcessPlatform
from tests.ingress.standins import silent_wav, tiny_png
from tests.serve_app.contract import assert_error

SPEECH = {"model": "tts", "input": "Hello."}
DEFAULTS = {"weight": 1.0, "max_concurrency": 8, "rate_per_s": 20.0, "burst": 40.0, "max_queued": 1000}


def configure(http: TestClient, admin: dict[str, str], tenant: str, **settings: Any) -> dict[str, Any]:
    response = http.put(f"/v1/admin/tenants/{tenant}", json=settings, headers=admin)
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


def assert_quota_exceeded(response: Any) -> None:
    assert_error(response, 429, "quota_exceeded")
    retry_after = response.headers["Retry-After"]
    assert retry_after.isdigit() and int(retry_after) >= 1, retry_after


def test_an_unset_tenant_has_the_defaults(http: TestClient, admin: dict[str, str], tenant: str) -> None:
    assert http.get(f"/v1/admin/tenants/{tenant}", headers=admin).json() == {
        "tenant": tenant,
        "configured": False,
        **DEFAULTS,
    }


def test_settings_merge_and_are_stored(
    http: TestClient, admin: dict[str, str], tenant: str, ingress: InProcessPlatform
) -> None:
    assert configure(http, admin, tenant, weight=2.5) == {
        "tenant": tenant,
        "configured": True,
        **DEFAULTS,
        "weight": 2.5,
    }
    merged = configure(http, admin, tenant, max_concurrency=3)
    assert (merged["weight"], merged["max_concurrency"], merged["rate_per_s"]) == (2.5, 3, 20.0)
    assert any(item["tenant"] == tenant for item in http.get("/v1/admin/tenants", headers=admin).json()["items"])
    stored = ingress.platform.store.get("tenants", tenant)
    assert stored is not None and (stored["weight"], stored["max_concurrency"]) == (2.5, 3)


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/audio/speech", SPEECH),
        ("/v1/chat/completions", {"model": "llm", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2}),
        ("/v1/completions", {"model": "llm", "prompt": "Hi", "max_tokens": 2}),
        ("/v1/chat/completions", {"model": "llm", "messages": [{"role": "user", "content": "Hi"}], "stream": True}),
        ("/v1/embeddings", {"model": "embed", "input": "Hi"}),
        ("/v1/images/generations", {"prompt": "a cat", "size": "64x64"}),
    ],
)
def test_a_suspended_tenant_gets_429_on_interactive_calls(
    http: TestClient, admin: dict[str, str], user: dict[str, str], tenant: str, path: str, body: dict[str, Any]
) -> None:
    configure(http, admin, tenant, max_concurrency=0)
    assert_quota_exceeded(http.post(path, json=body, headers=user))


def test_a_suspended_tenant_gets_429_on_the_multipart_routes(
    http: TestClient, admin: dict[str, str], user: dict[str, str], tenant: str
) -> None:
    configure(http, admin, tenant, max_concurrency=0)
    audio = {"file": ("x.wav", silent_wav(), "audio/wav")}
    assert_quota_exceeded(http.post("/v1/audio/transcriptions", files=audio, headers=user))
    image = {"file": ("x.png", tiny_png(), "image/png")}
    assert_quota_exceeded(http.post("/v1/images/captions", files=image, headers=user))


def test_a_tenant_over_its_rate_gets_429_then_is_served_again(
    http: TestClient, admin: dict[str, str], user: dict[str, str], tenant: str
) -> None:
    configure(http, admin, tenant, rate_per_s=0.05, burst=1)
    assert http.post("/v1/audio/speech", json=SPEECH, headers=user).status_code == 200
    refused = http.post("/v1/audio/speech", json=SPEECH, headers=user)
    assert_quota_exceeded(refused)
    assert int(refused.headers["Retry-After"]) >= 10  # one token every 20 s
    # An admin's change applies from the next admission on, with no restart: the bucket, empty,
    # now fills at 20 a second (the timeout only bounds a hang).
    configure(http, admin, tenant, rate_per_s=20, burst=40)
    wait_until(lambda: http.post("/v1/audio/speech", json=SPEECH, headers=user).status_code == 200, 10, "a grant")


def test_another_tenant_is_not_held_back(
    http: TestClient, admin: dict[str, str], user: dict[str, str], tenant: str
) -> None:
    configure(http, admin, tenant, max_concurrency=0)
    neighbour = {"Authorization": f"Bearer {make_token(tenant=f'{tenant}-neighbour')}"}
    assert http.post("/v1/audio/speech", json=SPEECH, headers=neighbour).status_code == 200


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/workflows", {"nodes": {"a": {"service": "llm", "prompt": "Hi"}}}),
        ("/v1/tasks", {"service": "tts", "prompt": "Hi"}),
    ],
)
def test_a_submission_past_max_queued_is_429(
    http: TestClient,
    admin: dict[str, str],
    user: dict[str, str],
    tenant: str,
    ingress: InProcessPlatform,
    path: str,
    body: dict[str, Any],
) -> None:
    configure(http, admin, tenant, max_queued=0)
    assert_quota_exceeded(http.post(path, json=body, headers=user))
    assert http.get(path, headers=user).json()["total"] == 0  # nothing stored
    assert not [key for key in ingress.executor.keys_of("start") if str(key).startswith(f"{tenant}/")]


def test_a_suspended_tenant_may_still_submit_workflows(
    http: TestClient, admin: dict[str, str], user: dict[str, str], tenant: str
) -> None:
    """Workflows and tasks wait in the queue for their grants rather than being refused."""
    configure(http, admin, tenant, max_concurrency=0)
    response = http.post("/v1/tasks", json={"service": "tts", "prompt": "Hi"}, headers=user)
    assert response.status_code == 202, response.text


def test_scheduler_state_has_every_service(
    http: TestClient, admin: dict[str, str], user: dict[str, str], tenant: str
) -> None:
    assert http.post("/v1/audio/speech", json=SPEECH, headers=user).status_code == 200
    services = http.get("/v1/admin/scheduler", headers=admin).json()["services"]
    assert set(services) == set(SERVICES)
    for state in services.values():
        assert {"queued", "in_flight", "dispatch_limit", "global_vt", "tenants"} <= set(state)
    assert tenant in services["tts"]["tenants"]
