# Two-command quick start: `make demo` and `make test` each set up .venv first.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup demo test test-fast test-core lint bench clean

setup: $(STAMP)

# Re-run the install whenever the project's requirements or pins change. pip byte-compiles one
# file at a time; compileall on every core after it: 125 s -> 91 s on the AVX2-only AMD EPYC
# family 25 model 1. Not skipped: where PYTHONDONTWRITEBYTECODE is set (it is on our machines), an
# uncompiled torch costs every process 2 s more to import. (A file that fails only imports slower.)
compile_venv = $(1)/bin/python -m compileall -qq -j 0 $(1)/lib > /dev/null || true
$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-compile -c constraints.txt -e '.[dev]'
	$(call compile_venv,$(VENV))
	touch $(STAMP)

# The depth study on the built-in digits: plain vs residual at 20 and 56 layers, two seeds each
# (the same training work as one seed at 20/32/44/56), with a report.
demo: $(STAMP)
	$(BIN)/resnets degradation --depths 20 56 --seeds 2

# Everything, as CI runs it: one pytest-xdist worker per core this process may use (taskset is
# respected; xdist's own "auto" would count physical cores where psutil is installed), each with
# one thread, tests handed out as workers free up. On 2 cores: 10 min, against 16.5 min for one
# process with two threads (docs/results.md, "The test suite"); 19 min on the AVX2-only AMD EPYC
# family 25 model 1. The 15 slowest tests are printed, to see where a slow machine's time goes.
CORES := $(shell $(PYTHON) -c 'import os; print(len(os.sched_getaffinity(0)))' 2>/dev/null || echo 1)
XDIST := -n $(CORES) --dist worksteal --durations=15
test: $(STAMP)
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest -q $(XDIST)

# The edit loop: unit tests only, no training (tests that train are marked slow).
test-fast: $(STAMP)
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest -q -m "not slow" $(XDIST)

# The install without extras (torch, numpy, ... only): every command works or names what to install.
CORE := .venv-core
$(CORE)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(CORE)
	$(CORE)/bin/python -m pip install --quiet --disable-pip-version-check --no-compile -c constraints.txt -e .
	$(call compile_venv,$(CORE))
	touch $@

test-core: $(STAMP) $(CORE)/.installed
	RESNETS_CORE_PYTHON=$(CORE)/bin/python $(BIN)/python -m pytest -q tests/test_optional_deps.py

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks scripts
	$(BIN)/ruff format --check src tests benchmarks scripts

bench: $(STAMP)
	$(BIN)/python benchmarks/throughput.py

clean:
	rm -rf $(VENV) $(CORE) build src/*.egg-info .pytest_cache .ruff_cache
