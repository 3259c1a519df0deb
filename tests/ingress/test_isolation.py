"""Tenant isolation (API.md, "Auth"): another tenant's workflow, task or upload is exactly as absent
as one that does not exist, and a body's `tenant_id` cannot name another tenant."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.conftest import make_token
from tests.ingress.conftest import InProcessPlatform, bearer
from tests.serve_app.contract import assert_error

NODE = {"service": "llm", "prompt": "Say hi.", "params": {"max_tokens": 2}}


@pytest.fixture()
def owned(http: TestClient, user: dict[str, str]) -> dict[str, str]:
    """The test tenant's workflow, task and upload."""
    workflow = http.post("/v1/workflows", json={"nodes": {"a": NODE}}, headers=user)
    task = http.post("/v1/tasks", json=NODE, headers=user)
    upload = http.put("/v1/uploads", content=b"hello", headers={**user, "Content-Type": "text/plain"})
    assert (workflow.status_code, task.status_code, upload.status_code) == (202, 202, 201)
    return {
        "workflow_id": workflow.json()["workflow_id"],
        "task_id": task.json()["task_id"],
        "upload_id": upload.json()["upload_id"],
    }


@pytest.fixture()
def intruder(tenant: str) -> dict[str, str]:
    return bearer(make_token(tenant=f"{tenant}-intruder", sub="mallory"))


def id_routes(http: TestClient) -> list[tuple[str, str]]:
    """Every route that names a workflow or a task."""
    spec = http.get("/openapi.json").json()
    routes = [
        (method.upper(), path)
        for path, operations in spec["paths"].items()
        for method in operations
        if "{workflow_id}" in path or "{task_id}" in path
    ]
    assert len(routes) >= 12, routes
    return routes


def with_ids(path: str, workflow_id: str, task_id: str) -> str:
    return path.replace("{workflow_id}", workflow_id).replace("{task_id}", task_id).replace("{node_id}", "a")


def test_another_tenants_ids_answer_as_missing_ones_on_every_route(
    http: TestClient, owned: dict[str, str], intruder: dict[str, str], ingress: InProcessPlatform
) -> None:
    for method, path in id_routes(http):
        foreign = http.request(method, with_ids(path, owned["workflow_id"], owned["task_id"]), headers=intruder)
        missing = http.request(
            method, with_ids(path, "wf_missing0000000000", "task_missing000000000"), headers=intruder
        )
        assert_error(foreign, 404, "not_found")
        assert_error(missing, 404, "not_found")
        assert foreign.json()["error"]["details"] == missing.json()["error"]["details"], (method, path)
    # Nothing reached the executor on the owner's workflow or task.
    acted = [args for name, args in ingress.executor.calls if name in ("cancel", "retry", "delete")]
    assert not [
        args for args in acted if any(owned["workflow_id"] in str(a) or owned["task_id"] in str(a) for a in args)
    ]


def test_lists_show_only_the_callers_own(
    http: TestClient, owned: dict[str, str], user: dict[str, str], intruder: dict[str, str]
) -> None:
    assert http.get("/v1/workflows", headers=intruder).json() == {"items": [], "total": 0}
    assert http.get("/v1/tasks", headers=intruder).json() == {"items": [], "total": 0}
    assert [w["workflow_id"] for w in http.get("/v1/workflows", headers=user).json()["items"]] == [owned["workflow_id"]]
    assert [t["task_id"] for t in http.get("/v1/tasks", headers=user).json()["items"]] == [owned["task_id"]]


def test_the_owner_sees_its_own(http: TestClient, owned: dict[str, str], user: dict[str, str]) -> None:
    workflow = http.get(f"/v1/workflows/{owned['workflow_id']}", headers=user)
    assert workflow.status_code == 200 and workflow.json()["status"] == "pending"
    task = http.get(f"/v1/tasks/{owned['task_id']}", headers=user)
    assert task.status_code == 200 and task.json()["service"] == "llm"


@pytest.mark.parametrize("kind", ["task", "workflow"])
def test_another_tenants_upload_is_as_unknown_as_a_missing_one(
    http: TestClient, owned: dict[str, str], intruder: dict[str, str], kind: str
) -> None:
    def submit(upload_id: str) -> Any:
        if kind == "task":
            return http.post("/v1/tasks", json={**NODE, "input": {"upload_id": upload_id}}, headers=intruder)
        body = {"nodes": {"a": NODE}, "inputs": {"a": {"upload_id": upload_id}}}
        return http.post("/v1/workflows", json=body, headers=intruder)

    foreign = assert_error(submit(owned["upload_id"]), 400)
    missing = assert_error(submit("up_00000000000000000000"), 400)
    assert foreign["code"] == missing["code"]
    assert [d.get("field") for d in foreign["details"]] == [d.get("field") for d in missing["details"]]


def test_the_owner_may_use_its_upload(http: TestClient, owned: dict[str, str], user: dict[str, str]) -> None:
    body = {**NODE, "input": {"upload_id": owned["upload_id"]}}
    assert http.post("/v1/tasks", json=body, headers=user).status_code == 202


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/tasks", NODE),
        ("/v1/workflows", {"nodes": {"a": NODE}}),
        ("/v1/workflows", {"dag_id": "old-style", "nodes": {"a": NODE}}),
    ],
)
def test_a_tenant_id_in_the_body_must_be_the_tokens(
    http: TestClient, user: dict[str, str], tenant: str, path: str, body: dict[str, Any]
) -> None:
    assert_error(http.post(path, json={**body, "tenant_id": f"{tenant}-other"}, headers=user), 403, "forbidden")
    assert http.post(path, json={**body, "tenant_id": tenant}, headers=user).status_code == 202


def test_a_dag_id_is_scoped_to_its_tenant(http: TestClient, user: dict[str, str], intruder: dict[str, str]) -> None:
    body = {"dag_id": "shared-name", "nodes": {"a": NODE}}
    assert http.post("/v1/workflows", json=body, headers=user).json()["workflow_id"] == "shared-name"
    assert http.post("/v1/workflows", json=body, headers=intruder).json()["workflow_id"] == "shared-name"
    assert_error(http.post("/v1/workflows", json=body, headers=user), 409, "conflict")
