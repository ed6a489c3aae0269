# The two commands: `make run` and `make test`. Both create .venv if missing and
# install the locked, hash-checked dependencies, the broker's jars and the API
# docs' Swagger UI first.

PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# The embedded Kafka broker's jars, resolved from broker/pom.xml by Maven.
BROKER_STAMP := broker/lib/.resolved
# Swagger UI for the API docs at /docs, pinned in web/package-lock.json; npm ci
# empties node_modules first, so the stamp inside it goes with a stale install.
DOCS_STAMP := web/node_modules/.installed
# Debian packages the suite drives: promtool (the alert rules' checks and unit
# tests), chromium and its chromedriver (the dashboard page in a browser).
TOOLS := promtool chromium chromedriver
TOOLS_PACKAGES := prometheus chromium chromium-driver
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: run test install tools lint typecheck pytest bench clean

run: install
	$(BIN)/python -m pipeline.devstack

test: install lint typecheck pytest

install: $(STAMP) $(BROKER_STAMP) $(DOCS_STAMP) tools

$(STAMP): requirements.lock pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check \
		--require-hashes -r requirements.lock
	$(BIN)/python -m pip install --quiet --disable-pip-version-check \
		--no-deps --no-build-isolation -e .
	touch $(STAMP)

$(BROKER_STAMP): broker/pom.xml
	@command -v mvn >/dev/null || { echo "Maven 3.8+ (mvn) is needed to resolve \
	the embedded Kafka broker's jars; see the README's prerequisites"; exit 1; }
	rm -rf broker/lib
	mvn --batch-mode --quiet --strict-checksums -Dstyle.color=never -f broker/pom.xml \
		dependency:copy-dependencies
	touch $(BROKER_STAMP)

$(DOCS_STAMP): web/package.json web/package-lock.json
	@command -v npm >/dev/null || { echo "Node.js 20+ with npm is needed to install \
	the API docs' Swagger UI (web/package-lock.json); see the README's prerequisites"; \
	exit 1; }
	cd web && npm ci --ignore-scripts --no-audit --no-fund
	touch $(DOCS_STAMP)

# Installed only when one is missing, so a machine that has them needs no root.
tools:
	@missing=""; for tool in $(TOOLS); do command -v $$tool >/dev/null || missing=1; done; \
	if [ -n "$$missing" ]; then \
		command -v apt-get >/dev/null || { echo "promtool, chromium and chromedriver \
	are needed (Debian: $(TOOLS_PACKAGES)); see the README's prerequisites"; exit 1; }; \
		$(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) \
			apt-get install -y -qq --no-install-recommends $(TOOLS_PACKAGES) >/dev/null; \
	fi

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: install
	$(BIN)/mypy

# Two processes, whole files to each (a file's worker or broker fixture is
# started once): most integration tests wait on a broker or a worker. Then
# the chaos run alone: beside the rest on two cores, its workers starved and
# its group kept rebalancing, which tests the machine, not the pipeline.
pytest: install
	$(BIN)/pytest -n 2 --dist loadfile -m "not longest"
	$(BIN)/pytest -m longest

bench: install
	$(BIN)/python -m benchmarks.run

clean:
	rm -rf var .pytest_cache .mypy_cache .ruff_cache .hypothesis
