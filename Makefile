# The two commands a user needs: `make demo` and `make test`. Both set up first.
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: setup demo test test-slow lint bench clean-runs

setup:
	@bash scripts/setup.sh

# The full LDFI loop on simple-deliv (Molly's first example), which has a bug:
# ldfi exits 1 for "bug found", which is the demo working.
demo: setup
	@$(VENV)/bin/ldfi doctor
	@$(VENV)/bin/ldfi run models/simple-deliv/scenario.toml --kinds omission --max-faults 1; \
	  code=$$?; test $$code -eq 1 || { echo "demo: expected a bug (exit 1), got exit $$code"; exit 1; }

lint: setup
	@$(VENV)/bin/ruff check .

# The long certifications (marked slow: several minutes each on a loaded
# machine) would push the suite past 15 minutes: `make test-slow` runs them.
test: setup
	@$(VENV)/bin/ruff check .
	@$(PY) -m pytest -q -ra -m "not slow"

test-slow: setup
	@$(PY) -m pytest -q -ra -m slow

bench: setup
	@$(PY) bench/sandbox_overhead.py
	@$(PY) bench/tracer_overhead.py
	@$(PY) bench/syscall_cost.py
	@$(PY) bench/engine_overhead.py
	@$(PY) bench/solver_scale.py

clean-runs:
	rm -rf ldfi-store
