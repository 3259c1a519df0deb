"""Input limits through HTTP: huge prompts, DAGs at and past their limits, media bombs, stalled
uploads. Each is a 4xx (or cut off by a timeout) and the platform keeps serving."""

from __future__ import annotations

import base64
import io
import socket
import struct
import time
import uuid
import zlib
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlparse

import httpx
import pytest

from deployments import media
from tests.conftest import make_token
from tests.serve_app.contract import assert_error

pytestmark = pytest.mark.ray


@pytest.fixture()
def http(platform_url: str) -> Iterator[httpx.Client]:
    headers = {"Authorization": f"Bearer {make_token(tenant=f'limits-{uuid.uuid4().hex[:8]}')}"}
    with httpx.Client(base_url=platform_url, headers=headers, timeout=120) as client:
        yield client
    assert httpx.get(f"{platform_url}/healthz", timeout=5).status_code == 200  # unharmed


def png_bomb(side: int = 30_000) -> bytes:
    """A valid 1-bit PNG of side×side pixels (900 megapixels), about 100 kB compressed."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    row = b"\x00" * (1 + side // 8)
    compressor = zlib.compressobj(9)
    pixels = b"".join(compressor.compress(row) for _ in range(side)) + compressor.flush()
    header = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    return media.PNG_MAGIC + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")


def wav_claiming_hours() -> bytes:
    data = bytearray(media.wav_bytes(b"\x00\x00" * 1600, 16000))
    struct.pack_into("<I", data, 40, 16000 * 2 * 3600 * 5)  # the data chunk says five hours
    return bytes(data)


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


def test_huge_speech_task_is_refused_at_submission(http: httpx.Client) -> None:
    assert_error(http.post("/v1/tasks", json={"service": "tts", "prompt": "word " * 1000}), 400)
    assert_error(http.post("/v1/tasks", json={"service": "llm", "prompt": "x" * 100_001}), 422)


@pytest.mark.parametrize("seed", [-1, 2**32, 2**70])
def test_seed_out_of_range_is_422(http: httpx.Client, seed: int) -> None:
    body = {"prompt": "a cat", "size": "64x64", "steps": 1, "seed": seed}
    assert_error(http.post("/v1/images/generations", json=body), 422, "validation_error")


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


def test_dags_past_the_limits_are_400_or_422(http: httpx.Client) -> None:
    nodes = {f"n{i}": llm_node() for i in range(65)}
    assert assert_error(http.post("/v1/workflows", json={"nodes": nodes}), 400)["details"][0]["field"] == "nodes"
    few = {f"n{i}": llm_node() for i in range(64)}
    edges = [{"from": f"n{i % 63}", "to": f"n{63 - i % 63}"} for i in range(10_000)]  # 10,000 edges
    started = time.monotonic()
    response = http.post("/v1/workflows", json={"nodes": few, "edges": edges})
    assert assert_error(response, 400)["details"][0]["field"] == "edges"
    assert time.monotonic() - started < 10
    assert_error(http.post("/v1/workflows", json={"nodes": few, "edges": edges + edges[:1]}), 422)
    deep_json = "[" * 5000 + '"x"' + "]" * 5000  # nested past Python's recursion limit
    body = '{"nodes": {"a": {"service": "llm", "params": {"stop": ' + deep_json + "}}}}"
    response = http.post("/v1/workflows", content=body, headers={"Content-Type": "application/json"})
    assert 400 <= response.status_code < 500 and response.status_code != 404
    assert_error(response, response.status_code)


# ---------------------------------------------------------------- media bombs


def test_png_bomb_is_refused_everywhere(http: httpx.Client) -> None:
    bomb = png_bomb()
    assert len(bomb) < 200_000
    assert_error(http.post("/v1/images/captions", files={"file": ("bomb.png", bomb, "image/png")}), 400)
    assert_error(http.put("/v1/uploads", content=bomb, headers={"Content-Type": "image/png"}), 400)
    inline = {"data_b64": base64.b64encode(bomb).decode(), "content_type": "image/png"}
    assert_error(http.post("/v1/tasks", json={"service": "pic2text", "input": inline}), 400)


def test_wav_claiming_hours_is_refused_everywhere(http: httpx.Client) -> None:
    wav = wav_claiming_hours()
    assert_error(http.post("/v1/audio/transcriptions", files={"file": ("x.wav", wav, "audio/wav")}), 400)
    assert_error(http.put("/v1/uploads", content=wav, headers={"Content-Type": "audio/wav"}), 400)
    inline = {"data_b64": base64.b64encode(wav).decode(), "content_type": "audio/wav"}
    assert_error(http.post("/v1/tasks", json={"service": "stt", "input": inline}), 400)


# ---------------------------------------------------------------- slow clients


def test_stalled_upload_is_cut_off_with_408(platform_url: str, http: httpx.Client) -> None:
    url = urlparse(platform_url)
    token = http.headers["Authorization"]
    head = (
        f"PUT /v1/uploads HTTP/1.1\r\nHost: {url.netloc}\r\nAuthorization: {token}\r\n"
        "Content-Type: text/plain\r\nContent-Length: 100000\r\n\r\n"
    ).encode()
    started = time.monotonic()
    with socket.create_connection((url.hostname, url.port), timeout=30) as sock:
        sock.sendall(head + b"a few bytes, then nothing")
        answer = io.BytesIO()
        while b"\r\n\r\n" not in answer.getvalue() or not answer.getvalue().rstrip().endswith(b"}"):
            data = sock.recv(65536)
            if not data:
                break
            answer.write(data)
    elapsed = time.monotonic() - started
    status_line, _, rest = answer.getvalue().partition(b"\r\n")
    assert b" 408 " in status_line, answer.getvalue()[:300]
    assert b'"request_timeout"' in rest
    assert 4 <= elapsed < 25  # the test platform's body_timeout_s is 5
    assert http.get("/v1/workflows").status_code == 200


def test_event_ids_past_64_bits_are_422(http: httpx.Client) -> None:
    workflow_id = http.post("/v1/workflows", json={"nodes": {"a": llm_node()}}).json()["workflow_id"]
    path = f"/v1/workflows/{workflow_id}/events"
    assert_error(http.get(path, params={"last_event_id": 2**64}), 422)
    assert_error(http.get(path, headers={"Last-Event-ID": str(2**64)}), 422)
    http.delete(f"/v1/workflows/{workflow_id}")
