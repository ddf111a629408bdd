# The two commands: `make demo` runs the service with the sandbox gateway; `make test` runs
# lint, types and the whole test suite. Both create .venv and install what they need.

VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# The first Python 3.11+ on the PATH (override with `make PYTHON=/path/to/python3.12`).
PYTHON ?= $(shell for p in python3.13 python3.12 python3.11 python3; do \
            command -v $$p >/dev/null 2>&1 && $$p -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null \
            && { echo $$p; break; }; done)

.PHONY: install browser test lint types unit demo bench bench-http clean

$(STAMP): pyproject.toml
	@test -n "$(PYTHON)" || { echo "callbackpool needs Python 3.11 or newer on the PATH" >&2; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[test]'
	@touch $(STAMP)

install: $(STAMP)

lint: install
	$(BIN)/ruff check $(wildcard src tests bench)
	$(BIN)/ruff format --check $(wildcard src tests bench)
	$(BIN)/lint-imports

types: install
	$(BIN)/mypy

browser:
	@scripts/ensure-chromium

unit: install browser
	$(BIN)/pytest $(PYTEST_ARGS)

test: lint types unit

# The whole flow on this machine: the sandbox gateway, an SQLite file, a fresh admin token.
demo: install
	$(BIN)/callbackpool demo $(DEMO_ARGS)

bench: install
	$(BIN)/python bench/lease_cycle.py

bench-http: install
	$(BIN)/python bench/http_roundtrip.py

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache
