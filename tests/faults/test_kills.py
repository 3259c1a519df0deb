"""Faults injected into the session's platform: a model replica and the scheduler actor are killed
while requests are in flight, and the platform recovers.

These kill parts of the one platform the whole session shares, so each test leaves it as it found
it: Serve replaces a killed replica, and the scheduler actor restarts (`max_restarts=-1`) with the
tenant settings it had. Each test waits for that before it returns. The executor's own kill is
`tests/serve_app/test_http_workflows.py::test_workflow_survives_the_kill_of_its_executor`.
"""

from __future__ import annotations

import concurrent.futures
import time
import uuid
from typing import Any

import httpx
import pytest
import ray

from tests.conftest import make_token
from tests.helpers import client, llm, submit, wait_final, wait_node, wait_until

pytestmark = pytest.mark.ray

STORY = "Write a long story about a lighthouse keeper and the sea."


def scheduler() -> Any:
    return ray.get_actor("labubu-scheduler", namespace="labubu")


def llm_stats() -> dict[str, Any]:
    return ray.get(scheduler().stats.remote(), timeout=30)["services"]["llm"]  # type: ignore[no-any-return]


@pytest.fixture()
def llm_limit(platform_url: str) -> int:
    """The llm dispatch limit, once the ingress has set it from the replicas (2 for one replica):
    it starts at 1, the service's configured concurrency.

    Also waits until no earlier test holds an llm grant: one held by a process a test killed is
    freed only when its 30 s lease runs out, and it would take one of the slots these tests count on.
    """
    wait_until(lambda: llm_stats()["dispatch_limit"] >= 2, 60, "the ingress to set the llm dispatch limit")
    wait_until(lambda: llm_stats()["in_flight"] == 0, 60, "earlier tests' llm grants to end")
    return int(llm_stats()["dispatch_limit"])


def replica_names(app: str, deployment: str) -> list[str]:
    """The actor names of a deployment's replicas (Serve names them `SERVE_REPLICA::app#deployment#id`)."""
    prefix = f"SERVE_REPLICA::{app}#{deployment}#"
    return [a["name"] for a in ray.util.list_named_actors(all_namespaces=True) if a["name"].startswith(prefix)]


def chat(platform_url: str, tenant: str, max_tokens: int) -> httpx.Response:
    body = {"model": "llm", "messages": [{"role": "user", "content": STORY}], "max_tokens": max_tokens}
    with client(platform_url, tenant) as http:
        return http.post("/v1/chat/completions", json=body)


def test_llm_replica_killed_mid_request(platform_url: str, llm_limit: int) -> None:
    """The interactive call running in the killed replica fails cleanly (a 503 to retry, never a
    500); the workflow node waiting in it runs again on the successor, and the workflow completes."""
    tenant = f"kill-replica-{uuid.uuid4().hex[:6]}"  # its two llm calls get grants at once: `llm_limit`
    with client(platform_url, tenant) as http, concurrent.futures.ThreadPoolExecutor(1) as pool:
        interactive = pool.submit(chat, platform_url, tenant, 256)  # seconds of generation, even alone
        wait_until(lambda: llm_stats()["tenants"].get(tenant, {}).get("in_flight") == 1, 120, "its grant")
        workflow_id = submit(http, {"nodes": {"hello": llm("Say hello.", 16)}})
        wait_node(http, workflow_id, "hello", {"running"})
        time.sleep(0.5)  # its handle call reaches the replica, behind the interactive one
        (victim,) = replica_names("labubu", "llm")
        ray.kill(ray.get_actor(victim, namespace="serve"), no_restart=True)

        response = interactive.result(timeout=180)
        assert response.status_code == 503, response.text
        assert response.json()["error"]["code"] == "service_unavailable"
        assert int(response.headers["Retry-After"]) >= 1
        final = wait_final(http, workflow_id, timeout_s=240)
        assert final["status"] == "completed", final
        assert final["nodes"]["hello"]["attempts"] >= 2  # the kill ended the first attempt

        # Serve has replaced the replica, and the next call is served as usual.
        (successor,) = replica_names("labubu", "llm")
        assert successor != victim
        again = chat(platform_url, tenant, 2)
        assert again.status_code == 200, again.text


def test_scheduler_killed_while_callers_wait(platform_url: str, llm_limit: int) -> None:
    """Workflow nodes waiting for grants outlive the scheduler's death; its successor has the
    tenant's settings and the dispatch limits that follow the replicas."""
    tenant = f"kill-sched-{uuid.uuid4().hex[:6]}"
    admin_headers = {"Authorization": f"Bearer {make_token(tenant='ops', role='admin')}"}
    with httpx.Client(base_url=platform_url, headers=admin_headers, timeout=60) as admin:
        settings = admin.put(f"/v1/admin/tenants/{tenant}", json={"max_concurrency": 1, "weight": 2.5}).json()
        with client(platform_url, tenant) as http:
            # Three parallel nodes, one grant at a time for this tenant: two wait in the scheduler.
            nodes = {f"n{i}": llm(f"Count to {i + 5}.", 12) for i in range(3)}
            workflow_id = submit(http, {"nodes": nodes})
            wait_until(lambda: llm_stats()["tenants"].get(tenant, {}).get("queued") == 2, 120, "two waiting requests")
            ray.kill(scheduler(), no_restart=False)

            final = wait_final(http, workflow_id, timeout_s=180)
            assert final["status"] == "completed", final
            assert all(node["status"] == "completed" for node in final["nodes"].values())
            assert all(node["attempts"] == 1 for node in final["nodes"].values())  # waited, never failed

        assert admin.get(f"/v1/admin/tenants/{tenant}").json() == settings  # restored from the state store
        # The ingress sets dispatch limits from the running replicas every few seconds; a restarted
        # scheduler must get them again, not keep its configured starting value.
        wait_until(
            lambda: admin.get("/v1/admin/scheduler").json()["services"]["llm"]["dispatch_limit"] == llm_limit,
            60,
            f"the llm dispatch limit back at {llm_limit}",
        )
