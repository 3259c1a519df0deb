"""Gemini Veo against a fake server at the HTTP level: success, a failed operation, a hung one (timeout,
then failover), a 429 (failover), and image to video."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from deployments import media
from deployments.failover import BackendChain
from deployments.types import BackendFailure, BackendTimeout, VideoRequest, VideoResult
from deployments.veo import VeoVideoBackend
from tests.fakes.veo_server import FakeVeo, sample_mp4

REQUEST = VideoRequest(prompt="a kite over the sea", seconds=5, width=1280, height=720)


@pytest.fixture()
def veo() -> Iterator[FakeVeo]:
    with FakeVeo() as fake:
        yield fake


def backend(fake: FakeVeo, deadline_s: float = 10.0) -> VeoVideoBackend:
    made = VeoVideoBackend(api_key="test-key", base_url=fake.url, poll_s=0.01, deadline_s=deadline_s)
    made.load()
    return made


class Spare:
    """A second backend of the chain, to see failover land."""

    name = "spare"
    model = "spare-model"

    def load(self) -> None:
        pass

    async def run(self, request: VideoRequest) -> VideoResult:
        return VideoResult(video=sample_mp4(), width=64, height=36, frames=24, fps=24, steps=1)


def test_a_video_is_made_polled_and_fetched(veo: FakeVeo) -> None:
    result = asyncio.run(backend(veo).run(REQUEST))
    assert (result.width, result.height, result.frames, result.fps) == (64, 36, 24, 24)
    assert result.model == "veo-3.0-fast-generate-001"
    assert media.video_info(result.video).frames == 24
    (start,) = [r for r in veo.requests if r.path.endswith(":predictLongRunning")]
    assert start.body["instances"][0]["prompt"] == REQUEST.prompt
    parameters = start.body["parameters"]
    assert (parameters["durationSeconds"], parameters["aspectRatio"]) == (4, "16:9")  # 5 s: the nearest of 4, 6, 8
    assert veo.operations and all(polls == 3 for polls in veo.operations.values())


def test_a_reference_image_goes_with_the_prompt(veo: FakeVeo) -> None:
    png = media.thumbnail_png(sample_mp4())
    asyncio.run(backend(veo).run(VideoRequest(prompt="it moves", image=png, width=720, height=1280)))
    instance = veo.requests[0].body["instances"][0]
    assert instance["image"]["mimeType"] == "image/png"
    assert veo.requests[0].body["parameters"]["aspectRatio"] == "9:16"


def test_a_failed_operation_is_a_backend_failure(veo: FakeVeo) -> None:
    veo.mode = "fail"
    with pytest.raises(BackendFailure, match="the fake veo failed"):
        asyncio.run(backend(veo).run(REQUEST))


def test_a_hung_operation_times_out_and_the_chain_fails_over(veo: FakeVeo) -> None:
    veo.mode = "hang"
    with pytest.raises(BackendTimeout):
        asyncio.run(backend(veo, deadline_s=0.2).run(REQUEST))
    chain = BackendChain([backend(veo, deadline_s=0.2), Spare()])
    chain.load()
    assert asyncio.run(chain.run(REQUEST)).model == "spare-model"


def test_a_429_fails_over(veo: FakeVeo) -> None:
    veo.fail_status = 429
    chain = BackendChain([backend(veo), Spare()])
    chain.load()

    async def streamed() -> list[object]:
        return [chunk async for chunk in chain.stream(REQUEST)]

    (result,) = asyncio.run(streamed())  # as the replica streams a video: one chunk, the whole result
    assert isinstance(result, VideoResult) and result.model == "spare-model"
    assert chain.health()[0]["failures"] == 1
