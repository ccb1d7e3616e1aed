"""Tests of scheduler.py: budgets, priorities, 429s and failing accounts, on a fake clock."""

from __future__ import annotations

import asyncio
import itertools
import math
import random
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar

import pytest
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry
from structlog.testing import capture_logs

from tests.fakes import FakeClock, ScriptedProvider, settle
from walletwatch.app import Daemon
from walletwatch.arbiter import Slots, Ticket, Waiter, acquire, plan
from walletwatch.asyncstore import AsyncStore
from walletwatch.budget import (
    FLOOR,
    INCREASE,
    REPEAT_WINDOW,
    TokenBucket,
    paced,
    rate_limited,
    relieved,
)
from walletwatch.config import AccountConfig, ProviderSettings, parse_config
from walletwatch.context import ProviderContext
from walletwatch.errors import Unavailable
from walletwatch.health import AccountHealth
from walletwatch.metrics import WalletwatchCollector
from walletwatch.model import Direction, Observation, State, Transfer
from walletwatch.policy import MIN_RETRY, failure_delay
from walletwatch.scheduler import STARTUP_RATE, STARTUP_SPREAD, Outcome, Scheduler
from walletwatch.signals import StopSignal
from walletwatch.store import Store
from walletwatch.telemetry import Telemetry
from walletwatch.tracker import AccountState
from walletwatch.types import Provider, Tracked
from walletwatch.watcher import AccountWatcher

T = TypeVar("T")


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

    def call_later(self, seconds: float, callback: Callable[[], object]) -> asyncio.Future[None]:
        """Run ``callback`` ``lag`` seconds later than asked."""
        return super().call_later(seconds + self.lag, callback)


@dataclass
class FakePoller:
    """A Poller that records its polls, takes slots like Http would and answers from a script."""

    clock: FakeClock
    interval: float = 10.0
    max_backoff: float = 60.0
    name: str = "acct"
    provider: str = "westwallet"
    down_after: int = 3
    buckets: tuple[TokenBucket, ...] = ()
    intervals: dict[str, float] = field(default_factory=dict)  # interval_for, by endpoint
    requests: int = 1  # requests each poll makes through its buckets (pages)
    script: list[Outcome] = field(default_factory=list)
    scripts: dict[str, list[Outcome]] = field(default_factory=dict)  # by endpoint, first
    calls: list[tuple[str, float]] = field(default_factory=list)
    slots: list[tuple[str, float]] = field(default_factory=list)  # when each request went
    gate: asyncio.Event | None = None
    duration: float = 0.0
    ends: list[float] = field(default_factory=list)
    finished: list[str] = field(default_factory=list)
    cancelled: list[str] = field(default_factory=list)
    health: AccountHealth = field(init=False)

    def __post_init__(self) -> None:
        self.health = AccountHealth(self.down_after)

    def record(self, endpoint: str, outcome: Outcome) -> Outcome:
        """Record the outcome in the account's health, as a watcher does, and return it."""
        if outcome.ok:
            self.health.succeeded(endpoint, self.clock.time())
        elif outcome.retry_after is None:
            self.health.failed(endpoint, "connection", "scripted", self.clock.time())
            self.health.counted(endpoint)
        return outcome

    def interval_for(self, endpoint: str) -> float:
        """The endpoint's own interval if one is set, else ``interval``."""
        return self.intervals.get(endpoint, self.interval)

    async def poll(self, endpoint: str, ticket: Ticket | None = None) -> Outcome:
        """Record the start, take request slots, wait for the gate, answer the next outcome."""
        self.calls.append((endpoint, self.clock.monotonic()))
        for _ in range(self.requests if self.buckets else 0):
            await acquire(self.buckets, ticket)
            self.slots.append((endpoint, self.clock.monotonic()))
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
        own = self.scripts.get(endpoint)
        outcome = own.pop(0) if own else self.script.pop(0) if self.script else Outcome(ok=True)
        if outcome.retry_after is not None:
            rate_limited(self.buckets, outcome.retry_after)  # as Http does on a 429
        return self.record(endpoint, outcome)

    def times(self, endpoint: str = "balances") -> list[float]:
        """Start times of the polls of one endpoint."""
        return [t for e, t in self.calls if e == endpoint]


class InlineStore(AsyncStore):
    """An AsyncStore that runs each call at once on the loop, so virtual time alone drives it."""

    async def call(self, fn: Callable[..., T], *args: Any) -> T:
        """Run the Store method here and now."""
        return fn(*args)


def gaps(times: Iterable[float]) -> list[float]:
    """Differences between successive times."""
    values = list(times)
    return [b - a for a, b in itertools.pairwise(values)]


def account_config(**changes: Any) -> AccountConfig:
    """An account polled every 60 s, withdrawals every 15 s while one is in flight."""
    values: dict[str, Any] = {
        "name": "hot",
        "provider": "westwallet",
        "base_url": "https://api.example.test",
        "credentials": {},
        "interval": 60.0,
        "currencies": None,
        "low_balance": {},
        "withdrawal_stuck_after": 3600.0,
        "deposit_stuck_after": 6 * 3600.0,
        "down_after": 3,
        "options": {},
        "fast_interval": 15.0,
    }
    return AccountConfig(**{**values, **changes})


SETTINGS = ProviderSettings(
    rate_limit=2.0,
    host_rate_limit=None,
    connect_timeout=5.0,
    read_timeout=10.0,
    timeout=30.0,
    max_backoff=300.0,
    max_pages=10,
)


def watcher(
    clock: FakeClock,
    provider: Provider,
    config: AccountConfig | None = None,
    telemetry: Telemetry | None = None,
) -> AccountWatcher:
    """A real AccountWatcher on an in-memory store."""
    return AccountWatcher(
        config or account_config(),
        SETTINGS,
        provider,
        AccountState(),
        store=InlineStore(Store(Path(":memory:"))),
        telemetry=telemetry or Telemetry(),
        clock=clock,
    )


def transfer(transfer_id: str, direction: Direction, state: State) -> Transfer:
    """One transfer as a provider reports it."""
    return Transfer(
        id=transfer_id,
        direction=direction,
        currency="BTC",
        amount=Decimal("0.1"),
        status=str(state),
        state=state,
    )


@pytest.fixture(name="scheduler")
async def fixture_scheduler(clock: FakeClock) -> AsyncIterator[Scheduler]:
    """A scheduler whose start-up jitter is always the full spread; stopped after the test."""
    scheduler = Scheduler(clock, rng=HighRandom(0))
    yield scheduler
    await scheduler.stop(grace=0)


@pytest.fixture(name="slots")
def fixture_slots(clock: FakeClock) -> Slots:
    """One arbiter for the buckets of a test."""
    return Slots(clock)


class TestTokenBucket:
    """The pacing itself: slots 1/rate apart, no bursts, pauses."""

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

    @pytest.mark.parametrize("rate", [0.0, -1.0, math.inf, math.nan])
    def test_rate_must_be_a_positive_number(self, rate: float, clock: FakeClock) -> None:
        """A bucket refuses a rate that could not pace anything."""
        with pytest.raises(ValueError, match="rate must be a positive number"):
            TokenBucket(rate, clock)

    def test_paced_keeps_a_margin_below_the_limit(self) -> None:
        """paced() takes the margin off the published limit."""
        assert [paced(2.0, 0.05), paced(100.0, 0.05), paced(1.0, 0.0)] == pytest.approx(
            [1.9, 95.0, 1.0]
        )

    def test_pause_never_brings_a_later_slot_forward(self, clock: FakeClock) -> None:
        """A pause shorter than the queue already reserved leaves the queue as it is."""
        bucket = TokenBucket(1.0, clock)
        now = clock.monotonic()
        for _ in range(5):
            bucket.reserve(now)
        bucket.pause(1.0)
        assert bucket.reserve(now) == pytest.approx(5.0)


class TestAimd:
    """429s pause the bucket, repeated ones slow it down, clean responses speed it back up."""

    def test_first_429_pauses_without_slowing_down(self, clock: FakeClock) -> None:
        """A lone 429 pauses the bucket for Retry-After and leaves its rate alone."""
        bucket = TokenBucket(2.0, clock)
        bucket.rate_limited(5.0)
        assert bucket.rate == 2.0
        assert bucket.reserve(clock.monotonic()) == pytest.approx(5.0)
        assert bucket.stats.rate_limited == 1

    async def test_repeated_429s_halve_the_rate_down_to_the_floor(self, clock: FakeClock) -> None:
        """Each 429 within REPEAT_WINDOW of the previous one halves the rate, never below FLOOR."""
        bucket = TokenBucket(2.0, clock)
        rates = []
        for _ in range(6):
            bucket.rate_limited(1.0)
            rates.append(bucket.rate)
            await clock.advance(1.0)  # past the pause: every 429 is a new one
        assert rates == pytest.approx([2.0, 1.0, 0.5, 0.25, 2.0 * FLOOR, 2.0 * FLOOR])
        assert (bucket.stats.rate, bucket.stats.max_rate) == pytest.approx((0.2, 2.0))
        assert bucket.interval == pytest.approx(5.0)

    async def test_429s_far_apart_are_blips(self, clock: FakeClock) -> None:
        """A 429 more than REPEAT_WINDOW after the previous one does not slow the bucket."""
        bucket = TokenBucket(2.0, clock)
        bucket.rate_limited(1.0)
        await clock.advance(REPEAT_WINDOW + 1.0)
        bucket.rate_limited(1.0)
        assert bucket.rate == 2.0

    def test_429s_to_requests_sent_before_the_pause_are_one_event(self, clock: FakeClock) -> None:
        """429s arriving while the bucket is paused count, but do not halve the rate again."""
        bucket = TokenBucket(2.0, clock)
        for _ in range(3):
            bucket.rate_limited(5.0)
        assert bucket.rate == 2.0
        assert bucket.stats.rate_limited == 3

    def test_429_without_retry_after_does_not_pause(self, clock: FakeClock) -> None:
        """Without a usable Retry-After the bucket keeps its pace."""
        bucket = TokenBucket(2.0, clock)
        bucket.rate_limited(None)
        assert bucket.reserve(clock.monotonic()) == 0.0

    async def test_clean_responses_win_the_rate_back_slowly(self, clock: FakeClock) -> None:
        """Each response without 429 adds INCREASE of the configured rate, up to it."""
        bucket = TokenBucket(2.0, clock)
        bucket.rate_limited(1.0)
        await clock.advance(1.0)
        bucket.rate_limited(1.0)
        assert bucket.rate == pytest.approx(1.0)
        steps = round(0.5 / INCREASE)
        for _ in range(steps - 1):
            bucket.relieved()
        assert bucket.rate == pytest.approx(2.0 - 2.0 * INCREASE)
        for _ in range(3):
            bucket.relieved()
        assert bucket.rate == 2.0

    def test_a_429_is_charged_to_the_credential_bucket(
        self, clock: FakeClock, slots: Slots
    ) -> None:
        """A 429 pauses the request's credential bucket and leaves the shared host bucket be."""
        key = TokenBucket(2.0, clock, name="k1", slots=slots)
        host = TokenBucket(100.0, clock, name="host", slots=slots)
        rate_limited([key, host], 3.0)
        now = clock.monotonic()
        assert (key.reserve(now), host.reserve(now)) == pytest.approx((3.0, 0.0))
        assert (key.stats.rate_limited, host.stats.rate_limited) == (1, 0)

    async def test_429s_through_two_credentials_charge_the_shared_bucket(
        self, clock: FakeClock, slots: Slots
    ) -> None:
        """Once two credentials got 429s through a shared bucket within the window, it pauses."""
        one = TokenBucket(2.0, clock, name="k1", slots=slots)
        two = TokenBucket(2.0, clock, name="k2", slots=slots)
        host = TokenBucket(100.0, clock, name="host", slots=slots)
        rate_limited([one, host], 3.0)
        await clock.advance(10.0)
        rate_limited([one, host], 3.0)  # the same credential again: still its own limit
        assert host.stats.rate_limited == 0
        await clock.advance(10.0)
        rate_limited([two, host], 3.0)
        assert host.stats.rate_limited == 1
        assert host.reserve(clock.monotonic()) == pytest.approx(3.0)

    def test_relieved_speeds_up_every_bucket_of_the_request(
        self, clock: FakeClock, slots: Slots
    ) -> None:
        """A clean response gives back rate to each bucket it went through."""
        buckets = [TokenBucket(2.0, clock, slots=slots), TokenBucket(10.0, clock, slots=slots)]
        for bucket in buckets:
            bucket.rate_limited(None)
            bucket.rate_limited(None)
        relieved(buckets)
        assert [b.rate for b in buckets] == pytest.approx(
            [1.0 + 2.0 * INCREASE, 5.0 + 10.0 * INCREASE]
        )


def waiter(deadline: float, seq: int, *buckets: TokenBucket) -> Waiter:
    """A waiting poll or request."""
    return Waiter(deadline, seq, buckets)


class TestPlan:
    """Who gets a slot and which poll starts, as pure arithmetic."""

    def test_one_credential_serves_requests_in_arrival_order(self, clock: FakeClock) -> None:
        """Requests on one credential go first come, first served, whatever their deadlines."""
        key = TokenBucket(2.0, clock)
        now = clock.monotonic()
        first, urgent = waiter(50.0, 0, key), waiter(10.0, 1, key)
        granted, started, wake = plan(now, [first, urgent], [])
        assert (granted, started, wake) == ([first], [], now + 0.5)
        granted, _, _ = plan(now + 0.5, [urgent], [])
        assert granted == [urgent]

    def test_earliest_deadline_takes_a_shared_bucket(self, clock: FakeClock) -> None:
        """Of two credentials' requests needing one host slot, the earlier deadline gets it."""
        one, two, host = TokenBucket(2.0, clock), TokenBucket(2.0, clock), TokenBucket(1.0, clock)
        now = clock.monotonic()
        late, early = waiter(20.0, 0, one, host), waiter(10.0, 1, two, host)
        granted, _, wake = plan(now, [late, early], [])
        assert (granted, wake) == ([early], now + 1.0)

    def test_a_request_waiting_for_its_credential_holds_no_shared_bucket(
        self, clock: FakeClock
    ) -> None:
        """A request whose credential is busy leaves the host slot to another credential."""
        one, two, host = TokenBucket(2.0, clock), TokenBucket(2.0, clock), TokenBucket(10.0, clock)
        now = clock.monotonic()
        one.reserve(now)
        blocked, other = waiter(0.0, 0, one, host), waiter(100.0, 1, two, host)
        granted, _, wake = plan(now, [blocked, other], [])
        assert (granted, wake) == ([other], now + 0.5)

    def test_polls_start_earliest_deadline_first_one_per_credential(self, clock: FakeClock) -> None:
        """Of polls waiting for one credential, only the earliest deadline starts now."""
        key, other = TokenBucket(2.0, clock), TokenBucket(2.0, clock)
        now = clock.monotonic()
        polls = [waiter(30.0, 0, key), waiter(20.0, 1, key), waiter(40.0, 2, other)]
        _, started, _ = plan(now, [], polls)
        assert started == [polls[1], polls[2]]

    def test_a_queued_request_keeps_new_polls_of_its_credential_waiting(
        self, clock: FakeClock
    ) -> None:
        """While a started poll's request waits in line, no other poll of that credential starts."""
        key, host = TokenBucket(2.0, clock), TokenBucket(1.0, clock)
        now = clock.monotonic()
        host.reserve(now)
        queued, poll = waiter(50.0, 0, key, host), waiter(1.0, 1, key)
        granted, started, wake = plan(now, [queued], [poll])
        assert (granted, started, wake) == ([], [], now + 1.0)

    def test_a_claimed_bucket_starts_no_other_poll(self, clock: FakeClock) -> None:
        """A poll that started but has not asked for its slot yet keeps the next one waiting."""
        key = TokenBucket(2.0, clock)
        key.claims = 1
        _, started, wake = plan(clock.monotonic(), [], [waiter(0.0, 0, key)])
        assert (started, wake) == ([], math.inf)

    def test_a_busy_bucket_wakes_the_plan_when_it_frees(self, clock: FakeClock) -> None:
        """A poll waiting for a busy bucket sets the next look at the bucket's next slot."""
        key = TokenBucket(4.0, clock)
        now = clock.monotonic()
        key.pause(3.0)
        _, started, wake = plan(now, [], [waiter(0.0, 0, key)])
        assert (started, wake) == ([], now + 3.0)

    def test_a_poll_without_buckets_starts_at_once(self, clock: FakeClock) -> None:
        """A poll that uses no bucket is never held."""
        poll = waiter(0.0, 0)
        assert plan(clock.monotonic(), [], [poll]) == ([], [poll], math.inf)


class TestSlots:
    """Requests waiting for slots through the arbiter, on virtual time."""

    async def test_concurrent_acquirers_are_served_in_arrival_order(self, clock: FakeClock) -> None:
        """Tasks sharing one bucket get slots in arrival order, 1/rate apart, never faster."""
        bucket = TokenBucket(4.0, clock)
        served: list[tuple[int, float]] = []

        async def acquirer(index: int) -> None:
            await acquire([bucket])
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
            await acquire([bucket])
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
            await acquire([bucket])
            served.append(clock.monotonic() - start)

        tasks = [asyncio.create_task(acquirer()) for _ in range(2)]
        await clock.advance(pause + 10.0)
        await asyncio.gather(*tasks)
        assert served == pytest.approx([pause, pause + 0.5])

    @pytest.mark.parametrize("seed", range(5))
    async def test_no_bucket_ever_goes_faster_than_its_rate(
        self, seed: int, clock: FakeClock, slots: Slots
    ) -> None:
        """Requests over three credentials and a shared host never break any bucket's spacing,
        and each credential serves its requests in arrival order."""
        rng = random.Random(seed)
        host = TokenBucket(3.0, clock, name="host", slots=slots)
        keys = [TokenBucket(r, clock, name=f"k{r}", slots=slots) for r in (1.0, 2.0, 2.5)]
        grants: dict[str, list[float]] = {b.name: [] for b in (host, *keys)}
        arrived: dict[str, list[int]] = {k.name: [] for k in keys}
        served: dict[str, list[int]] = {k.name: [] for k in keys}

        async def request(index: int, key: TokenBucket, delay: float) -> None:
            await clock.sleep(delay)
            arrived[key.name].append(index)
            await acquire([key, host])
            served[key.name].append(index)
            for bucket in (key, host):
                grants[bucket.name].append(clock.monotonic())

        tasks = [
            asyncio.create_task(request(i, rng.choice(keys), rng.uniform(0, 10))) for i in range(60)
        ]
        await clock.advance(60.0)
        await asyncio.gather(*tasks)
        for bucket in (host, *keys):
            assert min(gaps(grants[bucket.name])) >= bucket.interval - 1e-9
        assert served == arrived
        assert sum(len(v) for v in served.values()) == 60

    async def test_a_cancelled_request_gives_its_turn_to_the_next(self, clock: FakeClock) -> None:
        """A request cancelled while waiting leaves the line; the one behind it moves up."""
        bucket = TokenBucket(1.0, clock)
        await acquire([bucket])
        first = asyncio.create_task(acquire([bucket]))
        second = asyncio.create_task(acquire([bucket]))
        await settle()
        first.cancel()
        await clock.advance(1.0)
        assert second.done()
        assert first.cancelled()

    async def test_slots_and_waiting_time_are_counted(self, clock: FakeClock) -> None:
        """Each bucket counts the slots it gave and the seconds requests waited for them."""
        telemetry = Telemetry()
        bucket = TokenBucket(2.0, clock, name="k", stats=telemetry.bucket("k"))
        tasks = [asyncio.create_task(acquire([bucket])) for _ in range(3)]
        await clock.advance(2.0)
        await asyncio.gather(*tasks)
        stats = telemetry.buckets["k"]
        assert stats.requests == 3
        assert stats.wait_seconds == pytest.approx(0.0 + 0.5 + 1.0)
        assert (stats.rate, stats.max_rate) == (2.0, 2.0)

    async def test_buckets_of_two_arbiters_are_refused(self, clock: FakeClock) -> None:
        """One request cannot wait on buckets of different Slots."""
        with pytest.raises(ValueError, match="share one Slots"):
            await acquire([TokenBucket(1.0, clock), TokenBucket(1.0, clock)])


class TestScheduler:
    """The loops: start-up spread, cadence, backoff, Retry-After and stopping."""

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
        assert len(set(firsts.values())) == 20

    async def test_startup_spread_grows_with_the_fleet(self, clock: FakeClock) -> None:
        """Past STARTUP_SPREAD x STARTUP_RATE loops, later first polls spread wider."""
        scheduler = Scheduler(clock, rng=HighRandom())
        pollers = [FakePoller(clock, interval=60.0, name=f"a{i}") for i in range(3000)]
        start = clock.monotonic()
        for poller in pollers:
            scheduler.start(poller, ["balances", "deposits"])
        await clock.advance(60.0)
        await scheduler.stop()
        # With the top of the jitter range, an account's first endpoint starts a spread in.
        first_of = [p.times("balances")[0] - start for p in pollers]
        assert first_of[0] == STARTUP_SPREAD  # a small fleet keeps the short spread
        assert first_of[-1] == pytest.approx(6000 / STARTUP_RATE)  # the 6,000th loop: 12 s

    async def test_endpoints_of_one_account_take_turns(
        self, clock: FakeClock, scheduler: Scheduler
    ) -> None:
        """An account's first polls are spread evenly over the start-up spread."""
        poller = FakePoller(clock, interval=60.0)
        start = clock.monotonic()
        scheduler.start(poller, ["balances", "deposits", "withdrawals"])
        await clock.advance(STARTUP_SPREAD)
        firsts = [t - start for _, t in poller.calls]
        assert firsts == pytest.approx([10 / 3, 20 / 3, 10.0])
        assert [e for e, _ in poller.calls] == ["withdrawals", "deposits", "balances"]

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
        assert poller.times("balances")[0] == start + STARTUP_SPREAD
        assert poller.times("deposits")[0] == start + STARTUP_SPREAD / 2
        for endpoint in ("balances", "deposits"):
            assert gaps(poller.times(endpoint)) == [30.0] * 4

    async def test_interval_for_sets_each_next_poll(
        self, clock: FakeClock, scheduler: Scheduler
    ) -> None:
        """Each poll is due interval_for(endpoint) after the previous one, as it is then."""
        poller = FakePoller(clock, interval=60.0)
        scheduler.start(poller, ["withdrawals"])
        await clock.advance(STARTUP_SPREAD + 60.0)
        poller.intervals["withdrawals"] = 15.0  # say a withdrawal went in flight
        await clock.advance(60.0 + 3 * 15.0)
        del poller.intervals["withdrawals"]  # and settled
        await clock.advance(15.0 + 60.0)
        assert gaps(poller.times("withdrawals")) == [60.0, 60.0, 15.0, 15.0, 15.0, 15.0, 60.0]

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
            async def poll(self, endpoint: str, ticket: Ticket | None = None) -> Outcome:  # noqa: ARG002
                self.calls.append((endpoint, self.clock.monotonic()))
                if len(self.calls) == 1:
                    raise KeyError("bug")
                return self.record(endpoint, Outcome(ok=True))

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
        assert clock.sleepers == 1  # one timer for every sleeping endpoint
        before = clock.monotonic()
        stopping = asyncio.create_task(scheduler.stop(grace=30.0))
        await settle()
        assert stopping.done()
        await stopping
        assert clock.monotonic() == before
        assert clock.sleepers == 0
        await clock.advance(2 * 3600.0)
        assert len(poller.calls) == 3

    async def test_stop_poller_ends_one_account_only(self, clock: FakeClock) -> None:
        """stop_poller() ends one account's polls, a running one included; others go on."""
        scheduler = Scheduler(clock, rng=HighRandom(0))
        gone = FakePoller(clock, interval=10.0, name="gone")
        kept = FakePoller(clock, interval=10.0, name="kept")
        scheduler.start(gone, ["balances", "deposits"])
        scheduler.start(kept, ["balances"])
        await clock.advance(STARTUP_SPREAD + 10.0)
        polled = len(gone.calls)
        assert polled >= 2
        assert scheduler.polling("gone")
        await scheduler.stop_poller("gone")
        assert not scheduler.polling("gone")
        assert scheduler.polling("kept")
        before = len(kept.calls)
        await clock.advance(60.0)
        assert len(gone.calls) == polled
        assert len(kept.calls) >= before + 5
        await scheduler.stop()

    async def test_on_round_once_every_endpoint_has_been_polled(self, clock: FakeClock) -> None:
        """on_round comes when the last endpoint started so far ends its first poll, once, and
        again when endpoints started later have all been polled."""
        rounds: list[float] = []
        scheduler = Scheduler(clock, rng=HighRandom(0), on_round=lambda: rounds.append(1.0))
        first = FakePoller(clock, interval=60.0, name="first")
        scheduler.start(first, ["balances", "deposits", "withdrawals"])
        await clock.advance(STARTUP_SPREAD / 2)
        assert 0 < len(first.calls) < 3
        assert rounds == []
        await clock.advance(STARTUP_SPREAD + 60.0)
        assert len(rounds) == 1  # later polls do not count
        later = FakePoller(clock, interval=60.0, name="later")
        scheduler.start(later, ["balances"])
        await clock.advance(STARTUP_SPREAD)
        assert len(rounds) == 2
        await scheduler.stop()

    async def test_a_restarted_poller_keeps_only_its_new_schedule(self, clock: FakeClock) -> None:
        """A poller stopped and started again (a reload) polls on its new schedule only: the
        wake-up its old endpoint had armed does not fire the new one."""
        scheduler = Scheduler(clock, rng=HighRandom(0))
        poller = FakePoller(clock, interval=60.0)
        scheduler.start(poller, ["balances"])
        await clock.advance(STARTUP_SPREAD)
        assert len(poller.calls) == 1
        await clock.advance(30.0)
        await scheduler.stop_poller(poller.name)
        restarted = clock.monotonic()
        scheduler.start(poller, ["balances"])
        await clock.advance(100.0)
        new = [t - restarted for t in poller.times()[1:]]
        assert new == pytest.approx([STARTUP_SPREAD, STARTUP_SPREAD + 60.0], abs=0.01)
        await scheduler.stop()

    async def test_sleeping_endpoints_hold_no_task_or_timer(self, clock: FakeClock) -> None:
        """Between polls an endpoint holds no task and no timer of its own (the collector's
        load): one timer serves the earliest wake-up of all."""
        scheduler = Scheduler(clock, rng=HighRandom(0))
        pollers = [FakePoller(clock, interval=60.0, name=f"p{i}") for i in range(20)]
        for poller in pollers:
            scheduler.start(poller, ["balances", "deposits", "withdrawals"])
        await clock.advance(STARTUP_SPREAD)
        assert all(len(poller.calls) == 3 for poller in pollers)
        assert not [t for t in asyncio.all_tasks() if t.get_name().startswith("poll:")]
        assert clock.sleepers == 1
        await clock.advance(60.0)
        assert all(len(poller.calls) == 6 for poller in pollers)
        await scheduler.stop()

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

    async def test_stop_drops_polls_still_waiting_to_start(
        self, clock: FakeClock, slots: Slots
    ) -> None:
        """Polls waiting for a busy budget end at stop() without starting; running ones finish."""
        key = TokenBucket(1.0, clock, slots=slots)
        key.pause(3600.0)
        scheduler = Scheduler(clock, rng=HighRandom(0))
        poller = FakePoller(clock, interval=60.0, buckets=(key,))
        scheduler.start(poller, ["balances", "deposits"])
        await clock.advance(STARTUP_SPREAD)
        stopping = asyncio.create_task(scheduler.stop(grace=30.0))
        await settle()
        assert stopping.done()
        await stopping
        assert poller.calls == []
        assert key.claims == 0


class TestPriorities:
    """Polls sharing a budget start earliest deadline first; overload stretches them evenly."""

    async def test_earliest_deadline_starts_first(self, clock: FakeClock, slots: Slots) -> None:
        """Of two polls due together on a busy key, the shorter interval's goes first."""
        key = TokenBucket(1.0, clock, slots=slots)
        key.pause(5.0)
        scheduler = Scheduler(clock, rng=LowRandom(0))
        slow = FakePoller(clock, interval=60.0, name="slow", buckets=(key,))
        fast = FakePoller(clock, interval=60.0, name="fast", buckets=(key,))
        fast.intervals["withdrawals"] = 15.0
        start = clock.monotonic()
        scheduler.start(slow, ["withdrawals"])
        scheduler.start(fast, ["withdrawals"])
        await clock.advance(10.0)
        await scheduler.stop()
        assert fast.times("withdrawals") == [start + 5.0]
        assert slow.times("withdrawals") == [start + 6.0]

    async def test_a_started_poll_finishes_before_the_next_starts(
        self, clock: FakeClock, slots: Slots
    ) -> None:
        """A poll's later pages keep their credential's slots until the poll is done."""
        key = TokenBucket(1.0, clock, slots=slots)
        scheduler = Scheduler(clock, rng=LowRandom(0))
        paging = FakePoller(clock, interval=60.0, name="paging", buckets=(key,), requests=3)
        other = FakePoller(clock, interval=60.0, name="other", buckets=(key,))
        start = clock.monotonic()
        scheduler.start(paging, ["deposits"])
        scheduler.start(other, ["deposits"])
        await clock.advance(10.0)
        await scheduler.stop()
        assert [t - start for _, t in paging.slots] == [0.0, 1.0, 2.0]
        assert [t - start for _, t in other.slots] == [3.0]

    async def test_overload_stretches_every_interval_evenly(
        self, clock: FakeClock, slots: Slots
    ) -> None:
        """At three times the budget every account is polled in turn, equally often, each
        interval stretched by the same lateness, which on_delay reports."""
        key = TokenBucket(1.0, clock, slots=slots)
        delays: list[float] = []
        scheduler = Scheduler(clock, rng=random.Random(3), on_delay=lambda _, s: delays.append(s))
        pollers = [FakePoller(clock, interval=2.0, name=f"a{i}", buckets=(key,)) for i in range(6)]
        for poller in pollers:
            scheduler.start(poller, ["balances"])
        await clock.advance(120.0)
        await scheduler.stop()
        counts = [len(p.calls) for p in pollers]
        assert max(counts) - min(counts) <= 1
        assert sum(counts) in (120, 121)
        assert min(gaps(sorted(t for p in pollers for _, t in p.slots))) >= 1.0 - 1e-9
        for poller in pollers:
            assert gaps(poller.times()[2:]) == pytest.approx([6.0] * (len(poller.calls) - 3))
        assert delays[-60:] == pytest.approx([4.0] * 60)  # interval 2 s, polled every 6 s

    async def test_on_delay_counts_the_wait_for_the_first_slot(
        self, clock: FakeClock, slots: Slots
    ) -> None:
        """A poll held back by its budget reports the wait as scheduler delay."""
        key = TokenBucket(1.0, clock, slots=slots)
        delays: list[float] = []
        scheduler = Scheduler(clock, rng=LowRandom(0), on_delay=lambda _, s: delays.append(s))
        key.pause(3.0)
        scheduler.start(FakePoller(clock, interval=60.0, buckets=(key,)), ["balances"])
        await clock.advance(10.0)
        await scheduler.stop()
        assert delays == [3.0]


class TestRateLimitedPolls:
    """A 429 pauses the whole bucket and its poll is retried once, by its own loop."""

    async def test_a_429_pauses_every_account_on_the_key_and_one_poll_retries(
        self, clock: FakeClock, slots: Slots
    ) -> None:
        """After a 429 with Retry-After 5 nobody on the key polls for 5 s; then the poll that
        got it retries first (it kept its deadline), once."""
        key = TokenBucket(1.0, clock, slots=slots)
        scheduler = Scheduler(clock, rng=LowRandom(0))
        hit = FakePoller(
            clock,
            interval=10.0,
            name="hit",
            buckets=(key,),
            script=[Outcome(ok=False, retry_after=5.0)],
        )
        other = FakePoller(clock, interval=12.0, name="other", buckets=(key,))
        start = clock.monotonic()
        scheduler.start(hit, ["balances"])
        scheduler.start(other, ["balances"])
        await clock.advance(8.0)
        await scheduler.stop()
        assert [t - start for t in hit.times()] == [0.0, 5.0]
        assert [t - start for t in other.times()] == [6.0]
        assert key.stats.rate_limited == 1

    async def test_429s_do_not_open_the_account_circuit(
        self, clock: FakeClock, scheduler: Scheduler
    ) -> None:
        """Rate-limited polls are no failures of the account: its other endpoints keep going."""
        poller = FakePoller(
            clock,
            interval=10.0,
            down_after=2,
            scripts={"deposits": [Outcome(ok=False, retry_after=1.0)] * 5},
        )
        scheduler.start(poller, ["balances", "deposits"])
        await clock.advance(STARTUP_SPREAD + 40.0)
        assert gaps(poller.times("balances")) == [10.0] * 4
        assert gaps(poller.times("deposits"))[:5] == [1.0] * 5


class FlakyProvider:
    """A Provider that answers every endpoint while up and raises Unavailable while down."""

    def __init__(self, endpoints: tuple[str, ...]) -> None:
        self.endpoints = endpoints
        self.down = False
        self.polls: list[tuple[str, bool]] = []

    async def poll(self, endpoint: str, tracked: Tracked) -> Observation:
        """An empty observation, or Unavailable."""
        del tracked
        self.polls.append((endpoint, self.down))
        if self.down:
            raise Unavailable("provider down")
        return Observation(endpoint)


class TestCircuit:
    """One account's failures add up across endpoints and hold all of them back."""

    async def test_failures_across_endpoints_open_the_circuit(
        self, clock: FakeClock, scheduler: Scheduler
    ) -> None:
        """After down_after failures in a row every endpoint waits; one probe at a time tries,
        backing off exponentially; when a probe succeeds the others poll at once."""
        failing = True

        class Probed(FakePoller):
            async def poll(self, endpoint: str, ticket: Ticket | None = None) -> Outcome:  # noqa: ARG002
                self.calls.append((endpoint, self.clock.monotonic()))
                return self.record(endpoint, Outcome(ok=not failing))

        poller = Probed(clock, interval=10.0, max_backoff=1000.0, down_after=2)
        start = clock.monotonic()
        scheduler.start(poller, ["e0", "e1", "e2"])
        await clock.advance(100.0)
        # e2 fails at 10/3 (retry in 20), e1 at 20/3 opens the circuit (retry in 40): e0, due
        # at 10, and e2, due at 23.3, wait; e1 probes alone at 46.7, fails: next probe in 80.
        assert [t - start for _, t in poller.calls] == pytest.approx([10 / 3, 20 / 3, 140 / 3])
        failing = False
        await clock.advance(100.0)
        recovered = sorted((e, t - start) for e, t in poller.calls[3:6])
        assert [e for e, _ in recovered] == ["e0", "e1", "e2"]
        assert [t for _, t in recovered] == pytest.approx([140 / 3 + 80] * 3)

    async def test_endpoints_of_a_down_account_probe_in_turn(
        self, clock: FakeClock, scheduler: Scheduler
    ) -> None:
        """While the account is down, every endpoint gets its probe in turn: none is starved,
        whichever endpoint happens to wake first."""

        class Failing(FakePoller):
            async def poll(self, endpoint: str, ticket: Ticket | None = None) -> Outcome:  # noqa: ARG002
                self.calls.append((endpoint, self.clock.monotonic()))
                return self.record(endpoint, Outcome(ok=False))

        poller = Failing(clock, interval=1.0, max_backoff=2.0, down_after=1)
        scheduler.start(poller, ["e0", "e1", "e2"])
        await clock.advance(60.0)
        probes = [e for e, _ in poller.calls[1:]]  # after the first failure opened it
        assert len(probes) >= 12
        assert all(len(set(probes[i : i + 3])) == 3 for i in range(0, len(probes) - 2, 3))

    async def test_account_goes_down_once_and_recovers_once(self, clock: FakeClock) -> None:
        """A long outage emits one account.down, backs off, and one account.recovered after."""
        provider = FlakyProvider(("balances", "deposits", "withdrawals"))
        telemetry = Telemetry()
        config = account_config(interval=10.0, down_after=2)
        account = watcher(clock, provider, config, telemetry)
        scheduler = Scheduler(clock, rng=HighRandom(0))
        scheduler.start(account, account.endpoints)
        with capture_logs():
            await clock.advance(60.0)
            provider.down = True
            await clock.advance(3600.0)
            provider.down = False
            await clock.advance(600.0)
        await scheduler.stop()
        events = telemetry.events
        assert (events["account.down"], events["account.recovered"]) == (1, 1)
        outage = [e for e, down in provider.polls if down]
        # Two failures open the circuit; then one probe at a time after 80, 160 and every
        # max_backoff (300 s): 16 polls in the hour, where three endpoints on their own would
        # each have backed off separately (over 30).
        assert len(outage) <= 16
        assert account.up


class TestFastInterval:
    """AccountWatcher.interval_for: withdrawals in flight are watched at fast_interval."""

    async def test_endpoint_covering_withdrawals_is_fast_while_one_is_in_flight(
        self, clock: FakeClock
    ) -> None:
        """The endpoint whose last observation covered withdrawals polls at fast_interval while
        a withdrawal is in flight, and at interval again once it settles."""
        provider = ScriptedProvider(("balances", "history"))
        account = watcher(clock, provider)
        both = frozenset({Direction.DEPOSIT, Direction.WITHDRAWAL})
        assert account.interval_for("history") == 60.0  # nothing known yet
        for state, expected in [(State.PENDING, 15.0), (State.UNKNOWN, 15.0), (State.OK, 60.0)]:
            provider.answers["history"].append(
                Observation(
                    "history",
                    transfers=(transfer("w1", Direction.WITHDRAWAL, state),),
                    directions=both,
                )
            )
            await account.poll("history")
            assert (account.interval_for("history"), account.interval_for("balances")) == (
                expected,
                60.0,
            )

    async def test_deposits_in_flight_keep_the_interval(self, clock: FakeClock) -> None:
        """A pending deposit does not speed anything up."""
        provider = ScriptedProvider(("deposits",))
        account = watcher(clock, provider)
        provider.answers["deposits"].append(
            Observation(
                "deposits",
                transfers=(transfer("d1", Direction.DEPOSIT, State.PENDING),),
                directions=frozenset({Direction.DEPOSIT}),
            )
        )
        await account.poll("deposits")
        assert account.interval_for("deposits") == 60.0


class BucketlessClient:
    """A provider client that is never asked to poll in these tests."""

    endpoints = ("balances",)

    async def poll(self, endpoint: str, tracked: Tracked) -> Observation:
        """Never called."""
        del tracked
        raise AssertionError(endpoint)


def bucketless(account: AccountConfig, context: ProviderContext) -> BucketlessClient:
    """A ProviderFactory for BucketlessClient."""
    del account, context
    return BucketlessClient()


class TestBudgets:
    """The daemon's buckets: one per credential, one per provider host, paced with a margin."""

    @pytest.mark.parametrize(
        ("margin", "key_rate", "host_rate"), [(None, 1.9, 95.0), (0.2, 1.6, 80.0)]
    )
    async def test_buckets_per_credential_and_host(
        self,
        margin: float | None,
        key_rate: float,
        host_rate: float,
        clock: FakeClock,
        tmp_path: Path,
    ) -> None:
        """Accounts on one API key share a bucket; every account of a host shares the host's;
        each paces the published limit less rate_margin (5% unless set)."""
        settings: dict[str, Any] = {} if margin is None else {"rate_margin": margin}
        config = parse_config(
            {
                "providers": {"bitexbit": settings},
                "accounts": [
                    {
                        "name": name,
                        "provider": "bitexbit",
                        "credentials": {"api_key": key, "secret_key": "s"},
                    }
                    for name, key in (("a1", "k1"), ("a2", "k1"), ("a3", "k2"))
                ],
            },
            base_dir=tmp_path,
            environ={},
        )
        daemon = Daemon(config, clock=clock, providers={"bitexbit": bucketless})
        await daemon.start(serve=False)
        try:
            a1, a2, a3 = (daemon.watchers[n] for n in ("a1", "a2", "a3"))
            assert a1.buckets[0] is a2.buckets[0] is not a3.buckets[0]
            assert a1.buckets[1] is a2.buckets[1] is a3.buckets[1]
            k1, k2 = (config.account(n).credential_id for n in ("a1", "a3"))
            host = "bitexbit@www.bitexbit.com"
            stats = daemon.telemetry.buckets
            assert sorted(stats) == sorted([k1, k2, host])
            assert [stats[k].max_rate for k in (k1, k2, host)] == pytest.approx(
                [key_rate, key_rate, host_rate]
            )
        finally:
            await daemon.close()


class TestBudgetMetrics:
    """The buckets on /metrics."""

    def test_bucket_series(self, clock: FakeClock) -> None:
        """Each bucket exports its rate now and at most, slots served, waiting and 429s."""
        telemetry = Telemetry()
        stats = telemetry.bucket("westwallet:0123456789ab")
        stats.rate, stats.max_rate, stats.requests, stats.wait_seconds = 0.95, 1.9, 7, 2.5
        stats.rate_limited = 2
        registry = CollectorRegistry()
        registry.register(WalletwatchCollector(list, telemetry, clock))
        labels = {"bucket": "westwallet:0123456789ab"}
        values = {
            name: registry.get_sample_value(f"walletwatch_{name}", labels)
            for name in (
                "bucket_rate",
                "bucket_max_rate",
                "bucket_requests_total",
                "bucket_wait_seconds_total",
                "bucket_rate_limited_total",
            )
        }
        assert values == {
            "bucket_rate": 0.95,
            "bucket_max_rate": 1.9,
            "bucket_requests_total": 7.0,
            "bucket_wait_seconds_total": 2.5,
            "bucket_rate_limited_total": 2.0,
        }


class TestFailureDelay:
    """The backoff arithmetic."""

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


class TestStopSignal:
    """The scheduler's stop flag wakes every waiter and forgets cancelled ones at once."""

    async def test_set_wakes_every_waiter(self) -> None:
        """Waiters return once the signal is set; later waits return at once."""
        signal = StopSignal()
        waiters = [asyncio.ensure_future(signal.wait()) for _ in range(100)]
        await settle()
        assert not any(w.done() for w in waiters)
        signal.set()
        await asyncio.gather(*waiters)
        await asyncio.wait_for(signal.wait(), timeout=1)
        assert signal.is_set()

    async def test_cancelled_waiters_are_dropped(self) -> None:
        """A cancelled wait leaves nothing behind (no scan of a long queue, no leak)."""
        signal = StopSignal()
        waiters = [asyncio.ensure_future(signal.wait()) for _ in range(1000)]
        await settle()
        assert len(signal._waiters) == 1000
        for waiter in waiters:
            waiter.cancel()
        await asyncio.gather(*waiters, return_exceptions=True)
        assert signal._waiters == set()
