# The two commands: `make run` and `make test`. Both create .venv if missing and
# install the locked, hash-checked dependencies and the broker's jars first.

PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# The embedded Kafka broker's jars, resolved from broker/pom.xml by Maven.
BROKER_STAMP := broker/lib/.resolved

.PHONY: run test install lint typecheck pytest bench clean

run: install
	$(BIN)/python -m pipeline.devstack

test: install lint typecheck pytest

install: $(STAMP) $(BROKER_STAMP)

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

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: install
	$(BIN)/mypy

pytest: install
	$(BIN)/pytest

bench: install
	$(BIN)/python -m benchmarks.run

clean:
	rm -rf var .pytest_cache .mypy_cache .ruff_cache .hypothesis
