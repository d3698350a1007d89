# Lifecycle: `make demo` runs the main job, `make test` passes the tests. Both set up .venv first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# The runtime set (requirements.txt, what the image installs) and the dev tools on top of it
# (requirements-dev.txt: pytest, hypothesis, ruff, mypy and its stubs) each have a stamp named by
# a checksum of the files they come from, so editing either file reinstalls on the next make.
# demo, bench, sandbox and validate need only the runtime set; lint, test, unit and e2e the dev one.
STAMP := $(VENV)/.installed-$(shell cat requirements.txt pyproject.toml | cksum | cut -d' ' -f1)
DEV_STAMP := $(VENV)/.installed-dev-$(shell cat requirements.txt requirements-dev.txt pyproject.toml | cksum | cut -d' ' -f1)

# The warehouse dialects (Snowflake, BigQuery, Redshift) the tests compile the sync's SQL with live in
# a venv of their own: their connectors cannot share the runtime set's pins (requirements-dialects.txt).
DIALECTS := .venv-dialects
DIALECTS_STAMP := $(DIALECTS)/.installed-$(shell cat requirements-dialects.txt | cksum | cut -d' ' -f1)

.PHONY: install install-dev dialects demo demo-warehouse test lint browser unit e2e bench sandbox validate clean

$(STAMP): requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements.txt
	$(BIN)/pip install --quiet --no-deps -e .
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

# A new runtime stamp removes every stamp, the dev one included: the dev tools are checked again.
$(DEV_STAMP): $(STAMP) requirements-dev.txt
	$(BIN)/pip install --quiet -r requirements-dev.txt
	rm -f $(VENV)/.installed-dev-*
	touch $(DEV_STAMP)

$(DIALECTS_STAMP): requirements-dialects.txt
	$(PYTHON) -m venv $(DIALECTS)
	$(DIALECTS)/bin/pip install --quiet -r requirements-dialects.txt
	rm -f $(DIALECTS)/.installed-*
	touch $(DIALECTS_STAMP)

install: $(STAMP)

install-dev: $(DEV_STAMP)

dialects: $(DIALECTS_STAMP)

demo: install
	$(BIN)/lifecycle demo

# The same demo with the CRM in a warehouse-shaped DuckDB file, read through config/examples/warehouse/sources.yml.
demo-warehouse: install
	$(BIN)/lifecycle demo --warehouse

# The type checker goes last: its report is the one left on screen when it fails.
lint: install-dev
	$(BIN)/ruff check .
	$(BIN)/ruff check --select AIR3 .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

# Headless Chromium renders the Campaigns page and the digest as a person sees them.
browser:
	command -v chromium >/dev/null 2>&1 || (apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null)

test: lint browser dialects
	$(BIN)/pytest -q -p no:cacheprovider

unit: install-dev
	$(BIN)/pytest -q -p no:cacheprovider -m "not slow" tests/unit

e2e: install-dev
	$(BIN)/pytest -q -m e2e tests/e2e

bench: install
	$(BIN)/lifecycle bench

sandbox: install
	$(BIN)/lifecycle sandbox

validate: install
	$(BIN)/lifecycle validate

clean:
	rm -rf $(VENV) $(DIALECTS) .demo .pytest_cache .ruff_cache .mypy_cache
