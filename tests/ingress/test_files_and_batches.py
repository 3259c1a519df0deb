"""Files and batches through the in-process app with the official `openai` client: what is checked
at the door (purposes, JSONL, each line as its route checks a request, tenants). The executor here
runs nothing: running lines are the Ray tests' (tests/serve_app/test_http_batches.py)."""

from __future__ import annotations

import io
import json
from typing import Any

import pytest
from fastapi.testclient import TestClient
from openai import BadRequestError, NotFoundError, OpenAI, UnprocessableEntityError

from tests.conftest import make_token
from tests.ingress.conftest import InProcessPlatform


def client_of(http: TestClient, token: str) -> OpenAI:
    return OpenAI(base_url=f"{http.base_url}/v1", api_key=token, http_client=http, max_retries=0)


@pytest.fixture()
def client(http: TestClient, user: dict[str, str]) -> OpenAI:
    return client_of(http, user["Authorization"].removeprefix("Bearer "))


@pytest.fixture()
def stranger(http: TestClient) -> OpenAI:
    return client_of(http, make_token(tenant="a-stranger", sub="eve"))


def jsonl(*lines: Any) -> bytes:
    return "".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines).encode()


def chat_line(custom_id: str, **body: Any) -> dict[str, Any]:
    body = {"model": "llm", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4, **body}
    return {"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions", "body": body}


def upload(client: OpenAI, data: bytes, purpose: str = "batch") -> str:
    return client.files.create(file=("lines.jsonl", io.BytesIO(data)), purpose=purpose).id  # type: ignore[arg-type]


def test_a_file_uploads_lists_reads_and_deletes(client: OpenAI) -> None:
    data = jsonl(chat_line("a"))
    file = client.files.create(file=("lines.jsonl", io.BytesIO(data)), purpose="batch")
    assert (file.object, file.bytes, file.purpose, file.filename) == ("file", len(data), "batch", "lines.jsonl")
    assert client.files.retrieve(file.id).id == file.id
    assert client.files.content(file.id).content == data
    assert [f.id for f in client.files.list(purpose="batch")] == [file.id]
    assert client.files.delete(file.id).deleted
    with pytest.raises(NotFoundError):
        client.files.retrieve(file.id)
    assert list(client.files.list()) == []


def test_files_page_with_a_cursor(client: OpenAI) -> None:
    ids = [upload(client, jsonl(chat_line(str(n))), "user_data") for n in range(3)]
    first = client.files.list(limit=2)
    assert [f.id for f in first.data] == ids[::-1][:2] and first.has_more
    rest = client.files.list(limit=2, after=first.data[-1].id)
    assert [f.id for f in rest.data] == [ids[0]] and not rest.has_more


def test_another_purpose_is_refused(client: OpenAI) -> None:
    with pytest.raises(UnprocessableEntityError) as caught:
        client.files.create(file=("x.jsonl", io.BytesIO(b"{}\n")), purpose="fine-tune")
    assert [d["field"] for d in caught.value.body["details"]] == ["purpose"]  # type: ignore[index]


def test_another_tenants_file_and_batch_are_not_found(client: OpenAI, stranger: OpenAI) -> None:
    file_id = upload(client, jsonl(chat_line("a")))
    batch = client.batches.create(input_file_id=file_id, endpoint="/v1/chat/completions", completion_window="24h")
    with pytest.raises(NotFoundError):
        stranger.files.retrieve(file_id)
    with pytest.raises(NotFoundError):
        stranger.files.content(file_id)
    with pytest.raises(NotFoundError):
        stranger.files.delete(file_id)
    with pytest.raises(NotFoundError):
        stranger.batches.create(input_file_id=file_id, endpoint="/v1/chat/completions", completion_window="24h")
    with pytest.raises(NotFoundError):
        stranger.batches.retrieve(batch.id)
    with pytest.raises(NotFoundError):
        stranger.batches.cancel(batch.id)
    assert list(stranger.batches.list()) == []


def test_a_file_that_is_not_jsonl_is_a_400(client: OpenAI) -> None:
    for data in (b"custom_id,url\na,/v1/chat/completions\n", b"\xff\xfe\x00binary"):
        file_id = upload(client, data)
        with pytest.raises(BadRequestError) as caught:
            client.batches.create(input_file_id=file_id, endpoint="/v1/chat/completions", completion_window="24h")
        assert caught.value.body["code"] == "invalid_file"  # type: ignore[index]


@pytest.mark.parametrize(
    "fields", [{"endpoint": "/v1/images/generations"}, {"completion_window": "48h"}, {"metadata": {"k": 1}}]
)
def test_a_bad_batch_request_is_a_422(client: OpenAI, fields: dict[str, Any]) -> None:
    file_id = upload(client, jsonl(chat_line("a")))
    body = {"input_file_id": file_id, "endpoint": "/v1/chat/completions", "completion_window": "24h", **fields}
    with pytest.raises(UnprocessableEntityError):
        client.batches.create(**body)


BAD_LINES = [
    "{not json",
    {"custom_id": "wrong-url", "method": "POST", "url": "/v1/moderations", "body": {}},
    {"custom_id": "other-url", "method": "POST", "url": "/v1/embeddings", "body": {"model": "embed", "input": "x"}},
    chat_line("unknown-model", model="gpt-9"),
    chat_line("invalid-body", max_tokens=0),
    chat_line("streamed", stream=True),
    {"custom_id": "get", "method": "GET", "url": "/v1/chat/completions", "body": {}},
]
BAD_CODES = {
    None: "invalid_json_line",
    "wrong-url": "invalid_url",
    "other-url": "mismatched_url",
    "unknown-model": "model_not_found",
    "invalid-body": "validation_error",
    "streamed": "invalid_input",
    "get": "invalid_method",
}


def test_bad_lines_are_counted_and_the_good_ones_start(client: OpenAI, ingress: InProcessPlatform) -> None:
    file_id = upload(client, jsonl(chat_line("good-1"), *BAD_LINES, chat_line("good-2"), chat_line("good-1")))
    batch = client.batches.create(
        input_file_id=file_id, endpoint="/v1/chat/completions", completion_window="24h", metadata={"run": "1"}
    )
    assert batch.status == "in_progress" and batch.metadata == {"run": "1"}
    assert batch.request_counts is not None
    assert (batch.request_counts.total, batch.request_counts.failed) == (10, len(BAD_LINES) + 1)  # + the duplicate
    assert batch.id in {key.split("/")[-1] for key in ingress.executor.keys_of("start")}
    assert [b.id for b in client.batches.list()] == [batch.id]


def test_a_batch_of_bad_lines_only_completes_with_its_error_file(client: OpenAI) -> None:
    file_id = upload(client, jsonl(*BAD_LINES))
    batch = client.batches.create(input_file_id=file_id, endpoint="/v1/chat/completions", completion_window="24h")
    assert batch.status == "completed" and batch.output_file_id is None and batch.error_file_id
    assert batch.request_counts is not None and batch.request_counts.failed == len(BAD_LINES)
    errors = [json.loads(line) for line in client.files.content(batch.error_file_id).text.splitlines()]
    assert {e["custom_id"]: e["error"]["code"] for e in errors} == BAD_CODES
    by_id = {e["custom_id"]: e for e in errors}
    assert by_id["unknown-model"]["response"]["status_code"] == 404
    assert by_id["invalid-body"]["response"]["status_code"] == 422
    assert by_id[None]["response"] is None
    with pytest.raises(Exception) as caught:
        client.batches.cancel(batch.id)
    assert getattr(caught.value, "status_code", None) == 409
