"""Benchmark: the status page at 10,000 accounts, rendered in memory and served through the app.

Run: .venv/bin/python bench/statuspage.py [--accounts 10000] [--in-flight 5] [--pages 10]

Builds the accounts of bench/scrape.py (50 settled transfers each, every fiftieth account
down, every fifth with a withdrawal in flight since long ago, so stuck) and gives each
``--in-flight`` more withdrawals in flight, recent ones: 10,000 accounts make 52,000 in flight.

Prints: the pure render (statuspage.render over the API-shaped dicts, in one go) p50/max for
each kind of query: the CPU a page's HTML costs, which the handler spends in slices; the
longest stall of the idle loop over 3 s (what the machine's other load costs it); then,
serving GET / through create_app and the real OperatorView on loopback to curl, the request
time p50/p99, the page's size and the longest event-loop stall (a 5 ms ticker) (target:
stall <= 50 ms). Not a test: nothing is asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import gc
import time
from decimal import Decimal
from typing import Any

from aiohttp import web
from scrape import build
from simproc import curl, percentile, ticker

from walletwatch.clock import SystemClock
from walletwatch.collecthold import HOLD
from walletwatch.model import Direction, State, Transfer
from walletwatch.operator import MAX_LIMIT, OperatorView, TransferQuery
from walletwatch.statusfilter import Filters, in_order
from walletwatch.statuspage import TRANSFERS_PER_PAGE, render
from walletwatch.tracker import TrackedTransfer
from walletwatch.watcher import AccountWatcher
from walletwatch.web import create_app

QUERIES = {
    "all, first page": {},
    "problems": {"state": "problems"},
    "account substring": {"account": "wallet-0"},
    "provider, page 10": {"provider": "sila", "page": "10"},
    "all, transfers page 100": {"tpage": "100"},
}


def add_in_flight(watchers: list[AccountWatcher], each: int) -> None:
    """Give every account ``each`` more withdrawals in flight, made a minute ago."""
    now = time.time()
    for i, w in enumerate(watchers):
        transfers = dict(w.state.transfers)
        for n in range(each):
            t = Transfer(
                id=f"{i}-moving-{n}",
                direction=Direction.WITHDRAWAL,
                currency="USDT",
                amount=Decimal(f"{n}.5"),
                status="processing",
                state=State.PENDING,
                txid=f"{i:032x}{n:032x}",
                address=f"T{i:033d}",
                created_at=now - 60,
            )
            transfers[t.key] = TrackedTransfer(t, first_seen=now - 60)
        w.state = dataclasses.replace(w.state, transfers=transfers)


async def pure(view: OperatorView, pages: int) -> dict[str, list[float]]:
    """Seconds of each render of each query, the views read once beforehand."""
    accounts = await view.accounts()
    stuck, _ = await view.transfers(TransferQuery("stuck", limit=MAX_LIMIT))
    flight, _ = await view.transfers(TransferQuery("in_flight", limit=MAX_LIMIT))
    events: list[dict[str, Any]] = []
    print(f"views: {len(accounts)} accounts, {len(stuck)} stuck, {len(flight)} in flight")
    seconds: dict[str, list[float]] = {}
    for name, query in QUERIES.items():
        filters = Filters.parse(query)
        # What status_page hands over: the rows up to the page asked for.
        transfers = in_order(stuck, flight)[: filters.tpage * TRANSFERS_PER_PAGE]
        for _ in range(pages):
            start = time.perf_counter()
            with HOLD.held():  # as the handler renders it
                render(accounts, transfers, events, filters, time.time())
            seconds.setdefault(name, []).append(time.perf_counter() - start)
    return seconds


async def served(
    watchers: list[AccountWatcher], view: OperatorView, pages: int
) -> dict[str, tuple[list[float], int, float]]:
    """GET / on loopback for each query: seconds, bytes and the longest stall."""
    app = create_app(None, lambda: watchers, view=view, clock=SystemClock())  # type: ignore[arg-type]
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    base = f"http://127.0.0.1:{runner.addresses[0][1]}/"
    results = {}
    try:
        for name, query in QUERIES.items():
            url = base + Filters.parse(query).link()
            stalls: list[float] = []
            seconds, size = [], 0
            for _ in range(pages):
                stop = asyncio.Event()
                tick = asyncio.create_task(ticker(stalls, stop))
                took, size = await curl(url)
                seconds.append(took)
                stop.set()
                await tick
            results[name] = (seconds, size, max(stalls))
    finally:
        await runner.cleanup()
    return results


async def run(accounts: int, in_flight: int, pages: int) -> None:
    """Build, render, serve, print."""
    watchers, _, close = build(accounts)
    add_in_flight(watchers, in_flight)
    gc.collect()
    gc.freeze()  # as the daemon does once its accounts are built (Daemon._freeze)
    store = watchers[0]._store
    view = OperatorView(lambda: watchers, lambda: store, SystemClock())
    try:
        print(f"pure render, {pages} times each (in one go; the handler renders in slices):")
        for name, seconds in (await pure(view, pages)).items():
            p50, top = percentile(seconds, 0.5) * 1000, max(seconds) * 1000
            print(f"  {name:26} p50 {p50:6.1f} ms  max {top:6.1f} ms")
        idle: list[float] = []
        stop = asyncio.Event()
        tick = asyncio.create_task(ticker(idle, stop))
        await asyncio.sleep(3)
        stop.set()
        await tick
        noise = max(idle) * 1000
        print(f"longest stall of the idle loop over 3 s (the machine's noise): {noise:.1f} ms")
        print(f"GET / through the app and OperatorView, {pages} times each:")
        for name, (seconds, size, stall) in (await served(watchers, view, pages)).items():
            p50, p99 = percentile(seconds, 0.5) * 1000, percentile(seconds, 0.99) * 1000
            print(
                f"  {name:26} p50 {p50:6.1f} ms  p99 {p99:6.1f} ms  {size / 1024:6.0f} KiB"
                f"  longest stall {stall * 1000:5.1f} ms"
            )
    finally:
        close()


def main() -> None:
    """Parse the arguments and run."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--accounts", type=int, default=10_000)
    parser.add_argument("--in-flight", type=int, default=5)
    parser.add_argument("--pages", type=int, default=10)
    args = parser.parse_args()
    asyncio.run(run(args.accounts, args.in_flight, args.pages))


if __name__ == "__main__":
    main()
