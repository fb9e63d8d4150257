# Two commands on a fresh machine: `make demo` and `make test`. Both create .venv from
# pyproject.toml when it is missing or older than pyproject.toml; nothing to install by hand.
SHELL := /bin/bash
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export CANDLEWAX_TEST_BROKERS ?= tansu,noida

.PHONY: demo test web lint tools format bench bench-scaling bench-peers fuzz clean help

help:
	@echo "make demo   - embedded broker + synthetic market + bars flow + live console"
	@echo "make test   - lint + the whole test suite (unit, integration on tansu and noida, e2e)"
	@echo "make web    - the chart pages' front-end dependencies (npm ci; vendored into sinks/gateway/static/vendor)"
	@echo "make bench  - throughput of the flow vs the raw consume+decode ceiling"
	@echo "make bench-scaling - the flow as 1 process vs 2 processes x 1 worker on 4 partitions"
	@echo "make bench-peers - naive Bytewax and Quix Streams pipelines vs candlewax on one topic"
	@echo "make fuzz   - the fuzz campaign: >= 100,000 mutants per decoder, with a report"

$(STAMP): pyproject.toml
	@py=""; for c in python3.12 python3.11 python3; do \
	  if command -v $$c >/dev/null 2>&1 && $$c -c 'import sys; sys.exit(not ((3,11) <= sys.version_info[:2] <= (3,12)))' 2>/dev/null; then py=$$c; break; fi; \
	done; \
	if [ -z "$$py" ]; then echo "candlewax needs Python 3.11 or 3.12 (Bytewax 0.21.1 has no wheels for 3.13)"; exit 1; fi; \
	if [ -x $(BIN)/python ] && ! $(BIN)/python -c 'import sys; sys.exit(not ((3,11) <= sys.version_info[:2] <= (3,12)))'; then rm -rf $(VENV); fi; \
	[ -x $(BIN)/python ] || $$py -m venv $(VENV); \
	$(BIN)/python -m pip install --quiet --upgrade pip; \
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	@touch $(STAMP)

# The chart library of the live page and the backtest report, pinned in package-lock.json:
# `npm ci` when node_modules is missing or older than the lock file, then its standalone build
# and LICENSE are copied to sinks/gateway/static/vendor/ (generated, not in git).
NPM_STAMP := node_modules/.installed
VENDOR := sinks/gateway/static/vendor
LWC_DIST := node_modules/lightweight-charts/dist/lightweight-charts.standalone.production.js

$(NPM_STAMP): package.json package-lock.json
	@command -v npm >/dev/null 2>&1 || { echo "make web needs Node.js 20 and npm (Debian: apt-get install nodejs npm; or https://nodejs.org/)"; exit 1; }
	npm ci --no-audit --no-fund
	@touch $(NPM_STAMP)

$(VENDOR)/lightweight-charts.standalone.production.js: $(NPM_STAMP)
	@mkdir -p $(VENDOR)
	cp $(LWC_DIST) $@
	cp node_modules/lightweight-charts/LICENSE $(VENDOR)/LICENSE

web: $(VENDOR)/lightweight-charts.standalone.production.js

demo: $(STAMP) web
	$(BIN)/candlewax demo $(ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

# System tools the tests drive: headless Chromium renders the backtest report; promtool (Debian
# package prometheus) checks metrics and alert rules. Installed from Debian's packages when
# missing (needs root, as on CI); otherwise the message says what to install.
TOOLS := chromium:chromium promtool:prometheus stunnel4:stunnel4
tools:
	@missing=""; for pair in $(TOOLS); do \
	  command -v $${pair%%:*} >/dev/null 2>&1 || missing="$$missing $${pair#*:}"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing Debian packages for the tests:$$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	  else echo "the tests need these Debian packages:$$missing (sudo apt-get install$$missing)"; exit 1; fi; \
	fi

test: lint tools web
	$(BIN)/pytest $(PYTEST_ARGS)

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: $(STAMP)
	$(BIN)/python -m bench.throughput $(ARGS)
	$(BIN)/python -m bench.activity
	$(BIN)/python -m bench.latency
	$(BIN)/python -m bench.replay
	$(BIN)/python -m bench.backtest
	$(BIN)/python -m bench.servers
	$(BIN)/python -m bench.gateway
	$(BIN)/python -m bench.memory

# docs/performance.md, Scaling across processes: a few minutes (2M trades; ARGS="--repeat 3").
bench-scaling: $(STAMP)
	$(BIN)/python -m bench.scaling $(ARGS)

# docs/performance.md, The peers: each peer in its own virtual environment under .bench-venvs/.
bench-peers: $(STAMP)
	$(BIN)/python -m bench.peers $(ARGS)

# The fuzz campaign of docs/reliability.md; `make test` runs it at 10,000 cases per decoder.
fuzz: $(STAMP)
	$(BIN)/python -m tests.fuzz.campaign --cases 100000 $(ARGS)

clean:
	rm -rf $(VENV) data .pytest_cache .ruff_cache .hypothesis
