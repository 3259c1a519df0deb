"""Input limits through HTTP and Serve's proxy: a huge prompt, DAGs at their limits, a stalled upload.
Each is answered (a 4xx, or cut off by a timeout) and the platform keeps serving. DAGs past their
limits, media bombs, seeds and event ids out of range are tested in-process: tests/ingress/."""

from __future__ import annotations

import io
import socket
import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlparse

import httpx
import pytest

from tests.conftest import make_token
from tests.serve_app.contract import assert_error

pytestmark = pytest.mark.ray


@pytest.fixture()
def http(platform_url: str) -> Iterator[httpx.Client]:
    headers = {"Authorization": f"Bearer {make_token(tenant=f'limits-{uuid.uuid4().hex[:8]}')}"}
    with httpx.Client(base_url=platform_url, headers=headers, timeout=120) as client:
        yield client
    assert httpx.get(f"{platform_url}/healthz", timeout=5).status_code == 200  # unharmed


def llm_node(prompt: str = "x") -> dict[str, Any]:
    return {"service": "llm", "prompt": prompt, "params": {"max_tokens": 1, "temperature": 0}}


# ---------------------------------------------------------------- prompts


def test_huge_chat_prompt_is_422_and_over_the_body_limit_413(http: httpx.Client) -> None:
    prompt = "word " * 300_000  # 1.5 MB: under the test platform's 2 MiB body limit, far over the context
    body = {"model": "llm", "messages": [{"role": "user", "content": prompt}], "max_tokens": 4}
    assert_error(http.post("/v1/chat/completions", json=body), 422, "input_too_large")

    def chunks() -> Iterator[bytes]:  # no Content-Length: the limit is enforced as the body streams in
        yield b'{"model": "llm", "prompt": "'
        for _ in range(40):
            yield b"a" * 65536
        yield b'"}'

    response = http.post("/v1/completions", content=chunks(), headers={"Content-Type": "application/json"})
    assert_error(response, 413, "payload_too_large")


# ---------------------------------------------------------------- DAGs


def test_deep_and_wide_dags_at_the_limit_are_accepted(http: httpx.Client) -> None:
    nodes = {f"n{i}": llm_node() for i in range(64)}
    deep = [{"from": f"n{i}", "to": f"n{i + 1}"} for i in range(63)]
    wide = [{"from": "n0", "to": f"n{i}"} for i in range(1, 63)] + [
        {"from": f"n{i}", "to": "n63"} for i in range(1, 63)
    ]
    for edges in (deep, wide):
        response = http.post("/v1/workflows", json={"nodes": nodes, "edges": edges})
        assert response.status_code == 202, response.text
        assert http.delete(f"/v1/workflows/{response.json()['workflow_id']}").status_code == 204


# ---------------------------------------------------------------- slow clients


def test_stalled_upload_is_cut_off_with_408(platform_url: str, http: httpx.Client) -> None:
    url = urlparse(platform_url)
    token = http.headers["Authorization"]
    head = (
        f"PUT /v1/uploads HTTP/1.1\r\nHost: {url.netloc}\r\nAuthorization: {token}\r\n"
        "Content-Type: text/plain\r\nContent-Length: 100000\r\n\r\n"
    ).encode()
    with socket.create_connection((url.hostname, url.port), timeout=30) as sock:  # 30 s: fails a hang
        sock.sendall(head + b"a few bytes, then nothing")
        answer = io.BytesIO()
        while b"\r\n\r\n" not in answer.getvalue() or not answer.getvalue().rstrip().endswith(b"}"):
            data = sock.recv(65536)
            if not data:
                break
            answer.write(data)
    status_line, _, rest = answer.getvalue().partition(b"\r\n")
    assert b" 408 " in status_line, answer.getvalue()[:300]
    assert b'"request_timeout"' in rest  # the body timeout (5 s on the test platform) cut it off
    assert http.get("/v1/workflows").status_code == 200
