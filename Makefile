# Santong: `make serve` runs the server, `make test` runs the suite. Both create .venv first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: serve test lint bench definitions clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	@touch $(STAMP)

serve: $(STAMP)
	$(BIN)/santong serve

test: $(STAMP)
	$(BIN)/ruff check src tests tools migrations
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check src tests tools migrations

# Regenerate src/santong/definitions/r4.json from the official HL7 R4 package (needs npm).
definitions: $(STAMP)
	$(BIN)/python tools/gen_r4_definitions.py --check

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
