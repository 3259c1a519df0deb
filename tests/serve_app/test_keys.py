"""API keys: issued, verified, listed and revoked on both state stores; then through HTTP, where a key
works wherever a JWT does, with its tenant and role, until it is revoked. Expired keys and the 422s
of the admin route are tested in-process, without Ray: tests/ingress/test_auth.py."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone

import httpx
import pytest

from serve_app.auth import Role
from serve_app.errors import ApiError
from serve_app.keys import NAMESPACE, ApiKeys
from state.store import StateStore
from tests.conftest import make_token
from tests.serve_app.contract import assert_error

SECRET = "a-server-secret-for-the-key-tests"


def in_seconds(seconds: float) -> datetime:
    return datetime.now(timezone.utc) + timedelta(seconds=seconds)


# ---------------------------------------------------------------- the store (no Ray)


def test_a_key_stands_for_its_tenant_and_role(store: StateStore) -> None:  # noqa: F811
    keys = ApiKeys(store, SECRET)
    record, key = keys.create("acme", Role.ADMIN, "ci", None)
    assert key.startswith(f"lbk_{record['id']}_")
    principal = keys.verify(key)
    assert (principal.tenant, principal.role, principal.sub) == ("acme", Role.ADMIN, f"key:{record['id']}")


def test_only_a_keyed_hash_is_stored(store: StateStore) -> None:  # noqa: F811
    keys = ApiKeys(store, SECRET)
    record, key = keys.create("acme", Role.USER, "ci", None)
    secret = key.split("_", 2)[2]  # lbk_<id>_<secret>; the secret may itself hold "_"
    stored = store.get(NAMESPACE, record["id"])
    assert stored is not None and secret not in str(stored) and len(stored["hash"]) == 64
    # The same store read with another server secret verifies nothing.
    with pytest.raises(ApiError):
        ApiKeys(store, "another-secret").verify(key)


@pytest.mark.parametrize(
    "mangle",
    [
        lambda key: key[:-1] + ("A" if key[-1] != "A" else "B"),  # a wrong secret
        lambda key: "lbk_0000000000000000_" + key.split("_", 2)[2],  # an unknown id
        lambda key: "lbk_../../x_" + key.split("_", 2)[2],  # not an id at all
        lambda key: "lbk_",
    ],
)
def test_a_wrong_key_is_401(store: StateStore, mangle: object) -> None:  # noqa: F811
    keys = ApiKeys(store, SECRET)
    _, key = keys.create("acme", Role.USER, "ci", None)
    with pytest.raises(ApiError) as caught:
        keys.verify(mangle(key))  # type: ignore[operator]
    assert caught.value.status == 401


def test_revoked_and_expired_keys_are_401(store: StateStore) -> None:  # noqa: F811
    keys = ApiKeys(store, SECRET)
    revoked, revoked_key = keys.create("acme", Role.USER, "old", None)
    assert keys.revoke(revoked["id"]) and not keys.revoke(revoked["id"])
    _, short_key = keys.create("acme", Role.USER, "short", in_seconds(0.2))
    keys.verify(short_key)
    time.sleep(0.3)
    for key, message in ((revoked_key, "revoked"), (short_key, "expired")):
        with pytest.raises(ApiError) as caught:
            keys.verify(key)
        assert caught.value.status == 401 and message in caught.value.message


def test_list_by_tenant_newest_first_without_hashes(store: StateStore) -> None:  # noqa: F811
    keys = ApiKeys(store, SECRET)
    first, _ = keys.create("acme", Role.USER, "first", None)
    time.sleep(0.002)  # created_at has milliseconds
    second, _ = keys.create("acme", Role.USER, "second", in_seconds(60))
    keys.create("globex", Role.USER, "theirs", None)
    assert keys.list("acme") == [second, first]
    assert len(keys.list()) == 3 and all("hash" not in item for item in keys.list())


# ---------------------------------------------------------------- HTTP


@pytest.fixture(scope="module")
def admin_http(platform_url: str) -> Iterator[httpx.Client]:
    headers = {"Authorization": f"Bearer {make_token(tenant='ops', role='admin')}"}
    with httpx.Client(base_url=platform_url, headers=headers, timeout=120) as client:
        yield client


def issue(admin_http: httpx.Client, **body: object) -> dict[str, str]:
    response = admin_http.post("/v1/admin/keys", json={"role": "user", "name": "test", **body})
    assert response.status_code == 201, response.text
    return response.json()  # type: ignore[no-any-return]


def with_key(platform_url: str, key: str) -> httpx.Client:
    return httpx.Client(base_url=platform_url, headers={"Authorization": f"Bearer {key}"}, timeout=120)


def fresh_tenant() -> str:
    return f"keys-{uuid.uuid4().hex[:8]}"


@pytest.mark.ray
def test_issue_use_list_and_revoke(admin_http: httpx.Client, platform_url: str) -> None:
    tenant = fresh_tenant()
    created = issue(admin_http, tenant=tenant, name="billing job")
    assert set(created) == {"id", "key", "tenant", "role", "name", "created_at", "expires_at"}
    assert created["key"].startswith("lbk_") and created["tenant"] == tenant and created["expires_at"] is None
    with with_key(platform_url, created["key"]) as client:
        assert client.get("/v1/workflows").json() == {"items": [], "total": 0}
        body = {"model": "llm", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2}
        chat = client.post("/v1/chat/completions", json=body)
        assert chat.status_code == 200, chat.text
        # The call was the key's tenant's: the scheduler knows the tenant now.
        assert tenant in admin_http.get("/v1/admin/scheduler").json()["services"]["llm"]["tenants"]

        listed = admin_http.get("/v1/admin/keys", params={"tenant": tenant}).json()["items"]
        assert listed == [{k: v for k, v in created.items() if k != "key"}]
        assert created["key"].split("_", 2)[2] not in admin_http.get("/v1/admin/keys").text

        assert admin_http.delete(f"/v1/admin/keys/{created['id']}").status_code == 204
        assert_error(client.get("/v1/workflows"), 401, "unauthorized")  # the very next request
    assert admin_http.get("/v1/admin/keys", params={"tenant": tenant}).json() == {"items": []}
    assert_error(admin_http.delete(f"/v1/admin/keys/{created['id']}"), 404, "not_found")


@pytest.mark.ray
def test_roles_and_tenants_of_keys(admin_http: httpx.Client, platform_url: str) -> None:
    tenant_a, tenant_b = fresh_tenant(), fresh_tenant()
    user_a = issue(admin_http, tenant=tenant_a)["key"]
    user_b = issue(admin_http, tenant=tenant_b)["key"]
    admin_key = issue(admin_http, tenant=tenant_a, role="admin")["key"]
    body = {"nodes": {"hi": {"service": "llm", "prompt": "Hi", "params": {"max_tokens": 1}}}}
    with with_key(platform_url, user_b) as client_b, with_key(platform_url, user_a) as client_a:
        workflow_id = client_b.post("/v1/workflows", json=body).json()["workflow_id"]
        assert client_b.get(f"/v1/workflows/{workflow_id}").status_code == 200
        assert_error(client_a.get(f"/v1/workflows/{workflow_id}"), 404, "not_found")  # B's is not A's
        assert_error(client_a.get("/v1/admin/keys"), 403, "forbidden")
        assert_error(client_a.get("/v1/admin/models"), 403, "forbidden")
    with with_key(platform_url, admin_key) as client:
        assert client.get("/v1/admin/keys", params={"tenant": tenant_a}).status_code == 200
