# The single task entry point for people, README and CI. `make help` lists the tasks.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.DEFAULT_GOAL := help

.PHONY: help
help: ## List the tasks
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  \033[36m%-12s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

$(STAMP): requirements.lock packages/gatepass/pyproject.toml packages/gatepass-server/pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11) and "Python 3.11 or newer is required")'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements.lock
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation \
		-e packages/gatepass -e packages/gatepass-server
	touch $(STAMP)

.PHONY: install
install: $(STAMP) ## Create or update .venv with the locked dependencies

.PHONY: serve
serve: $(STAMP) ## Start the server on the embedded default (SQLite in ./gatepass-data, 127.0.0.1:8080)
	$(BIN)/gatepass-server serve

.PHONY: test
test: $(STAMP) ## Run the whole test suite (PostgreSQL tests skip with a reason if it is absent, unless CI=true)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

.PHONY: test-long
test-long: $(STAMP) ## Run the long suites only: soak, long fuzzing, long histories (marker `long`)
	$(BIN)/python -m pytest -m long $(PYTEST_ARGS)

.PHONY: bench
bench: $(STAMP) ## Measure every DESIGN.md performance target (~25 min); report in bench/results/
	$(BIN)/python -m bench

.PHONY: bench-quick
bench-quick: $(STAMP) ## The same rows, shorter and smaller (~3 min); report in bench/results/quick/
	$(BIN)/python -m bench --quick

.PHONY: lint
lint: $(STAMP) ## Ruff, mypy --strict and bandit
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/bandit --quiet --configfile pyproject.toml --recursive packages bench

.PHONY: format
format: $(STAMP) ## Apply ruff's formatter and safe fixes
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

.PHONY: lock
lock: ## Re-resolve requirements.lock from the packages' declared ranges
	rm -rf .lock-venv && $(PYTHON) -m venv .lock-venv
	.lock-venv/bin/pip install --quiet --upgrade pip
	.lock-venv/bin/pip install --quiet -r requirements-dev.in -e 'packages/gatepass' -e 'packages/gatepass-server[postgres,redis]'
	.lock-venv/bin/pip freeze --exclude-editable --all | grep -v '^pip==' > requirements.lock
	rm -rf .lock-venv

.PHONY: clean
clean: ## Remove the virtual environment and caches
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis
