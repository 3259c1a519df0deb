"""Volcengine Ark against a fake server at the HTTP level: Doubao chat (whole and streamed), Seedream
images, and Seedance videos (success, a failed task, a hung one with failover, a 429 with failover)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from deployments import media
from deployments.ark import DoubaoLLMBackend, SeedanceVideoBackend, SeedreamImageBackend
from deployments.failover import BackendChain
from deployments.types import (
    BackendFailure,
    BackendTimeout,
    ChatMessage,
    ImageRequest,
    LLMRequest,
    LLMResult,
    ModelUnavailable,
    VideoRequest,
    VideoResult,
)
from tests.fakes.ark_server import FakeArk
from tests.fakes.veo_server import sample_mp4

VIDEO = VideoRequest(prompt="a paper boat", seconds=4, width=1280, height=720)


@pytest.fixture()
def ark() -> Iterator[FakeArk]:
    with FakeArk() as fake:
        yield fake


def seedance(fake: FakeArk, deadline_s: float = 10.0) -> SeedanceVideoBackend:
    backend = SeedanceVideoBackend(api_key="test-key", base_url=fake.base_url, poll_s=0.01, deadline_s=deadline_s)
    backend.load()
    return backend


class Spare:
    name = "spare"
    model = "spare-model"

    def load(self) -> None:
        pass

    async def run(self, request: VideoRequest) -> VideoResult:
        return VideoResult(video=sample_mp4(), width=64, height=36, frames=24, fps=24, steps=1)


def test_no_key_is_unavailable_with_a_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ARK_API_KEY", raising=False)
    with pytest.raises(ModelUnavailable, match="ARK_API_KEY"):
        DoubaoLLMBackend().load()


def test_the_key_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch, ark: FakeArk) -> None:
    monkeypatch.setenv("ARK_API_KEY", "from-the-environment")
    backend = DoubaoLLMBackend(base_url=ark.base_url)
    backend.load()
    asyncio.run(backend.run(LLMRequest(prompt="hello")))
    assert ark.requests[0].headers["authorization"] == "Bearer from-the-environment"


def test_doubao_chats_whole_and_streamed(ark: FakeArk) -> None:
    backend = DoubaoLLMBackend(api_key="k", base_url=ark.base_url)
    backend.load()
    request = LLMRequest(messages=[ChatMessage("user", "say something")], max_tokens=4)

    async def both() -> tuple[LLMResult, list[str]]:  # one event loop, as in a replica: the client keeps its pool
        return await backend.run(request), [chunk.text async for chunk in backend.stream(request)]

    result, streamed = asyncio.run(both())
    assert (result.text, result.completion_tokens, result.prompt_tokens) == ("a small fake answer", 4, 2)
    assert "".join(streamed) == "a small fake answer"
    assert ark.requests[0].body["model"] == "doubao-seed-1-6-flash-250828"


def test_seedream_makes_pngs_of_the_nearest_size(ark: FakeArk) -> None:
    backend = SeedreamImageBackend(api_key="k", base_url=ark.base_url)
    backend.load()
    result = asyncio.run(backend.run(ImageRequest(prompt="a lantern", width=256, height=300, n=2, seed=5)))
    assert (result.width, result.height, len(result.images)) == (512, 512, 2)
    assert media.image_info(result.images[0]).content_type == "image/png"
    assert [r.body["seed"] for r in ark.requests] == [5, 6]


def test_seedance_creates_polls_and_downloads(ark: FakeArk) -> None:
    result = asyncio.run(seedance(ark).run(VIDEO))
    assert (result.width, result.height, result.frames) == (64, 36, 24)
    body = ark.requests[0].body
    assert (body["duration"], body["ratio"], body["content"][0]["text"]) == (5, "16:9", VIDEO.prompt)


def test_seedance_sends_a_reference_image_as_the_first_frame(ark: FakeArk) -> None:
    png = media.thumbnail_png(sample_mp4())
    asyncio.run(seedance(ark).run(VideoRequest(prompt="", image=png, width=64, height=64)))
    (image,) = ark.requests[0].body["content"]
    assert image["role"] == "first_frame" and image["image_url"]["url"].startswith("data:image/png;base64,")


def test_a_failed_task_is_a_backend_failure(ark: FakeArk) -> None:
    ark.task_mode = "fail"
    with pytest.raises(BackendFailure, match="the fake ark failed"):
        asyncio.run(seedance(ark).run(VIDEO))


def test_a_hung_task_times_out_and_the_chain_fails_over(ark: FakeArk) -> None:
    ark.task_mode = "hang"
    with pytest.raises(BackendTimeout):
        asyncio.run(seedance(ark, deadline_s=0.2).run(VIDEO))
    chain = BackendChain([seedance(ark, deadline_s=0.2), Spare()])
    chain.load()
    assert asyncio.run(chain.run(VIDEO)).model == "spare-model"


def test_a_429_fails_over(ark: FakeArk) -> None:
    ark.fail_status = 429
    with pytest.raises(BackendFailure, match="429"):
        asyncio.run(seedance(ark).run(VIDEO))
    chain = BackendChain([seedance(ark), Spare()])
    chain.load()
    assert asyncio.run(chain.run(VIDEO)).model == "spare-model"
