"""The Serve controller's memory over time: does `serve.status()` grow it, and does it level off?
(Its call to the controller, `get_serve_details`, is the one `serve_app/capacity.py` makes every 2 s.)

Each mode is a fresh local Ray cluster running an application shaped like the platform's (an
ingress and seven model deployments with the platform's Serve options, answering at once), one
after the other in one run:

- `idle`: the application and nothing else, for `--duration-s`;
- `status`: the same, with `serve.status()` called every `--status-every-s` (0.1 s: twenty times
  the capacity follower's rate, so one run stands for `duration × 20` of following).

Every `--sample-s` the controller's resident memory is read (psutil, by the pid the controller
gives through Ray's `__ray_call__`). Inside the controller, tracemalloc (started the same way once
the application is up) gives, at the end, the Python allocation sites that grew the most, and the
growth of Python's own heap, against RSS: what RSS gains that Python does not hold is the
allocator's (arenas not given back), not a leak of objects.

    .venv/bin/python benchmarks/memory.py [--duration-s 180] [--modes idle,status]

Last line: {"controller_growth_mb": {mode: x}, "python_heap_growth_mb": {mode: x}, "status_calls": n,
"growth_per_1000_status_calls_mb": x}
"""

from __future__ import annotations

import argparse
import json
import os
import threading
import time
import tracemalloc
from typing import Any

import psutil
from _platform import SECRET  # noqa: F401  (beside this file; sets up the path and env)

TRACE_FRAMES = 8
CONTROLLER_NAME = "SERVE_CONTROLLER_ACTOR"
SERVE_NAMESPACE = "serve"
SERVICES = ("llm", "stt", "tts", "pic2text", "text2pic", "embed", "text2video")


# ------------------------------------------------- run inside the controller (through __ray_call__)


def _pid(_: Any) -> int:
    return os.getpid()


def start_trace(controller: Any) -> None:
    tracemalloc.start(TRACE_FRAMES)
    controller._labubu_baseline = tracemalloc.take_snapshot()


def traced_growth(controller: Any, top: int) -> dict[str, Any]:
    """Since `start_trace`: Python's heap growth (MB), tracemalloc's own memory (MB, part of the
    RSS that is not the controller's), and the `top` sites that grew the most (MB, blocks, frames)."""
    snapshot = tracemalloc.take_snapshot().filter_traces([tracemalloc.Filter(False, tracemalloc.__file__)])
    diff = snapshot.compare_to(controller._labubu_baseline, "traceback")
    return {
        "python_mb": sum(stat.size_diff for stat in diff) / 2**20,
        "tracing_mb": tracemalloc.get_tracemalloc_memory() / 2**20,
        "sites": [(stat.size_diff / 2**20, stat.count_diff, where(stat.traceback)) for stat in diff[:top]],
    }


def print_sites(traced: dict[str, Any]) -> None:
    for mb, count, frames in traced["sites"]:
        print(f"  {mb * 1024:+9.1f} KB {count:+7d} blocks  {frames}")


def where(traceback: tracemalloc.Traceback) -> str:
    """The innermost frames of an allocation, innermost first, paths from the package."""
    frames = list(traceback)[::-1][:4]
    return " <- ".join(f"{frame.filename.split('site-packages/')[-1]}:{frame.lineno}" for frame in frames)


# ---------------------------------------------------------------------------------- the app


def shaped_app() -> Any:
    """An ingress holding handles to seven deployments, with the platform's Serve options."""
    from ray import serve

    @serve.deployment(
        max_ongoing_requests=3,
        ray_actor_options={"num_cpus": 0.01},
        health_check_period_s=10,
        graceful_shutdown_timeout_s=30,
        logging_config={"encoding": "JSON"},
    )
    class Model:
        def __call__(self, request: Any) -> Any:
            return request

    @serve.deployment(max_ongoing_requests=200, ray_actor_options={"num_cpus": 0.01})
    class Ingress:
        def __init__(self, **handles: Any) -> None:
            self.handles = handles

        async def __call__(self, request: Any) -> str:
            return "ok"

    ingress: Any = Ingress  # serve.Deployments once decorated; mypy sees the classes
    model: Any = Model
    return ingress.bind(**{s: model.options(name=s).bind() for s in SERVICES})


def soak(mode: str, args: argparse.Namespace) -> dict[str, Any]:
    import ray
    from ray import serve

    ray.init(address="local", include_dashboard=False, _node_ip_address="127.0.0.1", log_to_driver=False)
    serve.start(http_options={"host": "127.0.0.1", "port": args.port})
    serve.run(shaped_app(), name="labubu", route_prefix="/")
    controller = ray.get_actor(CONTROLLER_NAME, namespace=SERVE_NAMESPACE)
    process = psutil.Process(ray.get(controller.__ray_call__.remote(_pid)))
    time.sleep(args.settle_s)  # the deployments' first health checks and metrics
    ray.get(controller.__ray_call__.remote(start_trace))

    stop = threading.Event()
    calls = 0

    def follow() -> None:  # what capacity.py does, faster
        nonlocal calls
        while not stop.wait(args.status_every_s):
            serve.status()
            calls += 1

    follower = threading.Thread(target=follow) if mode == "status" else None
    if follower:
        follower.start()
    samples: list[tuple[float, float]] = []
    start = time.monotonic()
    while (elapsed := time.monotonic() - start) < args.duration_s:
        samples.append((elapsed, process.memory_info().rss / 2**20))
        time.sleep(args.sample_s)
    stop.set()
    if follower:
        follower.join()
    samples.append((time.monotonic() - start, process.memory_info().rss / 2**20))
    traced = ray.get(controller.__ray_call__.remote(traced_growth, args.top))
    serve.shutdown()
    ray.shutdown()
    return {"mode": mode, "samples": samples, "calls": calls, "traced": traced}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--modes", default="idle,status")
    parser.add_argument("--duration-s", type=float, default=180.0)
    parser.add_argument("--status-every-s", type=float, default=0.1)
    parser.add_argument("--sample-s", type=float, default=10.0)
    parser.add_argument("--settle-s", type=float, default=20.0)
    parser.add_argument("--top", type=int, default=8)
    parser.add_argument("--port", type=int, default=8314)
    args = parser.parse_args()

    results = [soak(mode, args) for mode in args.modes.split(",")]
    print(f"Serve controller RSS (MB) over {args.duration_s:g} s, sampled every {args.sample_s:g} s")
    print(f"{'t s':>6}" + "".join(f"{r['mode']:>10}" for r in results))
    for i in range(max(len(r["samples"]) for r in results)):
        row = [r["samples"][i] if i < len(r["samples"]) else None for r in results]
        at = next(s[0] for s in row if s)
        print(f"{at:>6.0f}" + "".join(f"{s[1]:>10.1f}" if s else f"{'':>10}" for s in row))
    growth, python = {}, {}
    for r in results:
        mode, traced = r["mode"], r["traced"]
        growth[mode] = round(r["samples"][-1][1] - r["samples"][0][1], 1)
        python[mode] = round(traced["python_mb"], 2)
        print(
            f"\n{mode}: RSS {growth[mode]:+.1f} MB (tracemalloc's own at the end {traced['tracing_mb']:.1f} MB), "
            f"Python heap {traced['python_mb']:+.2f} MB, {r['calls']} serve.status() calls; the sites that grew most:"
        )
        print_sites(traced)
    calls = sum(r["calls"] for r in results)
    per_1000 = None
    if "status" in growth and "idle" in growth and calls:
        per_1000 = round((growth["status"] - growth["idle"]) / calls * 1000, 2)
    figures = {
        "controller_growth_mb": growth,
        "python_heap_growth_mb": python,
        "status_calls": calls,
        "growth_per_1000_status_calls_mb": per_1000,
    }
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
