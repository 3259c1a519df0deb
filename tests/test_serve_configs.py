"""Both Serve configs validate against Ray's own schema and against the platform's settings."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from ray.serve.schema import ServeDeploySchema

from modalities import SERVICES
from serve_app.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = ["serve_config.yaml", "serve_config.gpu.yaml"]


def load(name: str) -> dict:  # type: ignore[type-arg]
    return yaml.safe_load((ROOT / name).read_text())


@pytest.mark.parametrize("name", CONFIGS)
def test_config_matches_rays_schema(name: str) -> None:
    schema = ServeDeploySchema.model_validate(load(name))
    (app,) = schema.applications
    assert app.import_path == "serve_app.app:build_app"
    assert {d.name for d in app.deployments} == {"ingress", *SERVICES}


@pytest.mark.parametrize("name", CONFIGS)
def test_config_args_are_valid_settings(name: str, tmp_path: Path) -> None:
    (app,) = load(name)["applications"]
    settings = Settings.load(app["args"], env={"LABUBU_DATA_DIR": str(tmp_path), "LABUBU_JWT_SECRET": "x" * 40})
    assert set(settings.services) == set(SERVICES)


def test_cpu_config_asks_for_no_gpu() -> None:
    (app,) = load("serve_config.yaml")["applications"]
    for deployment in app["deployments"]:
        assert deployment["ray_actor_options"].get("num_gpus", 0) == 0, deployment["name"]


def test_gpu_config_uses_fractional_gpus_and_vllm() -> None:
    (app,) = load("serve_config.gpu.yaml")["applications"]
    gpus = {d["name"]: d["ray_actor_options"].get("num_gpus", 0) for d in app["deployments"]}
    assert 0 < gpus["llm"] < 1 and 0 < gpus["text2pic"] < 1 and 0 < gpus["stt"] < 1 and gpus["tts"] == 0
    assert app["args"]["services"]["llm"]["backends"][0]["name"] == "vllm"


@pytest.mark.parametrize("name", CONFIGS)
def test_the_ingress_refuses_with_503_and_retry_after_beyond_a_short_queue(name: str) -> None:
    """Under overload Serve's proxy answers 503 with Retry-After at once, as the code's defaults say,
    rather than queueing requests without bound until their clients time out."""
    from serve_app.app import Ingress

    (app,) = ServeDeploySchema.model_validate(load(name)).applications
    (ingress,) = [d for d in app.deployments if d.name == "ingress"]
    defaults = Ingress._deployment_config
    for config in (ingress, defaults):
        assert config.max_queued_requests == 100
        assert config.backpressure_config.status_code == 503
        assert config.backpressure_config.retry_after_s == 5
    assert ingress.max_ongoing_requests == defaults.max_ongoing_requests == 1000
