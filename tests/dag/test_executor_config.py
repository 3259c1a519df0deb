"""The workflow executor is detached: a redeploy's settings reach the running actor."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
import ray

from dag.config import ExecutorConfig
from dag.executor import executor_actor
from scheduler.actor import SchedulerActor
from scheduler.settings import SchedulerConfig, ServiceLimits
from serve_app.settings import StoreLocation
from tests.helpers import wait_restarted, wait_until

pytestmark = pytest.mark.ray


def test_a_redeploy_reconfigures_the_running_executor(ray_cluster: None, tmp_path: Path) -> None:
    scheduler = ray.remote(SchedulerActor).options(num_cpus=0).remote(SchedulerConfig({"llm": ServiceLimits(1)}))
    name = f"test-workflows-{uuid.uuid4().hex[:8]}"
    stores = StoreLocation(str(tmp_path))  # the actor opens SQLite there itself
    first = executor_actor(stores, scheduler, ExecutorConfig(app_name="before", retries=1), name=name)
    try:
        assert ray.get(first.config.remote()).retries == 1
        redeployed = ExecutorConfig(
            app_name="after",
            retries=5,
            backoff_s=0.1,
            backoff_max_s=1.0,
            cost_models={"llm": {"prompt_tokens": 2.0}},
            lease_s=9.0,
        )
        again = executor_actor(stores, scheduler, redeployed, name=name)
        # Sent without waiting (an async actor may run the next call first): it lands at once.
        wait_until(lambda: ray.get(again.config.remote()) == redeployed, timeout_s=10)
        assert ray.get(again.ping.remote()) == "pong"  # the same actor, still running
        assert (tmp_path / "state.sqlite3").exists()

        # Ray restarts it with the arguments it was created with: it keeps the config it last had.
        wait_restarted(again)
        assert ray.get(again.config.remote()) == redeployed
    finally:
        ray.kill(first)
        ray.kill(scheduler)
