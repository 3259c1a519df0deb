"""The platform's one error type: every family keeps its fields across pickling and across Ray,
`unwrap` finds it however it was wrapped, and the ingress maps it to API.md's error body."""

from __future__ import annotations

import pickle

import pytest
import ray
from fastapi import FastAPI
from fastapi.testclient import TestClient
from ray.exceptions import RayActorError, RayTaskError

from common.errors import PlatformError, unwrap
from dag.errors import DagError, InvalidWorkflow, WorkflowConflict
from dag.executor import describe, is_retryable
from deployments.types import BackendTimeout, InputTooLarge, ModelError, ModelUnavailable
from scheduler.errors import QuotaExceeded, SchedulerError, ServiceOverloaded, UnknownTicket
from serve_app.errors import ApiError, install_error_handlers, not_found


def roundtrip(error: PlatformError) -> PlatformError:
    return pickle.loads(pickle.dumps(error))


def fields(error: PlatformError) -> tuple[object, ...]:
    return (type(error), error.code, error.status, error.message, error.details, error.retryable, error.retry_after_s)


# ---------------------------------------------------------------- pickling


@pytest.mark.parametrize(
    "error",
    [
        InputTooLarge("max_tokens over 4096", [{"field": "max_tokens", "reason": "at most 4096"}]),
        BackendTimeout("llama_cpp did not answer in 30 s"),
        QuotaExceeded("over", 2.5, [{"field": "max_queued", "reason": "10"}]),
        ServiceOverloaded("busy", retry_after_s=1.0),
        UnknownTicket("ticket 7"),
        # DagError had no `__reduce__` of its own: its details are what Ray used to lose.
        InvalidWorkflow("a cycle", [{"node": "a", "reason": "cycle a -> b -> a"}]),
        WorkflowConflict("already finished"),
        ApiError(503, "starting", "the platform is starting", retry_after=2),
        PlatformError("ad hoc", [{"k": "v"}], code="teapot", status=418, retryable=True, retry_after_s=3.0),
    ],
    ids=lambda error: type(error).__name__,
)
def test_every_family_survives_pickling(error: PlatformError) -> None:
    copy = roundtrip(error)
    assert fields(copy) == fields(error)
    assert str(copy) == str(error) and copy.args == error.args


def test_class_defaults_and_instance_overrides() -> None:
    quota = QuotaExceeded("over", 2.5)
    assert (quota.code, quota.status, quota.retryable, quota.retry_after_s) == ("quota_exceeded", 429, True, 2.5)
    assert isinstance(quota, SchedulerError) and isinstance(quota, PlatformError)
    assert (UnknownTicket("x").retryable, InvalidWorkflow("x").retryable) == (False, False)
    assert (ModelUnavailable("x").retryable, InputTooLarge("x").retryable) == (True, False)
    assert issubclass(ModelError, PlatformError) and issubclass(DagError, PlatformError)

    # An override stays on its instance; the class keeps its default.
    override = ModelError("x", code="other", status=500, retryable=False)
    assert (override.code, override.status, override.retryable) == ("other", 500, False)
    assert (ModelError.code, ModelError("y").status) == ("model_error", 502)
    api = ApiError(404, "model_not_found", "no such model")
    assert (api.status, api.code, api.message, api.details, api.retry_after_s) == (
        404,
        "model_not_found",
        "no such model",
        [],
        None,
    )


# ---------------------------------------------------------------- unwrap


def test_unwrap_finds_the_error_as_is_chained_or_wrapped() -> None:
    error = QuotaExceeded("over", 2.5)
    assert unwrap(error) is error
    try:
        try:
            raise error
        except QuotaExceeded as inner:
            raise RuntimeError("while granting") from inner
    except RuntimeError as outer:
        assert unwrap(outer) is error

    wrapped = RayTaskError("grant", "Traceback ...", error)
    assert unwrap(wrapped) is error
    # Ray raises `as_instanceof_cause()`: a subclass of both, whose class attributes hide the
    # instance's overrides. unwrap returns the original.
    override = PlatformError("starting", code="starting", status=503)
    dual = RayTaskError("run", "Traceback ...", override).as_instanceof_cause()
    assert isinstance(dual, PlatformError) and dual.code == "internal_error"
    assert unwrap(dual) is override

    assert unwrap(ValueError("no")) is None
    assert unwrap(RayTaskError("f", "Traceback ...", ValueError("no"))) is None


def test_unwrap_is_bounded_on_a_cycle() -> None:
    first, second = ValueError("a"), ValueError("b")
    first.__cause__, second.__cause__ = second, first
    assert unwrap(first) is None


def test_the_executor_reads_retryable_and_code_through_the_wrapper() -> None:
    assert is_retryable(RayTaskError("run", "tb", BackendTimeout("slow")).as_instanceof_cause())
    assert not is_retryable(RayTaskError("run", "tb", InputTooLarge("long")).as_instanceof_cause())
    assert is_retryable(RayTaskError("grant", "tb", QuotaExceeded("over", 1.0)))
    assert is_retryable(ServiceOverloaded("busy", 1.0))
    assert not is_retryable(RayTaskError("grant", "tb", UnknownTicket("7")))
    assert not is_retryable(ray.exceptions.TaskCancelledError())
    assert is_retryable(RayActorError()) and is_retryable(TimeoutError())
    assert not is_retryable(ValueError("a bug"))
    assert describe(RayTaskError("run", "tb", InputTooLarge("too long"))) == "input_too_large: too long"
    assert describe(ValueError("a bug")) == "ValueError: a bug"


@ray.remote(num_cpus=0, max_retries=0)
def raise_error(error: PlatformError) -> None:
    raise error


@pytest.mark.ray
@pytest.mark.parametrize(
    "error",
    [
        InputTooLarge("max_tokens over 4096", [{"field": "max_tokens"}]),
        QuotaExceeded("over", 2.5, [{"field": "max_queued", "reason": "10"}]),
        InvalidWorkflow("a cycle", [{"node": "a", "reason": "cycle"}]),
        PlatformError("ad hoc", [{"k": "v"}], code="teapot", status=418, retryable=True),
    ],
    ids=lambda error: type(error).__name__,
)
def test_unwrap_finds_the_error_a_ray_task_raised(ray_cluster: None, error: PlatformError) -> None:
    with pytest.raises(RayTaskError) as caught:
        ray.get(raise_error.remote(error))
    found = unwrap(caught.value)
    assert found is not None and fields(found) == fields(error)


# ---------------------------------------------------------------- the HTTP mapping


def error_app() -> TestClient:
    app = FastAPI()
    install_error_handlers(app)
    errors: dict[str, BaseException] = {
        "quota": QuotaExceeded("over", 2.5, [{"field": "max_queued", "reason": "10"}]),
        "unavailable": ModelUnavailable("no weights"),
        "workflow": InvalidWorkflow("a cycle", [{"node": "a"}]),
        "not_found": not_found("the workflow"),
        "starting": ApiError(503, "starting", "the platform is starting", retry_after=2),
        "wrapped": RayTaskError("run", "tb", BackendTimeout("slow")),
        "dead": RayActorError(),
        "bug": ValueError("a bug"),
    }

    @app.get("/{name}")
    async def fail(name: str) -> None:
        raise errors[name]

    return TestClient(app, raise_server_exceptions=False)


@pytest.mark.parametrize(
    ("name", "status", "code", "details", "retry_after"),
    [
        ("quota", 429, "quota_exceeded", [{"field": "max_queued", "reason": "10"}], "3"),
        ("unavailable", 503, "model_unavailable", [], "5"),
        ("workflow", 400, "invalid_workflow", [{"node": "a"}], None),
        ("not_found", 404, "not_found", [], None),
        ("starting", 503, "starting", [], "2"),
        ("wrapped", 504, "backend_timeout", [], None),
        ("dead", 503, "service_unavailable", [], "5"),
        ("bug", 500, "internal_error", [], None),
    ],
)
def test_the_ingress_maps_every_error_once(
    name: str, status: int, code: str, details: list[dict[str, str]], retry_after: str | None
) -> None:
    response = error_app().get(f"/{name}")
    assert response.status_code == status
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message", "details"}
    assert (body["error"]["code"], body["error"]["details"]) == (code, details)
    assert response.headers.get("Retry-After") == retry_after
