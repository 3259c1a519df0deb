"""Batch figures: a tenant's batch against another tenant's interactive chats, and against its own
lines sent one by one.

(a) The interactive tenant's chats, one after another, with no batch running: their p50 latency.
(b) One tenant submits a batch of 200 embedding lines and a batch of 50 chat lines; while they run,
    the other tenant makes the same chats again: their p50 against (a), and the batches' wall time
    from submission to both completed (output files written).
(c) The same 250 lines sent one by one to the interactive routes by the batch tenant: their total time.
The tenants' rate limit is lifted for the run (their concurrency limit is the default).

    .venv/bin/python benchmarks/batches.py [--chats 12] [--port 8790] [--embed-lines 200] [--chat-lines 50]

Last line: {"batch": {"lines": N, "seconds": S, "sequential_seconds": S2}, "interactive_p50_ratio": R}
"""

from __future__ import annotations

import argparse
import json
import statistics
import threading
import time
from typing import Any

import httpx
from _platform import client as platform_client  # noqa: I001  (beside this file; sets up the path and env)
from _platform import start_platform

EMBED_LINES = 200
CHAT_LINES = 50
CHAT = {"model": "llm", "max_tokens": 16, "temperature": 0}


def chat_body(n: int) -> dict[str, Any]:
    return {**CHAT, "messages": [{"role": "user", "content": f"Name a colour ({n})."}]}


def embed_body(n: int) -> dict[str, Any]:
    return {"model": "embed", "input": f"Sentence number {n} about the weather."}


def lines(url: str, bodies: list[dict[str, Any]]) -> bytes:
    rows = [{"custom_id": f"l{n}", "method": "POST", "url": url, "body": b} for n, b in enumerate(bodies)]
    return "".join(json.dumps(row) + "\n" for row in rows).encode()


def submit(client: httpx.Client, url: str, bodies: list[dict[str, Any]]) -> str:
    files = {"file": ("lines.jsonl", lines(url, bodies), "application/jsonl")}
    file_id = client.post("/v1/files", files=files, data={"purpose": "batch"}).raise_for_status().json()["id"]
    body = {"input_file_id": file_id, "endpoint": url, "completion_window": "24h"}
    return str(client.post("/v1/batches", json=body).raise_for_status().json()["id"])


def wait_all(client: httpx.Client, batch_ids: list[str], timeout_s: float = 1800) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout_s
    done: dict[str, dict[str, Any]] = {}
    while len(done) < len(batch_ids):
        for batch_id in batch_ids:
            if batch_id not in done:
                batch = client.get(f"/v1/batches/{batch_id}").raise_for_status().json()
                if batch["status"] in ("completed", "failed", "cancelled"):
                    done[batch_id] = batch
        if time.monotonic() > deadline:
            raise TimeoutError(batch_ids)
        time.sleep(0.5)
    return list(done.values())


def interactive(client: httpx.Client, count: int, stop: threading.Event | None = None) -> list[float]:
    """Latencies of chats made one after another (all `count`, or until `stop` once `count` are done)."""
    latencies: list[float] = []
    n = 0
    while n < count or (stop is not None and not stop.is_set() and n < 4 * count):
        started = time.perf_counter()
        client.post("/v1/chat/completions", json=chat_body(1000 + n)).raise_for_status()
        latencies.append(time.perf_counter() - started)
        n += 1
        if stop is not None and stop.is_set() and n >= count:
            break
    return latencies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chats", type=int, default=12, help="interactive chats per measurement")
    parser.add_argument("--port", type=int, default=8790)
    parser.add_argument("--embed-lines", type=int, default=EMBED_LINES)
    parser.add_argument("--chat-lines", type=int, default=CHAT_LINES)
    options = parser.parse_args()
    embed_lines, chat_lines = options.embed_lines, options.chat_lines

    # The tenants' rate limit (20 calls/s by default) is lifted: the lines sent one by one would
    # meet it as 429s, the batch's as waits, and neither is what this compares.
    quotas = {"rate_per_s": 10_000.0, "burst": 10_000.0, "max_queued": 10_000}
    base = start_platform(options.port, {"scheduler": {"tenant_defaults": quotas}})
    batcher = platform_client(base, "bench-batch")
    chatter = platform_client(base, "bench-chat")
    interactive(chatter, 2)  # warm both models up
    batcher.post("/v1/embeddings", json=embed_body(0)).raise_for_status()

    alone = interactive(chatter, options.chats)

    started = time.perf_counter()
    batch_ids = []
    if embed_lines:
        batch_ids.append(submit(batcher, "/v1/embeddings", [embed_body(n) for n in range(embed_lines)]))
    if chat_lines:
        batch_ids.append(submit(batcher, "/v1/chat/completions", [chat_body(n) for n in range(chat_lines)]))
    stop = threading.Event()
    measured: list[float] = []
    worker = threading.Thread(target=lambda: measured.extend(interactive(chatter, options.chats, stop)))
    worker.start()
    batches = wait_all(batcher, batch_ids)
    batch_seconds = time.perf_counter() - started
    stop.set()
    worker.join()
    counts = [b["request_counts"] for b in batches]
    assert all(c["completed"] == c["total"] for c in counts), counts

    started = time.perf_counter()
    for n in range(embed_lines):
        batcher.post("/v1/embeddings", json=embed_body(n)).raise_for_status()
    for n in range(chat_lines):
        batcher.post("/v1/chat/completions", json=chat_body(n)).raise_for_status()
    sequential_seconds = time.perf_counter() - started

    p50_alone, p50_loaded = statistics.median(alone), statistics.median(measured)
    print(
        json.dumps(
            {
                "interactive_p50_s": {"alone": round(p50_alone, 3), "with_batch": round(p50_loaded, 3)},
                "interactive_chats_during_batch": len(measured),
            }
        )
    )
    result = {
        "batch": {
            "lines": embed_lines + chat_lines,
            "seconds": round(batch_seconds, 2),
            "sequential_seconds": round(sequential_seconds, 2),
        },
        "interactive_p50_ratio": round(p50_loaded / p50_alone, 2),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
