"""`low`-priority work as the modalities mark it for their backends (the executor calls
`in_background` for a low record's nodes: batch lines and low tasks)."""

from __future__ import annotations

from dataclasses import replace

import modalities
from deployments.types import ChatMessage, EmbedRequest, LLMRequest, SpeechRequest


def test_llm_and_embed_requests_run_in_the_background_and_keep_everything_else() -> None:
    chat = LLMRequest(messages=[ChatMessage("user", "hi")], max_tokens=8)
    vectors = EmbedRequest(["a sentence"], truncate=True)
    for service, request in (("llm", chat), ("embed", vectors)):
        marked = modalities.get(service).in_background(request)
        assert marked.background and not request.background
        assert marked == replace(request, background=True)


def test_a_modality_without_a_background_mode_leaves_the_request_as_it_is() -> None:
    speech = SpeechRequest(text="hello")
    assert modalities.get("tts").in_background(speech) is speech
