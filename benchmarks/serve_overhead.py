"""What the platform adds to a model call: HTTP + Serve path against the same backend in-process.

For each modality it times N requests through the running platform (HTTP, the ingress, the
scheduler's admission, a Serve handle call to the modality replica) and N calls of the same backend
built in this process, alternating the two so that both see the same machine load. Beside them it
times Serve's own floor for that path, in the same cluster: HTTP, a bare FastAPI ingress and a
handle call to a second deployment that answers at once (no auth, no admission, no model). It also
adds up the memory of the Ray cluster with all the CPU models loaded.

    .venv/bin/python benchmarks/serve_overhead.py [--requests 30]

Last line: {"overhead_ms": {"llm": {"p50": ms, "p95": ms}, ...}, "rss_mb": N, "serve_floor_ms":
{"p50": ms, "p95": ms}, "rss_sum_mb": N}, for each service with a short call (the first
issue's five, and `embed`; `text2video`'s long calls are measured by benchmarks/video.py).
`rss_mb` is the cluster's resident memory with each shared page counted once (the sum of the
processes' proportional set sizes, PSS): the physical memory it takes. `rss_sum_mb` adds up each
process's RSS, which counts the pages the model processes share (the torch and Python libraries)
once per process, so it overstates the total.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import statistics
import time
from collections.abc import Callable
from typing import Any

import httpx
import psutil
from _platform import client as platform_client  # noqa: I001  (beside this file; sets up the path and env)
from _platform import start_platform
from fastapi import Body, FastAPI
from PIL import Image
from ray import serve
from ray.serve.handle import DeploymentHandle

from deployments.serving import build_backend
from deployments.types import (
    CaptionRequest,
    ChatMessage,
    EmbedRequest,
    ImageRequest,
    LLMRequest,
    SpeechRequest,
    TranscribeRequest,
)

SENTENCE = "the quick brown fox jumps over the lazy dog"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


def timed(call: Callable[[], Any]) -> float:
    """Milliseconds one call takes."""
    start = time.perf_counter()
    call()
    return (time.perf_counter() - start) * 1000


def sample_png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), (40, 160, 90)).save(buffer, format="PNG")
    return buffer.getvalue()


def cases(wav: bytes) -> dict[str, tuple[Any, Callable[[httpx.Client], httpx.Response]]]:
    """Per service: the backend request, and the same request through HTTP."""
    png = sample_png()
    return {
        "llm": (
            LLMRequest(messages=[ChatMessage("user", "Say OK.")], max_tokens=8, temperature=0, seed=1),
            lambda c: c.post(
                "/v1/chat/completions",
                json={
                    "model": "llm",
                    "messages": [{"role": "user", "content": "Say OK."}],
                    "max_tokens": 8,
                    "temperature": 0,
                    "seed": 1,
                },
            ),
        ),
        "stt": (
            TranscribeRequest(audio=wav),
            lambda c: c.post(
                "/v1/audio/transcriptions", files={"file": ("a.wav", wav, "audio/wav")}, data={"model": "stt"}
            ),
        ),
        "tts": (
            SpeechRequest(text="Hello there."),
            lambda c: c.post(
                "/v1/audio/speech", json={"model": "tts", "input": "Hello there.", "response_format": "wav"}
            ),
        ),
        "pic2text": (
            CaptionRequest(images=[png]),
            lambda c: c.post("/v1/images/captions", files={"file": ("a.png", png, "image/png")}),
        ),
        "embed": (
            EmbedRequest(texts=[SENTENCE]),
            lambda c: c.post("/v1/embeddings", json={"model": "embed", "input": SENTENCE}),
        ),
        "text2pic": (
            ImageRequest(prompt="a green field", width=64, height=64, steps=2, seed=1),
            lambda c: c.post(
                "/v1/images/generations", json={"prompt": "a green field", "size": "64x64", "steps": 2, "seed": 1}
            ),
        ),
    }


def cluster_memory_mb() -> tuple[float, float]:
    """The memory of this process's children (the Ray cluster it started, every replica included):
    the sum of their proportional set sizes, and the plain sum of their RSS."""
    pss = rss = 0
    for child in psutil.Process().children(recursive=True):
        try:
            memory = child.memory_full_info()
        except psutil.NoSuchProcess:
            continue
        pss += memory.pss
        rss += memory.rss
    return pss / 1024 / 1024, rss / 1024 / 1024


floor_app = FastAPI()


@serve.deployment(max_ongoing_requests=5, ray_actor_options={"num_cpus": 0.1})
class Echo:
    async def run(self, value: Any) -> Any:
        return value


@serve.deployment(ray_actor_options={"num_cpus": 0.1})
@serve.ingress(floor_app)
class FloorIngress:
    """The same two Serve hops as a model call, with nothing of the platform's own on them."""

    def __init__(self, echo: DeploymentHandle) -> None:
        self.echo = echo.options(_by_reference=False)  # the transport the platform's ingress uses

    # Builtin annotations only: Serve pickles this class by value, and a string annotation naming
    # an imported class would not resolve in the replica.
    @floor_app.post("/echo")
    async def echo_route(self, body: dict = Body()) -> dict:  # noqa: B008  (FastAPI's idiom)
        return {"echo": await self.echo.run.remote(body)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=30)
    parser.add_argument("--port", type=int, default=8311)
    args = parser.parse_args()

    import ray

    base = start_platform(args.port)
    client = platform_client(base)

    wav = client.post("/v1/audio/speech", json={"model": "tts", "input": SENTENCE, "response_format": "wav"}).content
    pss_mb, rss_sum_mb = cluster_memory_mb()
    serve.run(FloorIngress.bind(Echo.bind()), name="floor", route_prefix="/floor")

    from serve_app.settings import Settings

    settings = Settings.load({})
    loop = asyncio.new_event_loop()
    rows: dict[str, dict[str, float]] = {}
    for service, (request, over_http) in cases(wav).items():
        backend = build_backend(settings.service_config(service).backends[0])
        backend.load()
        for _ in range(2):  # warm both paths
            loop.run_until_complete(backend.run(request))
            over_http(client).raise_for_status()
        direct, served = [], []
        for _ in range(args.requests):
            start = time.perf_counter()
            loop.run_until_complete(backend.run(request))
            direct.append((time.perf_counter() - start) * 1000)
            start = time.perf_counter()
            over_http(client).raise_for_status()
            served.append((time.perf_counter() - start) * 1000)
        rows[service] = {
            "direct_p50": statistics.median(direct),
            "direct_p95": percentile(direct, 0.95),
            "served_p50": statistics.median(served),
            "served_p95": percentile(served, 0.95),
            "p50": statistics.median(served) - statistics.median(direct),
            "p95": percentile(served, 0.95) - percentile(direct, 0.95),
        }
        del backend

    print(
        f"{'service':<10} {'direct p50':>11} {'served p50':>11} {'overhead p50':>13} {'direct p95':>11} "
        f"{'served p95':>11} {'overhead p95':>13}"
    )
    for service, r in rows.items():
        print(
            f"{service:<10} {r['direct_p50']:>9.1f}ms {r['served_p50']:>9.1f}ms {r['p50']:>11.1f}ms "
            f"{r['direct_p95']:>9.1f}ms {r['served_p95']:>9.1f}ms {r['p95']:>11.1f}ms"
        )
    floor = [
        timed(lambda: client.post("/floor/echo", json={"input": SENTENCE}).raise_for_status())
        for _ in range(args.requests)
    ]
    floor_p50, floor_p95 = statistics.median(floor), percentile(floor, 0.95)
    print(
        f"Serve's floor (HTTP, a bare FastAPI ingress, a handle call that answers at once): "
        f"p50 {floor_p50:.1f} ms, p95 {floor_p95:.1f} ms ({args.requests} requests each)"
    )
    print(
        f"Ray cluster with the CPU models loaded: {pss_mb:.0f} MB resident, each shared page once "
        f"(PSS); {rss_sum_mb:.0f} MB as a plain sum of the processes' RSS"
    )
    result = {
        "overhead_ms": {s: {"p50": round(rows[s]["p50"], 2), "p95": round(rows[s]["p95"], 2)} for s in rows},
        "rss_mb": round(pss_mb),
        "serve_floor_ms": {"p50": round(floor_p50, 2), "p95": round(floor_p95, 2)},
        "rss_sum_mb": round(rss_sum_mb),
    }
    print(json.dumps(result))
    ray.shutdown()


if __name__ == "__main__":
    main()
