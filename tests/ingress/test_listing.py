"""Listing workflows and tasks through the app (API.md, "Workflows" and "Tasks"): pages, totals
and filters, read from the store's indexes."""

from __future__ import annotations

import json
from typing import Any

from fastapi.testclient import TestClient

from dag.records import Status
from tests.conftest import make_token
from tests.ingress.conftest import InProcessPlatform, bearer


def submit(http: TestClient, user: dict[str, str], kind: str, service: str = "llm") -> str:
    if kind == "tasks":
        response = http.post("/v1/tasks", json={"service": service, "prompt": "Hi"}, headers=user)
        assert response.status_code == 202, response.text
        return str(response.json()["task_id"])
    body = {"nodes": {"a": {"service": service, "prompt": "Hi"}}}
    response = http.post("/v1/workflows", json=body, headers=user)
    assert response.status_code == 202, response.text
    return str(response.json()["workflow_id"])


def listing(http: TestClient, user: dict[str, str], path: str) -> dict[str, Any]:
    response = http.get(path, headers=user)
    assert response.status_code == 200, response.text
    return dict(response.json())


def finish(ingress: InProcessPlatform, tenant: str, workflow_id: str, status: Status) -> None:
    """What the executor would do (here it does not run): end the workflow."""
    record = ingress.platform.workflows.get(tenant, workflow_id)
    record.data["status"] = status.value
    ingress.platform.workflows.save(record, {"type": "workflow", "status": status.value})


def test_workflow_pages_newest_first_with_totals_and_status(
    http: TestClient, ingress: InProcessPlatform, user: dict[str, str], tenant: str
) -> None:
    submitted = [submit(http, user, "workflows") for _ in range(5)]
    everything = listing(http, user, "/v1/workflows?limit=200")["items"]
    newest_first = [i["workflow_id"] for i in everything]
    # Newest first; two made in the same millisecond come by id, the same way round.
    assert sorted(newest_first) == sorted(submitted)
    assert [(i["created_at"], i["workflow_id"]) for i in everything] == sorted(
        ((i["created_at"], i["workflow_id"]) for i in everything), reverse=True
    )
    first = listing(http, user, "/v1/workflows?limit=2")
    assert [i["workflow_id"] for i in first["items"]] == newest_first[:2] and first["total"] == 5
    assert set(first["items"][0]) == {"workflow_id", "name", "status", "created_at", "updated_at"}
    rest = listing(http, user, "/v1/workflows?limit=2&offset=2")
    assert [i["workflow_id"] for i in rest["items"]] == newest_first[2:4]
    assert listing(http, user, "/v1/workflows?offset=5") == {"items": [], "total": 5}

    finish(ingress, tenant, submitted[1], Status.COMPLETED)
    done = listing(http, user, "/v1/workflows?status=completed")
    assert [i["workflow_id"] for i in done["items"]] == [submitted[1]] and done["total"] == 1
    assert done["items"][0]["status"] == "completed"
    assert listing(http, user, "/v1/workflows?status=pending")["total"] == 4
    assert listing(http, user, "/v1/workflows")["total"] == 5

    assert http.delete(f"/v1/workflows/{submitted[0]}", headers=user).status_code == 204
    # The executor stand-in records the delete; the store's delete is what it would call.
    ingress.platform.workflows.delete(ingress.platform.workflows.get(tenant, submitted[0]))
    assert listing(http, user, "/v1/workflows")["total"] == 4
    assert listing(http, user, "/v1/tasks")["total"] == 0  # workflows are not tasks


def test_tasks_filtered_by_service_and_status(
    http: TestClient, ingress: InProcessPlatform, user: dict[str, str], tenant: str
) -> None:
    tts = submit(http, user, "tasks", "tts")
    llm = submit(http, user, "tasks", "llm")
    finish(ingress, tenant, llm, Status.FAILED)
    assert sorted(i["task_id"] for i in listing(http, user, "/v1/tasks")["items"]) == sorted([llm, tts])
    assert [i["task_id"] for i in listing(http, user, "/v1/tasks?service=TTS")["items"]] == [tts]
    failed = listing(http, user, "/v1/tasks?service=llm&status=failed")
    assert [i["task_id"] for i in failed["items"]] == [llm] and failed["total"] == 1
    assert failed["items"][0]["service"] == "llm"
    assert listing(http, user, "/v1/tasks?service=llm&status=pending") == {"items": [], "total": 0}
    assert listing(http, user, "/v1/tasks?service=stt")["total"] == 0
    assert listing(http, user, "/v1/workflows")["total"] == 0


def test_another_tenants_workflows_are_not_listed(http: TestClient, user: dict[str, str]) -> None:
    submit(http, user, "workflows")
    stranger = bearer(make_token(tenant="t-stranger-listing", sub="bob"))
    assert listing(http, stranger, "/v1/workflows") == {"items": [], "total": 0}


def test_event_stream_replays_resumes_and_ends_after_the_final_event(
    http: TestClient, ingress: InProcessPlatform, user: dict[str, str], tenant: str
) -> None:
    workflow_id = submit(http, user, "workflows")
    finish(ingress, tenant, workflow_id, Status.COMPLETED)

    def events(**headers: str) -> list[tuple[str, dict[str, Any]]]:
        response = http.get(f"/v1/workflows/{workflow_id}/events", headers={**user, **headers})
        assert response.status_code == 200 and response.headers["content-type"].startswith("text/event-stream")
        blocks = [block.split("\n") for block in response.text.strip().split("\n\n") if block.startswith("id:")]
        return [(lines[0].removeprefix("id: "), json.loads(lines[1].removeprefix("data: "))) for lines in blocks]

    assert events() == [
        ("1", {"type": "workflow", "status": "pending"}),
        ("2", {"type": "workflow", "status": "completed"}),
    ]
    assert events(**{"Last-Event-ID": "1"}) == [("2", {"type": "workflow", "status": "completed"})]
    assert events(**{"Last-Event-ID": "2"}) == []
