"""The state store at scale: listing, resume and idle event streams over 100,000 stored workflows.

    .venv/bin/python benchmarks/store.py [--stores sqlite,redis] [--workflows 100000] [--tenants 100]
                                         [--streams 200] [--idle-s 20]

For each store (SQLite in a temporary folder; Redis at 127.0.0.1:6379, database 12, under a prefix of
its own that is deleted afterwards):
- 100,000 workflows across 100 tenants are written in bulk through `WorkflowStore.save_many` (the
  documents and their index entries), 10 of them unfinished;
- listing, `GET /v1/workflows?limit=20` for a random tenant, p50 over HTTP: the platform's real
  workflows router (real JWT checks, the real store) served by uvicorn in a process of its own,
  without Ray and Serve (the whole platform costs minutes and gigabytes on 2 cores, and this is what
  the store changes: the Serve proxy hop, ~10 ms, comes on top of both). `before` is the previous
  listing (every document of the tenant read, sorted and filtered) at `/legacy/...` on the same
  server and data;
- resume: `WorkflowStore.unfinished()` from a new store object, against the previous scan of every
  document;
- the one-time backfill of the indexes over the whole history (`reindex`), for an upgrade;
- idle streams: `--streams` SSE connections to pending workflows held open for `--idle-s`, the
  server process's CPU (psutil, user + system) as a fraction of one core; `before` is the previous
  loop (a read every 0.25 s) reproduced at `/legacy/...` on the same server.

Prints a table; the last line is one JSON object with the first store's figures and, under
`before` and `stores`, the comparison: {"list_p50_ms": L, "resume_s": R, "sse_idle_cpu": C, ...}
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import httpx
import psutil
from _platform import SECRET, token  # noqa: I001  (beside this file; sets up the path and env)
from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse

from dag.records import WORKFLOWS, Status, WorkflowRecord, WorkflowStore, new_record, rfc3339
from dag.spec import WorkflowSubmission
from dag.validate import plan_workflow
from state.artifacts import LocalArtifactStore
from state.store import RedisStore, SqliteStore, StateStore

REDIS_URL = "redis://127.0.0.1:6379/12"
BATCH = 1000
UNFINISHED = 10
SSE_TENANT = "bench-sse"


def open_store(spec: str) -> StateStore:
    """`sqlite:<path>` or `redis:<prefix>` (on REDIS_URL)."""
    kind, _, where = spec.partition(":")
    return SqliteStore(where) if kind == "sqlite" else RedisStore(REDIS_URL, prefix=where)


def workflow_store(spec: str, folder: Path) -> WorkflowStore:
    return WorkflowStore(open_store(spec), LocalArtifactStore(folder / "artifacts"))


# ---------------------------------------------------------------- the data


def fill(store: WorkflowStore, workflows: int, tenants: int, streams: int) -> list[str]:
    """`workflows` finished workflows (`UNFINISHED` of them not) across `tenants`, created over 30
    days, then `streams` pending ones of another tenant for the event streams; those ones' ids."""
    plan = plan_workflow(WorkflowSubmission.model_validate({"nodes": {"a": {"service": "llm", "prompt": "Hi"}}}))
    template = json.dumps(new_record("t", "w", "workflow", "bench", "default", plan, {}).data)
    start = datetime.now(timezone.utc) - timedelta(days=30)
    step_s = 30 * 86400 / workflows
    unfinished = set(random.Random(1).sample(range(workflows), UNFINISHED))
    batch: list[WorkflowRecord] = []
    for n in range(workflows):
        data = json.loads(template)
        created = rfc3339(start + timedelta(seconds=n * step_s))
        status = Status.RUNNING if n in unfinished else (Status.FAILED if n % 10 == 0 else Status.COMPLETED)
        data.update(
            tenant=f"tenant-{n % tenants:03d}",
            workflow_id=f"wf_{n:08d}",
            status=status.value,
            created_at=created,
            updated_at=created,
        )
        batch.append(WorkflowRecord(data))
        if len(batch) == BATCH:
            store.save_many(batch)
            batch = []
    if batch:
        store.save_many(batch)
    ids = []
    for n in range(streams):
        record = new_record(SSE_TENANT, f"wf_sse_{n:04d}", "workflow", None, "default", plan, {})
        store.save(record, {"type": "workflow", "status": "pending"})
        ids.append(record.workflow_id)
    return ids


# ---------------------------------------------------------------- the previous code, for `before`


def scan_page(store: WorkflowStore, tenant: str, kind: str, limit: int, offset: int) -> dict[str, Any]:
    """The listing as it was: every document of the tenant, sorted and filtered in Python."""
    records = [WorkflowRecord(data) for _, data in store.state.items(WORKFLOWS, f"{tenant}/")]
    chosen = sorted(
        (r for r in records if r.data.get("kind") == kind),
        key=lambda r: (r.data["created_at"], r.workflow_id),
        reverse=True,
    )
    items = [r.public(with_nodes=False) for r in chosen[offset : offset + limit]]
    return {"items": items, "total": len(chosen)}


def scan_unfinished(store: WorkflowStore) -> list[WorkflowRecord]:
    records = [WorkflowRecord(data) for _, data in store.state.items(WORKFLOWS)]
    return [r for r in records if r.status in (Status.PENDING, Status.RUNNING)]


async def polling_stream(store: WorkflowStore, key: str) -> AsyncIterator[str]:
    """The event stream's previous loop, reduced to its idle part: a read every 0.25 s."""
    last, idle_s = 0, 0.0
    while True:
        events = await asyncio.to_thread(store.state.read, key, last, 500)
        for event in events:
            yield f"id: {event.id}\ndata: {json.dumps(event.data)}\n\n"
            last = event.id
        if events:
            continue
        if await asyncio.to_thread(store.find, key) is None:
            return
        await asyncio.sleep(0.25)
        idle_s += 0.25
        if idle_s >= 15:
            idle_s = 0.0
            yield ": ping\n\n"


# ---------------------------------------------------------------- the server (a process of its own)


def serve(spec: str, folder: Path, port: int) -> None:
    """The workflows router over the store, under uvicorn, with the legacy routes beside it."""
    from types import SimpleNamespace

    import uvicorn

    from serve_app.auth import TokenVerifier, bearer_token
    from serve_app.deps import get_platform
    from serve_app.routes.workflows import router
    from serve_app.settings import Settings

    store = workflow_store(spec, folder)
    verifier = TokenVerifier(SECRET, "HS256")

    async def authenticate(request: Request) -> Any:
        return verifier.verify(bearer_token(request.headers.get("authorization")))

    settings = Settings.load({"events_max_s": 3600}, env={})
    platform = SimpleNamespace(workflows=store, store=store.state, settings=settings, authenticate=authenticate)
    app = FastAPI()
    app.include_router(router)

    async def the_platform() -> Any:
        return platform

    app.dependency_overrides[get_platform] = the_platform

    @app.get("/legacy/workflows")
    async def legacy_list(request: Request, limit: int = 20, offset: int = 0) -> JSONResponse:
        principal = await authenticate(request)
        return JSONResponse(await asyncio.to_thread(scan_page, store, principal.tenant, "workflow", limit, offset))

    @app.get("/legacy/workflows/{workflow_id}/events")
    async def legacy_events(workflow_id: str, principal: Any = Depends(authenticate)) -> StreamingResponse:
        key = f"{principal.tenant}/{workflow_id}"
        return StreamingResponse(polling_stream(store, key), media_type="text/event-stream")

    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def start_server(spec: str, folder: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    command = [sys.executable, __file__, "serve", spec, str(folder), str(port)]
    server = subprocess.Popen(command)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            httpx.get(f"{base}/openapi.json", timeout=5)
            return server, base
        except httpx.HTTPError:
            assert server.poll() is None and time.monotonic() < deadline, "the server did not start"
            time.sleep(0.2)


# ---------------------------------------------------------------- the measures


def timed_ms(call: Callable[[], Any], runs: int) -> float:
    """The median of `runs` calls, in milliseconds (after two warm-up calls)."""
    for _ in range(2):
        call()
    times = []
    for _ in range(runs):
        begin = time.perf_counter()
        call()
        times.append((time.perf_counter() - begin) * 1000)
    return statistics.median(times)


def list_p50_ms(base: str, path: str, tenants: int, runs: int) -> float:
    rng = random.Random(7)
    clients = {t: f"tenant-{t:03d}" for t in range(tenants)}
    headers = {t: {"Authorization": f"Bearer {token(name)}"} for t, name in clients.items()}
    with httpx.Client(base_url=base, timeout=60) as http:

        def call() -> None:
            response = http.get(f"{path}?limit=20", headers=headers[rng.randrange(tenants)])
            assert response.status_code == 200 and len(response.json()["items"]) == 20, response.text

        return timed_ms(call, runs)


def idle_cpu(server: subprocess.Popen[bytes], base: str, path: str, ids: list[str], idle_s: float) -> float:
    """The server's CPU (a fraction of one core) while `ids`' event streams stay open and idle."""

    async def measure() -> float:
        opened = 0
        all_open = asyncio.Event()
        limits = httpx.Limits(max_connections=len(ids) + 10, max_keepalive_connections=len(ids) + 10)
        headers = {"Authorization": f"Bearer {token(SSE_TENANT)}"}
        async with httpx.AsyncClient(base_url=base, timeout=None, limits=limits, headers=headers) as http:

            async def follow(workflow_id: str) -> None:
                nonlocal opened
                async with http.stream("GET", path.format(workflow_id)) as stream:
                    assert stream.status_code == 200
                    async for line in stream.aiter_lines():
                        if line.startswith("data:"):
                            opened += 1
                            if opened == len(ids):
                                all_open.set()

            tasks = [asyncio.create_task(follow(workflow_id)) for workflow_id in ids]
            await asyncio.wait_for(all_open.wait(), timeout=120)
            await asyncio.sleep(1.0)  # let the first reads settle
            process = psutil.Process(server.pid)
            before, begin = process.cpu_times(), time.monotonic()
            await asyncio.sleep(idle_s)
            after, end = process.cpu_times(), time.monotonic()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        busy = (after.user - before.user) + (after.system - before.system)
        return busy / (end - begin)

    return asyncio.run(measure())


def bench_store(name: str, args: argparse.Namespace) -> dict[str, Any]:
    folder = Path(tempfile.mkdtemp(prefix=f"labubu-store-{name}-"))
    spec = f"sqlite:{folder / 'state.sqlite3'}" if name == "sqlite" else f"redis:bench-{uuid.uuid4().hex[:8]}"
    store = workflow_store(spec, folder)
    figures: dict[str, Any] = {"store": name}
    try:
        begin = time.perf_counter()
        ids = fill(store, args.workflows, args.tenants, args.streams)
        figures["write_s"] = time.perf_counter() - begin
        print(f"[{name}] wrote {args.workflows} workflows in {figures['write_s']:.1f} s", file=sys.stderr)

        begin = time.perf_counter()
        fresh = workflow_store(spec, folder)  # a restarted executor: its own store object
        resumed = fresh.unfinished()
        figures["resume_s"] = time.perf_counter() - begin
        assert len(resumed) == UNFINISHED + args.streams, len(resumed)
        begin = time.perf_counter()
        assert len(scan_unfinished(store)) == UNFINISHED + args.streams
        figures["resume_s_before"] = time.perf_counter() - begin

        begin = time.perf_counter()
        store.state.reindex(WORKFLOWS, lambda _, data: WorkflowRecord(data).index_entry())
        figures["backfill_s"] = time.perf_counter() - begin

        some_tenant = f"tenant-{args.tenants // 2:03d}"
        figures["page_in_process_ms"] = timed_ms(lambda: store.page(some_tenant, "workflow", limit=20), args.runs)
        figures["page_in_process_ms_before"] = timed_ms(
            lambda: scan_page(store, some_tenant, "workflow", 20, 0), max(10, args.runs // 10)
        )

        server, base = start_server(spec, folder)
        try:
            figures["list_p50_ms"] = list_p50_ms(base, "/v1/workflows", args.tenants, args.runs)
            figures["list_p50_ms_before"] = list_p50_ms(
                base, "/legacy/workflows", args.tenants, max(20, args.runs // 5)
            )
            print(f"[{name}] listing measured; idle streams for {args.idle_s:.0f} s each", file=sys.stderr)
            figures["sse_idle_cpu"] = idle_cpu(server, base, "/v1/workflows/{}/events", ids, args.idle_s)
            figures["sse_idle_cpu_before"] = idle_cpu(server, base, "/legacy/workflows/{}/events", ids, args.idle_s)
        finally:
            server.terminate()
            server.wait(timeout=30)
    finally:
        if isinstance(store.state, RedisStore):
            client = store.state.redis
            for keys in batched(client.scan_iter(f"{store.state.prefix}:*", count=1000), 1000):
                client.delete(*keys)
    return figures


def batched(items: Any, size: int) -> Any:
    chunk: list[Any] = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def rounded(figures: dict[str, Any]) -> dict[str, Any]:
    return {k: round(v, 4) if isinstance(v, float) else v for k, v in figures.items()}


def print_table(results: list[dict[str, Any]], args: argparse.Namespace) -> None:
    rows = [
        ("GET /v1/workflows?limit=20 p50, HTTP (ms)", "list_p50_ms", "{:.2f}"),
        ("  the store's page, in-process (ms)", "page_in_process_ms", "{:.2f}"),
        ("resume: unfinished() (s)", "resume_s", "{:.3f}"),
        (f"ingress CPU, {args.streams} idle streams (cores)", "sse_idle_cpu", "{:.3f}"),
    ]
    print(f"\n{args.workflows:,} workflows, {args.tenants} tenants, {UNFINISHED} unfinished (+{args.streams} streamed)")
    header = f"{'measure':<48}" + "".join(f"{r['store'] + ' before':>16}{r['store'] + ' after':>16}" for r in results)
    print(header)
    print("-" * len(header))
    for label, key, fmt in rows:
        cells = "".join(f"{fmt.format(r[key + '_before']):>16}{fmt.format(r[key]):>16}" for r in results)
        print(f"{label:<48}{cells}")
    for r in results:
        print(
            f"[{r['store']}] bulk write {r['write_s']:.1f} s, one-time backfill of the indexes {r['backfill_s']:.1f} s"
        )


def main() -> None:
    if len(sys.argv) == 5 and sys.argv[1] == "serve":
        serve(sys.argv[2], Path(sys.argv[3]), int(sys.argv[4]))
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stores", default="sqlite,redis")
    parser.add_argument("--workflows", type=int, default=100_000)
    parser.add_argument("--tenants", type=int, default=100)
    parser.add_argument("--streams", type=int, default=200)
    parser.add_argument("--idle-s", type=float, default=20.0)
    parser.add_argument("--runs", type=int, default=200)
    args = parser.parse_args()
    os.environ.setdefault("LABUBU_JWT_SECRET", SECRET)
    results = [bench_store(name, args) for name in args.stores.split(",")]
    print_table(results, args)
    first = results[0]
    keys = ("list_p50_ms", "resume_s", "sse_idle_cpu")
    summary: dict[str, Any] = {key: round(first[key], 4) for key in keys}
    summary["store"] = first["store"]
    summary["before"] = {key: round(first[f"{key}_before"], 4) for key in keys}
    summary["stores"] = {
        r["store"]: {k: round(v, 4) if isinstance(v, float) else v for k, v in r.items()} for r in results
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
