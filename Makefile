# The two commands a user needs: `make demo` and `make test`. Both set up first.
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: setup demo test lint bench clean-runs

setup:
	@bash scripts/setup.sh

demo: setup
	@$(VENV)/bin/ldfi doctor
	@$(VENV)/bin/ldfi trace models/echo/scenario.toml -o ldfi-store/echo-trace.pb

lint: setup
	@$(VENV)/bin/ruff check .

test: setup
	@$(VENV)/bin/ruff check .
	@$(PY) -m pytest -q -ra

bench: setup
	@$(PY) bench/sandbox_overhead.py
	@$(PY) bench/tracer_overhead.py

clean-runs:
	rm -rf ldfi-store
