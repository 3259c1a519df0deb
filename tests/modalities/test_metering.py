"""Metering: what calls use (embeddings included), and the usage statistics kept in the state store."""

from __future__ import annotations

import asyncio
from datetime import date, datetime, timezone
from pathlib import Path

from deployments.types import EmbedRequest, EmbedResult
from modalities import cost_models
from modalities.metering import Outcome, UsageLedger, read_usage, requested_usage, used
from scheduler.costs import Usage
from state.store import SqliteStore

TODAY = date(2026, 11, 22)


def at(day: date) -> float:
    return datetime(day.year, day.month, day.day, 12, tzinfo=timezone.utc).timestamp()


def test_embeddings_cost_their_input_tokens() -> None:
    request = EmbedRequest(["abcdefgh", "abcd"])
    assert cost_models().estimate("embed", requested_usage("embed", request)) == 3  # 12 characters, 4 a token
    result = EmbedResult(vectors=[[1.0], [1.0]], prompt_tokens=9)
    assert used("embed", request, result) == Usage(prompt_tokens=9, output_tokens=0)
    assert cost_models().actual("embed", used("embed", request, result)) == 9


def test_ledger_counts_calls_per_day_tenant_and_service(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "state.sqlite3")
    days = {"yesterday": date(2026, 11, 21), "long ago": date(2026, 11, 10)}
    clock = {"day": TODAY}
    ledger = UsageLedger(store, clock=lambda: at(clock["day"]))

    async def calls() -> None:
        ledger.record("acme", "llm", Usage(prompt_tokens=10, output_tokens=5), 20.0, Outcome.SERVED)
        ledger.record("acme", "llm", None, 7.5, Outcome.FAILED)
        ledger.record("acme", "stt", Usage(audio_seconds=2.5), 2.5, Outcome.SERVED)
        ledger.record("globex", "text2pic", Usage(images=2, steps=4, megapixels=0.1), 0.4, Outcome.SERVED)
        await ledger.flush()
        clock["day"] = days["yesterday"]
        ledger.record("acme", "llm", Usage(prompt_tokens=1, output_tokens=1), 3.0, Outcome.SERVED)
        clock["day"] = days["long ago"]
        ledger.record("acme", "llm", Usage(prompt_tokens=1, output_tokens=1), 3.0, Outcome.SERVED)
        await ledger.flush()

    asyncio.run(calls())
    acme = read_usage(store, 7, tenant="acme", today=TODAY)
    assert [(i["day"], i["service"]) for i in acme] == [
        ("2026-11-21", "llm"),
        ("2026-11-22", "llm"),
        ("2026-11-22", "stt"),
    ]
    assert acme[1] == {
        "day": "2026-11-22",
        "tenant": "acme",
        "service": "llm",
        "requests": 2,
        "errors": 1,
        "refused": 0,
        "dropped": 0,
        "cost": 27.5,
        "tokens_in": 10,
        "tokens_out": 5,
        "audio_seconds": 0.0,
        "images": 0,
    }
    assert acme[2]["audio_seconds"] == 2.5 and acme[2]["requests"] == 1 and acme[2]["errors"] == 0
    assert len(read_usage(store, 30, tenant="acme", today=TODAY)) == 4  # the day long ago too
    assert read_usage(store, 1, tenant="acme", today=TODAY)[0]["day"] == "2026-11-22"
    everyone = read_usage(store, 7, today=TODAY)
    assert {i["tenant"] for i in everyone} == {"acme", "globex"}
    images = read_usage(store, 7, service="text2pic", today=TODAY)
    assert [(i["tenant"], i["images"]) for i in images] == [("globex", 2)]


def test_a_tenant_prefix_never_matches_another_tenant(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "state.sqlite3")
    ledger = UsageLedger(store, clock=lambda: at(TODAY))

    async def calls() -> None:
        ledger.record("acme", "llm", None, 1.0, Outcome.SERVED)
        ledger.record("acme-corp", "llm", None, 1.0, Outcome.SERVED)
        await ledger.flush()

    asyncio.run(calls())
    assert [i["tenant"] for i in read_usage(store, 7, tenant="acme", today=TODAY)] == ["acme"]


def test_calls_recorded_while_a_write_runs_are_not_lost(tmp_path: Path) -> None:
    burst = 50
    store = SqliteStore(tmp_path / "state.sqlite3")
    ledger = UsageLedger(store, clock=lambda: at(TODAY))

    async def calls() -> None:
        for _ in range(burst):
            ledger.record("acme", "tts", Usage(characters=10, audio_seconds=1.0), 10.0, Outcome.SERVED)
            await asyncio.sleep(0)
        await ledger.flush()

    asyncio.run(calls())
    (item,) = read_usage(store, 1, tenant="acme", today=TODAY)
    assert (item["requests"], item["cost"], item["audio_seconds"]) == (burst, 10.0 * burst, 1.0 * burst)
