"""Each push provider end to end: the simulator's real push makes walletwatch see a deposit at
once; a forged one makes it poll, and nothing more."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from types import SimpleNamespace

import aiohttp
import pytest

from tests.fakes import FakeClock
from tests.pushrig import MAKERS, WAIT, PushAccount, events, push_config, served, subscribe
from walletwatch.app import Daemon
from walletwatch.config import Listen
from walletwatch.demo import demo_config, subscribe_pushes
from walletwatch.scheduler import HINT_GAP, STARTUP_SPREAD
from walletwatch.sim import ApiSim, Simulator

INTERVAL = 60.0
RETRY_STEPS = 30  # fake seconds a failed first poll's retry may take: half the interval
STEP = 0.001  # fake seconds a wait moves on at a time: a slot of the 1000/s key


@dataclass
class Rig:
    """A served simulator, one account at it, and a daemon receiving its pushes."""

    clock: FakeClock
    sim: Simulator
    account: PushAccount
    daemon: Daemon
    sim_url: str
    http: aiohttp.ClientSession

    def hints(self, result: str) -> float:
        """walletwatch_push_hints_total for the account and ``result``."""
        labels = {"provider": self.account.provider, "account": self.account.name}
        value = self.daemon.registry.get_sample_value(
            "walletwatch_push_hints_total", {**labels, "result": result}
        )
        return value or 0.0


@pytest.fixture(name="provider", params=sorted(MAKERS))
def fixture_provider(request: pytest.FixtureRequest) -> str:
    """Each provider that calls back."""
    name: str = request.param
    return name


@pytest.fixture(name="rig")
async def fixture_rig(provider: str, tmp_path: Path) -> AsyncIterator[Rig]:
    """The daemon polling every 60 s (on a fake clock), its first polls done, pushes wired."""
    clock = FakeClock(time.time())
    sim = Simulator(clock=clock.time, rate_limit=100_000)
    account = MAKERS[provider](sim, "acct")
    async with served(sim) as sim_url, aiohttp.ClientSession() as http:
        config = push_config(sim_url, tmp_path, [account], interval=f"{INTERVAL:g}s")
        daemon = Daemon(config, clock=clock)
        await daemon.start()
        try:
            await subscribe(http, sim_url, daemon, account)
            daemon.run_scheduler()
            await clock.advance(STARTUP_SPREAD)
            watcher = daemon.watchers[account.name]
            await waiting(clock, lambda: watcher.polled)
            for _ in range(RETRY_STEPS):  # a first poll that failed (a loaded host) retries
                if watcher.up:
                    break
                await clock.advance(1.0)
                await asyncio.sleep(0.05)
            assert watcher.up
            await clock.advance(HINT_GAP)  # the baseline's polls are HINT_GAP behind
            yield Rig(clock, sim, account, daemon, sim_url, http)
        finally:
            await daemon.close()


BOOKKEEPING = (
    "walletwatch_polls_total",
    "walletwatch_http_request",
    "walletwatch_bucket_requests_total",
    "walletwatch_last_success_timestamp_seconds",
    "walletwatch_scheduler_delay_seconds",
    "walletwatch_push_",
    "walletwatch_clock_offset_seconds",
)
"""Series a poll that finds nothing new moves: any other moving is a fact believed."""


def facts(daemon: Daemon) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample on /metrics but the polls' own bookkeeping."""
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in daemon.registry.collect()
        for s in family.samples
        if not s.name.startswith(BOOKKEEPING)
    }


def polls(rig: Rig) -> dict[str, float]:
    """walletwatch_polls_total per endpoint of the account."""
    labels = {"provider": rig.account.provider, "account": rig.account.name}
    watcher = rig.daemon.watchers[rig.account.name]
    return {
        endpoint: rig.daemon.registry.get_sample_value(
            "walletwatch_polls_total", {**labels, "endpoint": endpoint}
        )
        or 0.0
        for endpoint in watcher.endpoints
    }


async def waiting(clock: FakeClock, check: Callable[[], bool]) -> float:
    """Move fake time on by a millisecond a step (the key's next slot) until ``check()``,
    loopback work done in real time between steps; the fake time then."""
    async with asyncio.timeout(WAIT):
        while not check():
            await clock.advance(STEP)
            await asyncio.sleep(0.005)
    return clock.monotonic()


class TestPushedDeposit:
    """A provider's push makes walletwatch poll that account's transfers now, and believe only
    what the poll finds."""

    async def test_real_deposit_is_seen_at_once(self, rig: Rig) -> None:
        """A deposit at the simulator is announced without waiting the 60 s interval."""
        before = polls(rig)
        pushed = rig.clock.monotonic()
        rig.account.deposit(rig.sim, Decimal("1.25"))
        seen = await waiting(
            rig.clock,
            lambda: any(e["event"] == "deposit.detected" for e in events(rig.daemon.config)),
        )
        assert seen - pushed < 1.0  # fake seconds: the routine poll is 60 away
        assert rig.hints("accepted") == 1
        assert rig.hints("refused") == 0
        watcher = rig.daemon.watchers[rig.account.name]
        transfers = watcher.transfer_endpoints
        await waiting(rig.clock, lambda: all(polls(rig)[e] > before[e] for e in transfers))
        after = polls(rig)
        moved = {e for e in watcher.endpoints if after[e] != before[e]}
        assert moved == set(watcher.transfer_endpoints)  # balances and prices wait their turn

    async def test_forged_push_changes_nothing(self, rig: Rig) -> None:
        """A push for a deposit that does not exist costs one poll; no event, no state, no
        series moves but the hint and the poll's bookkeeping."""
        watcher = rig.daemon.watchers[rig.account.name]
        state, facts_before, polls_before = watcher.state, facts(rig.daemon), polls(rig)
        events_before = events(rig.daemon.config)
        async with rig.http.post(f"{rig.account.control(rig.sim_url)}/forge") as resp:
            assert resp.status == 202
        await waiting(
            rig.clock,
            lambda: all(polls(rig)[e] > polls_before[e] for e in watcher.transfer_endpoints),
        )
        await rig.daemon.deliver()
        assert rig.hints("accepted") == 1
        assert watcher.state == state
        assert events(rig.daemon.config) == events_before
        assert facts(rig.daemon) == facts_before


class TestDemo:
    """``walletwatch demo`` subscribes the simulator to its push listener."""

    def test_one_push_account_per_provider_that_calls_back(self, tmp_path: Path) -> None:
        """Each of the four providers has one push account, its callbacks sent to the
        listener's URL for it, with the token."""
        sim = Simulator()
        config = demo_config("http://127.0.0.1:1", Listen("127.0.0.1", 0), tmp_path)
        receiver = SimpleNamespace(url="http://127.0.0.1:5555")
        assert subscribe_pushes(sim, config, receiver) == len(MAKERS)
        pushing = [account for account in config.accounts if account.push]
        assert sorted(account.provider for account in pushing) == sorted(MAKERS)
        for account in pushing:
            provider = sim.sims[account.provider]
            assert isinstance(provider, ApiSim)
            names = provider.push_credentials or provider.snapshot_keys
            keys = tuple(account.credentials[name].reveal() for name in names)
            view = sim.pushes.subscription(account.provider, keys)
            assert view["target"] == "http://127.0.0.1:5555"
