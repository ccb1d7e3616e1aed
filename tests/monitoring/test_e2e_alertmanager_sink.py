"""End to end: the daemon's Alertmanager sink and a real Alertmanager with the README's config.

The routed Alertmanager of the stack (``stack.py``) runs the routes and inhibit rules the
README tells readers to copy; the daemon's ``type: alertmanager`` sink posts to it, and so
does Prometheus. The hot account's withdrawals are stuck five seconds after they begin.
"""

from __future__ import annotations

import time
from typing import Any

from tests.monitoring.stack import HOT, Stack
from tests.monitoring.tools import get_json, post_json, wait_for
from walletwatch.events import format_ts

HOT_NAME, HOT_KEY = HOT[0], HOT[1]
DEADLINE = 60.0  # seconds an alert gets to reach Alertmanager; typically a few


def alerts(stack: Stack, alertname: str, **labels: str) -> list[dict[str, Any]]:
    """The routed Alertmanager's alerts (API v2, active and muted) with this name and labels."""
    return [
        alert
        for alert in get_json(f"{stack.routed_url}/api/v2/alerts")
        if alert["labels"].get("alertname") == alertname
        and all(alert["labels"].get(k) == v for k, v in labels.items())
    ]


class TestTransferStuck:
    """A stuck withdrawal in the simulator fires its own alert, which resolves once it settles."""

    def test_fires_with_ids_and_resolves_when_completed(self, stack: Stack) -> None:
        """transfer_id label and txid annotation while stuck; resolved after completion."""
        txid = "0xe2e5ink" + "ab" * 28
        created = post_json(
            f"{stack.sim_url}/_sim/westwallet/{HOT_KEY}/transactions",
            {"type": "send", "currency": "USDT", "amount": "12.5", "txid": txid},
        )
        transfer_id = str(created["id"])

        def firing() -> dict[str, Any] | None:
            found = alerts(stack, "WalletwatchTransferStuck", transfer_id=transfer_id)
            return found[0] if found and found[0]["status"]["state"] == "active" else None

        alert = wait_for(firing, f"WalletwatchTransferStuck for {transfer_id}", DEADLINE)
        assert alert["labels"] == {
            "alertname": "WalletwatchTransferStuck",
            "provider": "westwallet",
            "account": HOT_NAME,
            "currency": "USDT",
            "direction": "withdrawal",
            "transfer_id": transfer_id,
            "severity": "critical",
        }
        assert alert["annotations"]["txid"] == txid
        assert alert["annotations"]["amount"] == "12.5"
        assert alert["annotations"]["runbook_url"] == "docs/runbook.md#walletwatchtransferstuck"
        # A firing alert ends some minutes ahead: it is re-posted before then.
        assert alert["endsAt"] > format_ts(time.time() + 60)

        post_json(
            f"{stack.sim_url}/_sim/westwallet/{HOT_KEY}/transactions/{transfer_id}",
            {"status": "completed"},
        )

        def resolved() -> bool | None:
            found = alerts(stack, "WalletwatchTransferStuck", transfer_id=transfer_id)
            # Gone from the API, or there with endsAt passed.
            gone = not found or found[0]["endsAt"] <= format_ts(time.time())
            return True if gone else None

        wait_for(resolved, f"WalletwatchTransferStuck for {transfer_id} to resolve", DEADLINE)


class TestInhibition:
    """The README's inhibit rule: the per-transfer alert mutes the metric-based one."""

    def test_withdrawal_stuck_is_inhibited_by_the_transfer_alert(self, stack: Stack) -> None:
        """Both BTC alerts reach the routed Alertmanager; WalletwatchWithdrawalStuck is muted."""
        labels = {"account": HOT_NAME, "currency": "BTC"}

        def muted() -> dict[str, Any] | None:
            if not [
                a
                for a in alerts(stack, "WalletwatchTransferStuck", **labels)
                if a["status"]["state"] == "active"
            ]:
                return None
            found = alerts(stack, "WalletwatchWithdrawalStuck", **labels)
            return found[0] if found and found[0]["status"]["inhibitedBy"] else None

        alert = wait_for(muted, "WalletwatchWithdrawalStuck inhibited", DEADLINE)
        assert alert["status"]["state"] == "suppressed"
        (source,) = alerts(stack, "WalletwatchTransferStuck", **labels)
        assert alert["status"]["inhibitedBy"] == [source["fingerprint"]]
