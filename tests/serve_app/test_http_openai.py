"""The interactive endpoints through real HTTP, on the real models, with the official `openai` client."""

from __future__ import annotations

import base64
import io

import httpx
import openai
import pytest
from PIL import Image

from deployments import media
from tests.conftest import make_token
from tests.serve_app.contract import assert_error

pytestmark = pytest.mark.ray

SENTENCE = "the quick brown fox jumps over the lazy dog"


@pytest.fixture(scope="module")
def client(platform_url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{platform_url}/v1", api_key=make_token(), timeout=120, max_retries=0)


@pytest.fixture(scope="module")
def http(platform_url: str) -> httpx.Client:
    headers = {"Authorization": f"Bearer {make_token()}"}
    with httpx.Client(base_url=platform_url, headers=headers, timeout=120) as session:
        yield session


@pytest.fixture(scope="module")
def spoken_sentence(client: openai.OpenAI) -> bytes:
    return client.audio.speech.create(model="tts", voice="alloy", input=SENTENCE, response_format="wav").content


def png_bytes() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (48, 32), (30, 120, 200)).save(buffer, format="PNG")
    return buffer.getvalue()


# ---------------------------------------------------------------- the openai client


def test_chat_completion(client: openai.OpenAI) -> None:
    answer = client.chat.completions.create(
        model="llm", messages=[{"role": "user", "content": "Name a colour."}], max_tokens=16
    )
    assert answer.choices[0].message.content.strip()
    assert answer.usage.prompt_tokens > 0 and 0 < answer.usage.completion_tokens <= 16
    assert answer.usage.total_tokens == answer.usage.prompt_tokens + answer.usage.completion_tokens


def test_chat_completion_stream_has_several_chunks_and_usage(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(
        model="llm",
        messages=[{"role": "user", "content": "Write a sentence about the sea."}],
        max_tokens=24,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    texts = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert len(texts) >= 3
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0
    assert any(c.choices and c.choices[0].finish_reason for c in chunks)


def test_backend_model_name_is_accepted(client: openai.OpenAI) -> None:
    ids = {m.id for m in client.models.list().data}
    assert {"llm", "stt", "tts", "pic2text", "text2pic", "SmolLM2-135M-Instruct"} <= ids
    answer = client.completions.create(model="SmolLM2-135M-Instruct", prompt="The sky is", max_tokens=5)
    assert answer.choices[0].text and answer.usage.completion_tokens <= 5


def test_speech_then_transcription_round_trip(client: openai.OpenAI, spoken_sentence: bytes) -> None:
    info = media.wav_info(spoken_sentence)
    assert info.seconds > 1.0
    transcript = client.audio.transcriptions.create(model="stt", file=("fox.wav", spoken_sentence, "audio/wav"))
    heard = {word.strip(".,!?").lower() for word in transcript.text.split()}
    assert len(heard & set(SENTENCE.split())) >= 7, transcript.text


def test_image_generation_is_a_png(client: openai.OpenAI) -> None:
    result = client.images.generate(prompt="a red square", size="64x64", n=1, response_format="b64_json")
    image = Image.open(io.BytesIO(base64.b64decode(result.data[0].b64_json)))
    assert image.format == "PNG" and image.size == (64, 64)


def test_caption(http: httpx.Client) -> None:
    response = http.post("/v1/images/captions", files={"file": ("blue.png", png_bytes(), "image/png")})
    assert response.status_code == 200, response.text
    assert isinstance(response.json()["text"], str)


def test_models_say_which_backend_serves(http: httpx.Client) -> None:
    models = {m["id"]: m for m in http.get("/v1/models").json()["data"]}
    assert models["llm"]["backend"] == "llama_cpp"
    assert models["text2pic"]["backend"] == "tiny_random" and "tiny-random" in models["text2pic"]["model"]


# ---------------------------------------------------------------- bad input
# The other 4xx of these routes (bad bodies, unknown models, malformed media, 413, 401) are
# tested in-process, without Ray: tests/ingress/.


def test_a_broken_mp3_is_invalid_media(http: httpx.Client) -> None:
    response = http.post(
        "/v1/audio/transcriptions",
        files={"file": ("x.mp3", b"ID3\x03" + b"\x00" * 100, "audio/mpeg")},
        data={"model": "stt"},
    )
    assert_error(response, 400, "invalid_media")


# ---------------------------------------------------------------- auth and health


def test_health_needs_no_token(platform_url: str) -> None:
    assert httpx.get(f"{platform_url}/healthz").json() == {"status": "ok"}
    ready = httpx.get(f"{platform_url}/readyz", timeout=30)
    assert ready.status_code == 200 and all(s["ready"] for s in ready.json()["services"].values())


def test_request_id_is_returned(http: httpx.Client) -> None:
    assert http.get("/healthz", headers={"X-Request-ID": "abc-123"}).headers["x-request-id"] == "abc-123"
    assert len(http.get("/healthz").headers["x-request-id"]) >= 16  # Serve makes one up
