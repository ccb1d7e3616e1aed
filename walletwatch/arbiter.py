"""The request arbiter: which waiting poll starts and which waiting request gets its slots.

A poll may make several requests (pages, lookups), and providers that sign with nonces need
one credential's requests to reach them in the order the nonces were taken. So priority decides
which poll *starts*, while requests stay first come, first served per credential (``plan`` is
the whole rule):

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

``plan`` is arithmetic on values; ``Slots`` only sets timers on the injected clock.
"""

from __future__ import annotations

import asyncio
import itertools
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from walletwatch.budget import TokenBucket
from walletwatch.types import Clock, Timer


@dataclass(eq=False, slots=True)
class Ticket:
    """One poll as the budget sees it: when it was due, its deadline, what it holds."""

    due: float
    deadline: float
    buckets: tuple[TokenBucket, ...] = ()
    started: float | None = None  # when its first request got a slot
    claimed: tuple[TokenBucket, ...] = ()


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

    async def request(self, buckets: Sequence[TokenBucket], ticket: Ticket | None = None) -> None:
        """Wait for a slot in every bucket (the credential's first) for one request.

        ``ticket`` is the poll the request works for: the request takes its deadline, and the
        poll's claim on the buckets ends. None for a request outside a scheduled poll.
        """
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
        if any(slots_of(bucket) is not self for bucket in buckets):
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
        await slots_of(ticket.buckets[0]).admit(ticket)


def release(ticket: Ticket) -> None:
    """The poll is over; release the buckets it still claims."""
    if ticket.claimed:
        slots_of(ticket.claimed[0]).release(ticket)


def slots_of(bucket: TokenBucket) -> Slots:
    """The Slots that hand out the bucket's slots (one of its own unless it was given one)."""
    slots = bucket.slots
    if slots is None:
        slots = bucket.slots = Slots(bucket.clock)
    if not isinstance(slots, Slots):
        raise TypeError(f"{bucket!r} has slots that are no Slots: {slots!r}")
    return slots


async def acquire(buckets: Sequence[TokenBucket], ticket: Ticket | None = None) -> None:
    """Wait for one slot in every bucket for a request of the poll ``ticket`` (or none)."""
    if buckets:
        await slots_of(buckets[0]).request(buckets, ticket)
