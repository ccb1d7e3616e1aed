"""The real clock: steady wall time for timestamps, the event loop's for scheduling."""

from __future__ import annotations

import asyncio
import contextvars
import threading
import time
from collections.abc import Callable

from walletwatch.types import Timer


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
