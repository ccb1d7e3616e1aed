"""Test doubles shared by the suite: a virtual clock and a policy."""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

import aiohttp

from walletwatch.asyncstore import AsyncStore
from walletwatch.budget import TokenBucket
from walletwatch.config import ProviderSettings
from walletwatch.context import Nonces, ProviderContext, Shared
from walletwatch.http import Http
from walletwatch.model import Observation
from walletwatch.store import Store
from walletwatch.telemetry import Telemetry
from walletwatch.types import Tracked

START = 1_700_000_000.0


class FakeClock:
    """Virtual time: ``sleep`` parks the caller until ``advance`` moves time past its wake-up."""

    def __init__(self, start: float = START) -> None:
        self.wall = start
        self.mono = 1000.0
        self.offset = 0.0  # the system's wall clock less ``wall`` (see jump)
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._seq = itertools.count()

    def time(self) -> float:
        """Virtual seconds since the epoch."""
        return self.wall

    def wall_offset(self) -> float:
        """How far the (virtual) system wall clock has been stepped away from ``time()``."""
        return self.offset

    def jump(self, seconds: float) -> None:
        """Step the system's wall clock by ``seconds``: as SystemClock, ``time()`` stays steady."""
        self.offset += seconds

    def monotonic(self) -> float:
        """Virtual monotonic seconds."""
        return self.mono

    async def sleep(self, seconds: float) -> None:
        """Wait until virtual time has moved ``seconds`` on."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (self.mono + max(seconds, 0.0), next(self._seq), future))
        await future

    def call_later(self, seconds: float, callback: Callable[[], object]) -> asyncio.Future[None]:
        """Run ``callback`` once virtual time has moved ``seconds`` on, unless cancelled."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (self.mono + max(seconds, 0.0), next(self._seq), future))
        future.add_done_callback(lambda done: None if done.cancelled() else callback())
        return future

    def _set(self, mono: float) -> None:
        self.wall += mono - self.mono
        self.mono = mono

    async def advance(self, seconds: float) -> None:
        """Move time on, waking sleepers in order and letting them run at their moment."""
        target = self.mono + seconds
        await settle()
        while self._sleepers and self._sleepers[0][0] <= target:
            wake, _, future = heapq.heappop(self._sleepers)
            self._set(max(wake, self.mono))
            if not future.done():
                future.set_result(None)
            await settle()
        self._set(target)
        await settle()

    @property
    def sleepers(self) -> int:
        """How many callers are parked."""
        return sum(1 for _, _, f in self._sleepers if not f.done())


async def settle(rounds: int = 50) -> None:
    """Let every ready task run until the loop is quiet (no real time passes)."""
    for _ in range(rounds):
        await asyncio.sleep(0)


@dataclass(frozen=True)
class FakePolicy:
    """A tracker policy with explicit values."""

    name: str = "acct"
    provider: str = "westwallet"
    currencies: frozenset[str] | None = None
    low_balance: Mapping[str, Decimal] = field(default_factory=dict)
    down_after: int = 3
    withdrawal_stuck: float = 3600.0
    deposit_stuck: float = 6 * 3600.0
    retention: float = 90 * 86400.0

    def stuck_after(self, direction: str) -> float:
        """Threshold by direction."""
        return self.withdrawal_stuck if direction == "withdrawal" else self.deposit_stuck


class ScriptedProvider:
    """A Provider whose polls answer, endpoint by endpoint, from a script."""

    def __init__(self, endpoints: tuple[str, ...]) -> None:
        self.endpoints = endpoints
        self.answers: dict[str, list[Observation | Exception]] = {e: [] for e in endpoints}
        self.states: list[Tracked] = []

    async def poll(self, endpoint: str, tracked: Tracked) -> Observation:
        """The next scripted answer: an Observation returned or an exception raised."""
        self.states.append(tracked)
        answer = self.answers[endpoint].pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer


def make_context(settings: ProviderSettings, http: Http, clock: FakeClock) -> ProviderContext:
    """A ProviderContext for one provider's unit tests, with nonces kept in memory."""
    store = AsyncStore(Store(Path(":memory:")))
    return ProviderContext(settings, http, clock, Nonces(clock, store, 0), Shared())


def make_http(
    session: aiohttp.ClientSession, provider: str, clock: FakeClock, rate: float = 100.0
) -> Http:
    """An Http for one provider's unit tests: one bucket at ``rate`` on the fake clock."""
    return Http(
        session,
        provider=provider,
        buckets=[TokenBucket(rate, clock)],
        telemetry=Telemetry(),
        clock=clock,
        timeout=aiohttp.ClientTimeout(total=30),
        max_backoff=300.0,
    )
