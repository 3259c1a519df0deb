"""OpenAI's Videos API through real HTTP on the tiny-random video pipeline, with the official client:
create and poll, content, progress, cancellation that frees the grant, isolation, bad input, and
`text2video` as a task and as a workflow node (image to video)."""

from __future__ import annotations

import io
import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest
from PIL import Image

from dag.records import new_record
from dag.spec import WorkflowSubmission
from dag.validate import plan_workflow
from deployments import media
from serve_app.routes.videos import video_status
from tests.conftest import make_token

pytestmark = pytest.mark.ray

SMALL: Any = {"size": "64x64", "seconds": "2"}  # 17 frames at the fixture's 8 a second
LONG: Any = {"size": "128x128", "seconds": "4"}  # 33 frames: long enough to watch and to cancel


@pytest.fixture(scope="module")
def tenant() -> str:
    return f"video-{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module")
def client(platform_url: str, tenant: str) -> openai.OpenAI:
    token = make_token(tenant=tenant)
    return openai.OpenAI(base_url=f"{platform_url}/v1", api_key=token, timeout=120, max_retries=0)


@pytest.fixture(scope="module")
def http(platform_url: str, tenant: str) -> Iterator[httpx.Client]:
    headers = {"Authorization": f"Bearer {make_token(tenant=tenant)}"}
    with httpx.Client(base_url=platform_url, headers=headers, timeout=120) as session:
        yield session


@pytest.fixture(scope="module")
def admin(platform_url: str) -> Iterator[httpx.Client]:
    headers = {"Authorization": f"Bearer {make_token(role='admin')}"}
    with httpx.Client(base_url=platform_url, headers=headers, timeout=60) as session:
        yield session


@pytest.fixture(scope="module")
def finished(client: openai.OpenAI) -> Any:
    video = client.videos.create_and_poll(prompt="a red kite over the sea", extra_body={"steps": 4}, **SMALL)
    assert video.status == "completed", video
    return video


def png(width: int = 64, height: int = 64) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (200, 40, 40)).save(buffer, format="PNG")
    return buffer.getvalue()


def in_flight(admin: httpx.Client) -> int:
    return int(admin.get("/v1/admin/scheduler").json()["services"]["text2video"]["in_flight"])


# ---------------------------------------------------------------- the official client


def test_create_and_poll_completes_with_what_the_backend_made(finished: Any) -> None:
    assert finished.object == "video"
    assert finished.progress == 100
    assert finished.size == "64x64"
    assert finished.seconds == "2.125"  # 17 frames at 8 a second: the nearest the fixture makes
    assert finished.model == "tiny-random-ltx-video"
    assert finished.completed_at is not None and finished.completed_at >= finished.created_at
    assert finished.error is None


def test_download_content_decodes_to_the_reported_size_and_frames(client: openai.OpenAI, finished: Any) -> None:
    video = client.videos.download_content(finished.id).content
    info = media.video_info(video)
    assert f"{info.width}x{info.height}" == finished.size
    assert info.frames == round(float(finished.seconds) * info.fps) == 17
    thumbnail = client.videos.download_content(finished.id, variant="thumbnail").content
    assert media.image_info(thumbnail).content_type == "image/png"
    sheet = media.image_info(client.videos.download_content(finished.id, variant="spritesheet").content)
    assert (sheet.width, sheet.height) == (4 * 64, 4 * 64)


def test_retrieve_and_list(client: openai.OpenAI, finished: Any) -> None:
    assert client.videos.retrieve(finished.id).status == "completed"
    second = client.videos.create(prompt="another one", extra_body={"steps": 1}, **SMALL)
    listed = [v.id for v in client.videos.list(limit=1)]  # the client pages through with `after`
    assert listed[:2] == [second.id, finished.id]
    assert [v.id for v in client.videos.list(order="asc")][-2:] == [finished.id, second.id]
    client.videos.poll(second.id, poll_interval_ms=200)


def test_progress_follows_the_steps_never_goes_down_and_reaches_100(client: openai.OpenAI) -> None:
    video = client.videos.create(prompt="slow clouds", **LONG, extra_body={"steps": 16})
    seen: list[int] = []
    deadline = time.monotonic() + 120
    while video.status in ("queued", "in_progress"):
        assert time.monotonic() < deadline
        seen.append(video.progress)
        time.sleep(0.1)
        video = client.videos.retrieve(video.id)
    seen.append(video.progress)
    assert video.status == "completed"
    assert seen == sorted(seen)
    assert seen[-1] == 100
    assert len({p for p in seen if 0 < p < 100}) >= 2, seen  # real steps in between, not just 0 and 100


def test_deleting_a_running_video_stops_it_and_frees_its_grant(
    client: openai.OpenAI, http: httpx.Client, admin: httpx.Client
) -> None:
    video = client.videos.create(prompt="a long one", **LONG, extra_body={"steps": 50})
    deadline = time.monotonic() + 120
    while not (video.status == "in_progress" and video.progress > 0):
        assert time.monotonic() < deadline and video.status in ("queued", "in_progress"), video
        time.sleep(0.1)
        video = client.videos.retrieve(video.id)
    assert in_flight(admin) >= 1
    deleted = client.videos.delete(video.id)
    assert (deleted.id, deleted.deleted, deleted.object) == (video.id, True, "video.deleted")
    assert http.get(f"/v1/videos/{video.id}").status_code == 404
    deadline = time.monotonic() + 10
    while in_flight(admin):
        assert time.monotonic() < deadline, "the video's grant was not released"
        time.sleep(0.1)
    # The replica serves the next video. (That the deleted one's pipeline stops within a step is
    # tests/deployments/test_text2video.py's, counting the steps that ran.)
    assert client.videos.create_and_poll(prompt="next", extra_body={"steps": 1}, **SMALL).status == "completed"


def test_a_size_and_length_it_cannot_make_become_the_nearest_it_can(client: openai.OpenAI) -> None:
    video = client.videos.create_and_poll(prompt="a kite", size="70x50", seconds="1", extra_body={"steps": 1})
    assert video.status == "completed", video
    assert (video.size, video.seconds) == ("64x64", "1.125")  # sides of 32k, 8k + 1 frames at 8 a second
    info = media.video_info(client.videos.download_content(video.id).content)
    assert (info.width, info.height, info.frames) == (64, 64, 9)


def test_image_to_video_from_input_reference(client: openai.OpenAI) -> None:
    video = client.videos.create_and_poll(
        prompt="it moves", input_reference=("first.png", png(), "image/png"), extra_body={"steps": 2}, **SMALL
    )
    assert video.status == "completed"
    first = media.video_frames(client.videos.download_content(video.id).content, limit=1)[0]
    assert first.size == (64, 64)


@pytest.mark.parametrize(
    ("node", "cancel_requested", "status"),
    [
        ("pending", False, "queued"),
        ("queued", False, "queued"),  # again after an executor restart, or a retry
        ("running", False, "in_progress"),
        ("completed", False, "completed"),  # the video is stored: the workflow's final record adds nothing
        ("completed", True, "in_progress"),  # a delete raced it: it ends cancelled, not completed
    ],
)
def test_the_status_follows_the_node_while_the_task_runs(node: str, cancel_requested: bool, status: str) -> None:
    submission = WorkflowSubmission.model_validate({"nodes": {"task": {"service": "text2video", "prompt": "x"}}})
    record = new_record("acme", "video_1", "task", None, "default", plan_workflow(submission), {})
    record.data.update(status="running", cancel_requested=cancel_requested)
    record.node("task")["status"] = node
    assert video_status(record) == status


# ---------------------------------------------------------------- isolation and bad input


def test_another_tenants_video_is_a_404(platform_url: str, finished: Any) -> None:
    other = openai.OpenAI(base_url=f"{platform_url}/v1", api_key=make_token(tenant="someone-else"), max_retries=0)
    with pytest.raises(openai.NotFoundError):
        other.videos.retrieve(finished.id)
    with pytest.raises(openai.NotFoundError):
        other.videos.download_content(finished.id)
    with pytest.raises(openai.NotFoundError):
        other.videos.delete(finished.id)
    assert finished.id not in [v.id for v in other.videos.list()]


@pytest.mark.parametrize(
    ("form", "field"),
    [
        ({"seconds": "0"}, "seconds"),
        ({"seconds": "600"}, "seconds"),
        ({"seconds": "soon"}, "seconds"),
        ({"size": "99999x64"}, "size"),
        ({"size": "8x8"}, "size"),
        ({"size": "big"}, "size"),
    ],
)
def test_out_of_range_values_are_a_422(http: httpx.Client, form: dict[str, str], field: str) -> None:
    response = http.post("/v1/videos", data={"prompt": "x", **form}, files={"unused": ("", b"")})
    assert response.status_code == 422, response.text
    assert response.json()["error"]["details"][0]["field"] == field


def test_an_input_reference_that_is_not_an_image_is_a_400(http: httpx.Client) -> None:
    response = http.post(
        "/v1/videos", data={"prompt": "x"}, files={"input_reference": ("a.png", b"not an image", "image/png")}
    )
    assert response.status_code == 400, response.text
    assert response.json()["error"]["details"][0]["field"] == "input_reference"


def test_content_of_an_unfinished_or_unknown_video_is_a_404(http: httpx.Client) -> None:
    assert http.get("/v1/videos/video_000000000000000000000000/content").status_code == 404


# ---------------------------------------------------------------- tasks and workflows


def wait_final(http: httpx.Client, path: str) -> dict[str, Any]:
    deadline = time.monotonic() + 120
    while True:
        body = http.get(path).json()
        if body["status"] in ("completed", "failed", "cancelled"):
            return body
        assert time.monotonic() < deadline, body
        time.sleep(0.2)


def test_a_text2video_task_reports_progress_in_its_events(http: httpx.Client) -> None:
    params = {"width": 64, "height": 64, "seconds": 2, "steps": 8}
    task_id = http.post("/v1/tasks", json={"service": "text2video", "prompt": "rain", "params": params}).json()[
        "task_id"
    ]
    task = wait_final(http, f"/v1/tasks/{task_id}")
    assert task["status"] == "completed", task
    assert task["output"]["content_type"] == "video/mp4"
    assert task["result"]["frames"] == 17
    events = [
        json.loads(line[len("data: ") :])
        for line in http.get(f"/v1/tasks/{task_id}/events").text.splitlines()
        if line.startswith("data: ")
    ]
    progress = [e["progress"] for e in events if "progress" in e]
    assert progress == sorted(progress) and progress[-1] == 100
    output = http.get(f"/v1/tasks/{task_id}/output")
    assert output.headers["content-type"] == "video/mp4"
    assert media.video_info(output.content).frames == 17


def test_a_workflow_text2pic_to_text2video_is_image_to_video(http: httpx.Client) -> None:
    spec = {
        "nodes": {
            "paint": {"service": "text2pic", "prompt": "a lighthouse", "params": {"width": 64, "height": 64}},
            "animate": {
                "service": "text2video",
                "prompt": "waves crash",
                "params": {"width": 64, "height": 64, "seconds": 1, "steps": 2},
            },
        },
        "edges": [{"from": "paint", "to": "animate"}],
    }
    response = http.post("/v1/workflows", json=spec)
    assert response.status_code == 202, response.text
    workflow_id = response.json()["workflow_id"]
    workflow = wait_final(http, f"/v1/workflows/{workflow_id}")
    assert workflow["status"] == "completed", workflow
    video = http.get(f"/v1/workflows/{workflow_id}/outputs/animate").content
    assert media.video_info(video).frames == 9


def test_a_video_feeds_no_other_service(http: httpx.Client) -> None:
    spec = {
        "nodes": {"animate": {"service": "text2video", "prompt": "x"}, "caption": {"service": "pic2text"}},
        "edges": [{"from": "animate", "to": "caption"}],
    }
    response = http.post("/v1/workflows", json=spec)
    assert response.status_code == 400
    assert "video" in response.json()["error"]["message"]
