"""When each poll runs and each request goes: budgets, priorities, 429s and failing accounts.

Budgets. Every request passes token buckets without bursts: one per credential (every account
on an API key shares it) and one per provider host where the provider publishes a host limit,
each paced a margin below the published rate (``paced``). A 429 pauses the bucket it applies to
for the provider's Retry-After. A 429 within REPEAT_WINDOW of the previous one halves the
bucket's rate (down to FLOOR of it) and every response without one wins back INCREASE of it
(AIMD). A 429 is charged to the request's credential bucket, and to a shared bucket once 429s
have come through it for two credentials: then the shared limit is the one being hit.

Priorities. A poll may make several requests (pages, lookups), and providers that sign with
nonces need one credential's requests to reach them in the order the nonces were taken. So
priority decides which poll *starts*, while requests stay first come, first served per
credential (``plan`` is the whole rule):

- A poll starts when every bucket it uses is free, has no request queued and is not claimed by
  a poll that started but has not asked for its first slot yet. Waiting polls start earliest
  deadline first (deadline = due time + interval), so when demand exceeds the budget every
  endpoint is still polled, each in turn, and every interval stretches by the same lateness,
  which ``walletwatch_scheduler_delay_seconds`` shows.
- A started poll's requests queue in arrival order on its credential bucket. A queued request
  keeps new polls of that credential waiting, so a poll that has begun finishes first. Shared
  buckets go to the earliest-deadline request that has every bucket it needs free.
- Slots are handed out only when free, never reserved ahead, so a request waiting for its
  credential never holds a shared bucket from the others.

Failures. One circuit per account counts failed polls in a row across its endpoints. A failed
poll is retried after an exponential backoff with full jitter, capped at ``max_backoff``;
after ``down_after`` failures in a row every endpoint of the account waits while one probe at a
time tries again. A 429 is no failure of the account: the poll that got it is retried by its
own loop once the pause is over (the one retry owner), keeping its deadline.

``plan``, ``failure_delay`` and the bucket's pacing are arithmetic on values; the schedule
only sets timers on the injected clock and asks a ``Poller`` to do the work. Between polls an
endpoint is a timer, not a sleeping task: the collector never scans thousands of them.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import heapq
import itertools
import math
import random
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, Protocol

import structlog

from walletwatch.telemetry import BucketStats
from walletwatch.types import Clock, Timer

log = structlog.get_logger("walletwatch.scheduler")

STARTUP_SPREAD = 10.0
"""Start-up jitter spreads the first polls over at least this many seconds (within interval)."""

STARTUP_RATE = 500.0
"""A large fleet's first polls are spread so that no more than about this many start a second:
35,000 first polls in ten seconds would wait for connections past their timeouts."""

MIN_RETRY = 1.0
"""Never retry a failed poll sooner than this."""

STALL_SLACK = 300.0
"""Beyond the longest sleep a loop may take, how long without progress counts as stalled."""

REPEAT_WINDOW = 60.0
"""A 429 this soon after the previous one on a bucket means its rate is too high, not a blip."""

DECREASE = 0.5
"""A repeated 429 multiplies the bucket's rate by this (multiplicative decrease)..."""

FLOOR = 0.1
"""...but never below this fraction of its configured rate."""

INCREASE = 0.01
"""Each response without a 429 gives back this fraction of the configured rate (additive
increase): about a minute from half the rate back to all of it at 1-2 requests a second."""


def paced(limit: float, margin: float) -> float:
    """The rate a bucket keeps to: ``margin`` (a fraction) below the published ``limit``."""
    return limit * (1.0 - margin)


class TokenBucket:
    """A rate limit without bursts: one slot every 1/rate seconds, never two closer together.

    ``reserve`` is the pacing itself (a virtual-scheduling GCRA); requests and polls wait for
    their slots through the bucket's ``Slots``, which may be shared with other buckets.
    """

    def __init__(
        self,
        rate: float,
        clock: Clock,
        *,
        name: str = "",
        slots: Slots | None = None,
        stats: BucketStats | None = None,
    ) -> None:
        if not (math.isfinite(rate) and rate > 0):
            raise ValueError(f"rate must be a positive number, got {rate!r}")
        self.name = name
        self.max_rate = rate
        self.slots = slots if slots is not None else Slots(clock)
        self.stats = stats if stats is not None else BucketStats()
        self.stats.max_rate = rate
        self.claims = 0  # polls started that have not queued their first request yet
        self._clock = clock
        self._rate = rate
        self._next = -math.inf
        self._paused_until = -math.inf
        self._last_429: float | None = None
        self._struck_by: dict[str, float] = {}
        self._set_rate(rate)

    def __repr__(self) -> str:
        return f"TokenBucket({self.name!r}, rate={self._rate:g})"

    @property
    def rate(self) -> float:
        """Requests per second the bucket paces at now (lowered after repeated 429s)."""
        return self._rate

    @property
    def interval(self) -> float:
        """Seconds between two slots at the current rate."""
        return 1.0 / self._rate

    @property
    def free_at(self) -> float:
        """The monotonic time of the next slot (later while paused)."""
        return max(self._next, self._paused_until)

    def reserve(self, now: float) -> float:
        """Take the next free slot at or after ``now`` and return how long until it comes."""
        slot = max(self.free_at, now)
        self._next = slot + self.interval
        return slot - now

    def pause(self, seconds: float) -> None:
        """No slot is handed out for the next ``seconds`` (a provider's Retry-After)."""
        self._paused_until = max(self._paused_until, self._clock.monotonic() + seconds)

    async def acquire(self) -> None:
        """Wait for a slot of this bucket alone."""
        await self.slots.request((self,))

    def rate_limited(self, retry_after: float | None) -> None:
        """An HTTP 429 is charged to this bucket: pause, and slow down if it is a repeat."""
        now = self._clock.monotonic()
        self.stats.rate_limited += 1
        # A 429 to a request sent before the current pause began is the same event again.
        if now >= self._paused_until:
            if self._last_429 is not None and now - self._last_429 <= REPEAT_WINDOW:
                self._set_rate(max(self.max_rate * FLOOR, self._rate * DECREASE))
            self._last_429 = now
        if retry_after is not None:
            self.pause(retry_after)

    def relieved(self) -> None:
        """A response without 429 came back: win back a little of the configured rate."""
        if self._rate < self.max_rate:
            self._set_rate(min(self.max_rate, self._rate + self.max_rate * INCREASE))

    def struck(self, credential: str) -> bool:
        """Note a 429 to ``credential`` through this shared bucket; True when two credentials
        have had one within REPEAT_WINDOW, which means this bucket's limit is the one hit."""
        now = self._clock.monotonic()
        self._struck_by = {k: t for k, t in self._struck_by.items() if now - t <= REPEAT_WINDOW}
        self._struck_by[credential] = now
        return len(self._struck_by) >= 2

    def _set_rate(self, rate: float) -> None:
        self._rate = rate
        self.stats.rate = rate


def rate_limited(buckets: Sequence[TokenBucket], retry_after: float | None) -> None:
    """Charge an HTTP 429 to the buckets its request went through (credential bucket first)."""
    if not buckets:
        return
    own, *shared = buckets
    own.rate_limited(retry_after)
    for bucket in shared:
        if bucket.struck(own.name):
            bucket.rate_limited(retry_after)


def relieved(buckets: Sequence[TokenBucket]) -> None:
    """A request through ``buckets`` got a response other than 429."""
    for bucket in buckets:
        bucket.relieved()


async def acquire(buckets: Sequence[TokenBucket]) -> None:
    """Wait for one slot in every bucket for a request of the current poll."""
    if buckets:
        await buckets[0].slots.request(buckets)


@dataclass(eq=False, slots=True)
class Ticket:
    """One poll as the budget sees it: when it was due, its deadline, what it holds."""

    due: float
    deadline: float
    buckets: tuple[TokenBucket, ...] = ()
    started: float | None = None  # when its first request got a slot
    claimed: tuple[TokenBucket, ...] = ()


_POLL: ContextVar[Ticket | None] = ContextVar("walletwatch_poll", default=None)
"""The poll the running task works for; requests take their deadline from it."""


@dataclass(eq=False, slots=True)
class Waiter:
    """A poll waiting to start, or a request waiting for its slots."""

    deadline: float
    seq: int  # arrival order
    buckets: tuple[TokenBucket, ...]
    since: float = 0.0
    ticket: Ticket | None = None


def _urgency(waiter: Waiter) -> tuple[float, int]:
    return (waiter.deadline, waiter.seq)


def plan(
    now: float, requests: Sequence[Waiter], polls: Iterable[Waiter]
) -> tuple[list[Waiter], list[Waiter], float]:
    """Which requests get their slots now, which polls may start now, and when to look again.

    ``requests`` come in arrival order; granted ones have their slots taken here. A poll
    blocked only by a claim or a queued request needs no wake-up: the grant or the release
    that unblocks it comes with one.
    """
    wake = math.inf
    heads: dict[TokenBucket, Waiter] = {}
    seconds: dict[TokenBucket, Waiter] = {}  # next in line after the head
    for request in requests:  # first come, first served on each credential bucket
        line = seconds if request.buckets[0] in heads else heads
        line.setdefault(request.buckets[0], request)
    queued = set(seconds)
    granted = []
    for request in sorted(heads.values(), key=_urgency):
        start = max(bucket.free_at for bucket in request.buckets)
        if start <= now:
            for bucket in request.buckets:
                bucket.reserve(now)
            granted.append(request)
            after = seconds.get(request.buckets[0])
            if after is not None:
                wake = min(wake, max(bucket.free_at for bucket in after.buckets))
        else:
            queued.add(request.buckets[0])
            wake = min(wake, start)
    started = []
    claimed: set[TokenBucket] = set()
    for poll in sorted(polls, key=_urgency):
        start = max((bucket.free_at for bucket in poll.buckets), default=now)
        if start > now:
            wake = min(wake, start)
        elif not any(b.claims or b in claimed or b in queued for b in poll.buckets):
            claimed.update(poll.buckets)
            started.append(poll)
    return granted, started, wake


class Slots:
    """Hands the slots of a set of token buckets to waiting requests and polls, by ``plan``."""

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._requests: list[Waiter] = []
        self._polls: list[Waiter] = []
        self._futures: dict[Waiter, asyncio.Future[float]] = {}
        self._seq = itertools.count()
        self._timer: Timer | None = None
        self._timer_at = math.inf

    def __repr__(self) -> str:
        return f"Slots(requests={len(self._requests)}, polls={len(self._polls)})"

    async def request(self, buckets: Sequence[TokenBucket]) -> None:
        """Wait for a slot in every bucket (the credential's first) for one request."""
        ticket = _POLL.get()
        if ticket is not None:
            self._unclaim(ticket)
        waiter, future = self._join(self._requests, buckets, ticket)
        granted = await self._wait(self._requests, waiter, future)
        waited = granted - waiter.since
        for bucket in waiter.buckets:
            bucket.stats.requests += 1
            bucket.stats.wait_seconds += waited
        if ticket is not None and ticket.started is None:
            ticket.started = granted

    async def admit(self, ticket: Ticket) -> None:
        """Wait until the poll may start; its buckets stay claimed until its first request."""
        waiter, future = self._join(self._polls, ticket.buckets, ticket)
        await self._wait(self._polls, waiter, future)

    def release(self, ticket: Ticket) -> None:
        """The poll is over: release what it still claims."""
        if self._unclaim(ticket):
            self._dispatch()

    def _unclaim(self, ticket: Ticket) -> bool:
        for bucket in ticket.claimed:
            bucket.claims -= 1
        released, ticket.claimed = bool(ticket.claimed), ()
        return released

    def _join(
        self, queue: list[Waiter], buckets: Sequence[TokenBucket], ticket: Ticket | None
    ) -> tuple[Waiter, asyncio.Future[float]]:
        if any(bucket.slots is not self for bucket in buckets):
            raise ValueError("the buckets of one request must share one Slots")
        now = self._clock.monotonic()
        deadline = ticket.deadline if ticket is not None else now
        waiter = Waiter(deadline, next(self._seq), tuple(buckets), now, ticket)
        future = self._futures[waiter] = asyncio.get_running_loop().create_future()
        queue.append(waiter)
        self._dispatch()
        return waiter, future

    async def _wait(
        self, queue: list[Waiter], waiter: Waiter, future: asyncio.Future[float]
    ) -> float:
        try:
            return await future
        except asyncio.CancelledError:
            if waiter in queue:
                queue.remove(waiter)
                del self._futures[waiter]
                self._dispatch()
            raise

    def _dispatch(self) -> None:
        for queue in (self._requests, self._polls):  # drop waiters cancelled meanwhile
            for waiter in [w for w in queue if self._futures[w].done()]:
                queue.remove(waiter)
                del self._futures[waiter]
        now = self._clock.monotonic()
        granted, started, wake = plan(now, self._requests, self._polls)
        for waiter in granted:
            self._requests.remove(waiter)
            self._futures.pop(waiter).set_result(now)
        for waiter in started:
            self._polls.remove(waiter)
            for bucket in waiter.buckets:
                bucket.claims += 1
            if waiter.ticket is not None:
                waiter.ticket.claimed = waiter.buckets
            self._futures.pop(waiter).set_result(now)
        self._arm(now, wake)

    def _arm(self, now: float, at: float) -> None:
        """Have ``_dispatch`` run again at ``at`` (never, if infinite)."""
        if self._timer is not None:
            if self._timer_at == at:
                return
            self._timer.cancel()
            self._timer = None
        if math.isfinite(at):
            self._timer_at = at
            self._timer = self._clock.call_later(at - now, self._tick)

    def _tick(self) -> None:
        self._timer = None
        self._dispatch()


async def admit(ticket: Ticket) -> None:
    """Wait until the poll may start (at once when it uses no bucket)."""
    if ticket.buckets:
        await ticket.buckets[0].slots.admit(ticket)


def release(ticket: Ticket) -> None:
    """The poll is over; release the buckets it still claims."""
    if ticket.claimed:
        ticket.claimed[0].slots.release(ticket)


def failure_delay(failures: int, interval: float, cap: float, rng: random.Random) -> float:
    """Exponential backoff with full jitter after ``failures`` consecutive failures."""
    ceiling = min(max(cap, interval), interval * 2.0 ** min(failures, 30))
    return max(MIN_RETRY, rng.uniform(0.0, ceiling))


@dataclass(frozen=True, slots=True)
class Outcome:
    """What a poll came to: ok, or failed with an optional Retry-After."""

    ok: bool
    retry_after: float | None = None


class Poller(Protocol):
    """Polls the endpoints of one account and records the results."""

    name: str
    provider: str
    interval: float
    max_backoff: float

    @property
    def down_after(self) -> int:
        """Failed polls in a row before the account's circuit opens."""
        ...

    @property
    def buckets(self) -> Sequence[TokenBucket]:
        """The buckets the account's requests go through, credential bucket first."""
        ...

    def interval_for(self, endpoint: str) -> float:
        """How long after a poll of ``endpoint`` the next one is due."""
        ...

    async def poll(self, endpoint: str) -> Outcome:
        """Poll one endpoint."""
        ...


@dataclass(slots=True)
class Circuit:
    """One account's failed polls in a row, across its endpoints; open at ``threshold``."""

    threshold: int
    failures: int = 0
    retry_at: float = -math.inf  # while open, no endpoint polls before this
    probing: bool = False  # while open, one endpoint at a time tries
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    waiting: deque[str] = field(default_factory=deque)  # endpoints in line to probe, in turn

    @property
    def open(self) -> bool:
        """True while the account's endpoints wait for a probe to succeed."""
        return self.failures >= self.threshold

    def settle(self, *, probed: bool) -> None:
        """A poll is over (``probed``: it was the probe); wake the endpoints waiting."""
        if probed:
            self.probing = False
        self.notify()

    def notify(self) -> None:
        """Wake the endpoints waiting on the circuit to look again (if any: most polls end
        with none waiting, and need not leave a new Event behind)."""
        if self.waiting:
            self.changed.set()
            self.changed = asyncio.Event()


@dataclass(eq=False, slots=True)
class _Endpoint:
    """One endpoint's place in the schedule: when it is due, its deadline, its failures.

    Between polls an endpoint is this record and an entry of plain values in the scheduler's
    wake-up heap, not a suspended task or a timer handle of its own: with one per account
    endpoint, tens of thousands of sleeping coroutines, futures, handles and contexts would
    be most of what the garbage collector scans on every full pass.
    """

    poller: Poller
    name: str
    circuit: Circuit
    index: int  # in Scheduler._all
    due: float = 0.0
    deadline: float = 0.0
    failures: int = 0  # this endpoint's, besides the account's in the circuit
    polled: bool = False
    retired: bool = False
    armed: int = -1  # the sequence number of its live wake-up entry, -1 when none
    task: asyncio.Task[None] | None = None  # the poll under way


EARLY = 1e-3
"""A timer may fire a hair before its time: what is due within this is due now."""


class Scheduler:
    """Polls every (account, endpoint) on its schedule until stopped; see the module docstring."""

    def __init__(
        self,
        clock: Clock,
        *,
        rng: random.Random | None = None,
        on_delay: Callable[[str, float], None] | None = None,
        on_round: Callable[[], None] | None = None,
    ) -> None:
        """``on_round`` is called whenever every endpoint started so far has been polled."""
        self._clock = clock
        self._rng = rng or random.Random()
        self._on_delay = on_delay
        self._on_round = on_round
        self._unpolled: set[_Endpoint] = set()  # started, first poll not over yet
        self._stop = StopSignal()
        self._tasks: set[asyncio.Task[None]] = set()  # polls under way
        self._idle: set[asyncio.Task[Any]] = set()  # polls not started yet: stop() cancels them
        self._endpoints: dict[str, list[_Endpoint]] = {}  # by poller name
        self._all: list[_Endpoint | None] = []  # by index; None once retired
        self._free: list[int] = []  # indexes of retired endpoints, to reuse
        # (when, sequence, endpoint index): plain values the collector does not track. An
        # entry whose sequence is no longer its endpoint's ``armed`` is stale and skipped.
        self._wakeups: list[tuple[float, int, int]] = []
        self._seq = itertools.count()
        self._timer: Timer | None = None  # one clock timer, for the earliest wake-up
        self._timer_at = math.inf
        self._quiet: dict[str, float] = {}  # poller -> the longest wait between its polls
        self._scheduled = 0  # endpoints started so far: the start-up spread grows with them
        self.progress = clock.monotonic()
        """When a poll last began or ended (the watchdog's heartbeat)."""

    def start(self, poller: Poller, endpoints: Iterable[str]) -> None:
        """Begin polling the poller's endpoints (one call per poller: they share a circuit).

        The first polls of one account are spread evenly over the start-up spread from a
        random offset, so its endpoints take turns rather than queue behind each other.
        """
        names = list(endpoints)
        circuit = Circuit(poller.down_after)
        self._scheduled += len(names)
        spread = min(poller.interval, max(STARTUP_SPREAD, self._scheduled / STARTUP_RATE))
        offset = self._rng.uniform(0.0, spread)
        mine = self._endpoints.setdefault(poller.name, [])
        for number, endpoint in enumerate(names):
            first = offset - spread * number / len(names)
            if first < 0:
                first += spread
            index = self._free.pop() if self._free else len(self._all)
            ep = _Endpoint(poller, endpoint, circuit, index)
            if index == len(self._all):
                self._all.append(ep)
            else:
                self._all[index] = ep
            mine.append(ep)
            self._unpolled.add(ep)
            self._arm(ep, first)
        self._quiet[poller.name] = max(poller.interval, poller.max_backoff)

    def polling(self, name: str) -> bool:
        """True while the poller called ``name`` has endpoints on the schedule."""
        return bool(self._endpoints.get(name))

    async def stop_poller(self, name: str) -> None:
        """Stop polling the poller called ``name`` (its committed state is kept)."""
        endpoints = self._endpoints.pop(name, [])
        self._quiet.pop(name, None)
        tasks = []
        for ep in endpoints:
            self._unpolled.discard(ep)
            ep.retired, ep.armed = True, -1
            self._all[ep.index] = None
            self._free.append(ep.index)
            if ep.task is not None and not ep.task.done():
                ep.task.cancel()
                tasks.append(ep.task)
        await asyncio.gather(*tasks, return_exceptions=True)

    def stalled(self) -> bool:
        """True when no poll has begun or ended for longer than any endpoint may wait."""
        if not self._quiet:  # nothing to poll (yet): nothing can be stuck
            return False
        quiet = 2 * max(self._quiet.values()) + STALL_SLACK
        return self._clock.monotonic() - self.progress > quiet

    async def stop(self, grace: float = 10.0) -> None:
        """Start no new polls, let running ones finish within ``grace``, cancel the rest."""
        self._stop.set()
        if self._timer is not None:
            self._timer.cancel()
            self._timer, self._timer_at = None, math.inf
        self._wakeups.clear()
        for task in self._idle:  # waiting to start a poll: nothing to finish
            task.cancel()
        if self._tasks:
            _, pending = await asyncio.wait(self._tasks, timeout=grace)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)

    def _arm(self, ep: _Endpoint, delay: float) -> None:
        """Have the endpoint's next poll begin in ``delay`` seconds."""
        if ep.retired or self._stop.is_set():
            return
        if delay <= 0:
            self._launch(ep)
            return
        now = self._clock.monotonic()
        at = now + delay
        ep.armed = next(self._seq)
        heapq.heappush(self._wakeups, (at, ep.armed, ep.index))
        if at < self._timer_at:
            self._set_timer(now, at)

    def _set_timer(self, now: float, at: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer_at = at
        self._timer = self._clock.call_later(at - now, self._wake)

    def _wake(self) -> None:
        """Begin every poll that is due, then set the timer for the next one."""
        self._timer, self._timer_at = None, math.inf
        now = self._clock.monotonic()
        wakeups = self._wakeups
        while wakeups and wakeups[0][0] <= now + EARLY:
            _, seq, index = heapq.heappop(wakeups)
            ep = self._all[index]
            if ep is not None and ep.armed == seq:
                ep.armed = -1
                self._launch(ep)
        if wakeups:
            self._set_timer(now, wakeups[0][0])

    def _launch(self, ep: _Endpoint) -> None:
        if ep.retired or self._stop.is_set():
            return
        task = ep.task = asyncio.create_task(
            self._step(ep), name=f"poll:{ep.poller.name}:{ep.name}"
        )
        self._tasks.add(task)
        task.add_done_callback(functools.partial(self._done, ep))

    def _done(self, ep: _Endpoint, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if ep.task is task:
            ep.task = None  # a finished task keeps its coroutine and context: drop it

    async def _step(self, ep: _Endpoint) -> None:
        """One poll of the endpoint, then its next one armed: the whole per-poll logic."""
        poller, endpoint, circuit = ep.poller, ep.name, ep.circuit
        now = self._clock.monotonic()
        if not ep.polled:
            ep.polled = True
            ep.due, ep.deadline = now, now + poller.interval_for(endpoint)
        self.progress = now
        probe = circuit.open
        if probe:
            if not await self._through(circuit, endpoint):
                return
            probe = circuit.open  # False when another endpoint's probe closed it
            # Waiting for the account's probe is not lateness of the budget.
            ep.due = max(ep.due, self._clock.monotonic())
            ep.deadline = max(ep.deadline, ep.due + poller.interval_for(endpoint))
        ticket = Ticket(ep.due, ep.deadline, tuple(poller.buckets))
        try:
            if ticket.buckets:
                with self._idle_poll():
                    await admit(ticket)
            began = self._clock.monotonic()
            outcome = await self._poll(poller, endpoint, ticket)
        finally:
            release(ticket)
        if self._on_delay is not None:
            started = ticket.started if ticket.started is not None else began
            self._on_delay(poller.provider, started - ep.due)
        finished = self._clock.monotonic()
        interval = poller.interval_for(endpoint)
        if outcome.ok:
            ep.failures = circuit.failures = 0
            # Keep the cadence, but never poll again sooner than an interval after this
            # poll got its first slot, nor before it ended: late polls are not caught up.
            slot = ticket.started if ticket.started is not None else ep.due
            ep.due = max(ep.due + interval, slot + interval, finished)
            ep.deadline = ep.due + interval
        elif outcome.retry_after is not None:
            # Rate limited: the bucket is paused; this poll alone retries, in its place.
            ep.due = finished + max(outcome.retry_after, MIN_RETRY)
        else:
            ep.failures += 1
            circuit.failures += 1
            count = max(ep.failures, circuit.failures)
            ep.due = finished + failure_delay(count, poller.interval, poller.max_backoff, self._rng)
            ep.deadline = ep.due + interval
            if circuit.open:
                circuit.retry_at = ep.due
        self.progress = finished
        circuit.settle(probed=probe)
        if ep in self._unpolled:
            self._unpolled.discard(ep)
            if not self._unpolled and self._on_round is not None:
                self._on_round()
        self._arm(ep, ep.due - self._clock.monotonic())

    async def _poll(self, poller: Poller, endpoint: str, ticket: Ticket) -> Outcome:
        token = _POLL.set(ticket)
        try:
            return await poller.poll(endpoint)
        except Exception:  # a bug must cost one poll, never the loop that runs them
            # A watcher records its own crashes as failed polls (reason internal): one that
            # gets here could not even record that, so it is logged with its traceback.
            log.exception(
                "poll.crashed", provider=poller.provider, account=poller.name, endpoint=endpoint
            )
            return Outcome(ok=False)
        finally:
            _POLL.reset(token)

    async def _through(self, circuit: Circuit, endpoint: str) -> bool:
        """Wait while the account's circuit is open until this endpoint may probe or poll.

        Endpoints probe in turn, first come first served, so every endpoint of a down account
        is tried (and reported) rather than whichever wakes first each time.
        """
        circuit.waiting.append(endpoint)
        try:
            while circuit.open and not self._stop.is_set():
                now = self._clock.monotonic()
                first = circuit.waiting[0] == endpoint
                if first and not circuit.probing and now >= circuit.retry_at:
                    circuit.probing = True
                    return True
                wait = math.inf if circuit.probing or not first else circuit.retry_at - now
                await sleep_until_set(self._clock, wait, circuit.changed, self._stop)
            return not self._stop.is_set()
        finally:
            circuit.waiting.remove(endpoint)
            circuit.notify()  # the next in line may be first now

    @contextlib.contextmanager
    def _idle_poll(self) -> Iterator[None]:
        """While in this block the poll has not begun, and stop() cancels what it awaits."""
        if self._stop.is_set():
            raise asyncio.CancelledError
        task = asyncio.current_task()
        assert task is not None  # noqa: S101 - polls are tasks
        self._idle.add(task)
        try:
            yield
        finally:
            self._idle.discard(task)


class Signal(Protocol):
    """Something a sleep can be cut short by: an asyncio.Event or a StopSignal."""

    def is_set(self) -> bool: ...
    async def wait(self) -> Any: ...


class StopSignal:
    """A one-way flag like asyncio.Event, for many thousands of waiters.

    asyncio.Event keeps its waiters in a deque, so each cancelled wait (every wait that ends
    another way) costs a scan of all the others: quadratic when thousands of endpoints of
    down accounts wait for their probe at once. Here waiters live in a set, so adding and
    dropping one is O(1).
    """

    def __init__(self) -> None:
        self._set = False
        self._waiters: set[asyncio.Future[None]] = set()

    def is_set(self) -> bool:
        """True once set."""
        return self._set

    def set(self) -> None:
        """Set the flag and wake every waiter."""
        self._set = True
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_result(None)
        self._waiters.clear()

    async def wait(self) -> None:
        """Return once the flag is set."""
        if self._set:
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.add(waiter)
        try:
            await waiter
        finally:
            self._waiters.discard(waiter)


async def sleep_until_set(clock: Clock, seconds: float, *events: Signal) -> None:
    """Sleep ``seconds`` on the clock (forever if infinite), or less if an event is set."""
    if seconds <= 0 or any(event.is_set() for event in events):
        return
    waiters: set[asyncio.Future[Any]] = {asyncio.ensure_future(e.wait()) for e in events}
    if math.isfinite(seconds):
        waiters.add(asyncio.ensure_future(clock.sleep(seconds)))
    try:
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
