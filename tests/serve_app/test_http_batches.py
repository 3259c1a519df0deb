"""Files and batches through real HTTP on the running platform, with the official `openai` client:
each line a low-priority call in the workflow executor; the output and error files line up by
`custom_id`; a cancel keeps what ran; an executor killed mid-batch loses no line and runs none twice."""

from __future__ import annotations

import io
import json
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import ray

from dag.records import WORKFLOWS
from state.store import open_store
from tests.conftest import make_token
from tests.helpers import wait_until

pytestmark = pytest.mark.ray

CHAT = "/v1/chat/completions"
COMPLETIONS = "/v1/completions"
EMBEDDINGS = "/v1/embeddings"


def tenant_client(platform_url: str) -> tuple[openai.OpenAI, str]:
    tenant = f"batches-{uuid.uuid4().hex[:8]}"
    token = make_token(tenant=tenant, sub="alice")
    return openai.OpenAI(base_url=f"{platform_url}/v1", api_key=token, max_retries=0, timeout=60), tenant


def line(custom_id: str, url: str, body: dict[str, Any]) -> str:
    return json.dumps({"custom_id": custom_id, "method": "POST", "url": url, "body": body})


def chat(custom_id: str, max_tokens: int = 8, **body: Any) -> str:
    messages = [{"role": "user", "content": f"Say a word about the number {custom_id}."}]
    return line(custom_id, CHAT, {"model": "llm", "messages": messages, "max_tokens": max_tokens, **body})


def start(client: openai.OpenAI, lines: list[str], endpoint: str) -> str:
    data = ("\n".join(lines) + "\n").encode()
    file = client.files.create(file=("lines.jsonl", io.BytesIO(data)), purpose="batch")
    batch = client.batches.create(input_file_id=file.id, endpoint=endpoint, completion_window="24h")  # type: ignore[arg-type]
    assert batch.status == "in_progress"
    return batch.id


def wait(client: openai.OpenAI, batch_id: str, done: Any, timeout_s: float = 300) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        batch = client.batches.retrieve(batch_id)
        if done(batch):
            return batch
        assert time.monotonic() < deadline, batch
        time.sleep(0.5)


def ended(batch: Any) -> bool:
    return batch.status in ("completed", "failed", "cancelled")


def lines_of(client: openai.OpenAI, file_id: str | None) -> dict[str, dict[str, Any]]:
    if file_id is None:
        return {}
    return {(entry := json.loads(text))["custom_id"]: entry for text in client.files.content(file_id).text.splitlines()}


def test_chat_and_embedding_batches_with_bad_lines(platform_url: str) -> None:
    client, _ = tenant_client(platform_url)
    chat_lines = [chat(f"c{n}") for n in range(3)]
    bad = [
        "{this is not json",
        line("wrong-url", "/v1/moderations", {"input": "x"}),
        chat("unknown-model", model="no-such-model"),
        chat("invalid-body", max_tokens=0),
    ]
    embed_lines = [line(f"e{n}", EMBEDDINGS, {"model": "embed", "input": [f"text {n}", "more"]}) for n in range(5)]
    embed_bad = [chat("chat-in-embeddings")]
    chat_batch = start(client, chat_lines[:2] + bad + chat_lines[2:], CHAT)
    embed_batch = start(client, embed_lines + embed_bad, EMBEDDINGS)

    done = wait(client, chat_batch, ended)
    assert done.status == "completed" and done.completed_at and done.finalizing_at
    assert (done.request_counts.total, done.request_counts.completed, done.request_counts.failed) == (7, 3, 4)
    outputs, errors = lines_of(client, done.output_file_id), lines_of(client, done.error_file_id)
    assert set(outputs) == {"c0", "c1", "c2"}
    for entry in outputs.values():
        assert entry["error"] is None and entry["response"]["status_code"] == 200
        body = entry["response"]["body"]
        assert body["object"] == "chat.completion" and body["model"] == "SmolLM2-135M-Instruct"
        assert body["usage"]["completion_tokens"] <= 8
    codes = {custom_id: entry["error"]["code"] for custom_id, entry in errors.items()}
    assert codes == {
        None: "invalid_json_line",
        "wrong-url": "invalid_url",
        "unknown-model": "model_not_found",
        "invalid-body": "validation_error",
    }

    done = wait(client, embed_batch, ended)
    assert (done.request_counts.total, done.request_counts.completed, done.request_counts.failed) == (6, 5, 1)
    outputs = lines_of(client, done.output_file_id)
    assert set(outputs) == {f"e{n}" for n in range(5)}
    assert all(len(o["response"]["body"]["data"]) == 2 for o in outputs.values())
    assert lines_of(client, done.error_file_id)["chat-in-embeddings"]["error"]["code"] == "mismatched_url"
    assert {b.id for b in client.batches.list()} == {chat_batch, embed_batch}


def test_a_cancelled_batch_keeps_the_lines_that_ran(platform_url: str) -> None:
    client, _ = tenant_client(platform_url)
    batch_id = start(client, [chat(f"c{n}", 48) for n in range(12)], CHAT)
    wait(client, batch_id, lambda b: b.request_counts.completed >= 1)
    cancelled = client.batches.cancel(batch_id)
    assert cancelled.status in ("cancelling", "cancelled")
    done = wait(client, batch_id, ended)
    assert done.status == "cancelled" and done.cancelled_at
    outputs, errors = lines_of(client, done.output_file_id), lines_of(client, done.error_file_id)
    assert len(outputs) >= 1 and set(outputs) | set(errors) == {f"c{n}" for n in range(12)}
    assert not set(outputs) & set(errors)
    assert {e["error"]["code"] for e in errors.values()} <= {"batch_cancelled"}
    assert (done.request_counts.completed, done.request_counts.failed) == (len(outputs), len(errors))


def attempts(data_dir: Path, tenant: str, batch_id: str) -> dict[str, tuple[str, int]]:
    """Each line's status and attempts, read from the platform's own store."""
    store = open_store(None, data_dir)
    record = store.get(WORKFLOWS, f"{tenant}/{batch_id}")
    assert record is not None
    return {node_id: (node["status"], node["attempts"]) for node_id, node in record["nodes"].items()}


def test_another_tenants_chat_does_not_wait_for_a_running_batch_line(
    platform_url: str, platform_data_dir: Path
) -> None:
    """A batch line that is generating yields the llm engine to another tenant's chat at its next
    token (deployments/llm.py: EngineTurns), and the scheduler kept a slot free for the chat: the
    chat's answer comes while the line still runs, and the line then finishes whole."""
    batcher, tenant = tenant_client(platform_url)
    chatter, _ = tenant_client(platform_url)
    counting = {"model": "llm", "prompt": "1, 2, 3, 4, 5, 6,", "max_tokens": 500, "temperature": 0}
    batch_id = start(batcher, [line("long", COMPLETIONS, counting)], COMPLETIONS)
    wait_until(lambda: attempts(platform_data_dir, tenant, batch_id)["line-0"][0] == "running", what="the line runs")

    answer = chatter.chat.completions.create(
        model="llm", messages=[{"role": "user", "content": "What is 2+2?"}], max_tokens=4, temperature=0
    )
    answered_at = datetime.now(UTC)
    assert answer.choices[0].message.content

    done = wait(batcher, batch_id, ended)
    assert done.status == "completed"
    output = lines_of(batcher, done.output_file_id)["long"]["response"]["body"]
    assert output["usage"]["completion_tokens"] >= 499 and output["choices"][0]["finish_reason"] == "length"
    store = open_store(None, platform_data_dir)
    record = store.get(WORKFLOWS, f"{tenant}/{batch_id}")
    assert record is not None
    assert datetime.fromisoformat(record["nodes"]["line-0"]["finished_at"]) > answered_at


def test_an_executor_restart_mid_batch_loses_no_line_and_reruns_none(
    platform_url: str, platform_data_dir: Path
) -> None:
    client, tenant = tenant_client(platform_url)
    custom_ids = {f"c{n}" for n in range(8)}
    batch_id = start(client, [chat(custom_id, 32) for custom_id in sorted(custom_ids)], CHAT)
    wait(client, batch_id, lambda b: b.request_counts.completed >= 2)
    before = {
        node: a for node, (status, a) in attempts(platform_data_dir, tenant, batch_id).items() if status == "completed"
    }
    ray.kill(ray.get_actor("labubu-workflows", namespace="labubu"), no_restart=False)

    done = wait(client, batch_id, ended, timeout_s=300)
    assert done.status == "completed"
    assert set(lines_of(client, done.output_file_id)) == custom_ids and done.error_file_id is None
    after = attempts(platform_data_dir, tenant, batch_id)
    assert {node: after[node][1] for node in before} == before  # completed before the kill: not run again
    # One model call per line: /v1/usage counts each call the executor charged.
    token = make_token(tenant=tenant, sub="alice")
    deadline = time.monotonic() + 30
    while True:
        items = httpx.get(f"{platform_url}/v1/usage", headers={"Authorization": f"Bearer {token}"}).json()["items"]
        requests = sum(item["requests"] for item in items if item["service"] == "llm")
        if requests >= len(custom_ids) or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert requests == len(custom_ids)
