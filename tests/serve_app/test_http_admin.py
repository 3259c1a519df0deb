"""Admin routes and the scheduler's admission through HTTP: quotas, weights, durable settings.

The role checks, the defaults and the 422s of the tenant settings are tested in-process, without
Ray: tests/ingress/."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import httpx
import pytest

from modalities import SERVICES
from state.store import SqliteStore
from tests.conftest import make_token

pytestmark = pytest.mark.ray


@pytest.fixture(scope="module")
def admin(platform_url: str) -> httpx.Client:
    headers = {"Authorization": f"Bearer {make_token(tenant='ops', role='admin')}"}
    with httpx.Client(base_url=platform_url, headers=headers, timeout=120) as client:
        yield client


def tenant_client(platform_url: str, tenant: str) -> httpx.Client:
    headers = {"Authorization": f"Bearer {make_token(tenant=tenant)}"}
    return httpx.Client(base_url=platform_url, headers=headers, timeout=120)


def fresh_tenant() -> str:
    return f"t-{uuid.uuid4().hex[:10]}"


def test_put_merges_and_stores_durably(admin: httpx.Client, platform_data_dir: Path) -> None:
    tenant = fresh_tenant()
    first = admin.put(f"/v1/admin/tenants/{tenant}", json={"weight": 2.5})
    assert first.status_code == 200 and first.json()["weight"] == 2.5 and first.json()["configured"] is True
    second = admin.put(f"/v1/admin/tenants/{tenant}", json={"max_concurrency": 3}).json()
    assert (second["weight"], second["max_concurrency"], second["rate_per_s"]) == (2.5, 3, 20.0)
    assert any(item["tenant"] == tenant for item in admin.get("/v1/admin/tenants").json()["items"])
    stored = SqliteStore(platform_data_dir / "state.sqlite3").get("tenants", tenant)
    assert stored is not None and stored["weight"] == 2.5 and stored["max_concurrency"] == 3


def test_scheduler_state_has_every_service(admin: httpx.Client) -> None:
    services = admin.get("/v1/admin/scheduler").json()["services"]
    assert set(services) == set(SERVICES)
    for state in services.values():
        assert {"queued", "in_flight", "dispatch_limit", "global_vt", "tenants"} <= set(state)


def test_tenant_over_its_rate_gets_429_with_retry_after(admin: httpx.Client, platform_url: str) -> None:
    tenant = fresh_tenant()
    admin.put(f"/v1/admin/tenants/{tenant}", json={"rate_per_s": 0.05, "burst": 1})
    body = {"model": "tts", "input": "Hello."}
    with tenant_client(platform_url, tenant) as user:
        assert user.post("/v1/audio/speech", json=body).status_code == 200
        refused = user.post("/v1/audio/speech", json=body)
    assert refused.status_code == 429 and refused.json()["error"]["code"] == "quota_exceeded"
    assert int(refused.headers["Retry-After"]) >= 1


def test_weight_change_takes_effect_on_the_next_grants(admin: httpx.Client, platform_url: str) -> None:
    """A tts call costs its characters; a tenant's virtual time grows by cost / weight."""
    tenant = fresh_tenant()
    body = {"model": "tts", "input": "Twenty characters!!!"}

    def vt() -> float:
        return float(admin.get("/v1/admin/scheduler").json()["services"]["tts"]["tenants"][tenant]["vt"])

    def settle() -> None:
        deadline = time.monotonic() + 10  # releases are fire-and-forget: wait until they land
        while admin.get("/v1/admin/scheduler").json()["services"]["tts"]["tenants"][tenant]["in_flight"]:
            assert time.monotonic() < deadline

    with tenant_client(platform_url, tenant) as user:
        assert user.post("/v1/audio/speech", json=body).status_code == 200
        settle()
        before = vt()
        assert user.post("/v1/audio/speech", json=body).status_code == 200
        settle()
        step_at_weight_1 = vt() - before
        admin.put(f"/v1/admin/tenants/{tenant}", json={"weight": 4})
        before = vt()
        assert user.post("/v1/audio/speech", json=body).status_code == 200
        settle()
        step_at_weight_4 = vt() - before
    assert step_at_weight_1 == pytest.approx(20.0)
    assert step_at_weight_4 == pytest.approx(5.0)
