# gridlrt: two commands do everything.
#   make demo   install what is missing, then run the main job on the embedded pool
#   make test   install what is missing, start the real test services, run the tests
#   (make unit  the fast layer only: tests/unit, pure functions, no services)
PYTHON ?= python3
VENV   ?= .venv
PYTEST_ARGS ?=

.PHONY: setup test unit lint demo bench clean

setup:
	@PYTHON=$(PYTHON) VENV=$(VENV) bash scripts/setup.sh

lint: setup
	$(VENV)/bin/ruff check gridlrt tests bench
	$(VENV)/bin/mypy

test: setup lint
	$(VENV)/bin/python -m pytest $(PYTEST_ARGS)

# The fast layer alone: pure functions in tests/unit, seconds, no server and no gfal2.
unit: setup
	$(VENV)/bin/python -m pytest -p tests.unit.without_services tests/unit -q $(PYTEST_ARGS)

# The main job on this machine: 8 synthetic subbands -> tokens in the embedded pool -> local
# pilots (AOFlagger + DP3) -> results, a summary table and a progress plot. Safe to rerun.
demo: setup
	$(VENV)/bin/gridlrt demo

clean:
	rm -rf $(VENV) tests/services/node_modules .pytest_cache .mypy_cache .ruff_cache
