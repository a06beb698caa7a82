# Two entry points (see README):  make demo   |   make test
# Both create .venv on first use and install the project with its test extras.
# make test runs every test.  For the edit-run loop, make test-fast leaves out the tests marked rtl
# (Verilator/cocotb), fullsize (224x224 networks, full-size layers) and slow (pyproject.toml lists the markers).
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: setup demo test test-fast bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test,models]'
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/npu demo

test: $(STAMP)
	$(PY) -m pytest -q -n auto --dist loadfile

test-fast: $(STAMP)
	$(PY) -m pytest -q -n auto --dist loadfile -m "not rtl and not fullsize and not slow"

bench: $(STAMP)
	$(PY) -m pytest benchmarks --benchmark-only -o python_files='bench_*.py'

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .benchmarks
