"""The `text2video` descriptor: params and their bounds, requests, cost, and its place in workflows
(text in, optionally one image from a parent; a video feeds no other service); and how the executor
writes the progress of a modality that reports it (`WorkflowExecutor._streamed`)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from pydantic import ValidationError

import modalities
from dag.errors import InvalidWorkflow
from dag.executor import PROGRESS_WRITE_S, WorkflowExecutor
from dag.records import new_record
from dag.spec import WorkflowSubmission
from dag.validate import plan_workflow
from deployments.types import InvalidInput, Progress, VideoRequest, VideoResult
from modalities.base import VIDEO, Output, kind_of
from modalities.text2video import MODALITY

PNG = Output(b"\x89PNG...", "image/png")


def test_it_is_a_service_that_reports_progress() -> None:
    assert "text2video" in modalities.SERVICES
    assert modalities.find("TEXT2VIDEO") is MODALITY
    assert MODALITY.reports_progress and not modalities.get("text2pic").reports_progress
    assert kind_of("video/mp4") == VIDEO == MODALITY.produces


@pytest.mark.parametrize(
    "params",
    [{"seconds": 0}, {"seconds": 61}, {"width": 8}, {"height": 4000}, {"fps": 0}, {"steps": 101}, {"size": "1x1"}],
)
def test_out_of_range_params_are_refused(params: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        MODALITY.validate_params(params)


def test_a_request_from_text_and_an_image() -> None:
    params = MODALITY.validate_params({"seconds": 2, "width": 64, "height": 96, "steps": 3, "seed": 9})
    request = MODALITY.build_request(params, "waves", [PNG])
    assert request == VideoRequest(prompt="waves", seconds=2, width=64, height=96, steps=3, seed=9, image=PNG.data)
    assert request.frames == 16
    with pytest.raises(InvalidInput):
        MODALITY.build_request(params, " ", [])


def test_the_cost_is_frames_by_steps_by_megapixels_and_the_usage_what_was_made() -> None:
    request = VideoRequest(prompt="x", seconds=2, fps=8, width=500, height=200, steps=10)  # 16 frames
    assert MODALITY.requested_usage(request).megapixels == pytest.approx(16 * 0.1)
    costs = modalities.cost_models()
    assert costs.estimate("text2video", MODALITY.requested_usage(request)) == pytest.approx(16 * 0.1 * 10)
    result = VideoResult(video=b"", width=64, height=64, frames=17, fps=8, steps=4, model="m")
    used = MODALITY.used(request, result)
    assert (used.steps, used.megapixels) == (4, pytest.approx(17 * 64 * 64 / 1e6))
    assert MODALITY.details(result)["seconds"] == pytest.approx(17 / 8)
    assert MODALITY.output(result).content_type == "video/mp4"


def plan(nodes: dict[str, Any], edges: list[dict[str, str]]) -> Any:
    return plan_workflow(WorkflowSubmission.model_validate({"nodes": nodes, "edges": edges}))


def test_an_image_parent_makes_it_image_to_video() -> None:
    made = plan(
        {"paint": {"service": "text2pic", "prompt": "a boat"}, "move": {"service": "text2video", "prompt": "sail"}},
        [{"from": "paint", "to": "move"}],
    )
    assert made.order == ["paint", "move"]


def test_it_takes_at_most_one_image() -> None:
    with pytest.raises(InvalidWorkflow, match="at most one image"):
        plan(
            {
                "a": {"service": "text2pic", "prompt": "x"},
                "b": {"service": "text2pic", "prompt": "y"},
                "move": {"service": "text2video", "prompt": "z"},
            },
            [{"from": "a", "to": "move"}, {"from": "b", "to": "move"}],
        )


@pytest.mark.parametrize(("source", "target"), [("text2video", "pic2text"), ("tts", "text2video")])
def test_a_video_feeds_nothing_and_it_takes_no_audio(source: str, target: str) -> None:
    with pytest.raises(InvalidWorkflow, match="cannot consume"):
        plan(
            {"a": {"service": source, "prompt": "x"}, "b": {"service": target, "prompt": "y"}},
            [{"from": "a", "to": "b"}],
        )


# ---------------------------------------------------------------- its progress, as the executor writes it


class SteppingCall:
    """A text2video call's stream, as the executor's handle gives it: `Progress` chunks at set
    moments (seconds from the start), then the result."""

    def __init__(self, steps: list[tuple[float, int]], result: object, total: int) -> None:
        self.steps, self.result, self.total = steps, result, total
        self.cancelled = False

    def options(self, stream: bool) -> SteppingCall:
        return self

    @property
    def stream(self) -> SteppingCall:
        return self

    def remote(self, request: object) -> AsyncIterator[object]:
        return self._chunks()

    async def _chunks(self) -> AsyncIterator[object]:
        started = time.monotonic()
        for at, step in self.steps:
            await asyncio.sleep(max(0.0, started + at - time.monotonic()))
            yield Progress(step, self.total)
        yield self.result


class Writes:
    """Stands in for the executor's `_write`: what the progress events said, in order."""

    def __init__(self) -> None:
        self.progress: list[int] = []

    def _write(self, record: object, event: dict[str, Any]) -> None:
        self.progress.append(event["progress"])


def stream_through_executor(call: SteppingCall) -> tuple[object, list[int], dict[str, Any]]:
    made = plan({"move": {"service": "text2video", "prompt": "x"}}, [])
    record = new_record("acme", "video_1", "task", None, "default", made, {})
    writes = Writes()
    result = asyncio.run(WorkflowExecutor._streamed(writes, record, "move", call, None))  # type: ignore[arg-type]
    return result, writes.progress, record.node("move")


def test_a_step_within_the_write_interval_is_written_when_the_interval_ends() -> None:
    # Steps 1 and 2 of 4 come together; step 3 comes well after the interval: step 2 must not wait for it.
    call = SteppingCall([(0.0, 1), (0.01, 2), (3 * PROGRESS_WRITE_S, 3), (3 * PROGRESS_WRITE_S, 4)], "video", 4)
    result, progress, node = stream_through_executor(call)
    assert result == "video"
    assert progress == [25, 50, 75, 100]
    assert node["progress"] == 100


def test_steps_that_come_faster_than_the_interval_are_written_at_most_once_per_interval() -> None:
    call = SteppingCall([(0.0, step) for step in range(1, 11)], "video", 10)
    _, progress, _ = stream_through_executor(call)
    assert progress == [10, 100]  # the first at once, the last always; the ones between were overtaken
