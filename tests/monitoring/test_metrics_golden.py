"""/metrics against a golden file, so a metric change is always a deliberate one.

The alert rules, the dashboard and users' own queries depend on the exact metric names,
types, help texts and labels (DESIGN.md: Metrics). This test scrapes a daemon polling a fixed
simulator setup twice and compares the exposition with ``golden/metrics.txt``, with the
values that depend on the wall clock or on latency masked as ``<volatile>`` (the series and
their labels stay), and the version label masked.

After an intended change, regenerate the file and review its diff::

    UPDATE_GOLDEN=1 .venv/bin/pytest tests/monitoring/test_metrics_golden.py
"""

from __future__ import annotations

import os
import re
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path

import aiohttp
import pytest

from tests.monitoring.tools import GOLDEN, promtool
from tests.pushrig import push_base
from walletwatch.app import Daemon
from walletwatch.clock import SystemClock
from walletwatch.config import parse_config
from walletwatch.sim import Simulator, start

KEY, SECRET = "golden-key", "golden-secret"
BROKEN_KEY = "golden-broken-key"
PUSH_TOKEN = "golden-push-token-0123456789abcdefghij"
# Fixed provider timestamps, so the oldest-in-flight gauges and stuck counts are stable.
CREATED = 1_700_000_000.0
# Values that follow the wall clock; their series and labels still count.
CLOCK = frozenset(
    {
        "walletwatch_last_success_timestamp_seconds",
        "walletwatch_config_last_reload_success_timestamp_seconds",
        "walletwatch_clock_offset_seconds",
    }
)
# Values that depend on the host (its open files limit) or on the scraper's connections.
HOST = frozenset(
    {
        "walletwatch_web_connections",
        "walletwatch_web_connections_limit",
        "walletwatch_push_connections",  # the pushes' connection may not be gone yet
    }
)
# Values that measure durations (latency histograms, time spent waiting).
DURATION_SUFFIXES = ("_seconds_bucket", "_seconds_sum", "_seconds_total")
SAMPLE = re.compile(r"^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)(?P<labels>\{.*\})? (?P<value>\S+)$")


def volatile(name: str) -> bool:
    """Whether a sample's value depends on the clock, on timing or on the host."""
    return name in CLOCK or name in HOST or name.endswith(DURATION_SUFFIXES)


def normalize(exposition: str) -> str:
    """The exposition with volatile values and the version label masked."""
    lines = []
    for line in exposition.splitlines():
        match = SAMPLE.match(line)
        masked = (
            f"{match['name']}{match['labels'] or ''} <volatile>"
            if match and volatile(match["name"])
            else line
        )
        lines.append(re.sub(r'\bversion="[^"]*"', 'version="<version>"', masked))
    return "\n".join(lines) + "\n"


@pytest.fixture(name="sim")
def fixture_sim() -> Simulator:
    """Two accounts: one with history, a stuck withdrawal and a pending deposit; one refused."""
    sim = Simulator(rate_limit=100_000)
    ww = sim.westwallet
    ww.add_account(KEY, SECRET, {"BTC": Decimal("1.5"), "USDT": Decimal(800)})
    ww.add_account(BROKEN_KEY, "the-real-secret", {"BTC": Decimal(1)})
    ww.add_transaction(
        KEY,
        type="receive",
        currency="BTC",
        amount=Decimal("0.5"),
        status="completed",
        confirmations=6,
        created_at=CREATED - 86400,
    )
    ww.add_transaction(KEY, type="send", currency="BTC", amount=Decimal("0.25"), created_at=CREATED)
    ww.add_transaction(
        KEY, type="receive", currency="USDT", amount=Decimal(100), created_at=CREATED + 60
    )
    return sim


@pytest.fixture(name="exposition")
async def fixture_exposition(sim: Simulator, tmp_path: Path) -> AsyncIterator[str]:
    """/metrics after a baseline poll, a settled deposit and a second poll."""
    runner, port = await start(sim, "127.0.0.1", 0)
    url = f"http://127.0.0.1:{port}/westwallet"
    config = parse_config(
        {
            "listen": "127.0.0.1:0",
            "state_path": "state.db",
            "providers": {"westwallet": {"rate_limit": 1000}},
            "push": {"listen": "127.0.0.1:0", "token": PUSH_TOKEN},
            "accounts": [
                {
                    "name": "hot",
                    "provider": "westwallet",
                    "push": True,
                    "base_url": url,
                    "credentials": {"api_key": KEY, "secret_key": SECRET},
                    "interval": "30s",
                    "low_balance": {"USDT": "1000", "BTC": "0.1"},
                    "withdrawal_stuck_after": "1h",
                    "deposit_stuck_after": "36500d",
                },
                {
                    "name": "refused",
                    "provider": "westwallet",
                    "base_url": url,
                    "credentials": {"api_key": BROKEN_KEY, "secret_key": "a-wrong-secret"},
                    "down_after": 1,
                },
            ],
        },
        base_dir=tmp_path,
        environ={},
    )
    daemon = Daemon(config, clock=SystemClock())
    await daemon.start()
    try:
        await daemon.poll_once()
        sim.westwallet.add_transaction(
            KEY,
            type="receive",
            currency="USDT",
            amount=Decimal("250.5"),
            status="completed",
            created_at=CREATED + 120,
        )
        await daemon.poll_once()
        async with aiohttp.ClientSession() as session:
            for path in (f"hot/{PUSH_TOKEN}", f"refused/{PUSH_TOKEN}"):  # taken, refused
                async with session.post(f"{push_base(daemon)}/push/{path}") as pushed:
                    await pushed.read()
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"{daemon.url}/metrics") as resp,
        ):
            assert resp.status == 200
            yield await resp.text()
    finally:
        await daemon.close()
        await runner.cleanup()


class TestGolden:
    """The exposition walletwatch serves is the one recorded in the golden file."""

    def test_matches_golden_file(self, exposition: str) -> None:
        """Every family, help text, type and label set is as recorded (UPDATE_GOLDEN=1 rewrites)."""
        actual = normalize(exposition)
        if os.environ.get("UPDATE_GOLDEN") == "1":
            GOLDEN.write_text(actual)
        expected = GOLDEN.read_text()
        assert actual == expected, (
            "/metrics changed. If that is intended, run "
            "`UPDATE_GOLDEN=1 .venv/bin/pytest tests/monitoring/test_metrics_golden.py`, "
            "review the diff of tests/monitoring/golden/metrics.txt, and update the metrics "
            "table of README.md and DESIGN.md, the alert rules and the dashboard to match."
        )

    def test_normalize_masks_only_volatile_values(self) -> None:
        """Timestamps and latencies lose their values, not their labels; others are kept."""
        text = (
            'walletwatch_last_success_timestamp_seconds{account="a"} 1.7e+09\n'
            'walletwatch_balance{account="a",currency="BTC"} 1.5\n'
            'walletwatch_build_info{version="1.2.3"} 1.0\n'
            'walletwatch_http_request_duration_seconds_bucket{le="0.1"} 3.0\n'
            "walletwatch_http_request_duration_seconds_count 3.0\n"
        )
        assert normalize(text) == (
            'walletwatch_last_success_timestamp_seconds{account="a"} <volatile>\n'
            'walletwatch_balance{account="a",currency="BTC"} 1.5\n'
            'walletwatch_build_info{version="<version>"} 1.0\n'
            'walletwatch_http_request_duration_seconds_bucket{le="0.1"} <volatile>\n'
            "walletwatch_http_request_duration_seconds_count 3.0\n"
        )


class TestLint:
    """promtool's metric linter accepts what walletwatch serves."""

    def test_promtool_check_metrics(self, exposition: str) -> None:
        """`promtool check metrics` on a live scrape reports no problem."""
        result = promtool("check", "metrics", stdin=exposition)
        assert result.returncode == 0, result.stdout + result.stderr
        assert (result.stdout + result.stderr).strip() == ""
