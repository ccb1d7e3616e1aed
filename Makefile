# The two commands of the README: `make demo` and `make test`. Each builds the virtual
# environment from nothing when it is missing or older than pyproject.toml.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

# The systemd unit's checks. systemd-analyze verify needs ExecStart's binary to exist, and the
# unit names the path of a real install (/opt/walletwatch/venv), so it verifies a copy whose
# ExecStart points at this checkout's venv instead; every other line is the shipped one. Any
# output (an unknown or misspelt setting is only a warning) fails the check. No running
# systemd is needed for either command. The unit is verified alone, then with the replicas'
# drop-in (deploy/systemd/replica.conf) in its walletwatch.service.d/.
UNIT := systemd/walletwatch.service
DROPIN := deploy/systemd/replica.conf
UNIT_EXEC := /opt/walletwatch/venv/bin/walletwatch
EXPOSURE_THRESHOLD := 20

.PHONY: demo test lint typecheck rules systemd manifests unit tools clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/walletwatch demo

test: lint typecheck rules systemd manifests unit

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

rules: tools
	promtool check rules prometheus/alerts.yml
	promtool test rules prometheus/tests/*.yml

# Exposure 2.0 at most (--threshold takes tenths).
systemd: $(STAMP) tools
	@tmp=$$(mktemp -d) && trap 'rm -rf "$$tmp"' EXIT && \
	sed 's|$(UNIT_EXEC)|$(abspath $(BIN))/walletwatch|' $(UNIT) > "$$tmp/walletwatch.service" && \
	out=$$(systemd-analyze verify "$$tmp/walletwatch.service" 2>&1); status=$$?; \
	echo "systemd-analyze verify $(UNIT): $${out:-OK}"; [ $$status = 0 ] && [ -z "$$out" ] && \
	mkdir "$$tmp/walletwatch.service.d" && cp $(DROPIN) "$$tmp/walletwatch.service.d/" && \
	out=$$(SYSTEMD_UNIT_PATH="$$tmp:" systemd-analyze verify "$$tmp/walletwatch.service" 2>&1); \
	status=$$?; echo "systemd-analyze verify $(UNIT) + $(DROPIN): $${out:-OK}"; \
	[ $$status = 0 ] && [ -z "$$out" ]
	@out=$$(systemd-analyze security --offline=true --threshold=$(EXPOSURE_THRESHOLD) $(UNIT) 2>&1); \
	status=$$?; echo "$$out" | tail -n 1; exit $$status

# The Kubernetes manifests against the API schemas of the oldest and newest Kubernetes they
# are meant for, strictly (an unknown field is an error). kubernetes-validate, a dev
# dependency, bundles the schemas: nothing is fetched. It only warns about a kind it has no
# schema for, so any output fails the check, as for the unit.
MANIFESTS := deploy/kubernetes/*.yaml
KUBERNETES_VERSIONS := 1.30.0 1.35.0

manifests: $(STAMP)
	@for version in $(KUBERNETES_VERSIONS); do \
		out=$$($(BIN)/kubernetes-validate --strict --quiet -k $$version $(MANIFESTS) 2>&1); \
		status=$$?; echo "kubernetes-validate $$version: $${out:-OK}"; \
		[ $$status = 0 ] && [ -z "$$out" ] || exit 1; \
	done

unit: $(STAMP) tools
	$(BIN)/pytest

# Each tool the checks need, and the Debian package that brings it, one `tool:package` pair
# per line: promtool for the rules; prometheus and prometheus-alertmanager for the end-to-end
# tests (tests/monitoring), which run the binaries on free loopback ports with their own
# configs and data (any system service a package starts is never used); systemd for
# systemd-analyze (installing it in a container does not start it); chromium for the status
# page's browser test (tests/test_statuspage_browser.py), driven headless over the DevTools
# protocol; postgresql for the PostgreSQL store's tests (tests/pgcluster.py), whose binaries are
# not on PATH but under /usr/lib/postgresql/<version>/bin: a tool may be a path pattern, found as
# the tests find it. The packages of the missing tools are installed, the others left alone.
TOOL_PACKAGES := \
	promtool:prometheus \
	prometheus:prometheus \
	prometheus-alertmanager:prometheus-alertmanager \
	systemd-analyze:systemd \
	chromium:chromium \
	/usr/lib/postgresql/*/bin/initdb:postgresql

tools:
	@missing=; for pair in $(TOOL_PACKAGES); do \
		set -- $${pair%%:*}; \
		command -v "$$1" >/dev/null || missing="$$missing $${pair#*:}"; \
	done; \
	if [ -n "$$missing" ]; then \
		set -x; \
		$(SUDO) apt-get update && \
		$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
			$$missing; \
	fi

clean:
	rm -rf $(VENV) build *.egg-info .mypy_cache .pytest_cache .ruff_cache
