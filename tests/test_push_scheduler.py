"""Tests of the scheduler's hints (a push's poll): ahead of schedule, coalesced, in budget."""

from __future__ import annotations

import asyncio
import itertools
import random
from collections.abc import AsyncIterator

import pytest

from tests.fakes import FakeClock, settle
from tests.test_scheduler import FakePoller, LowRandom
from walletwatch.budget import TokenBucket
from walletwatch.scheduler import HINT_BURST, HINT_GAP, STARTUP_SPREAD, Outcome, Scheduler

TRANSFERS = ("deposits", "withdrawals")
ENDPOINTS = ("balances", *TRANSFERS)


@pytest.fixture(name="scheduler")
async def fixture_scheduler(clock: FakeClock) -> AsyncIterator[Scheduler]:
    """A scheduler whose first polls all come at once (no start-up jitter)."""
    scheduler = Scheduler(clock, rng=LowRandom())
    yield scheduler
    await scheduler.stop()


async def started(clock: FakeClock, scheduler: Scheduler, poller: FakePoller) -> float:
    """Start ``poller`` and let its first polls (the baseline) run; the time after them."""
    scheduler.start(poller, ENDPOINTS)
    await clock.advance(STARTUP_SPREAD + HINT_GAP + 1)
    assert {e for e, _ in poller.calls} == set(ENDPOINTS)
    poller.calls.clear()
    return clock.monotonic()


class TestHint:
    """A hint polls the endpoints it names now, once, through the account's buckets."""

    async def test_hint_polls_the_named_endpoints_now(
        self, clock: FakeClock, scheduler: Scheduler
    ) -> None:
        """The transfer endpoints are polled at once; balances keeps its schedule."""
        poller = FakePoller(clock, interval=60.0)
        now = await started(clock, scheduler, poller)
        assert scheduler.hint(poller.name, TRANSFERS) is True
        await settle()
        assert sorted(poller.calls) == [("deposits", now), ("withdrawals", now)]

    async def test_after_a_hinted_poll_the_routine_one_waits_an_interval(
        self, clock: FakeClock, scheduler: Scheduler
    ) -> None:
        """The hinted poll takes the routine one's place: the next comes an interval after it."""
        poller = FakePoller(clock, interval=60.0)
        now = await started(clock, scheduler, poller)
        await clock.advance(20.0)
        scheduler.hint(poller.name, ("deposits",))
        await clock.advance(100.0)
        assert poller.times("deposits") == [now + 20.0, now + 80.0]

    async def test_unknown_account_and_first_poll_change_nothing(
        self, clock: FakeClock, scheduler: Scheduler
    ) -> None:
        """No poller by that name, or an endpoint not polled yet (its baseline): coalesced."""
        poller = FakePoller(clock, interval=60.0)
        scheduler.start(poller, ENDPOINTS)
        assert scheduler.hint("nobody", TRANSFERS) is False
        assert scheduler.hint(poller.name, TRANSFERS) is False  # the first polls are due anyway

    async def test_hints_during_a_poll_cause_exactly_one_more(
        self, clock: FakeClock, scheduler: Scheduler
    ) -> None:
        """A thousand hints while a poll runs fold into one more poll, after HINT_GAP."""
        poller = FakePoller(clock, interval=60.0)
        now = await started(clock, scheduler, poller)
        poller.gate = asyncio.Event()
        assert scheduler.hint(poller.name, ("deposits",)) is True
        await settle()
        results = [scheduler.hint(poller.name, ("deposits",)) for _ in range(1000)]
        assert results.count(True) == 1  # the first asks for one more; the rest fold into it
        poller.gate.set()
        await clock.advance(30.0)
        assert poller.times("deposits") == [now, now + HINT_GAP]

    async def test_hints_while_one_is_due_are_coalesced(
        self, clock: FakeClock, scheduler: Scheduler
    ) -> None:
        """Hints soon after a poll wait for HINT_GAP: one poll then, whatever their number."""
        poller = FakePoller(clock, interval=60.0)
        now = await started(clock, scheduler, poller)
        assert scheduler.hint(poller.name, ("deposits",)) is True
        await clock.advance(1.0)
        assert scheduler.hint(poller.name, ("deposits",)) is True  # a new poll, HINT_GAP on
        assert [scheduler.hint(poller.name, ("deposits",)) for _ in range(50)] == [False] * 50
        await clock.advance(10.0)
        assert poller.times("deposits") == [now, now + HINT_GAP]

    async def test_a_failing_endpoint_keeps_its_backoff(
        self, clock: FakeClock, scheduler: Scheduler
    ) -> None:
        """A hint does not cut a failed poll's backoff short: the retry is the poll due."""
        poller = FakePoller(clock, interval=60.0)
        await started(clock, scheduler, poller)
        poller.scripts["deposits"] = [Outcome(ok=False)]
        scheduler.hint(poller.name, ("deposits",))
        await settle()
        assert len(poller.times("deposits")) == 1
        assert scheduler.hint(poller.name, ("deposits",)) is False
        await settle()
        assert len(poller.times("deposits")) == 1

    async def test_hinted_poll_goes_before_routine_polls_waiting_for_the_key(
        self, clock: FakeClock
    ) -> None:
        """On a busy key, a hinted poll gets the next slot ahead of routine polls due before."""
        scheduler = Scheduler(clock, rng=LowRandom())
        bucket = TokenBucket(1.0, clock)
        busy = [
            FakePoller(clock, interval=10.0, name=f"busy{i}", buckets=(bucket,)) for i in range(30)
        ]
        hinted = FakePoller(clock, interval=600.0, name="hinted", buckets=(bucket,))
        scheduler.start(hinted, ["deposits"])
        await clock.advance(STARTUP_SPREAD + 1)
        assert len(hinted.times("deposits")) == 1
        for poller in busy:
            scheduler.start(poller, ["balances"])
        await clock.advance(120.0)  # 30 polls every 10 s on a 1/s key: always a queue
        late = [p for p in busy if p.times()[-1] < clock.monotonic() - 10.0]
        assert late  # routine polls are waiting for the key, some longer than an interval
        hint_at = clock.monotonic()
        scheduler.hint("hinted", ("deposits",))
        await clock.advance(3.0)
        await scheduler.stop()
        assert len(hinted.times("deposits")) == 2
        assert hinted.times("deposits")[-1] - hint_at <= 1.0


class TestFlood:
    """However many hints come, a key's requests stay inside its bucket and its share."""

    async def test_a_minute_of_hints_polls_once_per_gap(self, clock: FakeClock) -> None:
        """1,000 hints a second for 60 s: each endpoint polled its burst and its routine
        poll, never twice within HINT_GAP, every request inside the bucket, routine polls
        of another account on time."""
        scheduler = Scheduler(clock, rng=LowRandom())
        bucket = TokenBucket(2.0, clock)
        flooded = FakePoller(clock, interval=60.0, name="flooded", buckets=(bucket,))
        other = FakePoller(clock, interval=10.0, name="other", buckets=(bucket,))
        scheduler.start(flooded, ENDPOINTS)
        scheduler.start(other, ["balances"])
        await clock.advance(STARTUP_SPREAD + HINT_GAP + 1)
        start = clock.monotonic()
        flooded.calls.clear()
        other.calls.clear()
        flooded.slots.clear()
        for _ in range(600):  # 60 s in steps of 0.1 s, 100 hints each
            for _ in range(100):
                scheduler.hint("flooded", TRANSFERS)
            await clock.advance(0.1)
        await scheduler.stop()
        for endpoint in TRANSFERS:
            polls = flooded.times(endpoint)
            # The burst; the routine poll, put back an interval after the last, may not come.
            assert HINT_BURST <= len(polls) <= HINT_BURST + 1
            assert all(b - a >= HINT_GAP - 1e-6 for a, b in itertools.pairwise(polls))
        slots = sorted(t for _, t in [*flooded.slots, *other.slots])
        assert all(b - a >= 0.5 - 1e-6 for a, b in itertools.pairwise(slots))
        routine = other.times("balances")
        assert len(routine) == 6
        assert all(t - start <= 10 * (n + 1) + 1 for n, t in enumerate(routine))

    async def test_an_hour_of_hints_costs_no_more_than_the_routine_polls(
        self, clock: FakeClock, scheduler: Scheduler
    ) -> None:
        """A flood that lasts polls an endpoint once an interval, as if there were none,
        beyond its burst; once the flood stops the credit comes back."""
        poller = FakePoller(clock, interval=60.0)
        await started(clock, scheduler, poller)
        for _ in range(3600):  # an hour, ten hints a second
            for _ in range(10):
                scheduler.hint(poller.name, TRANSFERS)
            await clock.advance(1.0)
        for endpoint in TRANSFERS:
            assert len(poller.times(endpoint)) <= 60 + HINT_BURST + 1
        assert len(poller.times("balances")) == 60
        await clock.advance(HINT_BURST * 60.0)
        poller.calls.clear()
        now = clock.monotonic()
        for _ in range(int(HINT_BURST)):
            assert scheduler.hint(poller.name, ("deposits",)) is True
            await clock.advance(HINT_GAP)
        assert len(poller.times("deposits")) == HINT_BURST
        assert poller.times("deposits")[0] <= now + HINT_GAP


@pytest.mark.parametrize("seed", range(5))
async def test_random_hints_never_crowd_an_endpoint(clock: FakeClock, seed: int) -> None:
    """Hints at random moments, polls of random length: never two polls of an endpoint at
    once, never two starts closer than HINT_GAP, and the hints are served."""
    rng = random.Random(seed)
    scheduler = Scheduler(clock, rng=LowRandom())
    poller = FakePoller(clock, interval=30.0, duration=rng.uniform(0.1, 3.0))
    scheduler.start(poller, ENDPOINTS)
    await clock.advance(STARTUP_SPREAD + HINT_GAP + 1)
    poller.calls.clear()
    poller.ends.clear()
    for _ in range(200):
        scheduler.hint(poller.name, TRANSFERS)
        await clock.advance(rng.expovariate(2.0))
    await scheduler.stop()
    starts = poller.times("deposits")
    elapsed = clock.monotonic() - poller.ends[0] if poller.ends else 0.0
    # The hints were served (their burst at least), and cost no more than it over routine.
    assert HINT_BURST <= len(starts) <= HINT_BURST + elapsed / poller.interval + 2
    for a, b in itertools.pairwise(starts):
        assert b - a >= max(HINT_GAP, poller.duration) - 1e-6
