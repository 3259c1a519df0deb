"""A video outlives the restart of the executor that runs it.

The executor actor is killed while a video is denoising; Ray restarts it, and the successor runs
the video again from the state store (its steps start over: a replica's half-made latents are not
kept). The client, polling the video as usual, never sees it fail: it stays `queued` or
`in_progress`, its `progress` never goes down, and it ends `completed` with the whole video.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import openai
import pytest
import ray

from deployments import media
from tests.conftest import make_token
from tests.helpers import client, wait_restarted

pytestmark = pytest.mark.ray

# 64x64, 17 frames: small enough to make twice; 50 steps: still running when the kill lands.
VIDEO: Any = {"size": "64x64", "seconds": "2", "extra_body": {"steps": 50}}


def test_a_running_video_survives_the_restart_of_its_executor(platform_url: str) -> None:
    tenant = f"video-restart-{uuid.uuid4().hex[:6]}"
    videos = openai.OpenAI(base_url=f"{platform_url}/v1", api_key=make_token(tenant=tenant), max_retries=0).videos
    video = videos.create(prompt="a storm at sea", **VIDEO)
    deadline = time.monotonic() + 120
    while not (video.status == "in_progress" and video.progress > 0):
        assert time.monotonic() < deadline and video.status in ("queued", "in_progress"), video
        time.sleep(0.1)
        video = videos.retrieve(video.id)
    before_kill = video.progress
    assert before_kill < 100

    wait_restarted(ray.get_actor("labubu-workflows", namespace="labubu"))

    statuses: list[str] = []
    progress: list[int] = [before_kill]
    deadline = time.monotonic() + 240
    while video.status in ("queued", "in_progress"):
        assert time.monotonic() < deadline, video
        time.sleep(0.1)
        video = videos.retrieve(video.id)
        statuses.append(video.status)
        progress.append(video.progress)
    assert video.status == "completed", video
    assert set(statuses) <= {"queued", "in_progress", "completed"}, statuses  # never failed on the way
    assert progress == sorted(progress) and progress[-1] == 100, progress
    with client(platform_url, tenant) as http:
        task = http.get(f"/v1/tasks/{video.id}").json()
    assert task["attempts"] >= 2, task  # the successor ran it again: it was not lost, nor left running
    info = media.video_info(videos.download_content(video.id).content)
    assert (info.width, info.height, info.frames) == (64, 64, 17)
