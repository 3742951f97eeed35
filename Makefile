# gridlrt: two commands do everything.
#   make demo   install what is missing, then run the main job on the embedded pool
#   make test   install what is missing, start the real test services, run the tests
PYTHON ?= python3
VENV   ?= .venv
PYTEST_ARGS ?=

.PHONY: setup test lint demo bench clean

setup:
	@PYTHON=$(PYTHON) VENV=$(VENV) bash scripts/setup.sh

lint: setup
	$(VENV)/bin/ruff check gridlrt tests bench
	$(VENV)/bin/mypy

test: setup lint
	$(VENV)/bin/python -m pytest $(PYTEST_ARGS)

# The end-to-end demo (`gridlrt demo`) arrives with the main-job issue; until then `make demo`
# sets the machine up and shows, with `gridlrt doctor`, that it is ready.
demo: setup
	$(VENV)/bin/gridlrt doctor

clean:
	rm -rf $(VENV) tests/services/node_modules .pytest_cache .mypy_cache .ruff_cache
