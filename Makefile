# tcpwhy: two entry points for a fresh machine, `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP_DEMO := $(VENV)/.installed-demo
STAMP_TEST := $(VENV)/.installed-test

.PHONY: demo test lint typecheck unit sysdeps native bench benchdeps clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP_DEMO): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(STAMP_TEST): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@ $(STAMP_DEMO)

## native: compile the kernels ahead of time (skipped when up to date; without them tcpwhy
## uses numba's JIT: same results, about a second more start-up per run)
native: $(STAMP_DEMO)
	$(BIN)/python -m tcpwhy.native build || echo "make: kernels not compiled ahead of time; tcpwhy will use numba's JIT"

## demo: create .venv, install tcpwhy, run it on the capture shipped inside the package
demo: native
	$(BIN)/tcpwhy demo

## sysdeps: system packages the tests need (nftables, iproute2, tshark and tcpdump as references),
## installed only when missing and root
sysdeps:
	@if [ "$$(id -u)" = 0 ]; then \
	  missing=""; \
	  command -v nft >/dev/null 2>&1 || missing="$$missing nftables"; \
	  command -v ip  >/dev/null 2>&1 || missing="$$missing iproute2"; \
	  command -v tshark >/dev/null 2>&1 || missing="$$missing tshark"; \
	  command -v tcpdump >/dev/null 2>&1 || missing="$$missing tcpdump"; \
	  if [ -n "$$missing" ]; then \
	    echo "installing system packages:$$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	  fi; \
	fi

lint: $(STAMP_TEST)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

typecheck: $(STAMP_TEST)
	$(BIN)/mypy

unit: $(STAMP_TEST) native sysdeps
	$(BIN)/python -m pytest -n auto --dist loadgroup -q -rs

## test: install test extras, lint, type-check, run the whole test suite
test: lint typecheck unit

## benchdeps: what `make bench` needs (nginx and wrk to record the connection-heavy capture,
## tcpdump to record it, tshark to compare with), installed only when missing and root
benchdeps:
	@if [ "$$(id -u)" = 0 ]; then \
	  missing=""; \
	  command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || missing="$$missing nginx"; \
	  command -v wrk >/dev/null 2>&1 || missing="$$missing wrk"; \
	  command -v ip  >/dev/null 2>&1 || missing="$$missing iproute2"; \
	  command -v tcpdump >/dev/null 2>&1 || missing="$$missing tcpdump"; \
	  command -v tshark >/dev/null 2>&1 || missing="$$missing tshark"; \
	  command -v taskset >/dev/null 2>&1 || missing="$$missing util-linux"; \
	  if [ -n "$$missing" ]; then \
	    echo "installing system packages:$$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	  fi; \
	fi

## bench: record, build and cache three captures (connection-heavy, tiled, SYN flood) and
## compare tcpwhy with tshark on each (recording needs root: `sudo make bench`)
bench: native benchdeps
	$(BIN)/python benchmarks/run.py --packets 3000000

clean:
	rm -rf $(VENV) build dist src/*.egg-info .pytest_cache .mypy_cache .ruff_cache src/tcpwhy/_native
