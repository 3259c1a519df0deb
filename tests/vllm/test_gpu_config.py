"""The GPU config's vLLM options are options that this vLLM really has (no GPU needed to check that)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import yaml
from vllm import AsyncEngineArgs

from deployments.llm import VllmBackend

ROOT = Path(__file__).resolve().parents[2]


def test_gpu_config_vllm_options_are_engine_args() -> None:
    (app,) = yaml.safe_load((ROOT / "serve_config.gpu.yaml").read_text())["applications"]
    (spec,) = [b for b in app["args"]["services"]["llm"]["backends"] if b["name"] == "vllm"]
    backend = VllmBackend(**spec["options"])
    assert set(backend.engine_options) <= {f.name for f in dataclasses.fields(AsyncEngineArgs)}
    # vLLM's memory share is of the whole card: it must fit in the GPU share Ray gives the replica.
    (llm,) = [d for d in app["deployments"] if d["name"] == "llm"]
    assert 0 < backend.gpu_memory_utilization <= llm["ray_actor_options"]["num_gpus"] < 1
