# One command per job, each setting up what it needs on a fresh machine.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
# The quetz server the quetz destination's tests upload to: its own venv, as its FastAPI pin clashes with ours.
QUETZ_VENV := build/quetz-venv
QUETZ_STAMP := $(QUETZ_VENV)/.stamp

.PHONY: help setup quetz demo test lint typecheck browser servers unit slow bench clean

help:
	@echo "make demo   set up, build the demo channel and mirror it (config/demo.yaml)"
	@echo "make test   set up, then ruff, mypy and the test suite (what CI runs)"
	@echo "make slow   the slow tests too"
	@echo "make bench  benchmarks (see docs/benchmarks.md)"

$(STAMP): pyproject.toml
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

demo: $(STAMP)
	rm -rf build/demo-channel build/demo-mirror
	$(BIN)/python -m mirror_engine.demo build/demo-channel
	$(BIN)/python -m mirror_engine run config/demo.yaml

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

test: lint typecheck browser servers quetz
	$(BIN)/python -m pytest -q

# The browser test drives Debian's chromium; it is skipped, saying why, where it cannot be installed.
browser:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || \
	  ( [ "$$(id -u)" = 0 ] && apt-get update -qq && apt-get install -y -qq chromium chromium-driver >/dev/null ) || \
	  echo "chromium could not be installed: the browser test will be skipped"

# The HTTP PUT destination's tests run Debian's nginx (its DAV module) on 127.0.0.1; skipped, saying why, without it.
servers:
	@command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || \
	  ( [ "$$(id -u)" = 0 ] && apt-get update -qq && apt-get install -y -qq nginx >/dev/null ) || \
	  echo "nginx could not be installed: the HTTP PUT destination tests will be skipped"

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
