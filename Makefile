# `make test` and `make bench` set up .venv from scratch, with every dependency at the version
# constraints.txt records (the set CI last passed with); torch comes first, from TORCH_SPEC.
# GPU users: `make test TORCH_SPEC="torch>=2.1"` (or any pip requirement for torch).
# `make test-latest` checks the newest versions setup.cfg allows, in .venv-latest, and
# `make lock` (after it passed) makes them the tested set; `make test-oldest` checks the lowest.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
TORCH_SPEC ?= torch==2.13.0
STAMP := $(VENV)/.installed
LATEST := .venv-latest
OLDEST := .venv-oldest

.PHONY: install test test-slow test-latest test-oldest lock lint format bench demo demo-models demo-models-causal clean

install: $(STAMP)

$(STAMP): setup.cfg pyproject.toml constraints.txt
	rm -rf $(VENV)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade "pip>=24"
	$(BIN)/pip install --quiet "$(TORCH_SPEC)"
	$(BIN)/pip install --quiet -c constraints.txt -e ".[dev]"
	$(BIN)/bild-align --version
	touch $(STAMP)

# The fast suite (a few minutes); `make test-slow` runs the end-to-end tests (kills and
# resumes, two processes, the demo pipeline). CI runs both.
test: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/python -m pytest -q -m "not slow"

test-slow: $(STAMP)
	$(BIN)/python -m pytest -q -m slow

# The fast suite on the newest versions setup.cfg allows (a fresh .venv-latest every time);
# torch stays as TORCH_SPEC installed it (an eager upgrade would pull a CUDA build).
test-latest:
	rm -rf $(LATEST)
	$(PYTHON) -m venv $(LATEST)
	$(LATEST)/bin/pip install --quiet --upgrade pip
	$(LATEST)/bin/pip install --quiet "$(TORCH_SPEC)"
	$(LATEST)/bin/pip freeze | grep -i "^torch==" > $(LATEST)/torch-held.txt
	$(LATEST)/bin/pip install --quiet --upgrade --upgrade-strategy eager \
		-c $(LATEST)/torch-held.txt -e ".[dev]"
	$(LATEST)/bin/bild-align --version
	$(LATEST)/bin/ruff check src tests benchmarks
	$(LATEST)/bin/python -m pytest -q -m "not slow" -p no:cacheprovider

# The fast suite on the lowest versions setup.cfg allows (constraints-oldest.txt).
test-oldest:
	rm -rf $(OLDEST)
	$(PYTHON) -m venv $(OLDEST)
	$(OLDEST)/bin/pip install --quiet --upgrade pip
	$(OLDEST)/bin/pip install --quiet "$(TORCH_SPEC)"
	$(OLDEST)/bin/pip install --quiet -c constraints-oldest.txt -e ".[dev]"
	$(OLDEST)/bin/bild-align --version
	$(OLDEST)/bin/python -m pytest -q -m "not slow" -p no:cacheprovider

# After `make test-latest` passed: its versions become the tested set (then `make test`).
lock:
	test -x $(LATEST)/bin/pip || { echo "run make test-latest first" >&2; exit 2; }
	{ echo "# The tested set: make install pins every dependency to these (torch: TORCH_SPEC)."; \
	  echo "# Made by make lock from .venv-latest after make test-latest passed."; \
	  $(LATEST)/bin/pip freeze --exclude-editable | grep -v "^torch=="; } > constraints.txt

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
	$(BIN)/python -m bild_align.pipeline.demo.models models

demo-models-causal: $(STAMP)
	$(BIN)/python -m bild_align.pipeline.demo.models causal

clean:
	rm -rf $(VENV) $(LATEST) $(OLDEST) build dist src/*.egg-info .pytest_cache .ruff_cache
