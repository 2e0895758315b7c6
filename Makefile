# `make test` and `make bench` set up .venv from scratch.
# GPU users: `make test TORCH_SPEC="torch>=2.1"` (or any pip requirement for torch).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
TORCH_SPEC ?= torch==2.13.0
STAMP := $(VENV)/.installed

.PHONY: install test test-slow lint format bench demo demo-models demo-models-causal clean

install: $(STAMP)

$(STAMP): setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet "$(TORCH_SPEC)"
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $(STAMP)

# The fast suite (a few minutes); `make test-slow` runs the end-to-end tests (kills and
# resumes, two processes, the demo pipeline). CI runs both.
test: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/python -m pytest -q -m "not slow"

test-slow: $(STAMP)
	$(BIN)/python -m pytest -q -m slow

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

format: $(STAMP)
	$(BIN)/ruff format src tests benchmarks
	$(BIN)/ruff check --fix src tests benchmarks

bench: $(STAMP)
	$(BIN)/bild-align bench

# The whole pipeline, offline, on the shipped demo pair (data/demo) and gettext-de-en.
demo: $(STAMP)
	$(BIN)/bild-align demo

# Rebuild data/demo (tokenizer, large and small models) from scratch on this machine's
# gettext catalogs: 38 minutes on 2 CPU cores (large model 34.5, small model 3.5).
demo-models: $(STAMP)
	$(BIN)/python -m bild_align.stages.demo_models models

demo-models-causal: $(STAMP)
	$(BIN)/python -m bild_align.stages.demo_models causal

clean:
	rm -rf $(VENV) build dist src/*.egg-info .pytest_cache .ruff_cache
