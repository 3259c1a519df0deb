"""Attacks on authentication and tenant isolation through HTTP and Serve's proxy, on every route that
/openapi.json says needs a token (so a route added later is attacked too). Every broken token on
every route is tested in-process (tests/ingress/test_auth.py); the verifier's rules one by one are
in test_auth.py."""

from __future__ import annotations

import uuid

import httpx
import pytest

from tests.conftest import make_token
from tests.serve_app.contract import assert_error

pytestmark = pytest.mark.ray

TRAVERSALS = ["..", "%2E%2E", "..%2F..%2Fetc%2Fpasswd", "..%5C..%5Cx", "%2E%2E%2F%2E%2E", "....%2F%2F"]


@pytest.fixture(scope="module")
def secured_routes(platform_url: str) -> list[tuple[str, str]]:
    spec = httpx.get(f"{platform_url}/openapi.json", timeout=30).json()
    routes = [
        (method.upper(), path)
        for path, operations in spec["paths"].items()
        for method, operation in operations.items()
        if operation.get("security")
    ]
    assert len(routes) >= 25, routes
    return routes


@pytest.mark.parametrize("size", [64 * 1024, 1024 * 1024])
def test_oversized_headers_are_refused_and_harmless(platform_url: str, size: int) -> None:
    """The proxy or the verifier refuses them (431 or 400 from the proxy; 401 from us): never served."""
    headers = {"Authorization": "Bearer " + "A" * size, "X-Filler": "B" * size}
    try:
        status = httpx.get(f"{platform_url}/v1/models", headers=headers, timeout=30).status_code
    except httpx.RemoteProtocolError:
        status = None  # the proxy closed the connection: refused as well
    assert status in (None, 400, 401, 413, 431)
    assert httpx.get(f"{platform_url}/healthz", timeout=10).status_code == 200


@pytest.fixture(scope="module")
def owner(platform_url: str) -> dict[str, str]:
    """Tenant A's workflow, task and upload (whatever their state: another tenant must not see them)."""
    headers = {"Authorization": f"Bearer {make_token(tenant=f'owner-{uuid.uuid4().hex[:8]}')}"}
    with httpx.Client(base_url=platform_url, headers=headers, timeout=60) as client:
        node = {"service": "llm", "prompt": "Say hi.", "params": {"max_tokens": 2, "temperature": 0}}
        workflow_id = client.post("/v1/workflows", json={"nodes": {"a": node}}).json()["workflow_id"]
        task_id = client.post("/v1/tasks", json={**node}).json()["task_id"]
        upload = client.put("/v1/uploads", content=b"hello", headers={"Content-Type": "text/plain"})
        return {"workflow_id": workflow_id, "task_id": task_id, "upload_id": upload.json()["upload_id"]}


def with_ids(path: str, owner: dict[str, str]) -> str:
    return path.replace("{workflow_id}", owner["workflow_id"]).replace("{task_id}", owner["task_id"])


def test_another_tenants_ids_are_404_on_every_route(
    platform_url: str, secured_routes: list[tuple[str, str]], owner: dict[str, str]
) -> None:
    intruder = {"Authorization": f"Bearer {make_token(tenant='intruder')}"}
    routes = [(m, p) for m, p in secured_routes if "{workflow_id}" in p or "{task_id}" in p]
    assert len(routes) >= 12
    with httpx.Client(base_url=platform_url, headers=intruder, timeout=30) as client:
        for method, path in routes:
            assert_error(client.request(method, with_ids(path, owner).replace("{node_id}", "a")), 404, "not_found")
        listed = client.get("/v1/workflows").json()["items"] + client.get("/v1/tasks").json()["items"]
        assert not {owner["workflow_id"], owner["task_id"]} & {i.get("workflow_id") or i.get("task_id") for i in listed}
        foreign = {"service": "llm", "prompt": "x", "input": {"upload_id": owner["upload_id"]}}
        assert_error(client.post("/v1/tasks", json=foreign), 400)
        assert_error(client.post("/v1/tasks", json={"service": "llm", "prompt": "x", "tenant_id": "acme"}), 403)


def test_path_traversal_in_every_id_is_404(
    platform_url: str, secured_routes: list[tuple[str, str]], owner: dict[str, str]
) -> None:
    admin = {"Authorization": f"Bearer {make_token(tenant='traveller', role='admin')}"}
    routes = [(m, p) for m, p in secured_routes if "{" in p]
    with httpx.Client(base_url=platform_url, headers=admin, timeout=30) as client:
        for method, path in routes:
            for traversal in TRAVERSALS:
                for name in ("workflow_id", "task_id", "node_id", "tenant"):
                    if "{" + name + "}" not in path:
                        continue
                    # A tenant may contain dots (`..acme` is a name), so it gets the traversal alone.
                    value = traversal if name == "tenant" else traversal + owner["workflow_id"]
                    url = path.replace("{" + name + "}", value)
                    url = with_ids(url, owner).replace("{node_id}", "a").replace("{tenant}", "acme")
                    response = client.request(method, url, json={"weight": 2})
                    assert_error(response, 404)
        for traversal in ("../" + owner["upload_id"], "../../etc/passwd", "..\\x", owner["upload_id"] + "/.."):
            body = {"service": "llm", "prompt": "x", "input": {"upload_id": traversal}}
            assert_error(client.post("/v1/tasks", json=body), 400)
