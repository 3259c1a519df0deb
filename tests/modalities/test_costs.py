"""The cost models: each modality's default formula (its descriptor) and the config's replacements."""

from __future__ import annotations

import pytest

from modalities import cost_models
from scheduler.costs import CostModel, CostModels, Usage
from scheduler.errors import InvalidSettings, UnknownService

COSTS = cost_models()


def test_llm_charges_prompt_tokens_plus_twice_the_output() -> None:
    usage = Usage(prompt_tokens=100, output_tokens=50)
    assert COSTS.estimate("llm", usage) == 200
    assert COSTS.actual("llm", usage) == 200


def test_llm_estimates_prompt_tokens_from_characters_rounding_up() -> None:
    assert COSTS.actual("llm", Usage(characters=9, output_tokens=0)) == 3  # ceil(9 / 4)
    assert COSTS.actual("llm", Usage(characters=400, output_tokens=10)) == 120
    # Known token counts win over the characters.
    assert COSTS.actual("llm", Usage(prompt_tokens=7, characters=400, output_tokens=0)) == 7


def test_unknown_output_is_the_default_budget_at_admission_and_nothing_at_release() -> None:
    usage = Usage(prompt_tokens=10)
    assert COSTS.estimate("llm", usage) == 10 + 2 * 256
    assert COSTS.actual("llm", usage) == 10
    custom = cost_models(default_output_tokens=16)
    assert custom.estimate("llm", usage) == 10 + 2 * 16


def test_other_services_units() -> None:
    assert COSTS.estimate("tts", Usage(characters=120)) == 120
    assert COSTS.estimate("stt", Usage(audio_seconds=12.5)) == 12.5
    assert COSTS.estimate("pic2text", Usage(images=3)) == 3
    assert COSTS.estimate("text2pic", Usage(steps=20, megapixels=0.5)) == 10
    assert COSTS.estimate("embed", Usage(characters=40)) == 10


def test_a_cost_never_falls_below_the_floor() -> None:
    assert COSTS.actual("llm", Usage()) == 1.0
    assert COSTS.actual("tts", Usage(characters=0)) == 1.0
    assert COSTS.actual("stt", Usage(audio_seconds=0.01)) == 0.1
    assert COSTS.actual("text2pic", Usage(steps=1, megapixels=0.01)) == 0.1


def test_service_names_are_case_insensitive() -> None:
    assert COSTS.estimate("LLM", Usage(prompt_tokens=3, output_tokens=0)) == 3


def test_unknown_service() -> None:
    with pytest.raises(UnknownService) as info:
        COSTS.estimate("video", Usage())
    assert info.value.code == "unknown_service"


def test_from_config_replaces_named_formulas_and_keeps_the_rest() -> None:
    costs = cost_models(
        {"llm": {"prompt_tokens": 1, "output_tokens": 3}, "tts": {"characters": 0.5, "minimum": 10}},
        chars_per_token=2.0,
    )
    assert costs.actual("llm", Usage(characters=10, output_tokens=2)) == 5 + 6
    assert costs.actual("tts", Usage(characters=100)) == 50
    assert costs.actual("tts", Usage(characters=4)) == 10
    assert costs.actual("stt", Usage(audio_seconds=3)) == 3
    # A replaced formula keeps the service's default floor unless it names one.
    assert cost_models({"stt": {"audio_seconds": 2}}).actual("stt", Usage()) == 0.1


def test_new_services_can_be_configured() -> None:
    costs = cost_models({"video": {"megapixel_steps": 2}})
    assert costs.actual("video", Usage(steps=10, megapixels=1)) == 20


@pytest.mark.parametrize(
    "terms, minimum",
    [({"tokens": 1.0}, 1.0), ({"characters": -1.0}, 1.0), ({"characters": float("nan")}, 1.0), ({}, 0.0)],
)
def test_bad_cost_models_are_refused(terms: dict[str, float], minimum: float) -> None:
    with pytest.raises(InvalidSettings) as info:
        CostModel(terms, minimum=minimum)
    assert info.value.code == "invalid_settings"


def test_bad_estimation_rules_are_refused() -> None:
    with pytest.raises(InvalidSettings):
        CostModels(chars_per_token=0.0)
    with pytest.raises(InvalidSettings):
        CostModels(default_output_tokens=-1)


@pytest.mark.parametrize("field", ["prompt_tokens", "characters", "audio_seconds", "megapixels"])
@pytest.mark.parametrize("value", [-1, float("inf"), float("nan")])
def test_usage_refuses_negative_or_non_finite_amounts(field: str, value: float) -> None:
    with pytest.raises(ValueError):
        Usage(**{field: value})  # type: ignore[arg-type]
