# The two commands of the README: `make demo` and `make test`. Each builds the virtual
# environment from nothing when it is missing or older than pyproject.toml.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

# Debian's Prometheus tools: promtool for the rules, prometheus and prometheus-alertmanager
# for the end-to-end tests (tests/monitoring), which run the binaries on free loopback ports
# with their own configs and data; any system service the packages start is never used.
PROMETHEUS_TOOLS := promtool prometheus prometheus-alertmanager
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: demo test lint typecheck rules unit tools clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/walletwatch demo

test: lint typecheck rules unit

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

rules: tools
	promtool check rules prometheus/alerts.yml
	promtool test rules prometheus/tests/*.yml

unit: $(STAMP) tools
	$(BIN)/pytest

# Installs the Debian packages only when one of the tools is missing.
tools:
	@for tool in $(PROMETHEUS_TOOLS); do command -v $$tool >/dev/null || missing=1; done; \
	if [ -n "$$missing" ]; then \
		set -x; \
		$(SUDO) apt-get update && \
		$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
			prometheus prometheus-alertmanager; \
	fi

clean:
	rm -rf $(VENV) build *.egg-info .mypy_cache .pytest_cache .ruff_cache
