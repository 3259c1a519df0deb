"""The Gemini backends through the real google-genai SDK, against the fake Gemini server on 127.0.0.1."""

from __future__ import annotations

import io
import json
import socket
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, TypeVar

import jsonschema
import pytest
from PIL import Image

from deployments.failover import BackendChain
from deployments.gemini import (
    GeminiBackend,
    GeminiCaptionBackend,
    GeminiImageBackend,
    GeminiTextBackend,
    nearest_aspect_ratio,
)
from deployments.media import image_info
from deployments.pic2text import TinyRandomBlipBackend
from deployments.text2pic import TinyRandomDiffusionBackend
from deployments.types import (
    JSON_SCHEMA,
    LOGPROBS,
    TOOLS,
    VISION,
    BackendFailure,
    BackendTimeout,
    CaptionRequest,
    ChatMessage,
    ImageRequest,
    InvalidInput,
    LLMChunk,
    LLMRequest,
    ModelError,
    ModelUnavailable,
    ResponseFormat,
    ToolCall,
    ToolSpec,
)
from tests.fakes.gemini_server import FakeGemini, json_schema_of

API_KEY = "test-key"
B = TypeVar("B", bound=GeminiBackend)


def encode(format: str, size: tuple[int, int] = (40, 30)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, (10, 120, 200)).save(buffer, format=format)
    return buffer.getvalue()


PNG = encode("PNG")
JPEG = encode("JPEG")


@pytest.fixture(scope="module")
def server() -> Iterator[FakeGemini]:
    with FakeGemini() as fake:
        yield fake


@pytest.fixture
def fake(server: FakeGemini) -> FakeGemini:
    server.reset()
    return server


def loaded(cls: type[B], server: FakeGemini, **options: Any) -> B:
    backend = cls(api_key=API_KEY, base_url=server.url, **options)
    backend.load()
    return backend


# One client per backend for the module: making one costs about 0.2 s (its TLS contexts).
@pytest.fixture(scope="module")
def text(server: FakeGemini) -> GeminiTextBackend:
    return loaded(GeminiTextBackend, server)


@pytest.fixture(scope="module")
def captions(server: FakeGemini) -> GeminiCaptionBackend:
    return loaded(GeminiCaptionBackend, server)


@pytest.fixture(scope="module")
def images(server: FakeGemini) -> GeminiImageBackend:
    return loaded(GeminiImageBackend, server)


async def collect(backend: GeminiTextBackend, request: LLMRequest) -> list[LLMChunk]:
    return [chunk async for chunk in backend.stream(request)]


CHAT = LLMRequest(
    messages=[
        ChatMessage("system", "You answer briefly."),
        ChatMessage("user", "Hello there"),
        ChatMessage("assistant", "Hi."),
        ChatMessage("user", "Say something please"),
    ],
    max_tokens=50,
    temperature=0.2,
    top_p=0.9,
    stop=["never-said"],
    seed=7,
)


# ---------------------------------------------------------------- text


async def test_text_maps_the_chat_and_its_options(fake: FakeGemini, text: GeminiTextBackend) -> None:
    result = await text.run(CHAT)

    assert result.text == fake.reply
    assert result.finish_reason == "stop"
    assert result.model == "gemini-2.5-flash"
    assert result.prompt_tokens == 2 + 1 + 3 + 3  # the words of the four messages
    assert result.completion_tokens == len(fake.reply.split())

    [sent] = fake.requests
    assert sent.path == "/v1beta/models/gemini-2.5-flash:generateContent"
    assert sent.headers["x-goog-api-key"] == API_KEY
    assert sent.body["systemInstruction"]["parts"] == [{"text": "You answer briefly."}]
    assert [c["role"] for c in sent.body["contents"]] == ["user", "model", "user"]
    assert sent.body["contents"][2]["parts"] == [{"text": "Say something please"}]
    assert sent.generation_config == {
        "maxOutputTokens": 50,
        "temperature": 0.2,
        "topP": 0.9,
        "stopSequences": ["never-said"],
        "seed": 7,
    }


async def test_text_from_a_plain_prompt_cut_by_max_tokens(fake: FakeGemini) -> None:
    backend = loaded(GeminiTextBackend, fake, model="gemini-2.5-flash-lite")
    result = await backend.run(LLMRequest(prompt="Tell me more", max_tokens=3))
    assert result.text == " ".join(fake.reply.split()[:3])
    assert (result.finish_reason, result.prompt_tokens, result.completion_tokens) == ("length", 3, 3)
    assert fake.requests[0].model == "gemini-2.5-flash-lite"
    assert "systemInstruction" not in fake.requests[0].body


async def test_text_streams_with_usage_on_the_last_chunk(fake: FakeGemini, text: GeminiTextBackend) -> None:
    chunks = await collect(text, CHAT)

    assert len(chunks) > 2  # streamed word by word, not in one piece
    assert "".join(chunk.text for chunk in chunks) == fake.reply
    assert all(chunk.finish_reason is None for chunk in chunks[:-1])
    last = chunks[-1]
    assert (last.finish_reason, last.prompt_tokens, last.completion_tokens) == ("stop", 9, len(fake.reply.split()))
    [sent] = fake.requests
    assert sent.action == "streamGenerateContent"
    assert sent.query == {"alt": ["sse"]}


async def test_stop_sequences_end_the_text(fake: FakeGemini, text: GeminiTextBackend) -> None:
    result = await text.run(LLMRequest(prompt="go", stop=["fake"]))
    assert result.text == "a small"


async def test_only_system_messages_are_invalid(fake: FakeGemini, text: GeminiTextBackend) -> None:
    with pytest.raises(InvalidInput):
        await text.run(LLMRequest(messages=[ChatMessage("system", "Be brief.")]))
    assert not fake.requests


WEATHER = ToolSpec(
    "get_weather",
    "The weather of a city",
    {
        "type": "object",
        "properties": {"city": {"type": "string"}, "unit": {"type": "string", "enum": ["c", "f"]}},
        "required": ["city", "unit"],
    },
)
TIME = ToolSpec("get_time", "The time in a city", {"type": "object", "properties": {"city": {"type": "string"}}})


@pytest.mark.parametrize(
    ("tool_choice", "mode", "allowed", "called"),
    [
        ("auto", "AUTO", None, "get_weather"),
        ("required", "ANY", None, "get_weather"),
        ("get_time", "ANY", ["get_time"], "get_time"),
    ],
)
async def test_tools_become_function_declarations_and_calls(
    fake: FakeGemini, text: GeminiTextBackend, tool_choice: str, mode: str, allowed: list[str] | None, called: str
) -> None:
    request = LLMRequest(
        messages=[ChatMessage("user", "Weather in Paris?")], tools=[WEATHER, TIME], tool_choice=tool_choice
    )
    result = await text.run(request)

    [call] = result.tool_calls
    assert result.finish_reason == "tool_calls" and call.name == called and call.id
    arguments = json.loads(call.arguments)
    jsonschema.validate(arguments, {"get_weather": WEATHER, "get_time": TIME}[called].parameters)
    [sent] = fake.requests
    [tool] = sent.body["tools"]
    assert [d["name"] for d in tool["functionDeclarations"]] == ["get_weather", "get_time"]
    assert json_schema_of(tool["functionDeclarations"][0], "parameters") == WEATHER.parameters
    config = sent.body["toolConfig"]["functionCallingConfig"]
    assert config["mode"] == mode and config.get("allowedFunctionNames") == allowed


async def test_tool_none_sends_no_tools(fake: FakeGemini, text: GeminiTextBackend) -> None:
    result = await text.run(LLMRequest(messages=[ChatMessage("user", "hi")], tools=[WEATHER], tool_choice="none"))
    assert result.text == fake.reply and not result.tool_calls
    assert "tools" not in fake.requests[0].body


async def test_a_tool_round_trip_sends_call_and_response_parts(fake: FakeGemini, text: GeminiTextBackend) -> None:
    call = ToolCall("call_1", "get_weather", '{"city": "Paris", "unit": "c"}')
    history = [
        ChatMessage("user", "Weather in Paris?"),
        ChatMessage("assistant", "", tool_calls=[call]),
        ChatMessage("tool", "18 degrees, sunny", tool_call_id="call_1", name="get_weather"),
    ]
    result = await text.run(LLMRequest(messages=history, tools=[WEATHER]))
    assert result.text == fake.reply and result.finish_reason == "stop"
    contents = fake.requests[0].body["contents"]
    assert [c["role"] for c in contents] == ["user", "model", "user"]
    assert contents[1]["parts"][0]["functionCall"] == {
        "id": "call_1",
        "name": "get_weather",
        "args": {"city": "Paris", "unit": "c"},
    }
    response = contents[2]["parts"][0]["functionResponse"]
    assert response["name"] == "get_weather" and response["response"] == {"result": "18 degrees, sunny"}


async def test_a_streamed_tool_call_comes_whole_on_the_last_chunk(fake: FakeGemini, text: GeminiTextBackend) -> None:
    request = LLMRequest(messages=[ChatMessage("user", "Weather?")], tools=[WEATHER], tool_choice="required")
    chunks = await collect(text, request)
    assert chunks[-1].finish_reason == "tool_calls"
    [call] = chunks[-1].tool_calls
    jsonschema.validate(json.loads(call.arguments), WEATHER.parameters)


async def test_json_schema_is_the_response_schema(fake: FakeGemini, text: GeminiTextBackend) -> None:
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
    request = LLMRequest(
        messages=[ChatMessage("user", "A number")], response_format=ResponseFormat("json_schema", schema), n=2
    )
    result = await text.run(request)
    assert len(result.choices()) == 2
    for choice in result.choices():
        jsonschema.validate(json.loads(choice.text), schema)
    config = fake.requests[0].generation_config
    assert config["responseMimeType"] == "application/json" and json_schema_of(config, "response") == schema


async def test_images_go_inline_to_gemini(fake: FakeGemini, text: GeminiTextBackend) -> None:
    await text.run(LLMRequest(messages=[ChatMessage("user", "What is this?", images=[PNG])]))
    assert fake.requests[0].images == [("image/png", PNG)]


def test_gemini_declares_its_capabilities() -> None:
    assert {TOOLS, JSON_SCHEMA, VISION} <= GeminiTextBackend.capabilities
    assert LOGPROBS not in GeminiTextBackend.capabilities


# ---------------------------------------------------------------- captions


async def test_captions_send_each_image_with_the_prompt(fake: FakeGemini, captions: GeminiCaptionBackend) -> None:
    fake.reply = "a blue rectangle"
    result = await captions.run(CaptionRequest(images=[PNG, JPEG], prompt="What is this?", max_tokens=20))

    assert result.text == "a blue rectangle\na blue rectangle"
    assert result.model == "gemini-2.5-flash"
    assert sorted(image for r in fake.requests for image in r.images) == [("image/jpeg", JPEG), ("image/png", PNG)]
    assert all(r.parts[1] == {"text": "What is this?"} for r in fake.requests)
    assert all(r.generation_config["maxOutputTokens"] == 20 for r in fake.requests)


async def test_a_caption_without_prompt_asks_for_a_description(
    fake: FakeGemini, captions: GeminiCaptionBackend
) -> None:
    await captions.run(CaptionRequest(images=[PNG]))
    assert "Describe" in fake.requests[0].parts[1]["text"]


async def test_a_bad_image_is_refused_before_any_call(fake: FakeGemini, captions: GeminiCaptionBackend) -> None:
    with pytest.raises(InvalidInput, match="image 1"):
        await captions.run(CaptionRequest(images=[PNG[:40]]))
    assert not fake.requests


# ---------------------------------------------------------------- images


async def test_images_come_back_as_pngs(fake: FakeGemini, images: GeminiImageBackend) -> None:
    request = ImageRequest(prompt="a lighthouse", negative_prompt="people", width=640, height=360, n=2, seed=11)
    result = await images.run(request)

    assert result.model == "gemini-2.5-flash-image"
    assert (result.width, result.height, result.steps) == (*fake.image_size, request.steps)
    assert len(result.images) == 2
    assert all(image_info(image).content_type == "image/png" for image in result.images)
    assert len(fake.requests) == 2
    for sent in fake.requests:
        assert sent.generation_config["responseModalities"] == ["IMAGE"]
        assert sent.generation_config["imageConfig"] == {"aspectRatio": "16:9"}
        assert sent.parts[0]["text"].startswith("a lighthouse")
        assert "people" in sent.parts[0]["text"]
    assert sorted(r.generation_config["seed"] for r in fake.requests) == [11, 12]


async def test_an_image_in_another_format_is_converted_to_png(fake: FakeGemini, images: GeminiImageBackend) -> None:
    fake.image_format = "JPEG"
    try:
        result = await images.run(ImageRequest(prompt="a tree"))
    finally:
        fake.image_format = "PNG"
    info = image_info(result.images[0])
    assert (info.content_type, info.width, info.height) == ("image/png", *fake.image_size)


async def test_an_empty_image_prompt_is_refused(fake: FakeGemini, images: GeminiImageBackend) -> None:
    with pytest.raises(InvalidInput):
        await images.run(ImageRequest(prompt=" "))
    assert not fake.requests


@pytest.mark.parametrize(
    ("width", "height", "ratio"), [(256, 256, "1:1"), (1920, 1080, "16:9"), (300, 400, "3:4"), (2100, 900, "21:9")]
)
def test_the_nearest_aspect_ratio(width: int, height: int, ratio: str) -> None:
    assert nearest_aspect_ratio(width, height) == ratio


# ---------------------------------------------------------------- failures


def test_without_an_api_key_nothing_loads(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GEMINI_API_KEY", raising=False)
    monkeypatch.delenv("GOOGLE_API_KEY", raising=False)
    for cls in (GeminiTextBackend, GeminiCaptionBackend, GeminiImageBackend):
        with pytest.raises(ModelUnavailable, match="GEMINI_API_KEY"):
            cls().load()


@pytest.mark.parametrize("variable", ["GEMINI_API_KEY", "GOOGLE_API_KEY"])
async def test_the_key_comes_from_the_environment(
    variable: str, fake: FakeGemini, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On the platform the key is never a backend option (Serve shows those): the SDK reads its variables."""
    monkeypatch.delenv("GEMINI_API_KEY", raising=False)
    monkeypatch.delenv("GOOGLE_API_KEY", raising=False)
    monkeypatch.setenv(variable, "key-from-the-environment")
    backend = GeminiTextBackend(base_url=fake.url)
    backend.load()
    await backend.run(LLMRequest(prompt="hi"))
    assert fake.requests[0].headers["x-goog-api-key"] == "key-from-the-environment"


@pytest.fixture
def calls(
    text: GeminiTextBackend, captions: GeminiCaptionBackend, images: GeminiImageBackend
) -> dict[str, Callable[[], Awaitable[object]]]:
    return {
        "text": lambda: text.run(LLMRequest(prompt="hi")),
        "stream": lambda: collect(text, LLMRequest(prompt="hi")),
        "caption": lambda: captions.run(CaptionRequest(images=[PNG])),
        "image": lambda: images.run(ImageRequest(prompt="a cat")),
    }


@pytest.mark.parametrize(
    ("call", "status", "error"),
    [
        *((call, 500, BackendFailure) for call in ("text", "stream", "caption", "image")),
        *(
            (call, status, error)
            for call in ("text", "stream")
            for status, error in [
                (503, BackendFailure),
                (429, BackendFailure),
                (400, InvalidInput),
                (403, ModelUnavailable),
            ]
        ),
    ],
)
async def test_error_statuses_become_platform_errors(
    fake: FakeGemini, calls: dict[str, Callable[[], Awaitable[object]]], call: str, status: int, error: type[ModelError]
) -> None:
    fake.fail_status = status
    with pytest.raises(error) as caught:
        await calls[call]()
    assert caught.value.retryable is (status != 400)
    assert len(fake.requests) == 1  # no retry inside the SDK: failover decides


async def test_a_slow_answer_is_a_timeout(fake: FakeGemini) -> None:
    fake.delay_s = 1.0
    backend = loaded(GeminiTextBackend, fake, timeout_s=0.2)
    with pytest.raises(BackendTimeout):
        await backend.run(LLMRequest(prompt="hi"))


async def test_an_unreachable_endpoint_is_a_backend_failure() -> None:
    with socket.socket() as probe:  # a port that was free a moment ago: nothing listens there
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    backend = GeminiTextBackend(api_key=API_KEY, base_url=f"http://127.0.0.1:{port}", timeout_s=5)
    backend.load()
    with pytest.raises(BackendFailure, match="cannot be reached"):
        await backend.run(LLMRequest(prompt="hi"))


# ---------------------------------------------------------------- failover


@pytest.fixture(scope="module")
def tiny_captioner() -> TinyRandomBlipBackend:
    backend = TinyRandomBlipBackend()
    backend.load()
    return backend


@pytest.fixture(scope="module")
def tiny_painter() -> TinyRandomDiffusionBackend:
    backend = TinyRandomDiffusionBackend()
    backend.load()
    return backend


async def test_a_failing_gemini_fails_over_to_tiny_random_captions(
    fake: FakeGemini, tiny_captioner: TinyRandomBlipBackend
) -> None:
    fake.fail_status = 500
    chain = BackendChain([GeminiCaptionBackend(api_key=API_KEY, base_url=fake.url), tiny_captioner])
    chain.load()
    result = await chain.run(CaptionRequest(images=[PNG], max_tokens=8))
    assert result.model == "tiny-random-blip"
    assert result.text
    gemini, tiny = chain.health()
    assert (gemini["backend"], gemini["failures"], tiny["failures"]) == ("gemini", 1, 0)
    assert "500" in gemini["reason"]


async def test_a_failing_gemini_fails_over_to_tiny_random_images(
    fake: FakeGemini, tiny_painter: TinyRandomDiffusionBackend
) -> None:
    fake.fail_status = 500
    chain = BackendChain([GeminiImageBackend(api_key=API_KEY, base_url=fake.url), tiny_painter])
    chain.load()
    result = await chain.run(ImageRequest(prompt="a cat", width=64, height=64, steps=2, seed=0))
    assert result.model == "tiny-random-stable-diffusion"
    assert image_info(result.images[0]).width == 64
    assert len(fake.requests) == 1
