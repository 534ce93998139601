# One-command entry points. Each target sets up what it needs (venv, installs) first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: install demo test lint typecheck unit bench-ingest bench-query bench-cache eval-cisi clean

$(BIN)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# torch first, pinned: the CPU build (see constraints.txt).
	$(BIN)/pip install --quiet -c constraints.txt torch==2.13.0
	$(BIN)/pip install --quiet -c constraints.txt -e '.[dev]'
	touch $@

install: $(BIN)/.installed

## Ingest the bundled sample corpus, ask a question, print the top passages and sources.
demo: install
	$(BIN)/shardrag demo --data-dir ./shardrag-data

## Lint, type-check and run the whole test suite.
test: install lint typecheck unit

lint: install
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

typecheck: install
	$(BIN)/mypy src

unit: install
	$(BIN)/python -m pytest

bench-ingest: install
	$(BIN)/python bench/ingest.py

bench-query: install
	$(BIN)/python bench/query.py

bench-cache: install
	$(BIN)/python bench/cache.py

eval-cisi: install
	$(BIN)/python bench/cisi_to_beir.py bench/data/cisi
	$(BIN)/shardrag eval bench/data/cisi

clean:
	rm -rf $(VENV) shardrag-data bench/data .pytest_cache .mypy_cache .ruff_cache
