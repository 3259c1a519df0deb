"""Stores opened by the test itself, handed to an actor as its `dag.config.Stores`.

The platform hands its actors a `serve_app.settings.StoreLocation`, which opens the stores in the
actor's own process and carries no secret. A test that gives an actor a store of its own (a Redis
database under a prefix, a moto bucket) hands over the opened store instead: its URL has no password.
"""

from __future__ import annotations

from dataclasses import dataclass

from state.artifacts import ArtifactStore
from state.store import StateStore


@dataclass(frozen=True)
class OpenedStores:
    store: StateStore
    artifact_store: ArtifactStore

    def state(self) -> StateStore:
        return self.store

    def artifacts(self) -> ArtifactStore:
        return self.artifact_store
