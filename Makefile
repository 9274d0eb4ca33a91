# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
PYTEST_ARGS ?=
# two test processes (the machines have 2 cores); a file's tests stay together,
# as some examples write fixed paths.  PARALLEL= runs them one at a time.
PARALLEL ?= -n 2 --dist loadfile
# benchmark sizes: small medium (make bench), large (make bench SIZE=large)
SIZE ?= small medium
# benchmarks/scaleout.py options (--quick: small sizes, a smoke run)
SCALEOUT ?=

.PHONY: demo test soak bench bench-scaleout bench-features venv postgres clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: $(BIN)/python setup.py
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@

# byte-compile as a regular install does (an editable one does not, and every hg
# run would compile the extension where PYTHONDONTWRITEBYTECODE is set)
$(VENV)/.compiled: $(VENV)/.installed $(wildcard hgext_luigi/*.py)
	$(BIN)/python -m compileall -q hgext_luigi
	touch $@

venv: $(VENV)/.installed $(VENV)/.compiled

# PostgreSQL server binaries for the tests' throwaway servers (installed with apt
# as root where missing, no cluster created); without them those tests skip
postgres:
	.ci/ensure-postgres

# Build a demo repository from pipelines/, commit, run, change one file, run again
# (only the affected tasks run), then print lineage.
demo: venv
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/python demo/demo.py

# the slow checks (the soak of two build hosts) are left to `make bench` and `make soak`
test: venv postgres
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/python -m pytest -q $(PARALLEL) -m "not slow" tests $(PYTEST_ARGS)

# two build hosts, 100 pushes from 5 pushers on 3 branches, one host killed
# (tests/test_soak.py; SOAK_PUSHES=N for another count)
soak: venv postgres
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/python -m pytest -q -m slow tests/test_soak.py $(PYTEST_ARGS)

# scale: synthetic repositories, a table, BENCHMARKS.md (benchmarks/run.py), then
# scale-out: the queue on PostgreSQL vs SQLite, one build host vs two
bench: venv postgres
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/python benchmarks/run.py $(SIZE)
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/python benchmarks/scaleout.py $(SCALEOUT)
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/python -m pytest -q -m slow tests $(PYTEST_ARGS)

# scale-out alone (its section of BENCHMARKS.md); SCALEOUT=--quick for a smoke run
bench-scaleout: venv postgres
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/python benchmarks/scaleout.py $(SCALEOUT)

# features on the demo pipeline: hooks, trees, playbooks, audit, credentials, facts
bench-features: venv
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/python benchmarks/features.py

clean:
	rm -rf $(VENV) demo-out bench-out *.egg-info
