"""The seams of walletwatch: the protocols its parts meet at, and the real clock."""

from __future__ import annotations

import asyncio
import contextvars
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from walletwatch.configmodel import AccountConfig
    from walletwatch.context import ProviderContext
    from walletwatch.events import Event
    from walletwatch.model import Direction, Observation, Transfer


class Timer(Protocol):
    """A callback the clock will run later, unless cancelled first."""

    def cancel(self) -> object: ...


class Clock(Protocol):
    """Wall time for timestamps, monotonic time for scheduling, sleeping and timers."""

    def time(self) -> float: ...
    def wall_offset(self) -> float: ...
    def monotonic(self) -> float: ...
    async def sleep(self, seconds: float) -> None: ...
    def call_later(self, seconds: float, callback: Callable[[], object]) -> Timer: ...


class SystemClock:
    """The real clock, its wall time steady: set from the system's at start, then monotonic.

    A step of the system's wall clock (``date -s``, a VM or laptop resumed, a first NTP sync
    after a wrong RTC) would otherwise age every in-flight transfer by the step at once: +2
    days fired a critical withdrawal.stuck for a withdrawal a minute old, and +100 days
    pruned settled history. The monotonic clock is slewed by NTP (so it keeps the wall
    clock's pace) but never stepped. A step shows in ``wall_offset``, which the daemon
    reports; a restart adopts the new wall time.
    """

    def __init__(
        self,
        wall: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._wall = wall
        self._monotonic = monotonic
        self._origin = wall() - monotonic()

    def time(self) -> float:
        """Seconds since the epoch, by the system's wall clock at start and monotonic since."""
        return self._origin + self._monotonic()

    def wall_offset(self) -> float:
        """How far the system's wall clock is now ahead of ``time()`` (behind if negative)."""
        return self._wall() - self.time()

    def monotonic(self) -> float:
        """The event loop's monotonic time."""
        return asyncio.get_running_loop().time()

    async def sleep(self, seconds: float) -> None:
        """Sleep on the event loop."""
        await asyncio.sleep(seconds)

    def call_later(self, seconds: float, callback: Callable[[], object]) -> Timer:
        """Run ``callback`` on the event loop in ``seconds`` (no task: a timer handle).

        Timer callbacks run in one empty context per thread instead of a copy of the caller's
        each: thousands of pending timers need not each hold one.
        """
        loop = asyncio.get_running_loop()
        return loop.call_later(max(seconds, 0.0), callback, context=_timer_context())


_THREAD = threading.local()


def _timer_context() -> contextvars.Context:
    """The context timer callbacks of this thread's event loop run in."""
    context: contextvars.Context | None = getattr(_THREAD, "timers", None)
    if context is None:
        context = _THREAD.timers = contextvars.Context()
    return context


class InFlight(Protocol):
    """A tracked transfer that has not settled, as a provider sees it."""

    @property
    def transfer(self) -> Transfer:
        """The transfer as last observed."""
        ...

    @property
    def started_at(self) -> float:
        """When it began: the provider's created_at, else when it was first seen."""
        ...


class Tracked(Protocol):
    """What a provider may know of an account's tracked transfers (tracker.AccountState).

    ``known`` holds for each direction's newest transfers whatever their age (the tracker
    keeps its KEEP_NEWEST newest), so paging a history back, newest first, may stop at the
    first known one (providers/paging.py).
    """

    def known(self, direction: Direction, transfer_id: str) -> bool:
        """True if the transfer has been seen before."""
        ...

    def in_flight(self) -> Iterable[InFlight]:
        """The transfers that have not settled."""
        ...


class Provider(Protocol):
    """A client for one account at one provider; read-only by construction."""

    @property
    def endpoints(self) -> tuple[str, ...]:
        """The endpoint names this client polls, e.g. ("balances", "deposits")."""
        ...

    async def poll(self, endpoint: str, tracked: Tracked) -> Observation:
        """Poll one endpoint; raise a ProviderError when no usable answer came back."""
        ...


class ProviderFactory(Protocol):
    """Builds a provider client for an account (one registry entry)."""

    def __call__(self, account: AccountConfig, context: ProviderContext) -> Provider: ...


class Sink(Protocol):
    """Somewhere alert events go; ``deliver`` raises to have the batch retried."""

    name: str
    batch_size: int  # events one deliver() gets; acknowledged when it returns

    async def deliver(self, events: Sequence[Event]) -> None: ...
