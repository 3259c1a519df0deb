"""Video figures on the tiny-random pipeline: the served overhead, and how far `progress` lags the steps.

(a) The same video (size, length, steps, seed) made by the `tiny_random` backend called directly in
    this process, and through `POST /v1/videos`, polled every 0.2 s from create to completed: the
    median of a few runs each, after one warm-up of each (the fixture builds its pipelines lazily).
(b) In each served run, when the video object first shows each step's percentage, against when that
    step ended (see `lags`); the median and the largest. The lag includes up to one poll interval.

    .venv/bin/python benchmarks/video.py [--runs 3] [--size 128x128] [--seconds 4] [--steps 12]

Last line: {"direct_s": D, "served_s": S, "ratio": S/D, "progress_lag_s": L, "progress_lag_max_s": M}
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from datetime import datetime
from typing import Any

import httpx
from _platform import client as platform_client  # noqa: I001  (beside this file; sets up the path and env)
from _platform import start_platform

from deployments.text2video import TinyRandomVideoBackend
from deployments.types import Progress, VideoRequest

POLL_S = 0.2


def direct_run(backend: TinyRandomVideoBackend, request: VideoRequest) -> tuple[float, dict[int, float]]:
    """The whole time, and each step's end as an offset from the start (percent -> seconds)."""

    async def run() -> tuple[float, dict[int, float]]:
        started = time.perf_counter()
        ends: dict[int, float] = {}
        async for chunk in backend.stream(request):
            if isinstance(chunk, Progress) and chunk.step:
                ends[chunk.percent] = time.perf_counter() - started
        return time.perf_counter() - started, ends

    return asyncio.run(run())


def parse(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def served_run(http: httpx.Client, form: dict[str, str]) -> tuple[float, str, list[tuple[float, int]]]:
    """Create to completed, the video id, and the (wall-clock time, progress) of each poll."""
    started = time.perf_counter()
    video = http.post("/v1/videos", data=form, files={"unused": ("", b"")}).raise_for_status().json()
    seen: list[tuple[float, int]] = []
    while video["status"] in ("queued", "in_progress"):
        time.sleep(POLL_S)
        video = http.get(f"/v1/videos/{video['id']}").json()
        seen.append((time.time(), int(video["progress"])))
    if video["status"] != "completed":
        raise RuntimeError(f"the video failed: {video}")
    return time.perf_counter() - started, video["id"], seen


def lags(
    http: httpx.Client, video_id: str, seen: list[tuple[float, int]], ends: dict[int, float], direct_s: float
) -> list[float]:
    """For each step, when a poll first showed it, minus when it ended. The replica's steps are not
    timed from outside: a step ends at the node's `started_at` plus its offset in the direct run,
    scaled by how long this run's call took against the direct one (a shared machine's speed varies
    from run to run; the steps' share of the whole does not)."""
    task = http.get(f"/v1/tasks/{video_id}").json()
    started, finished = parse(task["started_at"]), parse(task["finished_at"])
    scale = (finished - started) / direct_s
    first_seen: dict[int, float] = {}
    for at, percent in seen:
        for step_percent in ends:
            if percent >= step_percent:
                first_seen.setdefault(step_percent, at)
    return [first_seen[p] - (started + ends[p] * scale) for p in first_seen]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--size", default="128x128")
    parser.add_argument("--seconds", default="4")
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--port", type=int, default=8766)
    options = parser.parse_args()
    width, height = (int(side) for side in options.size.split("x"))
    request = VideoRequest(
        prompt="a lighthouse in a storm",
        seconds=float(options.seconds),
        width=width,
        height=height,
        steps=options.steps,
        seed=1,
    )
    backend = TinyRandomVideoBackend()
    backend.load()
    direct_run(backend, request)  # warm-up: builds the pipelines
    direct = [direct_run(backend, request) for _ in range(options.runs)]
    direct_s = statistics.median(d for d, _ in direct)
    ends_s, ends = direct[len(direct) // 2]  # one run's step ends, and its whole time

    base = start_platform(options.port)
    form = {
        "prompt": request.prompt,
        "size": options.size,
        "seconds": options.seconds,
        "steps": str(options.steps),
        "seed": "1",
    }
    with platform_client(base) as http:
        served_run(http, form)  # warm-up: the replica builds its pipelines
        served: list[float] = []
        all_lags: list[float] = []
        for _ in range(options.runs):
            took, video_id, seen = served_run(http, form)
            served.append(took)
            all_lags += lags(http, video_id, seen, ends, ends_s)
    served_s = statistics.median(served)
    result: dict[str, Any] = {
        "direct_s": round(direct_s, 3),
        "served_s": round(served_s, 3),
        "ratio": round(served_s / direct_s, 3),
        "progress_lag_s": round(statistics.median(all_lags), 3) if all_lags else None,
        "progress_lag_max_s": round(max(all_lags), 3) if all_lags else None,
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
