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

.PHONY: demo test bench bench-features venv postgres clean

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

test: venv postgres
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/python -m pytest -q $(PARALLEL) tests $(PYTEST_ARGS)

# scale: synthetic repositories, a table, BENCHMARKS.md (benchmarks/run.py)
bench: venv postgres
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/python benchmarks/run.py $(SIZE)

# features on the demo pipeline: hooks, trees, playbooks, audit, credentials, facts
bench-features: venv
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/python benchmarks/features.py

clean:
	rm -rf $(VENV) demo-out bench-out *.egg-info
