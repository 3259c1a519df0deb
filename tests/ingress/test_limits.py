"""Size and format limits at the door: 413 over the body limit (declared or streamed), 415 for a
media type the platform does not take, 400 for a malformed or hostile media file; and the app
keeps serving after each."""

from __future__ import annotations

import base64
import struct
import zlib
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from deployments import media
from tests.ingress.conftest import MAX_BODY_BYTES
from tests.ingress.standins import silent_wav, tiny_png
from tests.serve_app.contract import assert_error


@pytest.fixture(autouse=True)
def still_serving(http: TestClient) -> Iterator[None]:
    yield
    assert http.get("/healthz").status_code == 200


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


# ---------------------------------------------------------------- 413


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/workflows", "/v1/tasks", "/v1/embeddings"])
def test_a_json_body_over_the_limit_is_413(http: TestClient, user: dict[str, str], path: str) -> None:
    body = {"model": "llm", "messages": [{"role": "user", "content": "a" * (MAX_BODY_BYTES + 1)}]}
    assert_error(http.post(path, json=body, headers=user), 413, "payload_too_large")


def test_an_upload_over_the_limit_is_413(http: TestClient, user: dict[str, str]) -> None:
    big = b"a" * (MAX_BODY_BYTES + 1)
    response = http.put("/v1/uploads", content=big, headers={**user, "Content-Type": "text/plain"})
    assert_error(response, 413, "payload_too_large")
    files = {"file": ("big.wav", b"\x00" * (MAX_BODY_BYTES + 1), "audio/wav")}
    assert_error(http.post("/v1/audio/transcriptions", files=files, headers=user), 413, "payload_too_large")


def test_a_streamed_body_over_the_limit_is_413(http: TestClient, user: dict[str, str]) -> None:
    """No Content-Length: the limit is enforced as the body comes in."""

    def chunks() -> Iterator[bytes]:
        yield b'{"model": "llm", "prompt": "'
        for _ in range(MAX_BODY_BYTES // 65536 + 2):
            yield b"a" * 65536
        yield b'"}'

    response = http.post("/v1/completions", content=chunks(), headers={**user, "Content-Type": "application/json"})
    assert_error(response, 413, "payload_too_large")


def test_a_body_at_the_limit_is_read(http: TestClient, user: dict[str, str]) -> None:
    text = b"a" * MAX_BODY_BYTES
    response = http.put("/v1/uploads", content=text, headers={**user, "Content-Type": "text/plain"})
    assert response.status_code == 201, response.text
    assert response.json()["bytes"] == MAX_BODY_BYTES


def test_an_oversized_body_is_refused_without_a_token_too(http: TestClient) -> None:
    response = http.put("/v1/uploads", content=b"a" * (MAX_BODY_BYTES + 1), headers={"Content-Type": "text/plain"})
    assert_error(response, 413, "payload_too_large")


# ---------------------------------------------------------------- 415 and malformed media


@pytest.mark.parametrize(
    ("content", "content_type", "status", "code"),
    [
        (b"GIF89a....", "image/gif", 415, "unsupported_media_type"),
        (b"{}", "application/json", 415, "unsupported_media_type"),
        (b"hello", None, 415, "unsupported_media_type"),
        (b"", "text/plain", 400, "invalid_media"),
        (b"\xff\xfe not utf-8", "text/plain", 400, "invalid_media"),
        (b"not a wav at all", "audio/wav", 400, "invalid_media"),
        (b"\x89PNG\r\n\x1a\nbroken", "image/png", 400, "invalid_media"),
    ],
)
def test_bad_uploads(
    http: TestClient, user: dict[str, str], content: bytes, content_type: str | None, status: int, code: str
) -> None:
    headers = {**user, **({"Content-Type": content_type} if content_type else {})}
    assert_error(http.put("/v1/uploads", content=content, headers=headers), status, code)


def test_an_upload_must_be_what_it_says(http: TestClient, user: dict[str, str]) -> None:
    response = http.put("/v1/uploads", content=tiny_png(), headers={**user, "Content-Type": "image/jpeg"})
    assert_error(response, 400, "invalid_media")


@pytest.mark.parametrize(
    ("content_type", "content"),
    [("audio/wav", silent_wav()), ("audio/x-wav", silent_wav()), ("image/png", tiny_png()), ("text/plain", b"hi")],
)
def test_good_uploads(http: TestClient, user: dict[str, str], content_type: str, content: bytes) -> None:
    response = http.put("/v1/uploads", content=content, headers={**user, "Content-Type": content_type})
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["bytes"] == len(content) and body["upload_id"].startswith("up_")
    assert body["content_type"] == ("audio/wav" if content_type == "audio/x-wav" else content_type)


def transcribe(http: TestClient, user: dict[str, str], data: bytes, content_type: str = "audio/wav") -> Any:
    return http.post("/v1/audio/transcriptions", files={"file": ("x", data, content_type)}, headers=user)


def caption(http: TestClient, user: dict[str, str], data: bytes, content_type: str = "image/png") -> Any:
    return http.post("/v1/images/captions", files={"file": ("x", data, content_type)}, headers=user)


def test_media_the_interactive_routes_do_not_take_are_415(http: TestClient, user: dict[str, str]) -> None:
    aiff = b"FORM\x00\x00\x10\x00AIFF" + b"\x00" * 100
    assert_error(transcribe(http, user, aiff, "audio/aiff"), 415, "unsupported_media_type")
    assert_error(transcribe(http, user, tiny_png(), "image/png"), 415, "unsupported_media_type")
    assert_error(caption(http, user, silent_wav(), "audio/wav"), 415, "unsupported_media_type")
    assert_error(caption(http, user, b"GIF89a" + b"\x00" * 100, "image/gif"), 415, "unsupported_media_type")


def test_malformed_media_on_the_interactive_routes_is_400(http: TestClient, user: dict[str, str]) -> None:
    assert_error(transcribe(http, user, b"RIFF....not really"), 400, "invalid_media")
    assert_error(caption(http, user, b"this is text"), 400, "invalid_media")
    error = assert_error(
        http.post(
            "/v1/images/captions",
            files=[("file", ("a.png", tiny_png(), "image/png")), ("file", ("b.png", b"junk", "image/png"))],
            headers=user,
        ),
        400,
        "invalid_media",
    )
    assert error["details"][0]["field"] == "file.1"


def test_a_png_bomb_is_refused_everywhere(http: TestClient, user: dict[str, str]) -> None:
    bomb = png_bomb()
    assert len(bomb) < 200_000
    assert_error(caption(http, user, bomb), 400)
    assert_error(http.put("/v1/uploads", content=bomb, headers={**user, "Content-Type": "image/png"}), 400)
    inline = {"data_b64": base64.b64encode(bomb).decode(), "content_type": "image/png"}
    assert_error(http.post("/v1/tasks", json={"service": "pic2text", "input": inline}, headers=user), 400)


def test_a_wav_claiming_hours_is_refused_everywhere(http: TestClient, user: dict[str, str]) -> None:
    wav = wav_claiming_hours()
    assert_error(transcribe(http, user, wav), 400)
    assert_error(http.put("/v1/uploads", content=wav, headers={**user, "Content-Type": "audio/wav"}), 400)
    inline = {"data_b64": base64.b64encode(wav).decode(), "content_type": "audio/wav"}
    assert_error(http.post("/v1/tasks", json={"service": "stt", "input": inline}, headers=user), 400)


def test_deeply_nested_json_is_a_4xx(http: TestClient, user: dict[str, str]) -> None:
    deep_json = "[" * 5000 + '"x"' + "]" * 5000  # nested past Python's recursion limit
    body = '{"nodes": {"a": {"service": "llm", "params": {"stop": ' + deep_json + "}}}}"
    response = http.post("/v1/workflows", content=body, headers={**user, "Content-Type": "application/json"})
    assert 400 <= response.status_code < 500 and response.status_code != 404
    assert_error(response, response.status_code)


def test_event_ids_past_64_bits_are_422(http: TestClient, user: dict[str, str]) -> None:
    workflow_id = http.post("/v1/workflows", json={"nodes": {"a": {"service": "llm", "prompt": "x"}}}, headers=user)
    path = f"/v1/workflows/{workflow_id.json()['workflow_id']}/events"
    assert_error(http.get(path, params={"last_event_id": 2**64}, headers=user), 422)
    assert_error(http.get(path, headers={**user, "Last-Event-ID": str(2**64)}), 422)
    assert_error(http.get(path, headers={**user, "Last-Event-ID": "seven"}), 422)
