"""Model management through HTTP: the backends' live failover state, reordering and disabling at
run time (at once, on the running replica), kept across a replica restart.

The session's platform has `llm` = [llama_cpp, gemini], its Gemini being the fake server of
tests/fakes (real HTTP, the real google-genai SDK): two backends to arrange. Each test that changes
the arrangement puts the configured one back.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import ray

from tests.conftest import make_token
from tests.fakes.gemini_server import FakeGemini
from tests.helpers import wait_until
from tests.serve_app.contract import assert_error

pytestmark = pytest.mark.ray

CHAT = {"model": "llm", "messages": [{"role": "user", "content": "Say hi."}], "max_tokens": 2, "temperature": 0}
DEFAULT = {"backends": ["llama_cpp", "gemini"], "disabled": []}


@pytest.fixture(scope="module")
def admin_http(platform_url: str) -> Iterator[httpx.Client]:
    headers = {"Authorization": f"Bearer {make_token(tenant='model-ops', role='admin')}"}
    with httpx.Client(base_url=platform_url, headers=headers, timeout=120) as client:
        yield client


@pytest.fixture()
def restore(admin_http: httpx.Client, session_gemini: FakeGemini) -> Iterator[None]:
    """The configured arrangement again after the test, whatever it changed."""
    session_gemini.reset()
    try:
        yield
    finally:
        assert admin_http.put("/v1/admin/models/llm", json=DEFAULT).status_code == 200


def llm_view(admin_http: httpx.Client) -> dict[str, Any]:
    response = admin_http.get("/v1/admin/models")
    assert response.status_code == 200, response.text
    return response.json()["services"]["llm"]  # type: ignore[no-any-return]


def chat(admin_http: httpx.Client) -> None:
    """One chat completion; which backend answered shows in the fake's requests and in the counts
    (the answer's `model` is the first ready backend as the ingress last saw it, not the answerer)."""
    response = admin_http.post("/v1/chat/completions", json=CHAT)
    assert response.status_code == 200, response.text


def settled_calls(admin_http: httpx.Client) -> int:
    """The local backend's call count once the replica has reported the calls of earlier tests
    (a report comes up to a second after a change, later on a busy machine)."""
    while True:
        calls = llm_view(admin_http)["backends"][0]["calls"]
        time.sleep(2.5)
        if llm_view(admin_http)["backends"][0]["calls"] == calls:
            return int(calls)


def test_get_shows_every_service_and_the_live_failover_state(admin_http: httpx.Client) -> None:
    services = admin_http.get("/v1/admin/models").json()["services"]
    assert {"llm", "stt", "tts", "pic2text", "text2pic"} <= set(services)
    assert [b["name"] for b in services["text2pic"]["backends"]] == ["tiny_random"]
    llm = services["llm"]
    assert [(b["name"], b["status"], b["disabled"]) for b in llm["backends"]] == [
        ("llama_cpp", "ready", False),
        ("gemini", "ready", False),
    ]
    before = settled_calls(admin_http)
    chat(admin_http)
    # Replicas report within a second of a change: the call shows in the local backend's count.
    wait_until(lambda: llm_view(admin_http)["backends"][0]["calls"] == before + 1, 10, "the call to be reported")
    llama = llm_view(admin_http)["backends"][0]
    assert llm_view(admin_http)["replicas"] == 1 and llama["replicas"][0]["calls"] == llama["calls"]


def test_reorder_then_disable_takes_effect_at_once(
    admin_http: httpx.Client, session_gemini: FakeGemini, restore: None
) -> None:
    reordered = admin_http.put("/v1/admin/models/llm", json={"backends": ["gemini"]})
    assert reordered.status_code == 200, reordered.text
    assert [b["name"] for b in reordered.json()["backends"]] == ["gemini", "llama_cpp"]
    chat(admin_http)
    assert len(session_gemini.requests) == 1  # the cloud, now first, answered

    disabled = admin_http.put("/v1/admin/models/LLM", json={"disabled": ["gemini"]}).json()
    assert [(b["name"], b["disabled"]) for b in disabled["backends"]] == [("gemini", True), ("llama_cpp", False)]
    calls = llm_view(admin_http)["backends"][1]["calls"]
    chat(admin_http)  # the very next call skips it: nothing reaches the cloud
    assert len(session_gemini.requests) == 1
    wait_until(lambda: llm_view(admin_http)["backends"][1]["calls"] == calls + 1, 10, "the local model's call")
    # /v1/models says so too, once the ingress's short status cache has expired.
    wait_until(
        lambda: (
            [(b["name"], b["ready"]) for b in llm_model(admin_http)["backends"]]
            == [("gemini", False), ("llama_cpp", True)]
        ),
        10,
        "/v1/models to show the arrangement",
    )
    assert llm_model(admin_http)["backend"] == "llama_cpp"


def llm_model(admin_http: httpx.Client) -> dict[str, Any]:
    return next(m for m in admin_http.get("/v1/models").json()["data"] if m["id"] == "llm")


def test_v1_models_follows_a_new_arrangement_at_once(admin_http: httpx.Client, restore: None) -> None:
    def serving() -> str:
        models = {m["id"]: m for m in admin_http.get("/v1/models").json()["data"]}
        return str(models["llm"]["backend"])

    assert serving() == "llama_cpp"  # and the ingress has the status cached now
    assert admin_http.put("/v1/admin/models/llm", json={"backends": ["gemini", "llama_cpp"]}).status_code == 200
    assert serving() == "gemini"
    assert admin_http.put("/v1/admin/models/llm", json=DEFAULT).status_code == 200
    assert serving() == "llama_cpp"


def test_the_arrangement_survives_a_replica_restart(
    admin_http: httpx.Client, session_gemini: FakeGemini, restore: None
) -> None:
    assert admin_http.put("/v1/admin/models/llm", json={"backends": ["gemini", "llama_cpp"]}).status_code == 200
    (victim,) = replica_names()
    ray.kill(ray.get_actor(victim, namespace="serve"), no_restart=True)
    wait_until(lambda: replica_names() not in ([], [victim]), 60, "Serve to replace the llm replica")
    wait_until(lambda: admin_http.post("/v1/chat/completions", json=CHAT).status_code == 200, 60, "the new replica")
    # The new replica read the stored order when it started: the cloud, first, answered.
    answered = len(session_gemini.requests)
    assert answered >= 1
    chat(admin_http)
    assert len(session_gemini.requests) == answered + 1
    (successor,) = replica_names()
    wait_until(
        lambda: (
            [r["replica"] for r in llm_view(admin_http)["backends"][0]["replicas"]] == [successor.rsplit("#", 1)[1]]
        ),
        30,
        "only the new replica to be reported",
    )
    assert [b["name"] for b in llm_view(admin_http)["backends"]] == ["gemini", "llama_cpp"]


def replica_names() -> list[str]:
    prefix = "SERVE_REPLICA::labubu#llm#"
    return [a["name"] for a in ray.util.list_named_actors(all_namespaces=True) if a["name"].startswith(prefix)]


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"backends": ["vllm"]}, "invalid_backends"),  # a backend of llm, not one this platform configured
        ({"backends": ["llama_cpp", "llama_cpp"]}, "invalid_backends"),
        ({"disabled": ["nope"]}, "invalid_backends"),
        ({"disabled": ["llama_cpp", "gemini"]}, "invalid_backends"),
        ({"backends": "llama_cpp"}, "validation_error"),
        ({"order": ["llama_cpp"]}, "validation_error"),
    ],
)
def test_bad_arrangements_are_422_and_change_nothing(admin_http: httpx.Client, body: dict[str, Any], code: str) -> None:
    assert_error(admin_http.put("/v1/admin/models/llm", json=body), 422, code)
    assert [(b["name"], b["disabled"]) for b in llm_view(admin_http)["backends"]] == [
        ("llama_cpp", False),
        ("gemini", False),
    ]


def test_unknown_service_is_404_and_users_are_403(admin_http: httpx.Client, platform_url: str) -> None:
    assert_error(admin_http.put("/v1/admin/models/video", json={"backends": []}), 404, "not_found")
    user = {"Authorization": f"Bearer {make_token(tenant='model-ops')}"}
    assert_error(httpx.put(f"{platform_url}/v1/admin/models/llm", json=DEFAULT, headers=user), 403, "forbidden")
