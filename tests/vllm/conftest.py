"""The vLLM tier: the platform with vLLM serving `llm`, on SmolLM2-135M-Instruct converted for it.

It runs only where vLLM imports, i.e. in the environment that `scripts/prepare_vllm_cpu.sh` makes
(`make test-vllm`); elsewhere, as in `make test`, these tests are not even collected.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest

from tests.conftest import TEST_DEPLOYMENT_OPTIONS, deploy_platform

if importlib.util.find_spec("vllm") is None:
    collect_ignore_glob = ["test_*.py"]

SERVED_NAME = "SmolLM2-135M-Instruct"
# Where scripts/prepare_vllm_cpu.sh writes the converted model; read now, before the platform
# fixture points LABUBU_DATA_DIR at its own temporary folder.
MODEL_DIR = Path(os.environ.get("LABUBU_DATA_DIR", "~/.labubu")).expanduser() / "models" / f"{SERVED_NAME}-hf"
MAX_MODEL_LEN = 2048

# The CPU-sized engine: eager mode (torch.compile on 2 cores costs minutes at start-up), a 1 GiB
# KV cache (vLLM's CPU default takes a share of the machine's memory) and a few requests batched.
VLLM_OPTIONS = {
    "model": str(MODEL_DIR),
    "served_model_name": SERVED_NAME,
    "max_model_len": MAX_MODEL_LEN,
    "dtype": "bfloat16",
    "enforce_eager": True,
    "engine_options": {"kv_cache_memory_bytes": 1 << 30, "max_num_seqs": 8},
}


@pytest.fixture(scope="session")
def vllm_platform_url(ray_cluster: None, tmp_path_factory: pytest.TempPathFactory) -> str:
    """The whole platform, deployed once, with vLLM as the only `llm` backend."""
    if not (MODEL_DIR / "config.json").is_file():
        pytest.fail(f"no converted model in {MODEL_DIR}: run scripts/prepare_vllm_cpu.sh first")
    # Four generations at once in the one engine; the replica takes two more calls (README, "Configuration").
    services = {"llm": {"backends": [{"name": "vllm", "options": VLLM_OPTIONS}], "concurrency": 4}}
    options = {**TEST_DEPLOYMENT_OPTIONS, "llm": {"max_ongoing_requests": 6}}
    args = {"services": services, "deployment_options": options}
    return deploy_platform(tmp_path_factory.mktemp("labubu-vllm-data"), args=args)
