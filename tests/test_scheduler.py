"""Tests of scheduler.py: token buckets, backoff arithmetic and the poll loops, on a fake clock."""

from __future__ import annotations

import asyncio
import itertools
import math
import random
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field

import pytest
from hypothesis import given
from hypothesis import strategies as st
from structlog.testing import capture_logs

from tests.fakes import FakeClock, settle
from walletwatch.scheduler import (
    MIN_RETRY,
    STARTUP_SPREAD,
    Outcome,
    Scheduler,
    TokenBucket,
    failure_delay,
)


class HighRandom(random.Random):
    """A random source that always draws the top of the range, making jitter predictable."""

    def uniform(self, a: float, b: float) -> float:
        """The upper bound."""
        return max(a, b)


class LowRandom(random.Random):
    """A random source that always draws the bottom of the range."""

    def uniform(self, a: float, b: float) -> float:
        """The lower bound."""
        return min(a, b)


class LaggyClock(FakeClock):
    """A fake clock whose sleeps overrun by ``lag`` seconds, like a busy event loop."""

    def __init__(self, lag: float) -> None:
        super().__init__()
        self.lag = lag

    async def sleep(self, seconds: float) -> None:
        """Sleep ``lag`` seconds longer than asked."""
        await super().sleep(seconds + self.lag)


@dataclass
class FakePoller:
    """A Poller that records when each poll started and answers from a script."""

    clock: FakeClock
    interval: float = 10.0
    max_backoff: float = 60.0
    name: str = "acct"
    provider: str = "westwallet"
    script: list[Outcome] = field(default_factory=list)
    calls: list[tuple[str, float]] = field(default_factory=list)
    gate: asyncio.Event | None = None
    duration: float = 0.0
    ends: list[float] = field(default_factory=list)
    finished: list[str] = field(default_factory=list)
    cancelled: list[str] = field(default_factory=list)

    async def poll(self, endpoint: str) -> Outcome:
        """Record the start, optionally wait for the gate, then answer the next scripted outcome."""
        self.calls.append((endpoint, self.clock.monotonic()))
        if self.gate is not None:
            try:
                await self.gate.wait()
            except asyncio.CancelledError:
                self.cancelled.append(endpoint)
                raise
        if self.duration:
            await self.clock.sleep(self.duration)
        self.ends.append(self.clock.monotonic())
        self.finished.append(endpoint)
        return self.script.pop(0) if self.script else Outcome(ok=True)

    def times(self, endpoint: str = "balances") -> list[float]:
        """Start times of the polls of one endpoint."""
        return [t for e, t in self.calls if e == endpoint]


def gaps(times: Iterable[float]) -> list[float]:
    """Differences between successive times."""
    values = list(times)
    return [b - a for a, b in itertools.pairwise(values)]


@pytest.fixture(name="scheduler")
async def fixture_scheduler(clock: FakeClock) -> AsyncIterator[Scheduler]:
    """A scheduler whose start-up jitter is always the full spread; stopped after the test."""
    scheduler = Scheduler(clock, rng=HighRandom(0))
    yield scheduler
    await scheduler.stop(grace=0)


class TestTokenBucket:
    @pytest.mark.parametrize("rate", [0.5, 1.0, 3.0, 4.0, 10.0])
    def test_reserve_spaces_slots_one_interval_apart(self, rate: float, clock: FakeClock) -> None:
        """Back-to-back reservations at one instant are spaced exactly 1/rate apart."""
        bucket = TokenBucket(rate, clock)
        now = clock.monotonic()
        waits = [bucket.reserve(now) for _ in range(5)]
        assert waits == pytest.approx([i / rate for i in range(5)])

    @pytest.mark.parametrize("idle", [0.0, 1.0, 60.0, 86_400.0])
    def test_no_burst_after_idling(self, idle: float, clock: FakeClock) -> None:
        """An idle bucket hands out one immediate slot, then spaces the rest: no saved-up burst."""
        bucket = TokenBucket(2.0, clock)
        start = clock.monotonic()
        bucket.reserve(start)
        later = start + 0.5 + idle
        assert [bucket.reserve(later) for _ in range(4)] == pytest.approx([0.0, 0.5, 1.0, 1.5])

    def test_reserve_while_waiting_continues_the_queue(self, clock: FakeClock) -> None:
        """A reservation made part-way through the queue waits for the slot after the last one."""
        bucket = TokenBucket(1.0, clock)
        now = clock.monotonic()
        for _ in range(3):
            bucket.reserve(now)
        assert bucket.reserve(now + 0.25) == pytest.approx(2.75)

    async def test_concurrent_acquirers_are_served_in_arrival_order(self, clock: FakeClock) -> None:
        """Tasks sharing one bucket get slots in arrival order, 1/rate apart, never faster."""
        bucket = TokenBucket(4.0, clock)
        served: list[tuple[int, float]] = []

        async def acquirer(index: int) -> None:
            await bucket.acquire()
            served.append((index, clock.monotonic()))

        start = clock.monotonic()
        tasks = [asyncio.create_task(acquirer(i)) for i in range(8)]
        await clock.advance(10.0)
        await asyncio.gather(*tasks)
        assert [i for i, _ in served] == list(range(8))
        assert [t - start for _, t in served] == pytest.approx([i * 0.25 for i in range(8)])

    async def test_acquirers_wait_for_virtual_time(self, clock: FakeClock) -> None:
        """An acquirer is not served before its slot, however the loop runs meanwhile."""
        bucket = TokenBucket(1.0, clock)
        served: list[float] = []

        async def acquirer() -> None:
            await bucket.acquire()
            served.append(clock.monotonic())

        tasks = [asyncio.create_task(acquirer()) for _ in range(3)]
        await clock.advance(0.0)
        assert len(served) == 1
        await clock.advance(0.5)
        assert len(served) == 1
        await clock.advance(0.5)
        assert len(served) == 2
        await clock.advance(1.0)
        await asyncio.gather(*tasks)
        assert len(served) == 3

    @pytest.mark.parametrize("pause", [0.5, 5.0, 120.0])
    async def test_pause_delays_the_next_slot(self, pause: float, clock: FakeClock) -> None:
        """After pause(n) the next acquirer is served n seconds later; the rest follow at rate."""
        bucket = TokenBucket(2.0, clock)
        start = clock.monotonic()
        bucket.pause(pause)
        served: list[float] = []

        async def acquirer() -> None:
            await bucket.acquire()
            served.append(clock.monotonic() - start)

        tasks = [asyncio.create_task(acquirer()) for _ in range(2)]
        await clock.advance(pause + 10.0)
        await asyncio.gather(*tasks)
        assert served == pytest.approx([pause, pause + 0.5])

    def test_pause_never_brings_a_later_slot_forward(self, clock: FakeClock) -> None:
        """A pause shorter than the queue already reserved leaves the queue as it is."""
        bucket = TokenBucket(1.0, clock)
        now = clock.monotonic()
        for _ in range(5):
            bucket.reserve(now)
        bucket.pause(1.0)
        assert bucket.reserve(now) == pytest.approx(5.0)


class TestFailureDelay:
    @given(
        failures=st.integers(min_value=0, max_value=10_000),
        interval=st.floats(min_value=0.001, max_value=1e6, allow_nan=False),
        cap=st.floats(min_value=0.001, max_value=1e7, allow_nan=False),
        seed=st.integers(min_value=0, max_value=2**32),
    )
    def test_delay_stays_within_bounds(
        self, failures: int, interval: float, cap: float, seed: int
    ) -> None:
        """The delay is at least MIN_RETRY and at most the capped exponential ceiling."""
        growth = interval * 2.0**failures if failures < 1000 else math.inf
        ceiling = min(max(cap, interval), growth)
        delay = failure_delay(failures, interval, cap, random.Random(seed))
        assert MIN_RETRY <= delay <= max(MIN_RETRY, ceiling)

    @pytest.mark.parametrize(
        ("interval", "cap", "expected"),
        [
            (10.0, 100.0, [20.0, 40.0, 80.0, 100.0, 100.0, 100.0]),
            (30.0, 300.0, [60.0, 120.0, 240.0, 300.0, 300.0, 300.0]),
            # A cap below the interval does not make retries more eager than normal polls.
            (30.0, 5.0, [30.0, 30.0, 30.0, 30.0, 30.0, 30.0]),
            (0.25, 2.0, [MIN_RETRY, MIN_RETRY, 2.0, 2.0, 2.0, 2.0]),
        ],
    )
    def test_ceiling_grows_then_caps(
        self, interval: float, cap: float, expected: list[float]
    ) -> None:
        """The ceiling doubles with each consecutive failure until it reaches max(cap, interval)."""
        rng = HighRandom(0)
        assert [failure_delay(n, interval, cap, rng) for n in range(1, 7)] == expected

    def test_full_jitter_reaches_down_to_min_retry(self) -> None:
        """Jitter is full: the lowest draw retries after MIN_RETRY, not after half the ceiling."""
        assert failure_delay(5, 60.0, 600.0, LowRandom(0)) == MIN_RETRY

    def test_huge_failure_counts_do_not_overflow(self) -> None:
        """A long outage keeps the delay at the cap instead of overflowing the exponent."""
        assert failure_delay(100_000, 60.0, 600.0, HighRandom(0)) == 600.0


class TestScheduler:
    async def test_first_polls_spread_within_startup_jitter(self, clock: FakeClock) -> None:
        """First polls of many loops start within min(interval, STARTUP_SPREAD), not all at once."""
        scheduler = Scheduler(clock, rng=random.Random(7))
        endpoints = [f"e{i}" for i in range(20)]
        poller = FakePoller(clock, interval=60.0)
        start = clock.monotonic()
        scheduler.start(poller, endpoints)
        await clock.advance(STARTUP_SPREAD)
        firsts = {e: t - start for e, t in poller.calls}
        await scheduler.stop()
        assert set(firsts) == set(endpoints)
        assert all(0.0 <= t <= STARTUP_SPREAD for t in firsts.values())
        assert len(set(firsts.values())) > 1

    async def test_startup_jitter_never_exceeds_the_interval(self, clock: FakeClock) -> None:
        """With an interval shorter than the spread, the first poll comes within one interval."""
        scheduler = Scheduler(clock, rng=HighRandom(0))
        poller = FakePoller(clock, interval=2.0)
        start = clock.monotonic()
        scheduler.start(poller, ["balances"])
        await clock.advance(2.0)
        await scheduler.stop()
        assert poller.times() == [start + 2.0]

    async def test_successive_polls_are_one_interval_apart(
        self, clock: FakeClock, scheduler: Scheduler
    ) -> None:
        """Successful polls of one endpoint follow each other exactly ``interval`` apart."""
        poller = FakePoller(clock, interval=30.0)
        start = clock.monotonic()
        scheduler.start(poller, ["balances", "deposits"])
        await clock.advance(STARTUP_SPREAD + 4 * 30.0)
        for endpoint in ("balances", "deposits"):
            times = poller.times(endpoint)
            assert times[0] == start + STARTUP_SPREAD
            assert gaps(times) == [30.0] * 4

    async def test_failures_back_off_and_success_resets(
        self, clock: FakeClock, scheduler: Scheduler
    ) -> None:
        """Consecutive failures wait ever longer up to the cap; a success restores ``interval``."""
        poller = FakePoller(
            clock,
            interval=10.0,
            max_backoff=50.0,
            script=[Outcome(ok=False)] * 4 + [Outcome(ok=True), Outcome(ok=False)],
        )
        scheduler.start(poller, ["balances"])
        await clock.advance(STARTUP_SPREAD + 20 + 40 + 50 + 50 + 10 + 20 + 10)
        # HighRandom draws the ceiling: 20, 40, 80->50, 160->50; then ok: 10; then fail: 20.
        assert gaps(poller.times()) == [20.0, 40.0, 50.0, 50.0, 10.0, 20.0, 10.0]

    async def test_a_crashing_poll_does_not_end_the_loop(
        self, clock: FakeClock, scheduler: Scheduler
    ) -> None:
        """An unexpected exception costs one poll (as a failure); the endpoint keeps polling."""

        class Crashing(FakePoller):
            async def poll(self, endpoint: str) -> Outcome:
                self.calls.append((endpoint, self.clock.monotonic()))
                if len(self.calls) == 1:
                    raise KeyError("bug")
                return Outcome(ok=True)

        poller = Crashing(clock, interval=10.0)
        with capture_logs() as logs:
            scheduler.start(poller, ["balances"])
            await clock.advance(STARTUP_SPREAD + 20 + 10)
        assert len(poller.times()) == 3
        assert [e["event"] for e in logs] == ["poll.crashed"]

    async def test_failure_never_retries_sooner_than_min_retry(self, clock: FakeClock) -> None:
        """Even when the jitter draws zero, a failed poll is retried after MIN_RETRY."""
        scheduler = Scheduler(clock, rng=LowRandom(0))
        poller = FakePoller(clock, interval=10.0, script=[Outcome(ok=False)] * 3)
        scheduler.start(poller, ["balances"])
        await clock.advance(3 * MIN_RETRY + 10.0)
        await scheduler.stop()
        assert gaps(poller.times()) == [MIN_RETRY, MIN_RETRY, MIN_RETRY, 10.0]

    @pytest.mark.parametrize(
        ("retry_after", "expected"),
        [(7.0, 7.0), (0.0, MIN_RETRY), (0.25, MIN_RETRY), (500.0, 500.0)],
    )
    async def test_retry_after_is_honoured(
        self, retry_after: float, expected: float, clock: FakeClock, scheduler: Scheduler
    ) -> None:
        """A failure carrying retry_after waits exactly max(retry_after, MIN_RETRY), no jitter."""
        poller = FakePoller(
            clock, interval=10.0, script=[Outcome(ok=False, retry_after=retry_after)]
        )
        scheduler.start(poller, ["balances"])
        await clock.advance(STARTUP_SPREAD + expected + 10.0)
        assert gaps(poller.times()) == [expected, 10.0]

    @pytest.mark.parametrize(
        ("outcome", "expected"),
        [(Outcome(ok=False, retry_after=2.0), 2.0), (Outcome(ok=False), MIN_RETRY)],
        ids=["retry_after", "backoff"],
    )
    async def test_retry_waits_after_a_slow_failed_poll_ends(
        self, outcome: Outcome, expected: float, clock: FakeClock
    ) -> None:
        """A failed poll that took long (a timeout) is still retried only after its wait."""
        scheduler = Scheduler(clock, rng=LowRandom(0))
        poller = FakePoller(clock, interval=60.0, duration=5.0, script=[outcome])
        scheduler.start(poller, ["balances"])
        await clock.advance(5.0 + expected + 5.0)
        await scheduler.stop(grace=0)
        failed_at = poller.ends[0]
        assert poller.times()[1] - failed_at == expected

    async def test_on_delay_reports_how_late_polls_started(self) -> None:
        """on_delay gets each poll's lateness against its due time, and lateness never piles up."""
        clock = LaggyClock(lag=0.5)
        delays: list[tuple[str, float]] = []
        scheduler = Scheduler(clock, rng=HighRandom(0), on_delay=lambda p, s: delays.append((p, s)))
        poller = FakePoller(clock, interval=10.0, provider="kredswallet")
        start = clock.monotonic()
        scheduler.start(poller, ["balances"])
        await clock.advance(STARTUP_SPREAD + 0.5 + 30.5)
        await scheduler.stop()
        # Each sleep overruns by 0.5 s, yet every poll is due `interval` after the previous due.
        assert [t - start for t in poller.times()] == pytest.approx([10.5, 21.0, 31.0, 41.0])
        assert [p for p, _ in delays] == ["kredswallet"] * 4
        assert [s for _, s in delays] == pytest.approx([0.0, 0.5, 0.5, 0.5])

    async def test_on_delay_is_zero_for_punctual_polls(self, clock: FakeClock) -> None:
        """Polls that start on time report a delay of zero."""
        delays: list[float] = []
        scheduler = Scheduler(clock, rng=HighRandom(0), on_delay=lambda _, s: delays.append(s))
        scheduler.start(FakePoller(clock, interval=5.0), ["balances"])
        await clock.advance(5.0 + 3 * 5.0)
        await scheduler.stop()
        assert delays == [0.0] * 4

    async def test_stop_lets_a_running_poll_finish(self, clock: FakeClock) -> None:
        """stop() waits for a poll in progress to complete rather than cancelling it."""
        scheduler = Scheduler(clock, rng=HighRandom(0))
        gate = asyncio.Event()
        poller = FakePoller(clock, interval=60.0, gate=gate)
        scheduler.start(poller, ["balances"])
        await clock.advance(STARTUP_SPREAD)
        assert poller.times() == [clock.monotonic()]
        stopping = asyncio.create_task(scheduler.stop(grace=30.0))
        await settle()
        assert not stopping.done()
        gate.set()
        await settle()
        assert stopping.done()
        await stopping
        assert poller.finished == ["balances"]
        assert poller.cancelled == []

    async def test_stop_cancels_sleeping_loops_at_once(self, clock: FakeClock) -> None:
        """Loops asleep between polls end as soon as stop() is called, without time passing."""
        scheduler = Scheduler(clock, rng=HighRandom(0))
        poller = FakePoller(clock, interval=3600.0)
        scheduler.start(poller, ["balances", "deposits", "withdrawals"])
        await clock.advance(STARTUP_SPREAD)
        assert len(poller.calls) == 3
        assert clock.sleepers == 3
        before = clock.monotonic()
        stopping = asyncio.create_task(scheduler.stop(grace=30.0))
        await settle()
        assert stopping.done()
        await stopping
        assert clock.monotonic() == before
        assert clock.sleepers == 0
        await clock.advance(2 * 3600.0)
        assert len(poller.calls) == 3

    async def test_stop_during_startup_jitter_polls_nothing(self, clock: FakeClock) -> None:
        """A loop still waiting out its start-up jitter ends without polling once stopped."""
        scheduler = Scheduler(clock, rng=HighRandom(0))
        poller = FakePoller(clock, interval=60.0)
        scheduler.start(poller, ["balances"])
        await clock.advance(1.0)
        await scheduler.stop()
        await clock.advance(120.0)
        assert poller.calls == []

    async def test_stop_mixes_finishing_and_sleeping_loops(self, clock: FakeClock) -> None:
        """Sleeping loops end at once while a running poll is awaited, and no new poll begins."""
        scheduler = Scheduler(clock, rng=HighRandom(0))
        sleepy = FakePoller(clock, interval=60.0, name="sleepy")
        gate = asyncio.Event()
        busy = FakePoller(clock, interval=60.0, name="busy", gate=gate)
        scheduler.start(sleepy, ["balances"])
        await clock.advance(STARTUP_SPREAD)
        scheduler.start(busy, ["balances"])
        await clock.advance(STARTUP_SPREAD)
        stopping = asyncio.create_task(scheduler.stop(grace=30.0))
        await settle()
        assert clock.sleepers == 0
        assert not stopping.done()
        gate.set()
        await stopping
        await clock.advance(600.0)
        assert len(sleepy.calls) == 1
        assert busy.finished == ["balances"]

    async def test_stop_cancels_a_poll_that_outlives_the_grace(self, clock: FakeClock) -> None:
        """A poll still running when the grace period ends is cancelled."""
        scheduler = Scheduler(clock, rng=HighRandom(0))
        poller = FakePoller(clock, interval=60.0, gate=asyncio.Event())
        scheduler.start(poller, ["balances"])
        await clock.advance(STARTUP_SPREAD)
        await scheduler.stop(grace=0)
        assert poller.cancelled == ["balances"]
        assert poller.finished == []
