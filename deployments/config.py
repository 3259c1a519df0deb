"""The typed, frozen configuration of one modality deployment, as its replicas receive it.

The settings layer (serve_app/settings.py) fills it from the modality's descriptor and the Serve
config; the defaults live there, once. Nothing secret goes in here: Serve checkpoints a
deployment's arguments in clear, so backends read their keys from the replica's environment.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

# The failover chain's defaults (deployments/failover.py), here once.
DEFAULT_TIMEOUT_S = 300.0  # a backend that has not answered by then has failed (per modality: its descriptor)
DEFAULT_FAILURE_THRESHOLD = 3  # failures in a row before a backend cools down
DEFAULT_COOLDOWN_S = 30.0


@dataclass(frozen=True)
class BackendSpec:
    """One backend of a failover list: its config name, its class as "module:Class", its options."""

    name: str
    path: str
    options: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ServiceConfig:
    """A modality deployment's backends in failover order and how the chain treats them.

    `concurrency` is how many model calls the backend truly runs at once; calls beyond it wait in
    the replica (serve_app/capacity.py sets the deployment's `max_ongoing_requests` from it).
    """

    service: str
    backends: tuple[BackendSpec, ...]
    timeout_s: float = DEFAULT_TIMEOUT_S
    concurrency: int = 1
    failure_threshold: int = DEFAULT_FAILURE_THRESHOLD
    cooldown_s: float = DEFAULT_COOLDOWN_S
