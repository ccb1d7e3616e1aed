"""Issue 16, item 10 (clock): a step of the system's wall clock fires and prunes nothing."""

from __future__ import annotations

import json
import math
import time
from collections.abc import AsyncIterator
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families
from structlog.testing import capture_logs

from tests.fakes import FakeClock
from tests.test_reload import ACCOUNTS, body, fixture_logging, fixture_sim_url, write
from walletwatch.app import Daemon
from walletwatch.clock import SystemClock
from walletwatch.clockwatch import CLOCK_CHECK
from walletwatch.sim import Simulator
from walletwatch.sim import westwallet as westwallet_sim

__all__ = ["fixture_logging", "fixture_sim_url"]  # fixtures, used by name

DAY = 86400.0
SETTLED = 130  # more than tracker.KEEP_NEWEST, which are kept whatever their age


class SteppedWall:
    """The system's wall clock as the test steps it: the real one plus ``step`` seconds."""

    def __init__(self) -> None:
        self.step = 0.0

    def __call__(self) -> float:
        """Seconds since the epoch, stepped."""
        return time.time() + self.step


@pytest.fixture(name="sim")
def fixture_sim(monkeypatch: pytest.MonkeyPatch) -> Simulator:
    """'hot' with a withdrawal pending for a minute and SETTLED deposits settled a minute ago.

    The simulated WestWallet accepts request timestamps of any age, as some providers do:
    else a stepped clock would be refused there (401) before it could age anything here,
    and the tests could not tell a steady clock from a failing poll.
    """
    monkeypatch.setattr(westwallet_sim, "MAX_CLOCK_SKEW", math.inf)
    sim = Simulator(rate_limit=100_000)
    key, secret = ACCOUNTS["hot"]
    sim.westwallet.add_account(key, secret, {"BTC": Decimal(2)})
    minute_ago = time.time() - 60
    sim.westwallet.add_transaction(
        key, type="send", currency="BTC", amount=Decimal("0.1"), created_at=minute_ago
    )
    for i in range(SETTLED):
        sim.westwallet.add_transaction(
            key,
            type="receive",
            currency="BTC",
            amount=Decimal(i + 1),
            status="completed",
            created_at=minute_ago,
        )
    return sim


@pytest.fixture(name="wall")
def fixture_wall() -> SteppedWall:
    """The system wall clock the daemon's SystemClock reads."""
    return SteppedWall()


@pytest.fixture(name="daemon")
async def fixture_daemon(sim_url: str, tmp_path: Path, wall: SteppedWall) -> AsyncIterator[Daemon]:
    """A daemon on a real SystemClock over the stepped wall clock, serving /metrics."""
    config = write(
        tmp_path / "config.yaml",
        body(sim_url, ["hot"], defaults={"withdrawal_stuck_after": "1h"}),
    )
    assert config is not None
    daemon = Daemon(config, clock=SystemClock(wall=wall))
    await daemon.start(serve=True)
    yield daemon
    await daemon.close()


def events(path: Path) -> list[dict[str, Any]]:
    """The events file, parsed."""
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines()]


async def scraped(daemon: Daemon, name: str) -> float:
    """The value of the unlabelled gauge ``name`` on a real /metrics scrape."""
    async with aiohttp.ClientSession() as session, session.get(daemon.url + "/metrics") as got:
        text = await got.text()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name:
                return float(sample.value)
    raise AssertionError(f"{name} not on /metrics")


def settled_deposits(daemon: Daemon) -> int:
    """Settled deposits the store holds for 'hot'."""
    assert daemon._store is not None
    row = daemon._store.store._db.execute(
        "SELECT count(*) FROM transfers WHERE account='hot' AND direction='deposit'"
    ).fetchone()
    return int(row[0])


class TestClockJump:
    """A stepped system clock is reported, and ages nothing by itself."""

    async def test_two_days_ahead_fires_no_stuck_withdrawal(
        self, daemon: Daemon, wall: SteppedWall, tmp_path: Path
    ) -> None:
        """+2 days: the minute-old withdrawal is not stuck, no event says so; the offset is on
        /metrics and logged once as clock.jumped."""
        log = tmp_path / "events.jsonl"
        await daemon.poll_once()
        wall.step = 2 * DAY
        with capture_logs() as logs:
            daemon.check_clock()
            await daemon.poll_once()
            daemon.check_clock()
        assert [e["event"] for e in events(log) if e["event"].endswith(".stuck")] == []
        stuck = daemon.registry.get_sample_value(
            "walletwatch_transfers_stuck",
            {
                "provider": "westwallet",
                "account": "hot",
                "currency": "BTC",
                "direction": "withdrawal",
            },
        )
        assert stuck == 0
        assert await scraped(daemon, "walletwatch_clock_offset_seconds") == pytest.approx(
            2 * DAY, abs=5
        )
        jumped = [e for e in logs if e["event"] == "clock.jumped"]
        assert len(jumped) == 1
        assert jumped[0]["log_level"] == "warning"
        assert jumped[0]["offset_seconds"] == pytest.approx(2 * DAY, abs=5)

    async def test_a_hundred_days_ahead_prunes_nothing(
        self, daemon: Daemon, wall: SteppedWall
    ) -> None:
        """+100 days (beyond the 90-day retention): every settled deposit is kept."""
        await daemon.poll_once()
        before = settled_deposits(daemon)
        assert before == SETTLED
        wall.step = 100 * DAY
        await daemon.poll_once()
        assert settled_deposits(daemon) == before
        assert (
            len(daemon.watchers["hot"].state.transfers)
            + sum(len(v) for v in daemon.watchers["hot"].state.settled.values())
            >= SETTLED
        )

    async def test_event_times_keep_the_steady_clock(
        self, daemon: Daemon, wall: SteppedWall, sim: Simulator, tmp_path: Path
    ) -> None:
        """A deposit after a +2 day step is stamped with the real time, not the stepped one."""
        await daemon.poll_once()
        wall.step = 2 * DAY
        key = ACCOUNTS["hot"][0]
        sim.westwallet.add_transaction(key, type="receive", currency="BTC", amount=Decimal(7))
        await daemon.poll_once()
        detected = [e for e in events(tmp_path / "events.jsonl") if e["amount"] == "7"]
        assert detected
        stamp = detected[0]["ts"]
        assert abs(datetime.fromisoformat(stamp).timestamp() - time.time()) < 60


class TestClockWatch:
    """The daemon measures the offset every CLOCK_CHECK seconds and logs on transitions."""

    async def test_logged_once_each_way(self, sim_url: str, tmp_path: Path) -> None:
        """A step logs clock.jumped once however long it lasts; stepping back logs
        clock.rejoined once; the gauge follows each measurement."""
        config = write(tmp_path / "config.yaml", body(sim_url, ["hot"]))
        assert config is not None
        clock = FakeClock()
        daemon = Daemon(config, clock=clock)
        await daemon.start(serve=False)
        try:
            daemon.run_scheduler()
            with capture_logs() as logs:
                clock.jump(-3 * DAY)
                await clock.advance(CLOCK_CHECK * 3)
                offset = daemon.registry.get_sample_value("walletwatch_clock_offset_seconds")
                assert offset == -3 * DAY
                clock.jump(3 * DAY)
                await clock.advance(CLOCK_CHECK * 3)
            assert daemon.registry.get_sample_value("walletwatch_clock_offset_seconds") == 0
        finally:
            await daemon.close()
        assert [e["event"] for e in logs if e["event"].startswith("clock.")] == [
            "clock.jumped",
            "clock.rejoined",
        ]
