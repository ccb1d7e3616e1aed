"""When each poll runs: every (account, endpoint) on its schedule, until stopped.

The schedule only sets timers on the injected clock and asks a ``Poller`` to do the work; the
request arbiter (walletwatch.arbiter) says when a poll may start, the failure policy
(walletwatch.policy) how long a failed one waits. Between polls an endpoint is a timer, not a
sleeping task: the collector never scans thousands of them.

A hint (a provider's push, walletwatch.push) moves an endpoint's next poll to now, ahead of
routine polls in the arbiter but through the same buckets, and at most once every HINT_GAP:
hints during a poll fold into one more poll, the rest into the one already due. A hinted poll
takes the routine one's place (the next comes an interval after it) and spends one of the
endpoint's HINT_BURST hint credits, which come back at one per interval: a push brings polls
forward, and over any stretch longer than a few intervals it adds none.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import heapq
import itertools
import math
import random
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import structlog

from walletwatch.arbiter import Ticket, admit, release
from walletwatch.budget import TokenBucket
from walletwatch.health import AccountHealth
from walletwatch.policy import MIN_RETRY, Circuit, failure_delay
from walletwatch.signals import StopSignal, sleep_until_set
from walletwatch.types import Clock, Timer

log = structlog.get_logger("walletwatch.scheduler")

STARTUP_SPREAD = 10.0
"""Start-up jitter spreads the first polls over at least this many seconds (within interval)."""

STARTUP_RATE = 500.0
"""A large fleet's first polls are spread so that no more than about this many start a second:
35,000 first polls in ten seconds would wait for connections past their timeouts."""

STALL_SLACK = 300.0
"""Beyond the longest sleep a loop may take, how long without progress counts as stalled."""

HINT_GAP = 5.0
"""Seconds at least between the starts of a hinted poll and the poll before it, per endpoint.
Hinted polls of one endpoint are never closer than this, whatever the credit (HINT_BURST);
the key's buckets pace them as ever; a push that comes alone is polled at once."""

HINT_BURST = 3.0
"""Hinted polls an endpoint may make beyond its routine ones; one comes back per interval.
However long a flood of hints lasts, its endpoint is then polled HINT_BURST times more than
its routine polls would be, and no more often than that in the long run: each hinted poll
after the burst replaces the routine poll it brought forward."""


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
    def health(self) -> AccountHealth:
        """The account's polling health, which ``poll`` records each poll in."""
        ...

    @property
    def buckets(self) -> Sequence[TokenBucket]:
        """The buckets the account's requests go through, credential bucket first."""
        ...

    def interval_for(self, endpoint: str) -> float:
        """How long after a poll of ``endpoint`` the next one is due."""
        ...

    async def poll(self, endpoint: str, ticket: Ticket | None = None) -> Outcome:
        """Poll one endpoint; its requests work for ``ticket`` (deadline, claimed buckets)."""
        ...


@dataclass(eq=False, slots=True)
class _Endpoint:
    """One endpoint's place in the schedule: when it is due, and its deadline.

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
    polled: bool = False
    retired: bool = False
    armed: int = -1  # the sequence number of its live wake-up entry, -1 when none
    wake: float = 0.0  # when that entry is due
    task: asyncio.Task[None] | None = None  # the poll under way
    began: float = -math.inf  # when the last poll was let start
    running: bool = False  # let start, not over yet
    failing: bool = False  # the last poll failed: its retry keeps the policy's delay
    hinted: bool = False  # the next poll is a hinted one
    credit: float = HINT_BURST  # hinted polls it may still make (see HINT_BURST)
    credited: float = -math.inf  # when ``credit`` was last brought up to date
    owed: bool = False  # a hint found no credit: the next routine poll serves it, and pays
    again: bool = False  # a hint came during the poll under way: one more after it


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
        circuit = Circuit(poller.health)
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

    def hint(self, name: str, endpoints: Collection[str]) -> bool:
        """Poll the ``endpoints`` of the poller called ``name`` ahead of their schedule.

        False when the hint changes nothing: every one of them is already due (its first
        poll, a hinted one, a retry after a failure), or under way with one more to follow.
        """
        if self._stop.is_set():
            return False
        now = self._clock.monotonic()
        scheduled = False
        for ep in self._endpoints.get(name, ()):
            if ep.name in endpoints:
                scheduled = self._hint(ep, now) or scheduled
        return scheduled

    def _hint(self, ep: _Endpoint, now: float) -> bool:
        if not ep.polled or ep.retired:
            return False
        if ep.task is not None:  # waiting to start (it will see the news) or under way
            if not ep.running or ep.again or not self._spend(ep, now):
                return False
            ep.again = True
            return True
        if ep.hinted or ep.failing:
            return False
        at = max(now, ep.began + HINT_GAP)
        if ep.armed != -1 and ep.wake <= at + EARLY:
            return False
        if not self._spend(ep, now):
            return False  # out of credit: the routine poll already due serves the hint
        self._hinted(ep, at)
        return True

    def _spend(self, ep: _Endpoint, now: float) -> bool:
        """Take one hint credit of ``ep``'s for a hinted poll; False if it has none."""
        self._earn(ep, now)
        if ep.credit < 1.0:
            ep.owed = True
            return False
        ep.credit -= 1.0
        return True

    def _begin(self, ep: _Endpoint) -> float:
        """Mark the endpoint's poll as under way from now (a routine one pays what is owed)."""
        began = ep.began = self._clock.monotonic()
        if ep.owed and not ep.hinted:
            self._charge(ep, began)
        ep.running = True
        return began

    def _charge(self, ep: _Endpoint, now: float) -> None:
        """A routine poll that serves a hint refused for want of credit pays for it.

        Credit comes at one per interval, as routine polls do: while hints keep coming, the
        routine poll spends what came meanwhile, so an endpoint flooded with hints, its
        burst spent, polls no more often than its routine polls would; once they stop, the
        credit comes back to the whole burst.
        """
        ep.owed = False
        self._earn(ep, now)
        ep.credit = max(0.0, ep.credit - 1.0)

    @staticmethod
    def _earn(ep: _Endpoint, now: float) -> None:
        if ep.credited > -math.inf:
            earned = (now - ep.credited) / ep.poller.interval_for(ep.name)
            ep.credit = min(HINT_BURST, ep.credit + earned)
        ep.credited = now

    def _hinted(self, ep: _Endpoint, at: float) -> None:
        """Arm a hinted poll at ``at``, as urgent as a routine poll a whole interval late.

        Polls start earliest deadline first: it goes ahead of every routine poll of the key
        but those later than an interval, which an overloaded key is not made to starve.
        """
        ep.hinted = True
        ep.due, ep.deadline = at, at - ep.poller.interval_for(ep.name)
        self._arm(ep, at - self._clock.monotonic())

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
            ep.armed = -1  # a wake-up still in the heap (a routine poll's) is stale now
            self._launch(ep)
            return
        now = self._clock.monotonic()
        at = now + delay
        ep.armed = next(self._seq)
        ep.wake = at
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
            began = self._begin(ep)
            outcome = await self._poll(poller, endpoint, ticket)
        finally:
            ep.running = ep.hinted = False
            release(ticket)
        if self._on_delay is not None:
            started = ticket.started if ticket.started is not None else began
            self._on_delay(poller.provider, started - ep.due)
        finished = self._clock.monotonic()
        interval = poller.interval_for(endpoint)
        if outcome.ok:
            # Keep the cadence, but never poll again sooner than an interval after this
            # poll got its first slot, nor before it ended: late polls are not caught up.
            slot = ticket.started if ticket.started is not None else ep.due
            ep.due = max(ep.due + interval, slot + interval, finished)
            ep.deadline = ep.due + interval
        elif outcome.retry_after is not None:
            # Rate limited: the bucket is paused; this poll alone retries, in its place.
            ep.due = finished + max(outcome.retry_after, MIN_RETRY)
        else:
            count = poller.health.backoff(endpoint)
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
        if not self._again(ep, outcome.ok, finished):
            self._arm(ep, ep.due - self._clock.monotonic())

    def _again(self, ep: _Endpoint, ok: bool, finished: float) -> bool:
        """Arm the one more poll that hints during the last asked for; False if none is due.

        None follows a failed poll: its retry keeps the failure policy's delay.
        """
        ep.failing = not ok
        if not ep.again:
            return False
        ep.again = False
        at = max(finished, ep.began + HINT_GAP)
        if not ok or at >= ep.due:
            ep.credit = min(HINT_BURST, ep.credit + 1.0)  # spent on a poll that is not made
            return False
        self._hinted(ep, at)
        return True

    async def _poll(self, poller: Poller, endpoint: str, ticket: Ticket) -> Outcome:
        try:
            return await poller.poll(endpoint, ticket)
        except Exception:  # a bug must cost one poll, never the loop that runs them
            # A watcher records its own crashes as failed polls (reason internal): one that
            # gets here could not even record that, so it is logged with its traceback.
            log.exception(
                "poll.crashed", provider=poller.provider, account=poller.name, endpoint=endpoint
            )
            poller.health.counted(endpoint)
            return Outcome(ok=False)

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
