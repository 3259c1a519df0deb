"""Usage statistics through real HTTP: they count exactly the calls a tenant made, on every path
(interactive, streamed, tasks), and a tenant sees only its own."""

from __future__ import annotations

import io
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest
from PIL import Image

from deployments import media
from tests.conftest import make_token
from tests.serve_app.contract import assert_error

pytestmark = pytest.mark.ray

LONG = "word " * 5000  # more tokens than SmolLM2's context: the replica refuses it (a 422)


def fresh_tenant() -> str:
    return f"usage-{uuid.uuid4().hex[:8]}"


def session(platform_url: str, tenant: str, role: str = "user") -> httpx.Client:
    headers = {"Authorization": f"Bearer {make_token(tenant=tenant, role=role)}"}
    return httpx.Client(base_url=platform_url, headers=headers, timeout=120)


@pytest.fixture(scope="module")
def admin(platform_url: str) -> Iterator[httpx.Client]:
    with session(platform_url, "ops", role="admin") as http:
        yield http


def by_service(items: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {item["service"]: item for item in items}


def wait_for_usage(http: httpx.Client, expected_requests: dict[str, int]) -> list[dict[str, Any]]:
    """The tenant's usage once every call is counted (writes go off the calls' path)."""
    deadline = time.monotonic() + 60
    while True:
        items = http.get("/v1/usage").json()["items"]
        if {s: i["requests"] for s, i in by_service(items).items()} == expected_requests:
            return items  # type: ignore[no-any-return]
        assert time.monotonic() < deadline, items
        time.sleep(0.3)


def png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (32, 32), (200, 40, 40)).save(buffer, format="PNG")
    return buffer.getvalue()


def test_usage_counts_exactly_the_calls_made(platform_url: str, admin: httpx.Client) -> None:
    tenant = fresh_tenant()
    client = openai.OpenAI(base_url=f"{platform_url}/v1", api_key=make_token(tenant=tenant), max_retries=0)
    with session(platform_url, tenant) as http:
        chat = client.chat.completions.create(
            model="llm", messages=[{"role": "user", "content": "Name a fruit."}], max_tokens=6, temperature=0
        )
        chunks = list(
            client.chat.completions.create(
                model="llm",
                messages=[{"role": "user", "content": "Name a tree."}],
                max_tokens=6,
                stream=True,
                stream_options={"include_usage": True},
            )
        )
        streamed = chunks[-1].usage
        failed = http.post(
            "/v1/chat/completions",
            json={"model": "llm", "messages": [{"role": "user", "content": LONG}], "max_tokens": 4},
        )
        assert_error(failed, 422, "input_too_large")
        vectors = client.embeddings.create(model="embed", input=["one sentence", "and another one"])
        task = http.post("/v1/tasks", json={"service": "embed", "prompt": "a sentence embedded as a task"}).json()
        speech = http.post(
            "/v1/audio/speech", json={"model": "tts", "input": "Counting seconds.", "response_format": "wav"}
        )
        caption = http.post("/v1/images/captions", files={"file": ("red.png", png(), "image/png")})
        assert speech.status_code == 200 and caption.status_code == 200
        while (state := http.get(f"/v1/tasks/{task['task_id']}").json())["status"] != "completed":
            assert state["status"] in ("pending", "queued", "running"), state
            time.sleep(0.2)
        task_tokens = http.get(f"/v1/tasks/{task['task_id']}/output").json()["tokens"]

        items = wait_for_usage(http, {"llm": 2, "embed": 2, "tts": 1, "pic2text": 1})
        usage = by_service(items)
        assert {item["tenant"] for item in items} == {tenant}
        assert {item["day"] for item in items} == {time.strftime("%Y-%m-%d", time.gmtime())}

        llm = usage["llm"]
        # The call refused for the client's own input (a 4xx) is counted as refused, and not charged.
        assert (llm["requests"], llm["errors"], llm["refused"], llm["dropped"]) == (2, 0, 1, 0)
        assert llm["tokens_in"] == chat.usage.prompt_tokens + streamed.prompt_tokens
        assert llm["tokens_out"] == chat.usage.completion_tokens + streamed.completion_tokens
        # A call charges prompt + 2 × output tokens.
        expected = sum(u.prompt_tokens + 2 * u.completion_tokens for u in (chat.usage, streamed))
        assert llm["cost"] == pytest.approx(expected)

        embed = usage["embed"]
        assert (embed["requests"], embed["errors"]) == (2, 0)
        assert embed["tokens_in"] == embed["cost"] == vectors.usage.prompt_tokens + task_tokens
        assert embed["tokens_out"] == 0

        tts = usage["tts"]
        assert tts["cost"] == len("Counting seconds.")
        assert tts["audio_seconds"] == pytest.approx(media.wav_info(speech.content).seconds, rel=1e-3)
        assert usage["pic2text"]["images"] == 1 and usage["pic2text"]["cost"] == 1

    # The admin sees the same figures, and can narrow them to a service.
    assert admin.get("/v1/admin/usage", params={"tenant": tenant}).json()["items"] == items
    only = admin.get("/v1/admin/usage", params={"tenant": tenant, "service": "EMBED", "days": 1}).json()["items"]
    assert only == [usage["embed"]]


def wait_for(http: httpx.Client, service: str, counter: str, value: int) -> dict[str, Any]:
    deadline = time.monotonic() + 60
    while (item := by_service(http.get("/v1/usage").json()["items"]).get(service, {})).get(counter) != value:
        assert time.monotonic() < deadline, item
        time.sleep(0.3)
    return item


def test_a_call_over_quota_is_counted_as_refused_and_not_charged(platform_url: str, admin: httpx.Client) -> None:
    tenant = fresh_tenant()
    assert admin.put(f"/v1/admin/tenants/{tenant}", json={"max_concurrency": 0}).status_code == 200
    with session(platform_url, tenant) as http:
        refused = http.post("/v1/embeddings", json={"model": "embed", "input": "over quota"})
        assert_error(refused, 429, "quota_exceeded")
        item = wait_for(http, "embed", "refused", 1)
    assert (item["requests"], item["errors"], item["cost"]) == (0, 0, 0)


def test_a_stream_the_client_drops_is_counted_as_dropped_with_the_tokens_generated(platform_url: str) -> None:
    tenant = fresh_tenant()
    body = {
        "model": "llm",
        "messages": [{"role": "user", "content": "Tell a very long story about a dragon."}],
        "max_tokens": 400,
        "stream": True,
    }
    with session(platform_url, tenant) as http:
        with http.stream("POST", "/v1/chat/completions", json=body) as response:
            assert response.status_code == 200
            received = 0
            for line in response.iter_lines():
                received += line.startswith("data: {")
                if received == 3:
                    break  # the client leaves; closing the response drops the connection
        item = wait_for(http, "llm", "dropped", 1)
    assert item["requests"] == 1 and item["errors"] == 0
    assert 3 <= item["tokens_out"] < 400  # what was generated before the client left, not the budget
    assert item["tokens_in"] == 0  # unknown: the prompt is charged by its length
    assert item["cost"] >= 2 * item["tokens_out"]


def test_a_tenant_sees_only_its_own_usage(platform_url: str, admin: httpx.Client) -> None:
    busy, quiet = fresh_tenant(), fresh_tenant()
    with session(platform_url, busy) as http:
        assert http.post("/v1/embeddings", json={"model": "embed", "input": "counted"}).status_code == 200
        assert [i["tenant"] for i in wait_for_usage(http, {"embed": 1})] == [busy]
    with session(platform_url, quiet) as http:
        assert http.get("/v1/usage").json() == {"items": []}
        assert http.get("/v1/usage", params={"tenant": busy}).json() == {"items": []}  # no such parameter
        assert_error(http.get("/v1/admin/usage", params={"tenant": busy}), 403, "forbidden")
    everyone = admin.get("/v1/admin/usage").json()["items"]
    assert busy in {i["tenant"] for i in everyone} and quiet not in {i["tenant"] for i in everyone}


@pytest.mark.parametrize(
    ("path", "params", "field"),
    [
        ("/v1/usage", {"days": 0}, "days"),
        ("/v1/usage", {"days": 400}, "days"),
        ("/v1/admin/usage", {"service": "video"}, "service"),
        ("/v1/admin/usage", {"tenant": "../etc"}, "tenant"),
    ],
)
def test_bad_usage_queries_are_422(admin: httpx.Client, path: str, params: dict[str, Any], field: str) -> None:
    error = assert_error(admin.get(path, params=params), 422)
    assert any(field in d.get("field", "") for d in error["details"]), error
