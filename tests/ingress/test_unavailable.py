"""503 (API.md, "Errors"): a model that is not available, or a deployment that does not answer, is
a 503 with `Retry-After`, never a 500; `/readyz` says which service is not ready."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.ingress.conftest import scripted_handle
from tests.serve_app.contract import assert_error

SPEECH = {"model": "tts", "input": "Hello.", "response_format": "wav"}


def assert_retry_later(response: Any, code: str) -> None:
    assert_error(response, 503, code)
    assert response.headers["Retry-After"].isdigit() and int(response.headers["Retry-After"]) >= 1


def test_a_service_without_a_loaded_backend_is_503(http: TestClient, user: dict[str, str], swap_handle: Any) -> None:
    swap_handle("tts", scripted_handle("tts", loads=False))
    assert_retry_later(http.post("/v1/audio/speech", json=SPEECH, headers=user), "model_unavailable")
    ready = http.get("/readyz")
    assert_retry_later(ready, "not_ready")
    assert [d["field"] for d in ready.json()["error"]["details"]] == ["services.tts"]
    models = {m["id"]: m for m in http.get("/v1/models", headers=user).json()["data"]}
    assert models["tts"]["ready"] is False and models["tts"]["backend"] is None


@pytest.mark.parametrize("behaviour", ["fail", "crash"])
def test_a_failing_backend_is_503(http: TestClient, user: dict[str, str], swap_handle: Any, behaviour: str) -> None:
    swap_handle("tts", scripted_handle("tts", behaviour=behaviour))
    assert_retry_later(http.post("/v1/audio/speech", json=SPEECH, headers=user), "model_unavailable")


def test_a_backend_that_refuses_the_input_is_400(http: TestClient, user: dict[str, str], swap_handle: Any) -> None:
    swap_handle("tts", scripted_handle("tts", behaviour="refuse"))
    assert_error(http.post("/v1/audio/speech", json=SPEECH, headers=user), 400, "invalid_input")


def test_the_service_is_back_after_the_swap(http: TestClient, user: dict[str, str]) -> None:
    assert http.post("/v1/audio/speech", json=SPEECH, headers=user).status_code == 200
    assert http.get("/readyz").status_code == 200
