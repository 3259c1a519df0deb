"""Run-time control of the model deployments through the state store: the admin's arrangement of
a service's backends (checked, stored, followed by a replica before every call) and the replicas'
health reports, aggregated per backend.

A real `ModalityServer` (real llama.cpp, the real google-genai SDK against the fake Gemini server)
follows an arrangement written to a real store, SQLite and Redis; no Ray.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import pytest

import modalities
from deployments.config import BackendSpec, ServiceConfig
from deployments.control import (
    REPORTS,
    STALE_AFTER_S,
    Arrangement,
    InvalidArrangement,
    ReplicaControl,
    aggregate,
    fresh_reports,
    load_arrangement,
    replicas_apply,
    save_arrangement,
)
from deployments.failover import BackendChain
from deployments.serving import ModalityServer
from deployments.types import ChatMessage, LLMRequest
from state.store import RedisStore, StateStore
from tests.conftest import free_port
from tests.fakes.gemini_server import FakeGemini
from tests.helpers import ScriptedBackend

CONFIGURED = ["llama_cpp", "gemini"]


@pytest.fixture(scope="module")
def gemini() -> Iterator[FakeGemini]:
    with FakeGemini() as fake:
        yield fake


# ---------------------------------------------------------------- arrangements


def test_an_arrangement_puts_the_named_backends_first() -> None:
    made = Arrangement.of(["a", "b", "c"], ["c"], ["b"])
    assert made == Arrangement(("c", "a", "b"), frozenset({"b"}))
    assert Arrangement.from_doc(made.to_doc()) == made


@pytest.mark.parametrize(
    ("backends", "disabled", "field"),
    [
        (["vllm"], [], "backends.0"),  # a backend of llm, but not one this service is configured with
        (["llama_cpp", "nope"], [], "backends.1"),
        ([], ["nope"], "disabled.0"),
        (["gemini", "gemini"], [], "backends.1"),
        ([], ["llama_cpp", "gemini"], "disabled"),  # nothing left to serve
    ],
)
def test_bad_arrangements_are_422(backends: list[str], disabled: list[str], field: str) -> None:
    with pytest.raises(InvalidArrangement) as caught:
        Arrangement.of(CONFIGURED, backends, disabled)
    assert caught.value.status == 422 and caught.value.code == "invalid_backends"
    assert caught.value.details[0]["field"] == field


def test_an_arrangement_within_a_changed_config_keeps_what_still_exists() -> None:
    stored = Arrangement(("gemini", "vllm", "llama_cpp"), frozenset({"vllm", "gemini"}))
    assert stored.within(CONFIGURED) == Arrangement(("gemini", "llama_cpp"), frozenset({"gemini"}))


# ---------------------------------------------------------------- aggregation


def report(replica: str, *entries: tuple[str, str, int, int]) -> dict[str, Any]:
    health = [
        {
            "backend": name,
            "model": f"{name}-model",
            "status": status,
            "reason": status,
            "calls": calls,
            "failures": failures,
        }
        for name, status, calls, failures in entries
    ]
    return {"replica": replica, "at": time.time(), "health": health}


def test_aggregate_takes_the_worst_status_and_sums_the_counts() -> None:
    reports = [
        report("r1", ("llama_cpp", "ready", 10, 0), ("gemini", "failing", 4, 1)),
        report("r2", ("llama_cpp", "ready", 5, 0), ("gemini", "cooling_down", 6, 3)),
    ]
    arrangement = Arrangement(("gemini", "llama_cpp"), frozenset({"llama_cpp"}))
    gemini, llama = aggregate(CONFIGURED, arrangement, reports)
    assert (gemini["name"], gemini["status"], gemini["reason"], gemini["calls"], gemini["failures"]) == (
        "gemini",
        "cooling_down",
        "cooling_down",  # the reason of the replica with the worst status
        10,
        4,
    )
    assert [view["replica"] for view in gemini["replicas"]] == ["r1", "r2"]
    assert (llama["status"], llama["disabled"], llama["reason"], llama["calls"]) == (
        "ready",
        True,
        "disabled by an admin",
        15,
    )


def test_aggregate_without_reports_or_arrangement() -> None:
    backends = aggregate(CONFIGURED, None, [])
    assert [(b["name"], b["status"], b["replicas"]) for b in backends] == [
        ("llama_cpp", "unavailable", []),
        ("gemini", "unavailable", []),
    ]
    assert backends[0]["reason"] == "no replica has reported"


# ---------------------------------------------------------------- a replica


async def test_a_replica_follows_the_stored_arrangement_in_the_background(
    gemini: FakeGemini,
    store: StateStore,  # noqa: F811
) -> None:
    gemini.reset()
    llm = modalities.get("llm")
    gemini_options = {"api_key": "fake", "base_url": gemini.url}
    config = ServiceConfig(
        "llm",
        (
            BackendSpec("gemini", llm.backends["gemini"], gemini_options),
            BackendSpec("llama_cpp", llm.backends["llama_cpp"]),
        ),
    )
    server = ModalityServer(config, store)
    request = LLMRequest(messages=[ChatMessage("user", "Say hi.")], max_tokens=4, temperature=0)
    try:
        assert (await server.run(request)).model.startswith("gemini")
        disabled = Arrangement.of(["gemini", "llama_cpp"], [], ["gemini"])
        save_arrangement(store, "llm", disabled)
        # The replica follows in the background and says so in its report (what the admin API waits for).
        deadline = time.monotonic() + 10
        while not (fresh_reports(store, "llm", time.time()) and replicas_apply(store, "llm", disabled, time.time())):
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
        assert (await server.run(request)).model == "SmolLM2-135M-Instruct"  # no restart
        assert len(gemini.requests) == 1  # the disabled cloud was not called
        status = await server.status()
        assert [(b["name"], b["ready"]) for b in status["backends"]] == [("gemini", False), ("llama_cpp", True)]
        # A replica started later (autoscaling, a restart) starts with the stored arrangement.
        save_arrangement(store, "llm", Arrangement.of(["gemini", "llama_cpp"], ["llama_cpp"], []))
        later = ModalityServer(config, store)
        assert [entry["backend"] for entry in later.chain.health()] == ["llama_cpp", "gemini"]
        later.reporting.cancel()
        later.following.cancel()
    finally:
        server.reporting.cancel()
        server.following.cancel()


async def test_a_replica_reports_its_health_and_sweeps_gone_replicas(store: StateStore) -> None:  # noqa: F811
    store.put(REPORTS, "llm/gone", {"replica": "gone", "at": time.time() - STALE_AFTER_S - 1, "health": []})
    chain = BackendChain([ScriptedBackend("a"), ScriptedBackend("b")])
    chain.load()
    control = ReplicaControl(store, "llm", "r1", chain)
    task = asyncio.create_task(control.report_forever())
    try:
        deadline = time.monotonic() + 10
        while not fresh_reports(store, "llm", time.time()):
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
    finally:
        task.cancel()
    (fresh,) = fresh_reports(store, "llm", time.time())
    assert fresh["replica"] == "r1" and [entry["backend"] for entry in fresh["health"]] == ["a", "b"]
    assert [key for key, _ in store.items(REPORTS)] == ["llm/r1"]  # the gone replica's report was swept


def test_a_store_that_fails_keeps_the_last_arrangement(store: StateStore) -> None:  # noqa: F811
    chain = BackendChain([ScriptedBackend("a"), ScriptedBackend("b")])
    chain.load()
    save_arrangement(store, "llm", Arrangement(("b", "a")))
    control = ReplicaControl(store, "llm", "r1", chain)
    control.follow()
    # Nothing listens on this port: a real connection error on every read.
    control.store = RedisStore(f"redis://127.0.0.1:{free_port()}/0")
    control.follow()
    assert control.store_failing and [entry["backend"] for entry in chain.health()] == ["b", "a"]
    assert load_arrangement(store, "llm") == Arrangement(("b", "a"))
