"""End to end: the daemon, Prometheus with the alert rules, and Alertmanager, on loopback.

The stack (``stack.py``) shortens every rule's ``for:`` to one second and the hot account's
``withdrawal_stuck_after`` to five seconds; everything else is the shipped rules file.
"""

from __future__ import annotations

import re
import time
from typing import Any

from tests.monitoring.stack import BROKEN, HOT, Stack
from tests.monitoring.tools import alert_rules, get_json, get_text, promtool, wait_for

HOT_NAME, BROKEN_NAME = HOT[0], BROKEN[0]
DEADLINE = 60.0  # seconds an alert gets to reach Alertmanager; typically under ten


def alertmanager_alert(stack: Stack, alertname: str, **labels: str) -> dict[str, Any] | None:
    """The active alert at Alertmanager (API v2) with this name and these labels, if any."""
    for alert in get_json(f"{stack.alertmanager_url}/api/v2/alerts"):
        if alert["labels"].get("alertname") == alertname and all(
            alert["labels"].get(k) == v for k, v in labels.items()
        ):
            return dict(alert)
    return None


def arrived(stack: Stack, alertname: str, **labels: str) -> dict[str, Any]:
    """Wait until the alert is active at Alertmanager and return it."""

    def probe() -> dict[str, Any] | None:
        alert = alertmanager_alert(stack, alertname, **labels)
        return alert if alert and alert["status"]["state"] == "active" else None

    alert = wait_for(probe, f"{alertname} {labels} at Alertmanager", deadline=DEADLINE)
    # Shown with -s, or with a failure: how long the chain took.
    print(f"{alertname} at Alertmanager {time.monotonic() - stack.started:.1f}s after start")
    return alert


class TestAlertsReachAlertmanager:
    """The alerts the issue names fire in Prometheus and arrive at Alertmanager."""

    def test_withdrawal_stuck(self, stack: Stack) -> None:
        """A withdrawal pending longer than withdrawal_stuck_after arrives, critical."""
        alert = arrived(stack, "WalletwatchWithdrawalStuck", account=HOT_NAME, currency="BTC")
        assert alert["labels"]["severity"] == "critical"
        assert alert["labels"]["direction"] == "withdrawal"
        assert "BTC withdrawal of westwallet account hot" in alert["annotations"]["description"]
        assert alert["annotations"]["runbook_url"] == "docs/runbook.md#walletwatchwithdrawalstuck"

    def test_balance_low(self, stack: Stack) -> None:
        """USDT under its 1000 threshold arrives, with both numbers in the description."""
        alert = arrived(stack, "WalletwatchBalanceLow", account=HOT_NAME, currency="USDT")
        assert alert["labels"]["severity"] == "critical"
        # 500, or 600 once the daemon has seen the deposit of 100 the stack makes.
        assert re.search(
            r"is [56]00, below its low_balance threshold of 1000 USDT",
            alert["annotations"]["description"],
        ), alert["annotations"]

    def test_account_down_on_wrong_credentials(self, stack: Stack) -> None:
        """A refused secret makes the account down, and the description says auth."""

        def with_reason() -> dict[str, Any] | None:
            alert = alertmanager_alert(stack, "WalletwatchAccountDown", account=BROKEN_NAME)
            return alert if alert and "(auth)" in alert["annotations"]["description"] else None

        arrived(stack, "WalletwatchAccountDown", account=BROKEN_NAME)
        alert = wait_for(with_reason, "the auth reason in the description", deadline=DEADLINE)
        assert alert["labels"]["severity"] == "critical"
        assert (
            alert["annotations"]["summary"] == "walletwatch cannot poll westwallet account broken"
        )


class TestSilence:
    """What is healthy raises nothing, even with every `for:` cut to a second."""

    def test_healthy_parts_stay_silent(self, stack: Stack) -> None:
        """No low BTC (2 over 0.5), no down hot account, no stale data, no absent exporter."""
        arrived(stack, "WalletwatchWithdrawalStuck", account=HOT_NAME)
        arrived(stack, "WalletwatchAccountDown", account=BROKEN_NAME)
        firing = {
            (a["labels"]["alertname"], a["labels"].get("account"), a["labels"].get("currency"))
            for a in stack.prometheus("/api/v1/alerts")["alerts"]
        }
        assert ("WalletwatchBalanceLow", HOT_NAME, "BTC") not in firing
        assert ("WalletwatchAccountDown", HOT_NAME, None) not in firing
        names = {name for name, _, _ in firing}
        for quiet in (
            "WalletwatchDepositStuck",
            "WalletwatchTransferFailed",
            "WalletwatchDataStale",
            "WalletwatchRateLimited",
            "WalletwatchAbsent",
        ):
            assert quiet not in names, firing


class TestPrometheus:
    """Prometheus runs the shipped rules and scrapes the daemon."""

    def test_every_rule_loaded_and_healthy(self, stack: Stack) -> None:
        """Every alert of alerts.yml is loaded and evaluates without error."""

        def evaluated() -> dict[str, str] | None:
            groups = stack.prometheus("/api/v1/rules", type="alert")["groups"]
            health = {r["name"]: r["health"] for g in groups for r in g["rules"]}
            return health if health and "unknown" not in health.values() else None

        health = wait_for(evaluated, "the rules to be evaluated", deadline=DEADLINE)
        assert health == {rule["alert"]: "ok" for rule in alert_rules()}

    def test_daemon_target_up(self, stack: Stack) -> None:
        """The walletwatch job's one target is up."""

        def up() -> list[dict[str, Any]] | None:
            targets = stack.prometheus("/api/v1/targets")["activeTargets"]
            return targets if targets and targets[0]["health"] == "up" else None

        (target,) = wait_for(up, "the walletwatch target", deadline=DEADLINE)
        assert target["labels"]["job"] == "walletwatch"


class TestLiveScrape:
    """promtool's metric linter accepts what the running daemon serves."""

    def test_promtool_check_metrics(self, stack: Stack) -> None:
        """`promtool check metrics` on a scrape of `walletwatch run` reports nothing."""
        result = promtool("check", "metrics", stdin=get_text(f"{stack.daemon_url}/metrics"))
        assert result.returncode == 0, result.stdout + result.stderr
        assert (result.stdout + result.stderr).strip() == ""
