# Santong: `make serve` runs the server, `make test` runs the suite. Both create .venv first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: serve test lint bench demo definitions clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	@touch $(STAMP)

serve: $(STAMP)
	$(BIN)/santong serve

test: $(STAMP)
	$(BIN)/ruff check src tests tools migrations bench
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check src tests tools migrations bench

# `make bench` (full), `make bench ARGS=--quick` (< 2 min), see bench/README.md. Installs
# Debian's wrk when it can (root + apt-get); without it the Python load generator is used.
BENCH_STAMP := $(VENV)/.bench-installed
$(BENCH_STAMP): pyproject.toml $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[test,bench]'
	@touch $(BENCH_STAMP)

bench: $(BENCH_STAMP)
	@command -v wrk >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null \
		&& (apt-get install -y -qq wrk || (apt-get update -qq && apt-get install -y -qq wrk)) \
		>/dev/null 2>&1; } || echo "bench: wrk unavailable; using bench/pyload.py"
	$(BIN)/python bench/run.py $(ARGS)

# Load a small generated community into the server `make serve` runs (in another shell).
DEMO_URL ?= http://127.0.0.1:8080/fhir
DEMO_PATIENTS ?= 50
demo: $(STAMP)
	$(BIN)/santong generate --patients $(DEMO_PATIENTS) --seed 1 --load $(DEMO_URL)

# Regenerate src/santong/definitions/*.json from the official HL7 R4 package (needs npm).
definitions: $(STAMP)
	$(BIN)/python tools/gen_r4_definitions.py --check
	$(BIN)/python tools/gen_r4_search_parameters.py --check
	$(BIN)/python tools/gen_r4_compartments.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
