# contain: the two commands a fresh machine needs are `make demo` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
CONTAIN := $(VENV)/bin/contain
PYTEST_ARGS ?=

.PHONY: demo test venv testenv deps lint typecheck check bench install clean

# Set up and run the main job: a command in a sandbox, no image needed.
demo: venv
	$(CONTAIN) sandbox --memory 128M --pids 64 --hostname demo -- /bin/sh -c \
	  'echo "pid $$$$ on $$(hostname), uid $$(id -u)"; grep -E "^(CapEff|NoNewPrivs|Seccomp):" /proc/self/status; \
	   touch /etc/x 2>/dev/null || echo "host root is read-only"; ls -a /tmp'

# Install what the tests need, then lint, type-check and run the whole suite.
test: deps testenv lint typecheck
	$(PY) -m pytest $(PYTEST_ARGS)

# The runtime needs no third-party package: a virtualenv and the launcher are enough.
venv: $(VENV)/.ok
$(VENV)/.ok: scripts/make-launcher
	$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "Python 3.11+ needed"'
	$(PYTHON) -m venv $(VENV)
	$(PY) scripts/make-launcher $(CONTAIN)
	touch $@

# pytest, ruff, mypy, matplotlib for the benchmark plots (and the package, editable).
testenv: $(VENV)/.test-ok
$(VENV)/.test-ok: $(VENV)/.ok pyproject.toml
	$(PY) -m pip install -q --disable-pip-version-check -e '.[test,bench]'
	$(PY) scripts/make-launcher $(CONTAIN)
	touch $@

deps:
	bash scripts/install-deps

lint: testenv
	$(VENV)/bin/ruff check src tests benchmarks

typecheck: testenv
	$(VENV)/bin/mypy

check: lint typecheck

bench: venv
	$(CONTAIN) bench --out bench-out

# Put the fast launcher on PATH (engines find the runtime by absolute path).
install: venv
	$(PY) scripts/make-launcher /usr/local/bin/contain

clean:
	rm -rf $(VENV) build src/*.egg-info
