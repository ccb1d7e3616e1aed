"""What the push tests share: a loopback receiver, a clock pushes skip through, a served sim."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import aiohttp
from aiohttp import web

from walletwatch.sim import Simulator, start
from walletwatch.sim.push import Backoff, Pusher

T0 = 1_700_000_000.0
TOKEN = "t0k3n-that-must-never-show-anywhere-0123456789"
WAIT = 10.0  # seconds a test waits for something that happens on loopback at once


class SkipClock:
    """Simulator time that a push's waits move on at once, each wait recorded."""

    def __init__(self, now: float = T0) -> None:
        self.now = now
        self.waits: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        """Record the wait, move time past it, and let the loop run once."""
        self.waits.append(seconds)
        self.now += seconds
        await asyncio.sleep(0)


@dataclass(frozen=True, slots=True)
class Received:
    """One request the receiver got."""

    method: str
    path: str
    query: list[tuple[str, str]]
    content_type: str
    body: bytes

    def json(self) -> Any:
        """The body as JSON, fractional numbers as Decimal."""
        return json.loads(self.body, parse_float=Decimal)


Answer = Callable[[int], tuple[int, bytes]]  # request number (from 1) -> (status, body)


class Receiver:
    """A loopback aiohttp server that records every request and answers as ``answer`` says."""

    def __init__(self) -> None:
        self.received: list[Received] = []
        self.answer: Answer = lambda _n: (200, b"ok")
        self.hold = asyncio.Event()  # cleared: every request waits for it (a hung receiver)
        self.hold.set()
        self._arrived = asyncio.Event()
        self.url = ""

    async def _handle(self, request: web.Request) -> web.Response:
        self.received.append(
            Received(
                request.method,
                request.path,
                list(request.query.items()),
                request.content_type,
                await request.read(),
            )
        )
        self._arrived.set()
        await self.hold.wait()
        status, body = self.answer(len(self.received))
        return web.Response(status=status, body=body)

    def push_url(self, account: str, query: str = "") -> str:
        """A receiver URL shaped like walletwatch's: /push/<account>/<token>[?query]."""
        return f"{self.url}/push/{account}/{TOKEN}" + (f"?{query}" if query else "")

    async def wait_for(self, count: int) -> list[Received]:
        """Wait until ``count`` requests have come (at most WAIT seconds); return them all."""
        async with asyncio.timeout(WAIT):
            while len(self.received) < count:
                self._arrived.clear()
                await self._arrived.wait()
        return list(self.received)


@asynccontextmanager
async def receiving() -> AsyncIterator[Receiver]:
    """A receiver served on a free loopback port."""
    receiver = Receiver()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", receiver._handle)
    runner = web.AppRunner(app, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    receiver.url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    try:
        yield receiver
    finally:
        receiver.hold.set()
        await runner.cleanup()


def pusher(clock: SkipClock, **kwargs: Any) -> Pusher:
    """A Pusher on the skip clock, its waits recorded and skipped."""
    kwargs.setdefault("backoff", Backoff())
    return Pusher(clock, sleep=clock.sleep, **kwargs)


@asynccontextmanager
async def serving(sim: Simulator) -> AsyncIterator[str]:
    """Serve the simulator on a free loopback port; yield its base URL."""
    runner, port = await start(sim)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


async def control(
    http: aiohttp.ClientSession, method: str, url: str, body: object = None
) -> tuple[int, Any]:
    """Call a control endpoint with a JSON body; return status and JSON answer."""
    async with http.request(method, url, json=body) as resp:
        return resp.status, json.loads(await resp.text(), parse_float=Decimal)


async def settled(sim: Simulator) -> dict[str, Any]:
    """Wait until no push is pending (at most WAIT seconds); return the push status."""
    async with asyncio.timeout(WAIT):
        await sim.pushes.drained()
    return sim.pushes.status()
