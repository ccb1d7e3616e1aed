"""Benchmark: the simulator's API answers while it pushes callbacks, to a fast or a hung receiver.

Run: .venv/bin/python bench/sim_push.py [--seconds 5] [--rate 100]

Serves the Simulator on loopback and, for ``--seconds`` per mode, adds ``--rate`` deposits a
second to one WestWallet account through the control API while another client reads that
account's balances, signed, back to back. Three modes: no push URL set; pushes to a receiver
that answers at once; pushes to a receiver that never answers (each push hangs until its
timeout, so the queue fills and overflows). Prints per mode the p50, p99 and max of the read
and of the control call, pushes delivered, failed and dropped as overflow, and the process's
RSS growth. The claim: the two push modes read like the first. Not a test: nothing is asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import resource
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
from aiohttp import web

from walletwatch.sim import Simulator, start
from walletwatch.sim.westwallet import sign

KEY, SECRET = "bench-key", "bench-secret"


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0..100) of values, nearest rank."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered)) - 1))]


def rss_kib() -> int:
    """The process's peak resident set size, KiB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


@contextlib.asynccontextmanager
async def receiver(*, hang: bool) -> AsyncIterator[str]:
    """A loopback receiver answering ``ok`` at once, or never; yield its push URL."""
    never = asyncio.Event()

    async def handle(request: web.Request) -> web.Response:
        await request.read()
        if hang:
            await never.wait()
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    runner = web.AppRunner(app, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}/push/bench/not-a-real-token"
    finally:
        never.set()
        await runner.cleanup()


async def reads(http: aiohttp.ClientSession, base: str, until: float) -> list[float]:
    """Signed balance reads back to back until ``until``; their durations."""
    took: list[float] = []
    while time.monotonic() < until:
        ts = str(int(time.time()))
        headers = {
            "X-API-KEY": KEY,
            "X-ACCESS-TIMESTAMP": ts,
            "X-ACCESS-SIGN": sign(SECRET, ts, b""),
        }
        started = time.monotonic()
        async with http.get(f"{base}/westwallet/wallet/balances", headers=headers) as resp:
            await resp.read()
            assert resp.status == 200
        took.append(time.monotonic() - started)
    return took


async def deposits(
    http: aiohttp.ClientSession, base: str, until: float, rate: float
) -> list[float]:
    """Deposits through the control API at ``rate`` a second until ``until``; their durations."""
    took: list[float] = []
    body = {"type": "receive", "currency": "BTC", "amount": "0.01"}
    next_at = time.monotonic()
    while next_at < until:
        await asyncio.sleep(max(0.0, next_at - time.monotonic()))
        started = time.monotonic()
        async with http.post(f"{base}/_sim/westwallet/{KEY}/transactions", json=body) as resp:
            await resp.read()
            assert resp.status == 201
        took.append(time.monotonic() - started)
        next_at += 1 / rate
    return took


async def mode(name: str, seconds: float, rate: float, push: str | None) -> None:
    """Run one mode and print its figures."""
    sim = Simulator(rate_limit=1e9)
    sim.westwallet.add_account(KEY, SECRET)
    if push is not None:
        sim.pushes.subscribe("westwallet", (KEY,), push)
    before = rss_kib()
    runner, port = await start(sim)
    base = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession() as http:
            until = time.monotonic() + seconds
            read, control = await asyncio.gather(
                reads(http, base, until), deposits(http, base, until, rate)
            )
        status: dict[str, Any] = sim.pushes.status()
        counts: dict[str, Any] = status["providers"].get("westwallet", {})
    finally:
        await runner.cleanup()
    print(
        f"{name:<14} read p50 {percentile(read, 50) * 1000:6.2f} ms  "
        f"p99 {percentile(read, 99) * 1000:6.2f} ms  max {max(read) * 1000:7.2f} ms  "
        f"({len(read)} reads) | deposit p50 {percentile(control, 50) * 1000:6.2f} ms  "
        f"p99 {percentile(control, 99) * 1000:6.2f} ms ({len(control)}) | pushes "
        f"delivered {counts.get('delivered', 0)} failed {counts.get('failed', 0)} "
        f"overflow {counts.get('overflow', 0)} pending {status['pending']} | "
        f"peak RSS +{rss_kib() - before} KiB"
    )


async def main() -> None:
    """Every mode in turn."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rate", type=float, default=100.0)
    args = parser.parse_args()
    await mode("no push", args.seconds, args.rate, None)
    async with receiver(hang=False) as url:
        await mode("fast receiver", args.seconds, args.rate, url)
    async with receiver(hang=True) as url:
        await mode("hung receiver", args.seconds, args.rate, url)


if __name__ == "__main__":
    asyncio.run(main())
