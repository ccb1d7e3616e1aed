"""When each poll runs: token buckets per credential and host, backoff, and the poll loops.

The arithmetic (``TokenBucket.reserve``, ``failure_delay``) is pure; the loops only sleep on
the injected clock and ask a ``Poller`` to do the work.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Protocol

import structlog

from walletwatch.types import Clock

log = structlog.get_logger("walletwatch.scheduler")

STARTUP_SPREAD = 10.0
"""Start-up jitter spreads the first polls over at most this many seconds."""

RATE_MARGIN = 0.05
"""Buckets pace this far below a published limit, so network jitter never trips it."""

MIN_RETRY = 1.0
"""Never retry a failed poll sooner than this."""


class TokenBucket:
    """A rate limit without bursts: requests are spaced 1/rate apart, in arrival order.

    Each caller reserves the next free slot (a virtual-scheduling GCRA), so concurrent
    callers queue fairly and a bucket shared by many accounts never exceeds its rate.
    """

    def __init__(self, rate: float, clock: Clock, *, name: str = "") -> None:
        self.name = name
        self.interval = 1.0 / rate
        self._clock = clock
        self._next = float("-inf")

    def reserve(self, now: float) -> float:
        """Take the next slot and return how long to wait for it."""
        slot = max(self._next, now)
        self._next = slot + self.interval
        return slot - now

    def pause(self, seconds: float) -> None:
        """No slot is handed out for the next ``seconds`` (a provider's Retry-After)."""
        self._next = max(self._next, self._clock.monotonic() + seconds)

    async def acquire(self) -> None:
        """Wait for a slot."""
        wait = self.reserve(self._clock.monotonic())
        if wait > 0:
            await self._clock.sleep(wait)


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
    """Polls one endpoint of one account and records the result."""

    name: str
    provider: str
    interval: float
    max_backoff: float

    async def poll(self, endpoint: str) -> Outcome: ...


class Scheduler:
    """Runs one loop per (account, endpoint) until stopped."""

    def __init__(
        self,
        clock: Clock,
        *,
        rng: random.Random | None = None,
        on_delay: Callable[[str, float], None] | None = None,
    ) -> None:
        self._clock = clock
        self._rng = rng or random.Random()
        self._on_delay = on_delay
        self._stop = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()

    def start(self, poller: Poller, endpoints: Iterable[str]) -> None:
        """Begin polling the poller's endpoints."""
        for endpoint in endpoints:
            task = asyncio.create_task(
                self._loop(poller, endpoint), name=f"poll:{poller.name}:{endpoint}"
            )
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def stop(self, grace: float = 10.0) -> None:
        """Start no new polls, let running ones finish within ``grace``, cancel the rest."""
        self._stop.set()
        if self._tasks:
            _, pending = await asyncio.wait(self._tasks, timeout=grace)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)

    async def _loop(self, poller: Poller, endpoint: str) -> None:
        interval = poller.interval
        await self._sleep(self._rng.uniform(0.0, min(interval, STARTUP_SPREAD)))
        due = self._clock.monotonic()
        failures = 0
        while not self._stop.is_set():
            now = self._clock.monotonic()
            if self._on_delay is not None:
                self._on_delay(poller.provider, now - due)
            try:
                outcome = await poller.poll(endpoint)
            except Exception:  # a bug must cost one poll, never the loop that runs them
                log.exception("poll.crashed", account=poller.name, endpoint=endpoint)
                outcome = Outcome(ok=False)
            if outcome.ok:
                failures, wait = 0, interval
            else:
                failures += 1
                wait = failure_delay(failures, interval, poller.max_backoff, self._rng)
                if outcome.retry_after is not None:
                    wait = max(outcome.retry_after, MIN_RETRY)
            finished = self._clock.monotonic()
            # Success keeps the cadence; a failure waits from when the failed poll ended.
            due = max(due + wait, finished) if outcome.ok else finished + wait
            await self._sleep(due - self._clock.monotonic())

    async def _sleep(self, seconds: float) -> None:
        """Sleep on the clock, waking early when the scheduler stops."""
        await sleep_until_set(self._clock, seconds, self._stop)


async def sleep_until_set(clock: Clock, seconds: float, event: asyncio.Event) -> None:
    """Sleep ``seconds`` on the clock, or less if ``event`` is set meanwhile."""
    if seconds <= 0 or event.is_set():
        return
    sleeper = asyncio.ensure_future(clock.sleep(seconds))
    waiter = asyncio.ensure_future(event.wait())
    try:
        await asyncio.wait({sleeper, waiter}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        sleeper.cancel()
        waiter.cancel()
