"""The modalities: one module each (see `modalities.base.Modality`), looked up here by name.

Adding a modality is one new module, its line below, a config entry and its tests.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from modalities import embed, llm, pic2text, stt, text2pic, text2video, tts
from modalities.base import Modality, Output
from scheduler.costs import CostModels

MODALITIES: dict[str, Modality[Any, Any, Any]] = {
    m.name: m
    for m in (
        llm.MODALITY,
        stt.MODALITY,
        tts.MODALITY,
        pic2text.MODALITY,
        text2pic.MODALITY,
        embed.MODALITY,
        text2video.MODALITY,
    )
}
SERVICES: tuple[str, ...] = tuple(MODALITIES)

_BY_NAME = {alias.lower(): m for m in MODALITIES.values() for alias in (m.name, *m.aliases)}


def find(name: str) -> Modality[Any, Any, Any] | None:
    """The modality a service name (or an alias, in any case) names, or None."""
    return _BY_NAME.get(name.lower())


def get(name: str) -> Modality[Any, Any, Any]:
    """The modality of a service name; KeyError for an unknown one (a bug: names are validated at the door)."""
    found = find(name)
    if found is None:
        raise KeyError(f"unknown service {name!r}; known: {list(MODALITIES)}")
    return found


def build_request(service: str, params: Mapping[str, Any], text: str, media: list[Output]) -> Any:
    """The request of a task or workflow node of `service`, from its composed input and params."""
    modality = get(service)
    return modality.build_request(modality.validate_params(params), text, media)


def cost_models(terms: Mapping[str, Mapping[str, float]] | None = None, **options: Any) -> CostModels:
    """The scheduler's cost models: each modality's own, with the formulas the config names replaced
    (`{"llm": {"prompt_tokens": 1, "output_tokens": 3}}`; a `minimum` key sets the floor)."""
    defaults = {m.name: m.cost_model for m in MODALITIES.values()}
    return CostModels.from_config(terms or {}, defaults=defaults, **options)
