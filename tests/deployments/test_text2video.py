"""The diffusers video backends: shapes, the tiny random pipeline end to end (progress, cancellation,
image to video, the MP4 it makes), and the hub one offline."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import pytest

from deployments import media
from deployments.text2pic import SizeRange
from deployments.text2video import LTXVideoBackend, TinyRandomVideoBackend, VideoShape
from deployments.types import InvalidInput, ModelUnavailable, Progress, VideoRequest, VideoResult


@pytest.fixture(scope="module")
def tiny() -> TinyRandomVideoBackend:
    backend = TinyRandomVideoBackend()
    backend.load()
    return backend


def collect(backend: TinyRandomVideoBackend, request: VideoRequest) -> list[Any]:
    async def run() -> list[Any]:
        return [chunk async for chunk in backend.stream(request)]

    return asyncio.run(run())


# ---------------------------------------------------------------- shapes


@pytest.mark.parametrize(
    ("seconds", "size", "made"),
    [
        (2.0, (64, 64), (64, 64, 17)),
        (4.0, (720, 1280), (256, 256, 33)),  # beyond the range: the largest it makes
        (1.0, (70, 50), (64, 64, 9)),
        (0.1, (1, 1), (32, 32, 1)),
        (0.7, (64, 64), (64, 64, 5)),  # 5.6 frames: the nearest 4k + 1 is 5
    ],
)
def test_a_request_becomes_the_nearest_video_the_backend_makes(
    seconds: float, size: tuple[int, int], made: tuple[int, int, int]
) -> None:
    shape = VideoShape(SizeRange(32, 256, 32), max_frames=33, frame_multiple=4, fps=8, max_steps=10)
    plan = shape.plan(VideoRequest(prompt="x", seconds=seconds, width=size[0], height=size[1], steps=50, seed=3))
    assert (plan.width, plan.height, plan.frames) == made
    assert plan.steps == 10
    assert plan.seed == 3


# ---------------------------------------------------------------- the tiny pipeline


def test_the_tiny_pipeline_makes_an_mp4_of_the_reported_shape_with_progress_to_100(
    tiny: TinyRandomVideoBackend,
) -> None:
    chunks = collect(tiny, VideoRequest(prompt="a cat on a skateboard", seconds=2, width=64, height=96, steps=6))
    *progress, result = chunks
    assert isinstance(result, VideoResult)
    assert all(isinstance(chunk, Progress) for chunk in progress)
    steps = [chunk.step for chunk in progress]
    assert steps == list(range(0, 7))
    assert [chunk.percent for chunk in progress][-1] == 100
    assert (result.width, result.height, result.frames, result.fps, result.steps) == (64, 96, 17, 8, 6)
    assert result.seconds == pytest.approx(17 / 8)
    assert result.model == "tiny-random-ltx-video"
    info = media.video_info(result.video)
    assert (info.width, info.height, info.frames, info.fps) == (64, 96, 17, 8.0)
    assert media.image_info(media.thumbnail_png(result.video)).width == 64
    sheet = media.image_info(media.spritesheet_png(result.video))
    assert (sheet.width, sheet.height) == (4 * 64, 4 * 96)  # 16 of the 17 frames, 4 a row


def test_the_same_seed_makes_the_same_video(tiny: TinyRandomVideoBackend) -> None:
    request = VideoRequest(prompt="waves", seconds=1, width=64, height=64, steps=2, seed=7)
    first, second = (asyncio.run(tiny.run(request)) for _ in range(2))
    pixels = [[frame.tobytes() for frame in media.video_frames(r.video)] for r in (first, second)]
    assert pixels[0] == pixels[1]


def test_an_image_makes_it_image_to_video(tiny: TinyRandomVideoBackend) -> None:
    png = media.thumbnail_png(
        asyncio.run(tiny.run(VideoRequest(prompt="x", seconds=1, width=64, height=64, steps=1))).video
    )
    result = asyncio.run(tiny.run(VideoRequest(prompt="", image=png, seconds=1, width=64, height=64, steps=2)))
    assert (result.frames, result.width) == (9, 64)


@pytest.mark.parametrize(
    "request_",
    [VideoRequest(prompt="  "), VideoRequest(prompt="x", steps=0), VideoRequest(prompt="x", image=b"not an image")],
)
def test_bad_input_is_refused(tiny: TinyRandomVideoBackend, request_: VideoRequest) -> None:
    with pytest.raises(InvalidInput):
        asyncio.run(tiny.run(request_))


def test_a_cancelled_call_stops_the_pipeline_within_a_step(
    tiny: TinyRandomVideoBackend, caplog: pytest.LogCaptureFixture
) -> None:
    request = VideoRequest(prompt="a long one", seconds=4, width=128, height=128, steps=40)
    seen: list[Progress] = []

    async def scenario() -> float:
        async def consume() -> None:
            async for chunk in tiny.stream(request):
                seen.append(chunk)

        task = asyncio.create_task(consume())
        while len(seen) < 3:  # two steps done: the loop runs
            await asyncio.sleep(0.01)
        step_s = 0.0 if len(seen) < 3 else 1.0
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        cancelled_at = time.monotonic()
        while "stopped after step" not in caplog.text:
            await asyncio.sleep(0.01)
            assert time.monotonic() - cancelled_at < 10, "the pipeline did not stop"
        return step_s

    with caplog.at_level(logging.INFO, logger="deployments.text2video"):
        asyncio.run(scenario())
    stopped = next(r for r in caplog.records if "stopped after step" in r.getMessage())
    last_step = int(stopped.getMessage().split("after step ")[1].split()[0])
    assert last_step <= seen[-1].step + 1  # at most the step that was running when it was cancelled
    assert last_step < 40


# ---------------------------------------------------------------- the hub model


def test_the_hub_model_offline_is_unavailable_with_a_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    backend = LTXVideoBackend(model="Lightricks/LTX-Video", device="cpu", dtype="float32")
    with pytest.raises(ModelUnavailable, match="tiny_random"):
        backend.load()
