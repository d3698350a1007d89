# Lifecycle: `make demo` runs the main job, `make test` passes the tests. Both set up .venv first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat requirements.txt pyproject.toml | cksum | cut -d' ' -f1)

.PHONY: install demo test lint browser unit e2e bench sandbox validate clean

$(STAMP): requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements.txt
	$(BIN)/pip install --quiet --no-deps -e .
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(BIN)/lifecycle demo

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff check --select AIR3 .

# Headless Chromium renders the Campaigns page and the digest as a person sees them.
browser:
	command -v chromium >/dev/null 2>&1 || (apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null)

test: lint browser
	$(BIN)/pytest -q -p no:cacheprovider

unit: install
	$(BIN)/pytest -q -p no:cacheprovider -m "not slow" tests/unit

e2e: install
	$(BIN)/pytest -q -m e2e tests/e2e

bench: install
	$(BIN)/lifecycle bench

sandbox: install
	$(BIN)/lifecycle sandbox

validate: install
	$(BIN)/lifecycle validate

clean:
	rm -rf $(VENV) .demo .pytest_cache .ruff_cache
