"""Cost models: what one model call costs, in each service's own unit.

Each service has its own virtual clock, so units never need to compare across services; within a
service the unit must follow what the backend spends (tokens, seconds, pixels), or a tenant with
large requests would get more than its share. A cost is estimated at admission from the request
and corrected at release from what the backend reports.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields

from scheduler.errors import InvalidSettings, UnknownService


@dataclass(frozen=True)
class Usage:
    """The amounts of one model call that cost models read.

    At admission, fill in what the request says: the text length as `characters`, the `max_tokens`
    asked for as `output_tokens` (or None for the configured default budget), the steps and size
    of an image to generate. At release, what the backend reported (None where it reports nothing).
    Token counts left None are estimated from `characters`.
    """

    prompt_tokens: int | None = None
    output_tokens: int | None = None
    characters: int = 0
    audio_seconds: float = 0.0
    images: int = 0
    steps: int = 0
    megapixels: float = 0.0

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if value is not None and not (math.isfinite(value) and value >= 0):
                raise ValueError(f"usage {f.name} must be a finite number >= 0, got {value!r}")


# The quantities a cost formula may weigh, derived from a Usage by `CostModels`.
QUANTITIES: frozenset[str] = frozenset(
    {"prompt_tokens", "output_tokens", "characters", "audio_seconds", "images", "megapixel_steps"}
)


@dataclass(frozen=True)
class CostModel:
    """A linear cost: `max(minimum, Σ terms[q] × q)` over the named quantities.

    The floor keeps every grant advancing its tenant's virtual time: a stream of free requests
    would otherwise hold a service forever.
    """

    terms: Mapping[str, float]
    minimum: float = 1.0

    def __post_init__(self) -> None:
        unknown = sorted(set(self.terms) - QUANTITIES)
        if unknown:
            raise InvalidSettings(
                "unknown cost quantity",
                [{"field": name, "reason": f"not one of {sorted(QUANTITIES)}"} for name in unknown],
            )
        for name, coefficient in self.terms.items():
            if not (math.isfinite(coefficient) and coefficient >= 0):
                raise InvalidSettings(
                    "cost coefficients must be finite and >= 0",
                    [{"field": name, "reason": f"got {coefficient!r}"}],
                )
        if not (math.isfinite(self.minimum) and self.minimum > 0):
            raise InvalidSettings(
                "the minimum cost must be finite and > 0",
                [{"field": "minimum", "reason": f"got {self.minimum!r}"}],
            )

    def cost(self, quantities: Mapping[str, float]) -> float:
        total = sum(c * quantities.get(name, 0.0) for name, c in self.terms.items())
        return max(self.minimum, total)


@dataclass(frozen=True)
class CostModels:
    """The cost model of every service, with the rules that fill in what a Usage leaves unknown."""

    models: Mapping[str, CostModel] = field(default_factory=dict)
    chars_per_token: float = 4.0
    default_output_tokens: int = 256

    def __post_init__(self) -> None:
        if not (math.isfinite(self.chars_per_token) and self.chars_per_token > 0):
            raise InvalidSettings(
                "chars_per_token must be > 0",
                [{"field": "chars_per_token", "reason": f"got {self.chars_per_token!r}"}],
            )
        if self.default_output_tokens < 0:
            raise InvalidSettings(
                "default_output_tokens must be >= 0",
                [{"field": "default_output_tokens", "reason": f"got {self.default_output_tokens!r}"}],
            )

    @classmethod
    def from_config(
        cls,
        terms: Mapping[str, Mapping[str, float]],
        *,
        defaults: Mapping[str, CostModel],
        chars_per_token: float = 4.0,
        default_output_tokens: int = 256,
    ) -> CostModels:
        """The `defaults` (each service's own model, from its descriptor) with the formulas of the
        services named in `terms` replaced, e.g. `{"llm": {"prompt_tokens": 1, "output_tokens": 3}}`;
        a `minimum` key sets the floor."""
        models = dict(defaults)
        for service, formula in terms.items():
            coefficients = {k: v for k, v in formula.items() if k != "minimum"}
            base = models.get(service)
            minimum = formula.get("minimum", base.minimum if base else 1.0)
            models[service] = CostModel(coefficients, minimum=minimum)
        return cls(models, chars_per_token, default_output_tokens)

    def estimate(self, service: str, usage: Usage) -> float:
        """The cost charged at admission; unknown output is the default budget."""
        return self._cost(service, usage, self.default_output_tokens)

    def actual(self, service: str, usage: Usage) -> float:
        """The cost charged at release; unknown output is none."""
        return self._cost(service, usage, 0)

    def _cost(self, service: str, usage: Usage, unknown_output_tokens: int) -> float:
        model = self.models.get(service.lower())
        if model is None:
            raise UnknownService(f"no cost model for service {service!r}", [{"field": "service"}])
        prompt_tokens = (
            usage.prompt_tokens
            if usage.prompt_tokens is not None
            else math.ceil(usage.characters / self.chars_per_token)
        )
        output_tokens = usage.output_tokens if usage.output_tokens is not None else unknown_output_tokens
        return model.cost(
            {
                "prompt_tokens": prompt_tokens,
                "output_tokens": output_tokens,
                "characters": usage.characters,
                "audio_seconds": usage.audio_seconds,
                "images": usage.images,
                "megapixel_steps": usage.steps * usage.megapixels,
            }
        )
