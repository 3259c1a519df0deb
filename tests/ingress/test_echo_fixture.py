"""`echo_fixture`, the instant `llm` backend of benchmarks/ceiling.py: selected by the app's args, it
answers through the whole platform (auth, the scheduler's admission, metering) like a model, and no
default configuration ever serves it."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

from deployments.echo import EchoLLMBackend
from deployments.serving import ModalityServer
from deployments.types import ChatMessage, LLMRequest
from serve_app.settings import Settings
from tests.ingress.conftest import InProcessPlatform
from tests.ingress.standins import InProcessHandle
from tests.ingress.test_usage import settled_usage

ROOT = Path(__file__).resolve().parents[2]
ECHO_ARGS = {"services": {"llm": {"backends": [{"name": "echo_fixture"}]}}}


def echo_handle() -> InProcessHandle:
    settings = Settings.read(ECHO_ARGS)
    return InProcessHandle(lambda: ModalityServer(settings.service_config("llm")))


def chat_body(**extra: Any) -> dict[str, Any]:
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "one two three four five"}]
    return {"model": "llm", "messages": messages, "max_tokens": 3, **extra}


def test_the_backend_echoes_the_last_message_cut_to_max_tokens() -> None:
    backend = EchoLLMBackend()
    backend.load()
    request = LLMRequest(messages=[ChatMessage("user", "a b c")], max_tokens=8)
    result = asyncio.run(backend.run(request))
    assert (result.text, result.finish_reason, result.prompt_tokens, result.completion_tokens) == (
        "a b c",
        "stop",
        3,
        3,
    )

    async def streamed() -> list[Any]:
        return [chunk async for chunk in backend.stream(LLMRequest(prompt="x y z w", max_tokens=2))]

    *texts, last = asyncio.run(streamed())
    assert [chunk.text for chunk in texts] == ["x", " y"]
    assert (last.finish_reason, last.prompt_tokens, last.completion_tokens) == ("length", 4, 2)


def test_a_chat_through_the_platform_is_admitted_and_charged(
    http: TestClient, ingress: InProcessPlatform, swap_handle: Any, user: dict[str, str]
) -> None:
    swap_handle("llm", echo_handle())
    response = http.post("/v1/chat/completions", json=chat_body(), headers=user)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model"] == "echo-fixture"
    assert body["choices"][0]["message"]["content"] == "one two three"
    assert body["choices"][0]["finish_reason"] == "length"
    assert body["usage"]["completion_tokens"] == 3

    streamed = http.post("/v1/chat/completions", json=chat_body(stream=True), headers=user)
    assert streamed.status_code == 200
    payloads = [line[len("data: ") :] for line in streamed.text.splitlines() if line.startswith("data: ")]
    deltas = [json.loads(p)["choices"][0]["delta"].get("content") or "" for p in payloads if p != "[DONE]"]
    assert "".join(deltas) == "one two three"

    # Both calls went through the scheduler's admission: the usage counts what it granted.
    usage = settled_usage(http, user, "llm")
    assert (usage["requests"], usage["tokens_out"]) == (2, 6)


def test_no_default_configuration_serves_the_fixture() -> None:
    assert "echo_fixture" not in [b.name for b in Settings.read({}).services["llm"].backends]
    for config in ROOT.glob("serve_config*.yaml"):
        assert "echo_fixture" not in config.read_text(), config
    for manifest in (ROOT / "kuberay").rglob("*.yaml"):
        assert "echo_fixture" not in manifest.read_text(), manifest
