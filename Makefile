# One command per job, each setting up what it needs on a fresh machine.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
# The quetz server the quetz destination's tests upload to: its own venv, as its FastAPI pin clashes with ours.
QUETZ_VENV := build/quetz-venv
QUETZ_STAMP := $(QUETZ_VENV)/.stamp
# The package as users get it: the wheel, installed without extras in a venv of its own (tests/installed/).
INSTALLED_VENV := build/installed-venv
INSTALLED_STAMP := $(INSTALLED_VENV)/.stamp

.PHONY: help setup quetz installed demo test lint typecheck browser servers unit slow bench clean

help:
	@echo "make demo   set up, build the demo channel and mirror it (config/demo.yaml)"
	@echo "make test   set up, then ruff, mypy, the test suite and the installed wheel's test (what CI runs)"
	@echo "make slow   the slow tests too"
	@echo "make bench  benchmarks (see docs/benchmarks.md)"

# Debian and Ubuntu ship venv's pip apart from python3 (package python3-venv): say so rather than fail later.
$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys, ensurepip; sys.exit(sys.version_info < (3, 11))' 2>/dev/null || \
	  { echo "mirror_engine needs Python 3.11 or newer with venv: apt-get install python3 python3-venv"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP)

# quetz-server 0.10.4 crashes at start with a FastAPI newer than 0.109.
$(QUETZ_STAMP):
	$(PYTHON) -m venv $(QUETZ_VENV)
	$(QUETZ_VENV)/bin/python -m pip install --quiet 'quetz-server==0.10.4' 'fastapi<0.110'
	touch $(QUETZ_STAMP)

quetz: $(QUETZ_STAMP)

# A new venv whenever pyproject.toml changes, so that a dependency dropped there is gone from it too.
$(INSTALLED_STAMP): pyproject.toml
	rm -rf $(INSTALLED_VENV)
	$(PYTHON) -m venv $(INSTALLED_VENV)
	touch $(INSTALLED_STAMP)

# The wheel of the work tree as it is now, its dependencies as pip resolves them for a user.
installed: $(STAMP) $(INSTALLED_STAMP)
	rm -rf build/dist
	$(BIN)/python -m pip wheel --quiet --no-deps --wheel-dir build/dist .
	$(INSTALLED_VENV)/bin/python -m pip install --quiet build/dist/mirror_engine-*.whl
	$(INSTALLED_VENV)/bin/python -m pip install --quiet --force-reinstall --no-deps build/dist/mirror_engine-*.whl

demo: $(STAMP)
	rm -rf build/demo-channel build/demo-mirror
	$(BIN)/python -m mirror_engine.demo build/demo-channel
	$(BIN)/python -m mirror_engine run config/demo.yaml

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

test: lint typecheck browser servers quetz installed
	$(BIN)/python -m pytest -q

# The browser test drives Debian's chromium; it is skipped, saying why, where it cannot be installed
# (tests/conftest.py turns every skip into a failure under CI=true).
browser:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || \
	  ( [ "$$(id -u)" = 0 ] && apt-get update -qq && apt-get install -y -qq chromium chromium-driver >/dev/null ) || \
	  echo "chromium could not be installed: the browser test will be skipped (and fail under CI=true)"

# The HTTP PUT destination's tests run Debian's nginx (its DAV module) on 127.0.0.1; skipped, saying why, without it.
servers:
	@command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || \
	  ( [ "$$(id -u)" = 0 ] && apt-get update -qq && apt-get install -y -qq nginx >/dev/null ) || \
	  echo "nginx could not be installed: the HTTP PUT destination tests will be skipped (and fail under CI=true)"

slow: $(STAMP)
	$(BIN)/python -m pytest -q -m slow

# nginx serves the workloads on 127.0.0.1; curl and aria2c are the baselines. BENCH_ARGS selects, e.g.
# make bench BENCH_ARGS="--sections A B --repeat 1" (see docs/benchmarks.md).
BENCH_ARGS ?=
bench: $(STAMP)
	@command -v nginx >/dev/null && command -v curl >/dev/null && command -v aria2c >/dev/null || \
	  ( [ "$$(id -u)" = 0 ] && apt-get update -q && apt-get install -y -q nginx curl aria2 ) || \
	  ( echo "make bench needs nginx, curl and aria2c: apt-get install nginx curl aria2 (as root)"; exit 1 )
	$(BIN)/python -m benchmarks.run $(BENCH_ARGS)

clean:
	rm -rf build .pytest_cache .mypy_cache .ruff_cache
