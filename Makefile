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

# $(call apt-install,COMMAND:PACKAGE ...): install with apt-get each PACKAGE whose COMMAND is
# missing (also looked for in /usr/sbin), only when running as root; otherwise do nothing
define apt-install
	@if [ "$$(id -u)" = 0 ]; then \
	  missing=""; \
	  for pair in $(1); do \
	    PATH="$$PATH:/usr/sbin:/sbin" command -v "$${pair%%:*}" >/dev/null 2>&1 || missing="$$missing $${pair#*:}"; \
	  done; \
	  if [ -n "$$missing" ]; then \
	    echo "installing system packages:$$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	  fi; \
	fi
endef

## sysdeps: system packages the tests need (nftables, iproute2, tshark and tcpdump as references,
## nginx as a real HTTP/2 server,
## chromium for the HTML report's browser tests), installed only when missing and root
sysdeps:
	$(call apt-install,nft:nftables ip:iproute2 tshark:tshark tcpdump:tcpdump chromium:chromium nginx:nginx)

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
	$(call apt-install,nginx:nginx wrk:wrk ip:iproute2 tcpdump:tcpdump tshark:tshark taskset:util-linux)

## bench: record, build and cache three captures (connection-heavy, tiled, SYN flood) and
## compare tcpwhy with tshark on each (recording needs root: `sudo make bench`)
bench: native benchdeps
	$(BIN)/python benchmarks/run.py --packets 3000000

clean:
	rm -rf $(VENV) build dist src/*.egg-info .pytest_cache .mypy_cache .ruff_cache src/tcpwhy/_native
