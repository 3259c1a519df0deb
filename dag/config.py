"""The workflow executor's typed, frozen configuration, and what it is handed to open its stores.

The settings layer (serve_app/settings.py) fills `ExecutorConfig` from the app's `workflows` and
`scheduler` sections; the defaults live here, once. Nothing secret goes in it: the executor is a
detached actor whose arguments Ray keeps in clear, so it opens its stores itself (`Stores`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from scheduler.settings import DEFAULT_LEASE_S
from state.artifacts import ArtifactStore
from state.store import StateStore

# A node's retryable failures (a replica that died, a backend that timed out, a 503) are tried
# again this many times, after `backoff_s`, doubling up to `backoff_max_s`, with jitter.
DEFAULT_RETRIES = 2
DEFAULT_BACKOFF_S = 0.5
DEFAULT_BACKOFF_MAX_S = 10.0


@dataclass(frozen=True)
class ExecutorConfig:
    """What the workflow executor runs with; a redeploy hands the running actor a new one
    (`WorkflowExecutor.reconfigure`).

    - `app_name`: the Serve application whose modality deployments the nodes call.
    - `retries`, `backoff_s`, `backoff_max_s`: see `DEFAULT_RETRIES`.
    - `cost_models`: the config's cost formulas per service, over the modalities' own
      (`modalities.cost_models`).
    - `lease_s`: the scheduler's grant lease, inside which the executor renews its grants.
    """

    app_name: str = "labubu"
    retries: int = DEFAULT_RETRIES
    backoff_s: float = DEFAULT_BACKOFF_S
    backoff_max_s: float = DEFAULT_BACKOFF_MAX_S
    cost_models: Mapping[str, Mapping[str, float]] = field(default_factory=dict)
    lease_s: float = DEFAULT_LEASE_S

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable, for the state store (`ExecutorConfig(**data)` reads it back)."""
        return {**dataclasses.asdict(self), "cost_models": {k: dict(v) for k, v in self.cost_models.items()}}


class Stores(Protocol):
    """Opens the platform's stores in the calling process, from that process's own settings.

    What travels to the actor is where the stores are, never how to log in: the Redis URL (with
    its password) and the S3 keys come from the environment of the process that opens them.
    """

    def state(self) -> StateStore: ...

    def artifacts(self) -> ArtifactStore: ...
