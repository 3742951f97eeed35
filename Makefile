# gridlrt: two commands do everything.
#   make demo   install what is missing, then run the main job (a verified reduction) here
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

# The main job on this machine: a LOFAR calibrator -> target reduction of two synthetic
# observations (8 subbands each) on the embedded pool with 2 local pilots: flag and average
# (AOFlagger, DP3), solve the calibrator (DP3 gaincal, one clock per station), calibrate the
# target, concatenate bands, image them (WSClean); then the verification table (recovered
# clocks, amplitudes, source fluxes and positions against what was injected), where the images
# are, and plots. About half a minute here; safe to rerun (nothing is redone).
# gridlrt demo --no-calibration: the control run that must fail; --single-step: the first demo.
demo: setup
	$(VENV)/bin/gridlrt demo

clean:
	rm -rf $(VENV) tests/services/node_modules .pytest_cache .mypy_cache .ruff_cache
