"""What a person sees: events as short lines, logs told from events, amounts without exponents."""

from __future__ import annotations

import io
import json
from decimal import Decimal

import structlog

from walletwatch import logs
from walletwatch.console import COLOURS, RESET, event_line
from walletwatch.events import Event
from walletwatch.model import plain

TS = 1_700_000_000.0  # 2023-11-14T22:13:20Z


def event(name: str, **fields: object) -> Event:
    """An event of the hot account at bitexbit."""
    return Event(
        event=name, event_id="id", ts=TS, provider="bitexbit", account="hot", fields=fields
    )


class TestEventLine:
    def test_a_stuck_withdrawal_says_what_and_for_how_long(self) -> None:
        """Amount, id, status with its name, age and a shortened txid, on one line."""
        line = event_line(
            event(
                "withdrawal.stuck",
                amount="0.5",
                currency="BTC",
                transfer_id="77",
                status="25",
                status_name="moderation",
                age_seconds=10_860,
                txid="f" * 64,
            ),
            colour=False,
        )
        assert line == (
            "22:13:20 CRIT withdrawal.stuck           bitexbit/hot  0.5 BTC  id 77  "
            "25 (moderation)  in flight 3h01m  tx ffffffffffffffff..."
        )

    def test_a_balance_change_shows_before_and_after(self) -> None:
        """balance.changed reads as old -> new, in fixed-point form."""
        line = event_line(
            event(
                "balance.changed",
                currency="USDT",
                amount=Decimal("0E-8"),
                previous_amount=Decimal("1E+3"),
            ),
            colour=False,
        )
        assert line.endswith("bitexbit/hot  1000 -> 0.00000000 USDT")

    def test_account_down_names_the_endpoint_and_reason(self) -> None:
        """account.down says which endpoint failed and why."""
        line = event_line(
            event("account.down", endpoint="deposits", reason="auth", failures=3), colour=False
        )
        assert line.endswith("bitexbit/hot  endpoint deposits  reason auth")

    def test_colour_follows_severity(self) -> None:
        """Critical lines are red, warnings yellow, information dim; each ends the colour."""
        for name, severity in (
            ("withdrawal.stuck", "critical"),
            ("deposit.stuck", "warning"),
            ("deposit.detected", "info"),
        ):
            line = event_line(event(name), colour=True)
            assert line.startswith(COLOURS[severity])
            assert line.endswith(RESET)

    def test_provider_text_cannot_drive_the_terminal(self) -> None:
        """Escape sequences and lone surrogates in provider text are shown as escapes."""
        line = event_line(
            event("deposit.detected", txid="\x1b[2J", status="\ud800", transfer_id="1\n2"),
            colour=False,
        )
        assert "\x1b" not in line
        assert "\n" not in line
        assert "\\u001b[2J" in line
        line.encode("utf-8")  # strict: no lone surrogate left


class TestPlainAmounts:
    def test_never_in_exponent_form(self) -> None:
        """Zero with eight places, large and tiny amounts are written out in full."""
        assert plain(Decimal("0E-8")) == "0.00000000"
        assert plain(Decimal("1E+3")) == "1000"
        assert plain(Decimal("1.5E-10")) == "0.00000000015"

    def test_in_events(self) -> None:
        """An event's JSON carries amounts as fixed-point text (bitexbit's fee of 0E-8)."""
        body = json.loads(event("deposit.confirmed", fee=Decimal("0E-8")).to_json())
        assert body["fee"] == "0.00000000"


class TestLogLines:
    def test_json_logs_say_they_are_logs(self) -> None:
        """A JSON log line leads with kind=log and writes Decimals in fixed-point form."""
        stream = io.StringIO()
        logs.configure("json", stream)
        try:
            structlog.get_logger("walletwatch.test").info("poll.done", amount=Decimal("0E-8"))
        finally:
            structlog.reset_defaults()
        line = stream.getvalue().splitlines()[0]
        assert line.startswith('{"kind": "log"')
        record = json.loads(line)
        assert record["event"] == "poll.done"
        assert record["amount"] == "0.00000000"

    def test_console_only_on_a_terminal(self) -> None:
        """No format given: a person's format on a terminal, JSON into a pipe or file."""

        class Terminal(io.StringIO):
            def isatty(self) -> bool:
                return True

        assert logs.console(None, Terminal())
        assert not logs.console(None, io.StringIO())
        assert logs.console("console", io.StringIO())
        assert not logs.console("json", Terminal())
