# The two quick-start commands (README): `make demo` and `make test`. Both install what
# they need into .venv first (Python >= 3.11 and pip are all a machine needs).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install test test-fast faults demo docs dist lint bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

## Lint, types, then the whole suite: pure core, runtime against a real Redis, real
## workers killed, the demo, the docs build.
test: lint
	$(BIN)/python -m pytest -q

## The pure core and the runtime against a real Redis: no worker processes (seconds).
test-fast: $(STAMP)
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
