# Every entry point a newcomer needs. `make run` and `make test` work on a
# fresh machine with only Python 3.11: the first target they need builds .venv.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
GEN_DIR := clients/python/src
PROTOS := $(shell find proto -name '*.proto' | sort)
# pytest processes of `make test`, each with a PostgreSQL of its own (most tests
# wait on servers, databases and timeouts, so three keep two cores busier: 1,251 s
# of pytest against two processes' 1,509 s on the same quiet machine, 5,780 tests).
TEST_PROCESSES ?= 3

.PHONY: run test proto proto-check proto-breaking lint typecheck bench soak clean

$(STAMP): pyproject.toml clients/python/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e clients/python -e '.[dev]'
	touch $(STAMP)

## Start the service; with no SEALTRAIL_DATABASE_URL it runs an embedded PostgreSQL.
## The web console listens on 127.0.0.1:8080 (SEALTRAIL_CONSOLE_LISTEN to move it,
## set empty for no console).
run: $(STAMP)
	@console=$${SEALTRAIL_CONSOLE_LISTEN-127.0.0.1:8080}; \
	  exec $(BIN)/sealtrail-server serve $${console:+--console "$$console"}

## Debian's Chromium and ChromeDriver, for the console's browser tests (needs root).
CHROMEDRIVER := /usr/bin/chromedriver
$(CHROMEDRIVER):
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver

## Run every check CI runs: the contract, generated code, lint, types, tests.
test: $(STAMP) $(CHROMEDRIVER) lint proto-check proto-breaking typecheck
	$(BIN)/python -m pytest -q -p no:cacheprovider -n $(TEST_PROCESSES) --dist loadfile \
	  --durations=25; rc=$$?; \
	  if [ $$rc -eq 5 ]; then echo "pytest collected no tests"; exit 1; fi; exit $$rc

## Regenerate the Python client's protobuf and gRPC modules (committed).
proto: $(STAMP)
	$(BIN)/python scripts/gen_protos.py --out $(GEN_DIR)

## Fail when the committed generated code differs from what proto/ generates.
proto-check: $(STAMP)
	$(BIN)/python scripts/gen_protos.py --check $(GEN_DIR)

## Fail when proto/ breaks compatibility with main (skipped where main has no proto/).
proto-breaking: $(STAMP)
	@if git rev-parse --verify -q main >/dev/null && git cat-file -e main:buf.yaml 2>/dev/null; then \
	  $(BIN)/buf breaking --against '.git#branch=main'; \
	else echo "proto-breaking: main has no buf.yaml yet, nothing to compare"; fi

lint: $(STAMP)
	$(BIN)/buf lint
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

## A long run of mixed traffic (SOAK_SECONDS, default 600) sampled over time, then
## many more hostile requests per RPC than CI sends (docs/reliability.md).
soak: $(STAMP)
	$(BIN)/python -m bench.soak --duration $${SOAK_SECONDS:-600}
	SEALTRAIL_HOSTILE_EXAMPLES=$${SOAK_HOSTILE_EXAMPLES:-500} $(BIN)/python -m pytest -q \
	  -p no:cacheprovider tests/integration/test_hostile_input.py

## Measure throughput against in-run baselines (ratios, never absolute gates).
bench: $(STAMP)
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
