"""The `llm` modality's newer params and charges: `response_format` on a workflow node (its output is
JSON that follows the schema, on the real SmolLM2), and `n` choices charged as n generations."""

from __future__ import annotations

import json

import jsonschema
import pytest
from pydantic import ValidationError

from deployments.llm import LlamaCppBackend
from deployments.types import LLMRequest, LLMResult, ResponseFormat
from modalities.llm import MODALITY
from scheduler.costs import Usage

SCHEMA = {
    "type": "object",
    "properties": {"title": {"type": "string", "maxLength": 30}, "year": {"type": "integer"}},
    "required": ["title", "year"],
}


async def test_a_node_with_a_response_format_outputs_json_that_follows_it() -> None:
    params = MODALITY.validate_params(
        {
            "max_tokens": 80,
            "temperature": 0,
            "response_format": {"type": "json_schema", "json_schema": {"name": "film", "schema": SCHEMA}},
        }
    )
    request = MODALITY.build_request(params, "Name a film.", [])
    assert request.response_format == ResponseFormat("json_schema", SCHEMA, "film", False)
    backend = LlamaCppBackend(n_ctx=512)
    backend.load()
    output = MODALITY.output(await backend.run(request))
    jsonschema.validate(json.loads(output.text), SCHEMA)


def test_json_object_and_text_formats() -> None:
    json_object = MODALITY.validate_params({"response_format": {"type": "json_object"}})
    assert MODALITY.build_request(json_object, "x", []).response_format == ResponseFormat("json_object")
    text = MODALITY.validate_params({"response_format": {"type": "text"}})
    assert MODALITY.build_request(text, "x", []).response_format is None


@pytest.mark.parametrize(
    ("response_format", "loc"),
    [
        ({"type": "xml"}, ("response_format", "type")),
        ({"type": "json_schema"}, ("response_format", "json_schema")),
        ({"type": "json_object", "extra": 1}, ("response_format", "extra")),
    ],
)
def test_a_bad_response_format_is_a_422_naming_it(response_format: dict[str, object], loc: tuple[str, ...]) -> None:
    with pytest.raises(ValidationError) as caught:
        MODALITY.validate_params({"response_format": response_format})
    assert caught.value.errors()[0]["loc"] == loc


def test_n_choices_are_charged_as_n_generations() -> None:
    request = LLMRequest(prompt="abcd", max_tokens=10, n=3)
    assert MODALITY.requested_usage(request) == Usage(characters=12, output_tokens=30)
    result = LLMResult(text="x", finish_reason="stop", prompt_tokens=5, completion_tokens=21)
    assert MODALITY.used(request, result) == Usage(prompt_tokens=15, output_tokens=21)
    assert MODALITY.payload_bound(request) > MODALITY.payload_bound(LLMRequest(prompt="abcd", max_tokens=10))
