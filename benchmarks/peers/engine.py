"""llama-cpp-python's own OpenAI server (`python -m llama_cpp.server`), with llama.cpp's extra buffer
types off, as the platform's backend loads its model (`deployments/llm.py: without_extra_buffer_types`).

On a CPU that advertises AMX, llama.cpp repacks SmolLM2's weights for its AMX kernels, and on these
virtual machines the first generation then dies of SIGSEGV. The server takes no option for it, so
this sets `use_extra_bufts = False` in the model parameters' defaults, then runs the server with its
own command line. It runs in the peers' venv (benchmarks/.venv-peers), never the platform's:

    benchmarks/.venv-peers/bin/python benchmarks/peers/engine.py --model M.gguf --n_threads 1 --port 8401
"""

from __future__ import annotations

from typing import Any

import llama_cpp.llama_cpp as api

_default_params = api.llama_model_default_params


def _params_without_extra_buffer_types() -> Any:
    params = _default_params()
    params.use_extra_bufts = False
    return params


api.llama_model_default_params = _params_without_extra_buffer_types

if __name__ == "__main__":
    from llama_cpp.server.__main__ import main

    main()
