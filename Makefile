# Quick start: `make demo` and `make test`. Both create .venv when it is missing.
PYTHON ?= python3
VENV ?= .venv
# The CPU wheel of torch is pinned so pip never pulls a multi-GB CUDA build;
# on a GPU machine: make setup TORCH_SPEC="torch==2.13.0 --index-url ..."
TORCH_SPEC ?= torch==2.13.0
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup demo test test-fast clean-out demo-clip export bench

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q $(TORCH_SPEC)
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

demo: setup
	$(BIN)/endostream demo

test: setup
	$(BIN)/python -m pytest -q -x --durations=15

export: setup
	$(BIN)/endostream export

bench: setup
	$(BIN)/endostream bench scenario=pipeline frames=300 out=out/bench

demo-clip: setup
	$(BIN)/python tools/make_demo_clip.py

clean-out:
	rm -rf out
