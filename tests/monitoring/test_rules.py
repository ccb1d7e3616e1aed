"""prometheus/alerts.yml: the alerts the project promises, documented and tested.

promtool itself (``check rules``, ``test rules``) runs in ``make rules``; these tests hold the
rules to the conventions promtool cannot see: severities, annotations naming the provider,
account and currency, runbook sections that exist, promtool tests that show every alert both
firing and silent, and only metrics that walletwatch serves.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.monitoring.tools import ALERTS, RUNBOOK, alert_rules, promtool, served_metrics, tool
from walletwatch.sinks import ALERTNAMES
from walletwatch.sinks.alerts import RUNBOOK as RUNBOOK_ANCHOR

TESTS = sorted((ALERTS.parent / "tests").glob("*.yml"))
# Alert -> the labels its summary and description must name (what its series carry).
NAMES = {
    "WalletwatchBalanceLow": ("provider", "account", "currency"),
    "WalletwatchWithdrawalStuck": ("provider", "account", "currency"),
    "WalletwatchDepositStuck": ("provider", "account", "currency"),
    "WalletwatchTransferFailed": ("provider", "account", "currency"),
    "WalletwatchAccountDown": ("provider", "account"),
    "WalletwatchDataStale": ("provider", "account"),
    "WalletwatchRateLimited": ("provider",),
    "WalletwatchAbsent": (),
    "WalletwatchNoLeader": ("job",),
    "WalletwatchSplitBrain": ("job",),
    "WalletwatchReplicaDown": ("instance",),
    "WalletwatchInternalError": ("provider", "account"),
    "WalletwatchStoreFailing": ("provider",),
    "WalletwatchStateFileLost": ("instance",),
    "WalletwatchEventsUndelivered": ("sink",),
    "WalletwatchEventsParked": ("sink",),
    "WalletwatchWebConnectionsExhausted": ("instance",),
    "WalletwatchPushRefused": ("instance",),
    "WalletwatchClockJumped": ("instance",),
    "WalletwatchMalformedRecords": ("provider", "account", "endpoint"),
    "WalletwatchCurrencyUnreported": ("provider", "account", "currency"),
}
# Thresholds come from the metrics, so one rule serves every account.
THRESHOLD_METRICS = {
    "WalletwatchBalanceLow": "walletwatch_balance_low_threshold",
    "WalletwatchWithdrawalStuck": "walletwatch_transfer_stuck_threshold_seconds",
    "WalletwatchDepositStuck": "walletwatch_transfer_stuck_threshold_seconds",
    # Recorded from walletwatch_poll_interval_seconds, kept while no replica leads.
    "WalletwatchDataStale": "walletwatch:poll_interval_seconds:latest",
}


def rules_by_name() -> dict[str, dict[str, Any]]:
    """The alerting rules by alert name."""
    return {rule["alert"]: rule for rule in alert_rules()}


def github_anchor(heading: str) -> str:
    """The anchor GitHub and most Markdown renderers give a heading."""
    return re.sub(r"[^a-z0-9 _-]", "", heading.strip().lower()).replace(" ", "-")


def alert_tests() -> list[dict[str, Any]]:
    """Every alert_rule_test case of the promtool test files."""
    return [
        case
        for path in TESTS
        for group in yaml.safe_load(path.read_text())["tests"]
        for case in group.get("alert_rule_test", [])
    ]


class TestAlertRules:
    """Each alert is there, classified, explained and tested."""

    def test_the_promised_alerts(self) -> None:
        """Exactly the alerts of the monitoring issue, each once."""
        names = [rule["alert"] for rule in alert_rules()]
        assert sorted(names) == sorted(NAMES)

    @pytest.mark.parametrize("name", sorted(NAMES))
    def test_severity_and_annotations(self, name: str) -> None:
        """A severity, a summary and description naming the alert's labels, a runbook_url."""
        rule = rules_by_name()[name]
        assert rule["labels"]["severity"] in {"critical", "warning", "info"}
        annotations = rule["annotations"]
        assert set(annotations) == {"summary", "description", "runbook_url"}
        for label in NAMES[name]:
            assert f"$labels.{label}" in annotations["summary"], (name, label)
            assert f"$labels.{label}" in annotations["description"], (name, label)

    @pytest.mark.parametrize("name", sorted(NAMES))
    def test_runbook_section_exists(self, name: str) -> None:
        """runbook_url points at a section of docs/runbook.md named after the alert."""
        url = rules_by_name()[name]["annotations"]["runbook_url"]
        path, _, anchor = url.partition("#")
        assert path == "docs/runbook.md"
        headings = [
            line.removeprefix("## ")
            for line in RUNBOOK.read_text().splitlines()
            if line.startswith("## ")
        ]
        assert name in headings
        assert anchor == github_anchor(name)

    @pytest.mark.parametrize(("name", "metric"), sorted(THRESHOLD_METRICS.items()))
    def test_thresholds_come_from_metrics(self, name: str, metric: str) -> None:
        """The rule reads its account's threshold from a metric, not from a constant."""
        assert metric in rules_by_name()[name]["expr"]

    def test_only_served_metrics(self) -> None:
        """Every walletwatch metric a rule or annotation uses is one walletwatch serves."""
        used = set(re.findall(r"\bwalletwatch_[a-z_]+", ALERTS.read_text()))
        assert used, "no metric found"
        assert used <= served_metrics(), used - served_metrics()

    def test_recorded_series_are_recorded(self) -> None:
        """Every recorded series a rule reads is recorded by the file, from served metrics."""
        text = ALERTS.read_text()
        recorded = {
            rule["record"]: rule["expr"]
            for group in yaml.safe_load(text)["groups"]
            for rule in group["rules"]
            if "record" in rule
        }
        assert set(re.findall(r"\bwalletwatch:[a-z_:]+", text)) == set(recorded)
        for expr in recorded.values():
            assert set(re.findall(r"\bwalletwatch_[a-z_]+", expr)) <= served_metrics(), expr

    @pytest.mark.parametrize("name", sorted(NAMES))
    def test_promtool_tests_fire_and_stay_silent(self, name: str) -> None:
        """The promtool tests show the alert firing at one time and silent at another."""
        cases = [case for case in alert_tests() if case["alertname"] == name]
        assert any(case.get("exp_alerts") for case in cases), f"{name} never fires"
        assert any(not case.get("exp_alerts") for case in cases), f"{name} never silent"

    def test_runbook_has_no_orphan_sections(self) -> None:
        """Every alert section of the runbook belongs to an alert: a rule's or the sink's."""
        sections = [
            line.removeprefix("## ")
            for line in RUNBOOK.read_text().splitlines()
            if line.startswith("## Walletwatch")
        ]
        assert sorted(sections) == sorted([*NAMES, *ALERTNAMES])

    @pytest.mark.parametrize("name", ALERTNAMES)
    def test_sink_alerts_have_runbook_sections(self, name: str) -> None:
        """The Alertmanager sink's runbook_url anchors name sections of docs/runbook.md."""
        headings = [
            line.removeprefix("## ")
            for line in RUNBOOK.read_text().splitlines()
            if line.startswith("## ")
        ]
        assert name in headings
        assert RUNBOOK_ANCHOR == "docs/runbook.md#"
        assert github_anchor(name) == name.lower()  # the anchor the sink puts after it


class TestReadme:
    """The Prometheus and Alertmanager snippets of the README's Monitoring section are valid."""

    def test_snippets(self, tmp_path: Path) -> None:
        """Scrape config, rule_files and alerting pass promtool; routes and inhibit rules amtool."""
        readme = (ALERTS.parents[1] / "README.md").read_text()
        section = readme.split("\n## Monitoring\n", 1)[1].split("\n## ", 1)[0]
        merged: dict[str, Any] = {}
        for block in re.findall(r"```yaml\n(.*?)```", section, flags=re.DOTALL):
            merged.update(yaml.safe_load(block))
        assert {"scrape_configs", "rule_files", "alerting", "route", "inhibit_rules"} <= set(merged)
        prometheus = {k: merged[k] for k in ("scrape_configs", "alerting")}
        prometheus["rule_files"] = [str(ALERTS)]
        (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(prometheus))
        result = promtool("check", "config", str(tmp_path / "prometheus.yml"))
        assert result.returncode == 0, result.stdout + result.stderr
        alertmanager = {k: merged[k] for k in ("route", "receivers", "inhibit_rules")}
        (tmp_path / "alertmanager.yml").write_text(yaml.safe_dump(alertmanager))
        checked = subprocess.run(
            [tool("amtool"), "check-config", str(tmp_path / "alertmanager.yml")],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert checked.returncode == 0, checked.stdout + checked.stderr
