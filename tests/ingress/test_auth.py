"""API.md, "Auth", through HTTP on the in-process app: every broken token on every route that
/openapi.json says needs one (so a route added later is covered too), the claims one by one, the
`admin` role, and API keys from issue to revocation."""

from __future__ import annotations

import time
import warnings
from datetime import datetime, timedelta, timezone
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from fastapi.testclient import TestClient
from jwt.warnings import InsecureKeyLengthWarning

from serve_app.auth import Role
from tests.conftest import TEST_JWT_SECRET, make_token
from tests.helpers import claims, unsigned
from tests.ingress.conftest import InProcessPlatform, bearer
from tests.serve_app.contract import assert_error

WRONG_SECRET = "not-the-platform-secret-but-long-enough-0123456789"


def hs256(payload: dict[str, object], secret: str = TEST_JWT_SECRET, algorithm: str = "HS256") -> str:
    with warnings.catch_warnings():  # PyJWT warns that the secret is short for HS512: that is the point
        warnings.simplefilter("ignore", InsecureKeyLengthWarning)
        return jwt.encode(payload, secret, algorithm=algorithm)


def tampered() -> str:
    """A valid token of `acme` whose payload was swapped for an admin of `victim`."""
    header, _, signature = hs256(claims(tenant="acme")).split(".")
    payload = unsigned(claims(tenant="victim", role="admin")).split(".")[1]
    return f"{header}.{payload}.{signature}"


BAD_TOKENS = {
    "alg-none": unsigned(claims()),
    "alg-none-admin": unsigned(claims(role="admin")),
    "hs512-same-secret": hs256(claims(), algorithm="HS512"),
    "rs256-own-key": jwt.encode(claims(), rsa.generate_private_key(public_exponent=65537, key_size=2048), "RS256"),
    "wrong-secret": hs256(claims(), secret=WRONG_SECRET),
    "expired": hs256(claims(exp=int(time.time()) - 5)),
    "not-yet-valid": hs256(claims(nbf=int(time.time()) + 600)),
    "no-exp": hs256(claims(exp=None)),
    "no-sub": hs256(claims(sub=None)),
    "no-tenant": hs256(claims(tenant=None)),
    "empty-sub": hs256(claims(sub="")),
    "empty-tenant": hs256(claims(tenant="")),
    "unknown-role": hs256(claims(role="root")),
    "traversal-tenant": hs256(claims(tenant="..")),
    "tenant-with-slash": hs256(claims(tenant="a/b")),
    "tampered-payload": tampered(),
    "garbage": "not.a.token",
    "oversized": "A" * 20_000,
    "unknown-api-key": "lbk_0000000000000000_" + "x" * 43,
    "malformed-api-key": "lbk_../../x_secret",
}
BAD_HEADERS = {
    "none": None,
    "empty": "",
    "basic": "Basic dXNlcjpwYXNz",
    "bearer-alone": "Bearer",
    "bearer-blank": "Bearer    ",
    "no-scheme": make_token(),
}


@pytest.fixture(scope="module")
def secured_routes(http: TestClient) -> list[tuple[str, str]]:
    spec = http.get("/openapi.json").json()
    routes = [
        (method.upper(), path)
        for path, operations in spec["paths"].items()
        for method, operation in operations.items()
        if operation.get("security")
    ]
    assert len(routes) >= 25, routes
    return routes


def concrete(path: str, value: str = "x1") -> str:
    """The route's path with every parameter set to `value`."""
    while "{" in path:
        start, end = path.index("{"), path.index("}")
        path = path[:start] + value + path[end + 1 :]
    return path


@pytest.mark.parametrize("name", list(BAD_TOKENS))
def test_every_secured_route_refuses_a_bad_token(
    http: TestClient, secured_routes: list[tuple[str, str]], name: str
) -> None:
    headers = bearer(BAD_TOKENS[name])
    for method, path in secured_routes:
        assert_error(http.request(method, concrete(path), headers=headers), 401, "unauthorized")


@pytest.mark.parametrize("name", list(BAD_HEADERS))
def test_every_secured_route_refuses_a_missing_or_malformed_header(
    http: TestClient, secured_routes: list[tuple[str, str]], name: str
) -> None:
    value = BAD_HEADERS[name]
    headers = {} if value is None else {"Authorization": value}
    for method, path in secured_routes:
        assert_error(http.request(method, concrete(path), headers=headers), 401, "unauthorized")


def test_a_bad_token_is_refused_before_the_body_is_looked_at(http: TestClient) -> None:
    """No token and an invalid body: the answer is about the token, not the body."""
    assert_error(http.post("/v1/chat/completions", json={"messages": "nope"}), 401, "unauthorized")
    assert_error(http.post("/v1/workflows", json={"nodes": {"a": {"service": "x"}}}), 401, "unauthorized")


def test_a_token_without_a_role_is_a_user(http: TestClient, tenant: str) -> None:
    headers = bearer(hs256(claims(tenant=tenant)))
    assert http.get("/v1/workflows", headers=headers).json() == {"items": [], "total": 0}
    assert_error(http.get("/v1/admin/tenants", headers=headers), 403, "forbidden")


def test_the_tenant_is_the_tokens(http: TestClient, tenant: str) -> None:
    """The same user id in two tenants sees two different sets of workflows."""
    body = {"nodes": {"a": {"service": "llm", "prompt": "Hi"}}}
    ours = bearer(make_token(tenant=tenant, sub="alice"))
    theirs = bearer(make_token(tenant=f"{tenant}-other", sub="alice"))
    workflow_id = http.post("/v1/workflows", json=body, headers=ours).json()["workflow_id"]
    assert [w["workflow_id"] for w in http.get("/v1/workflows", headers=ours).json()["items"]] == [workflow_id]
    assert http.get("/v1/workflows", headers=theirs).json() == {"items": [], "total": 0}


# ---------------------------------------------------------------- the admin role


@pytest.fixture(scope="module")
def admin_routes(secured_routes: list[tuple[str, str]]) -> list[tuple[str, str]]:
    routes = [(method, path) for method, path in secured_routes if path.startswith("/v1/admin")]
    assert len(routes) >= 9, routes
    return routes


def test_a_user_gets_403_on_every_admin_route(
    http: TestClient, admin_routes: list[tuple[str, str]], user: dict[str, str]
) -> None:
    for method, path in admin_routes:
        # A well-formed body, so that only the role can be what is refused.
        body = {} if method in ("POST", "PUT") else None
        response = http.request(method, concrete(path, "acme"), headers=user, json=body)
        assert_error(response, 403, "forbidden")


def test_an_admin_may_use_the_admin_routes(http: TestClient, admin: dict[str, str]) -> None:
    for path in ("/v1/admin/tenants", "/v1/admin/tenants/acme", "/v1/admin/scheduler", "/v1/admin/keys"):
        assert http.get(path, headers=admin).status_code == 200, path


# ---------------------------------------------------------------- API keys


def issue(http: TestClient, admin: dict[str, str], **body: Any) -> dict[str, Any]:
    response = http.post("/v1/admin/keys", json={"role": "user", "name": "test", **body}, headers=admin)
    assert response.status_code == 201, response.text
    return response.json()  # type: ignore[no-any-return]


def test_an_api_key_works_until_it_is_revoked(http: TestClient, admin: dict[str, str], tenant: str) -> None:
    created = issue(http, admin, tenant=tenant, name="billing job")
    assert set(created) == {"id", "key", "tenant", "role", "name", "created_at", "expires_at"}
    assert created["key"].startswith("lbk_") and created["tenant"] == tenant
    key = bearer(created["key"])
    assert http.get("/v1/workflows", headers=key).json() == {"items": [], "total": 0}
    listed = http.get("/v1/admin/keys", params={"tenant": tenant}, headers=admin).json()["items"]
    assert listed == [{k: v for k, v in created.items() if k != "key"}]
    assert created["key"].split("_", 2)[2] not in http.get("/v1/admin/keys", headers=admin).text

    assert http.delete(f"/v1/admin/keys/{created['id']}", headers=admin).status_code == 204
    assert_error(http.get("/v1/workflows", headers=key), 401, "unauthorized")  # the very next request
    assert_error(http.delete(f"/v1/admin/keys/{created['id']}", headers=admin), 404, "not_found")


def test_a_key_has_its_tenant_and_role(http: TestClient, admin: dict[str, str], tenant: str) -> None:
    user_key = bearer(issue(http, admin, tenant=tenant)["key"])
    admin_key = bearer(issue(http, admin, tenant=tenant, role="admin")["key"])
    other_key = bearer(issue(http, admin, tenant=f"{tenant}-other")["key"])
    body = {"nodes": {"a": {"service": "llm", "prompt": "Hi"}}}
    workflow_id = http.post("/v1/workflows", json=body, headers=user_key).json()["workflow_id"]
    assert http.get(f"/v1/workflows/{workflow_id}", headers=user_key).status_code == 200
    assert_error(http.get(f"/v1/workflows/{workflow_id}", headers=other_key), 404, "not_found")
    assert_error(http.get("/v1/admin/keys", headers=user_key), 403, "forbidden")
    assert_error(http.get("/v1/admin/models", headers=user_key), 403, "forbidden")
    assert http.get("/v1/admin/keys", params={"tenant": tenant}, headers=admin_key).status_code == 200


def test_an_expired_key_is_401(http: TestClient, ingress: InProcessPlatform, tenant: str) -> None:
    # Issued straight in the store: the route refuses an expiry in the past.
    _, key = ingress.platform.keys.create(tenant, Role.USER, "old", datetime.now(timezone.utc) - timedelta(seconds=1))
    error = assert_error(http.get("/v1/workflows", headers=bearer(key)), 401, "unauthorized")
    assert "expired" in error["message"]


def test_a_mangled_key_is_401(http: TestClient, admin: dict[str, str], tenant: str) -> None:
    key = issue(http, admin, tenant=tenant)["key"]
    for mangled in (key[:-1] + ("A" if key[-1] != "A" else "B"), key + "x", key.replace("lbk_", "lbk_0", 1), "lbk_"):
        assert_error(http.get("/v1/workflows", headers=bearer(mangled)), 401, "unauthorized")


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"tenant": "acme", "name": "x", "role": "root"}, "role"),
        ({"tenant": "acme", "name": "x", "expires_at": "2020-01-01T00:00:00Z"}, "expires_at"),
        ({"tenant": "acme", "name": "x", "expires_at": "2099-01-01T00:00:00"}, "expires_at"),  # no offset
        ({"tenant": "no/slashes", "name": "x"}, "tenant"),
        ({"tenant": "..", "name": "x"}, "tenant"),
        ({"tenant": "acme"}, "name"),
        ({"tenant": "acme", "name": ""}, "name"),
        ({"tenant": "acme", "name": "x", "colour": "red"}, "colour"),
    ],
)
def test_bad_key_requests_are_422(http: TestClient, admin: dict[str, str], body: dict[str, Any], field: str) -> None:
    error = assert_error(http.post("/v1/admin/keys", json=body, headers=admin), 422, "validation_error")
    assert field in [detail["field"] for detail in error["details"]], error


# ---------------------------------------------------------------- signed URLs


@pytest.fixture()
def image_url(http: TestClient, user: dict[str, str]) -> str:
    """The signed URL of an image, as `images/generations` with `response_format: url` gives it."""
    body = {"prompt": "a red square", "size": "64x64", "response_format": "url"}
    response = http.post("/v1/images/generations", json=body, headers=user)
    assert response.status_code == 200, response.text
    return str(response.json()["data"][0]["url"])


def test_a_signed_url_needs_no_token(http: TestClient, image_url: str) -> None:
    response = http.get(image_url)
    assert response.status_code == 200 and response.headers["content-type"] == "image/png"


def test_a_signed_url_is_refused_once_changed(http: TestClient, image_url: str) -> None:
    url = httpx.URL(image_url)
    signature, expires = url.params["signature"], int(url.params["expires"])
    forged = "0" if signature[0] != "0" else "1"
    changed = [
        url.copy_set_param("signature", forged + signature[1:]),
        url.copy_set_param("expires", str(expires + 1)),  # a longer life, with the old signature
        url.copy_set_param("expires", "0"),
        url.copy_with(path=url.path.replace("/content/", "/content/x", 1)),  # another tenant's
    ]
    for other in changed:
        assert_error(http.get(str(other)), 403, "invalid_signature")


def test_a_signed_url_with_a_non_ascii_signature_is_refused(http: TestClient, image_url: str) -> None:
    url = httpx.URL(image_url).copy_set_param("signature", "\u00db")
    assert_error(http.get(str(url)), 403, "invalid_signature")
