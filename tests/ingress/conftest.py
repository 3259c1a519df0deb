"""The ingress app in-process, without Ray: the real FastAPI app over a real `Platform`.

`in_process_platform` is the one place that calls the constructors of the platform's own classes
(`Settings`, `Platform`, `SchedulerActor`, `SchedulerClient`, `ModalityServer`, the stores): when
one of them changes, this is what to adapt. Everything Ray would carry between processes goes
through the stand-ins of tests/ingress/standins.py instead:

- the modality deployments are real `ModalityServer`s behind `InProcessHandle`s; `llm` runs the
  real llama.cpp on SmolLM2 and `embed` the real all-MiniLM-L6-v2, each loaded on its first call;
  the other services answer with `CannedBackend`, as no test here needs their models;
- the scheduler is the real `SchedulerActor` (the real fair-share policy, quotas and rate limits)
  behind `InProcessActor`, under the real `SchedulerClient`;
- the state store is a real `SqliteStore` and the artifacts a real `LocalArtifactStore`, in a
  temporary folder;
- the workflow executor is a `RecordingExecutor`: workflows are stored and started, not run.

A test that needs a model to fail puts `scripted_handle(...)` in place of a service's handle with
the `swap_handle` fixture, which puts the real one back afterwards.

The app and the platform live for the whole session (one event loop, that of the `TestClient`);
tests keep out of each other's way by using tenants of their own (`tenant` fixture).
"""

from __future__ import annotations

import functools
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from tests.conftest import TEST_API_KEY_SECRET, TEST_JWT_SECRET, make_token
from tests.ingress.standins import InProcessActor, InProcessHandle, RecordingExecutor

# Small, so that the 413 tests send little; the same as the Ray tests' platform.
MAX_BODY_BYTES = 2 * 1024 * 1024
# The services whose real small models the fast layer runs; the others answer with `CannedBackend`.
REAL_MODELS = ("llm", "embed")
CANNED = "tests.ingress.standins:CannedBackend"
EVENTS_MAX_S = 0.5


@dataclass
class InProcessPlatform:
    """What `in_process_platform` made: the app, its platform, and the stand-ins tests look into."""

    app: FastAPI
    platform: Any  # serve_app.platform.Platform
    scheduler: Any  # scheduler.actor.SchedulerActor, the object itself
    executor: RecordingExecutor
    handles: dict[str, InProcessHandle]
    data_dir: Path


def in_process_platform(data_dir: Path, args: dict[str, Any] | None = None) -> InProcessPlatform:
    """The real app over a real `Platform` whose model, scheduler and executor calls stay in this
    process (see the module docstring). `args` are the Serve app's args, as `build_app` takes them."""
    from dag.records import WorkflowStore
    from deployments.config import BackendSpec, ServiceConfig
    from deployments.serving import ModalityServer
    from modalities import SERVICES
    from scheduler.actor import SchedulerActor
    from scheduler.client import SchedulerClient
    from serve_app.app import create_app
    from serve_app.deps import set_platform
    from serve_app.platform import Platform
    from serve_app.settings import Settings
    from state.artifacts import LocalArtifactStore
    from state.store import SqliteStore

    app_args = {"data_dir": str(data_dir), "max_body_bytes": MAX_BODY_BYTES, **(args or {})}
    settings = Settings.load(
        app_args, env={"LABUBU_JWT_SECRET": TEST_JWT_SECRET, "LABUBU_API_KEY_SECRET": TEST_API_KEY_SECRET}
    )
    store = SqliteStore(data_dir / "state.sqlite3")
    workflows = WorkflowStore(store, LocalArtifactStore(data_dir / "artifacts"))

    def replica(service: str) -> Any:
        config = settings.service_config(service)
        if service not in REAL_MODELS:
            canned = BackendSpec("canned", CANNED, {"service": service})
            config = ServiceConfig(service, (canned,), timeout_s=config.timeout_s)
        # No store: a replica that follows an admin's arrangement needs its own event loop.
        return ModalityServer(config)

    handles = {service: InProcessHandle(functools.partial(replica, service)) for service in SERVICES}
    # Given its store at construction, the actor asks Ray whether it is a restarted actor, which only
    # a Ray worker can answer: it gets the store right after instead (nothing to restore, anyway).
    scheduler = SchedulerActor(settings.scheduler_config())
    scheduler.store = store
    executor = RecordingExecutor()
    platform = Platform(
        settings,
        handles,
        SchedulerClient(InProcessActor(scheduler)),
        store,
        workflows,
        InProcessActor(executor),
        app_name=None,  # no Serve application: no loop that follows its replicas
    )
    set_platform(platform)
    return InProcessPlatform(create_app(), platform, scheduler, executor, handles, data_dir)


def scripted_handle(service: str, **options: Any) -> InProcessHandle:
    """A handle of a `service` replica whose one backend is `tests.helpers.ScriptedBackend` with
    `options` (`behaviour="fail"`, `loads=False`, ...): a model that fails as a test says."""
    from deployments.config import BackendSpec, ServiceConfig
    from deployments.serving import ModalityServer

    spec = BackendSpec("scripted", "tests.helpers:ScriptedBackend", {"name": "scripted", **options})
    return InProcessHandle(lambda: ModalityServer(ServiceConfig(service, (spec,), timeout_s=5)))


@pytest.fixture()
def swap_handle(ingress: InProcessPlatform) -> Iterator[Any]:
    """`swap_handle(service, handle)` puts `handle` in place of the service's for the test."""
    handles = ingress.platform.handles
    saved = dict(handles)

    def swap(service: str, handle: InProcessHandle) -> None:
        handles[service] = handle
        ingress.platform.forget_status(service)  # the next status is the new replica's

    yield swap
    for service, handle in saved.items():
        handles[service] = handle
        ingress.platform.forget_status(service)


@pytest.fixture(scope="session")
def voice_handles(ingress: InProcessPlatform) -> dict[str, InProcessHandle]:
    """Real faster-whisper (`stt`) and Piper (`tts`) replicas, as the platform configures them,
    each loaded on its first call (under a second): for the tests that speak and listen."""
    from deployments.serving import ModalityServer

    settings = ingress.platform.settings

    def replica(service: str) -> Any:
        return ModalityServer(settings.service_config(service))

    return {service: InProcessHandle(functools.partial(replica, service)) for service in ("stt", "tts")}


@pytest.fixture()
def real_voice(swap_handle: Any, voice_handles: dict[str, InProcessHandle]) -> None:
    """The real `stt` and `tts` models in place of the canned ones, for one test."""
    for service, handle in voice_handles.items():
        swap_handle(service, handle)


@pytest.fixture(scope="session")
def ingress(tmp_path_factory: pytest.TempPathFactory) -> InProcessPlatform:
    # Event streams of a workflow that waits end soon, as `events_max_s` ends them.
    return in_process_platform(tmp_path_factory.mktemp("ingress-data"), {"events_max_s": EVENTS_MAX_S})


@pytest.fixture(scope="session")
def http(ingress: InProcessPlatform) -> Iterator[TestClient]:
    """The app's client, with no credentials of its own: each request names its `Authorization`."""
    # One client for the session: its event loop is the one the scheduler and the replicas live on.
    # Server errors come back as answers (a 500 is what a test of the contract must see), not raised.
    with TestClient(ingress.app, raise_server_exceptions=False) as client:
        yield client


@pytest.fixture()
def tenant() -> str:
    """A tenant of the test's own: its quotas, workflows and uploads are nobody else's."""
    return f"t-{uuid.uuid4().hex[:10]}"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture()
def user(tenant: str) -> dict[str, str]:
    """The Authorization header of a user of the test's tenant."""
    return bearer(make_token(tenant=tenant, sub="alice"))


@pytest.fixture()
def admin() -> dict[str, str]:
    """The Authorization header of an admin (of an operators' tenant)."""
    return bearer(make_token(tenant="ops", sub="root", role="admin"))
