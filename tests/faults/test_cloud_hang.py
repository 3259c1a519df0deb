"""A cloud backend that hangs: the service's timeout fires and the next backend answers.

The llm deployment runs as a Serve application of its own ("faults-cloud", no HTTP route) on the
session's cluster, with the failover chain [gemini, llama_cpp]. Its Gemini is the fake server of
tests/fakes (real HTTP on 127.0.0.1, the real google-genai SDK), told to hold every answer far
longer than the service's `timeout_s`.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from ray import serve

from deployments.serving import modality_deployment
from deployments.types import ChatMessage, LLMRequest
from serve_app.settings import Settings
from tests.fakes.gemini_server import FakeGemini

pytestmark = pytest.mark.ray

APP = "faults-cloud"
TIMEOUT_S = 5.0  # the local model answers well inside it, even on a busy 2-core machine
HANG_S = 600.0  # longer than any wait here: only the service's timeout can end the call
REQUEST = LLMRequest(messages=[ChatMessage("user", "Say hi.")], max_tokens=4, temperature=0)


@pytest.fixture(scope="module")
def hanging_gemini() -> Iterator[FakeGemini]:
    with FakeGemini() as fake:
        fake.delay_s = HANG_S
        yield fake


@pytest.fixture(scope="module")
def llm(platform_url: str, hanging_gemini: FakeGemini) -> Iterator[Any]:
    """The llm deployment with a hanging cloud first; `platform_url` has started Serve on its own port."""
    section = {
        "backends": [
            # The SDK's own timeout is the hang's length: the chain's `timeout_s` has to fire. Its
            # key is the cluster's GEMINI_API_KEY (tests/conftest.py).
            {"name": "gemini", "options": {"base_url": hanging_gemini.url, "timeout_s": HANG_S}},
            {"name": "llama_cpp", "options": {"n_threads": 1}},
        ],
        "timeout_s": TIMEOUT_S,
        "failure_threshold": 1,  # one hang is enough to skip the cloud for the cool-down
        "cooldown_s": 600,
    }
    config = Settings.read({"services": {"llm": section}}, env={}).service_config("llm")
    yield serve.run(modality_deployment("llm").bind(config), name=APP, route_prefix=None)
    serve.delete(APP)


def test_a_hanging_cloud_times_out_and_the_local_model_answers(llm: Any, hanging_gemini: FakeGemini) -> None:
    # A bound on a hang only; the health below shows that the chain's own timeout ended the cloud's call.
    result = llm.run.remote(REQUEST).result(timeout_s=HANG_S / 5)
    assert result.model == "SmolLM2-135M-Instruct" and result.completion_tokens > 0
    assert len(hanging_gemini.requests) == 1  # the call really went to the cloud first
    gemini, local = llm.status.remote().result(timeout_s=30)["health"]
    assert (gemini["status"], gemini["failures"], local["failures"]) == ("cooling_down", 1, 0)
    assert f"did not answer in {TIMEOUT_S:g} s" in gemini["reason"]

    # Cooling down, the cloud is skipped: the next call goes straight to the local model.
    assert llm.run.remote(REQUEST).result(timeout_s=120).model == "SmolLM2-135M-Instruct"
    assert len(hanging_gemini.requests) == 1
