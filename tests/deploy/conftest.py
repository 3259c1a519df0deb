"""Deployment tests: the manifests (fast) and the multi-node proof (minutes, marked `multinode`)."""

from __future__ import annotations

import pytest


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "multinode: starts a two-node Ray cluster with `ray start` and deploys the platform (minutes); "
        "deselect with -m 'not multinode'",
    )
