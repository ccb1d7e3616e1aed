"""Async waiting helpers: a stop flag for many waiters, and a sleep an event cuts short."""

from __future__ import annotations

import asyncio
import math
from typing import Any, Protocol

from walletwatch.types import Clock


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
