"""Tokens per second through the platform on vLLM against vLLM's own OpenAI server: same model, same machine.

Both serve SmolLM2-135M-Instruct (converted by scripts/prepare_vllm_cpu.sh) with the same engine
settings and are up at once. Each round streams the same chat requests (temperature 0, so both
generate the same tokens) to one and then the other, at 1 and at 4 concurrent clients. Tokens/s is
the completion tokens that the streams' usage reports over the wall time of the run. The ratio is
the median of the rounds' platform/server ratios: each round pairs two runs made a few seconds
apart, and the order alternates, so a shared machine's changing load weighs on both alike. vLLM's
server runs at the niceness of Ray's workers, so that both lose the same share of the CPU to other
work.

    scripts/prepare_vllm_cpu.sh && .venv-vllm/bin/python benchmarks/vllm_throughput.py [--rounds 6]

Last line: {"tokens_per_s": {"vllm_server": {"1": x, "4": x}, "platform": {...}}, "ratio": {"1": r, "4": r},
"ttft_ms_p50": {...}, ...}
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402

log = logging.getLogger("vllm_throughput")

SECRET = "benchmark-secret-0123456789-0123456789-0123456789"
NAME = "SmolLM2-135M-Instruct"
MODEL_DIR = Path(os.environ.get("LABUBU_DATA_DIR", "~/.labubu")).expanduser() / "models" / f"{NAME}-hf"
CLIENTS = (1, 4)
# The niceness Ray gives its workers (the raylet's `worker_niceness`), and so the platform's engine.
RAY_WORKER_NICENESS = 15
# One set of engine settings for both servers: the backend's options, and the same as CLI flags.
ENGINE: dict[str, Any] = {
    "model": str(MODEL_DIR),
    "served_model_name": NAME,
    "max_model_len": 2048,
    "dtype": "bfloat16",
    "enforce_eager": True,
    "engine_options": {"kv_cache_memory_bytes": 1 << 30, "max_num_seqs": 8},
}
TOPICS = ("a lighthouse", "a fox", "the sea", "a robot", "a garden", "a night train", "an owl", "a lost key")


def server_flags() -> list[str]:
    """ENGINE as `vllm.entrypoints.openai.api_server` flags."""
    options = {k: v for k, v in ENGINE.items() if k != "engine_options"} | ENGINE["engine_options"]
    flags: list[str] = []
    for key, value in options.items():
        flag = "--" + key.replace("_", "-")
        flags += [flag] if value is True else [flag, str(value)]
    return flags


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(url: str, process: subprocess.Popen[bytes] | None = None, timeout_s: float = 900) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"the server exited with {process.returncode} before {url} answered")
        try:
            if httpx.get(url, timeout=10).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(1)
    raise RuntimeError(f"{url} did not answer 200 in {timeout_s:.0f} s")


def start_vllm_server(port: int, log_path: Path) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--host", "127.0.0.1", "--port", str(port)]
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            command + server_flags(),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: the engine processes end with it
            preexec_fn=lambda: os.nice(RAY_WORKER_NICENESS),
        )
    wait_until(f"http://127.0.0.1:{port}/health", process)
    return process


def deploy_platform(port: int, concurrency: int) -> None:
    """The platform with vLLM for `llm` (one replica, `concurrency` generations at once) on a new local cluster."""
    import ray
    from ray import serve

    from serve_app.app import build_app

    os.environ.update(
        LABUBU_JWT_SECRET=SECRET,
        LABUBU_DATA_DIR=tempfile.mkdtemp(prefix="labubu-bench-"),
        LABUBU_IMAGE_BACKENDS="tiny-random",
    )
    ray.init(address="local", include_dashboard=False, _node_ip_address="127.0.0.1", log_to_driver=False)
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    args = {
        "services": {"llm": {"backends": [{"name": "vllm", "options": ENGINE}], "concurrency": concurrency}},
        # One engine (a second replica would only split the same two cores), which takes `concurrency`
        # generations plus the two calls that README, "Configuration" sizes max_ongoing_requests for.
        "deployment_options": {"llm": {"num_replicas": 1, "max_ongoing_requests": concurrency + 2}},
    }
    serve.run(build_app(args), name="labubu", route_prefix="/")
    wait_until(f"http://127.0.0.1:{port}/readyz")


async def one_chat(client: httpx.AsyncClient, base: str, topic: str, max_tokens: int) -> tuple[int, float]:
    """One streamed chat: its completion tokens and the seconds to its first token."""
    body = {
        "model": NAME,
        "messages": [{"role": "user", "content": f"Write a short story about {topic}."}],
        "max_tokens": max_tokens,
        "temperature": 0,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    start = time.perf_counter()
    first: float | None = None
    tokens = 0
    async with client.stream("POST", f"{base}/v1/chat/completions", json=body) as response:
        response.raise_for_status()
        async for line in response.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            data = json.loads(line[len("data: ") :])
            if data.get("usage"):
                tokens = data["usage"]["completion_tokens"]
            if first is None and data.get("choices") and data["choices"][0]["delta"].get("content"):
                first = time.perf_counter() - start
    return tokens, first if first is not None else time.perf_counter() - start


async def run_load(base: str, headers: dict[str, str], clients: int, requests: int, max_tokens: int) -> dict[str, Any]:
    """`requests` chats shared by `clients` concurrent clients; tokens/s over the whole run."""
    topics = [TOPICS[i % len(TOPICS)] for i in range(requests)]
    results: list[tuple[int, float]] = []
    async with httpx.AsyncClient(headers=headers, timeout=600) as client:

        async def worker() -> None:
            while topics:
                results.append(await one_chat(client, base, topics.pop(), max_tokens))

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(clients)))
        elapsed = time.perf_counter() - start
    return {
        "tokens_per_s": sum(tokens for tokens, _ in results) / elapsed,
        "ttft_ms": [ttft * 1000 for _, ttft in results],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--requests-per-client", type=int, default=2, help="chats per client in a run")
    parser.add_argument("--max-tokens", type=int, default=128)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    logging.getLogger("httpx").setLevel(logging.WARNING)  # not a line per request
    if not (MODEL_DIR / "config.json").is_file():
        sys.exit(f"no converted model in {MODEL_DIR}: run scripts/prepare_vllm_cpu.sh first")

    from serve_app.auth import issue_token

    work = Path(tempfile.mkdtemp(prefix="vllm-bench-"))
    server_port, platform_port = free_port(), free_port()
    server = start_vllm_server(server_port, work / "vllm_server.log")
    try:
        deploy_platform(platform_port, concurrency=max(CLIENTS))
        targets = {
            "vllm_server": (f"http://127.0.0.1:{server_port}", {}),
            "platform": (
                f"http://127.0.0.1:{platform_port}",
                {"Authorization": f"Bearer {issue_token(SECRET, tenant='bench', ttl_s=24 * 3600)}"},
            ),
        }
        for base, headers in targets.values():  # warm both: first-request costs are not throughput
            asyncio.run(run_load(base, headers, 2, 2, 16))
        runs: dict[str, dict[int, list[dict[str, Any]]]] = {t: {c: [] for c in CLIENTS} for t in targets}
        for round_ in range(args.rounds):
            order = list(targets) if round_ % 2 == 0 else list(reversed(targets))
            for clients in CLIENTS:
                for target in order:
                    base, headers = targets[target]
                    load = run_load(base, headers, clients, clients * args.requests_per_client, args.max_tokens)
                    runs[target][clients].append(asyncio.run(load))
                    log.info(
                        "round %d, %s, %d clients: %.1f tokens/s",
                        round_ + 1,
                        target,
                        clients,
                        runs[target][clients][-1]["tokens_per_s"],
                    )
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(60)

    tokens = {t: {c: statistics.median(r["tokens_per_s"] for r in runs[t][c]) for c in CLIENTS} for t in runs}
    ttft = {t: {c: statistics.median(ms for r in runs[t][c] for ms in r["ttft_ms"]) for c in CLIENTS} for t in runs}
    ratio = {
        c: statistics.median(
            p["tokens_per_s"] / s["tokens_per_s"]
            for p, s in zip(runs["platform"][c], runs["vllm_server"][c], strict=True)
        )
        for c in CLIENTS
    }

    print(
        f"{'clients':>7} {'vLLM server tok/s':>18} {'platform tok/s':>15} {'ratio':>6} "
        f"{'server TTFT p50':>16} {'platform TTFT p50':>18}"
    )
    for c in CLIENTS:
        print(
            f"{c:>7} {tokens['vllm_server'][c]:>18.1f} {tokens['platform'][c]:>15.1f} {ratio[c]:>6.2f} "
            f"{ttft['vllm_server'][c]:>14.0f}ms {ttft['platform'][c]:>16.0f}ms"
        )
    print(
        f"SmolLM2-135M-Instruct on vllm-cpu: {args.requests_per_client} streamed chats of up to {args.max_tokens} "
        f"tokens per client and run; medians of {args.rounds} rounds. vLLM server log: {work / 'vllm_server.log'}"
    )
    result = {
        "tokens_per_s": {t: {str(c): round(v, 1) for c, v in tokens[t].items()} for t in tokens},
        "ratio": {str(c): round(v, 3) for c, v in ratio.items()},
        "ttft_ms_p50": {t: {str(c): round(v) for c, v in ttft[t].items()} for t in ttft},
        "rounds": args.rounds,
        "requests_per_client": args.requests_per_client,
        "max_tokens": args.max_tokens,
    }
    print(json.dumps(result))

    import ray

    ray.shutdown()


if __name__ == "__main__":
    main()
