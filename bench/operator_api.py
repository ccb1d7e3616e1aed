"""Benchmark: the operator API at 10,000 accounts with 50 transfers each.

Run: .venv/bin/python bench/operator_api.py [--accounts 10000] [--transfers 50] [--requests 5]

Builds ``--accounts`` AccountWatchers over a real state file holding ``--transfers`` settled
transfers per account (500,000 rows at the defaults), with one withdrawal in flight on every
account and five on every tenth (some stuck), then serves the API through create_app on
loopback and asks it with curl, in its own process like an operator's script, while a 5 ms
ticker on the daemon's loop records its longest stall (target: 50 ms at most).

Prints the longest stall of the idle loop (what the machine's other load costs it), then per
request: the time p50/p99, the body size, and the longest loop stall over all its
repetitions. Not a test: nothing is asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import tempfile
import time
from decimal import Decimal
from pathlib import Path

from aiohttp import web
from scrape import ENDPOINTS, SETTINGS, NoClient, account_config
from simproc import curl, percentile, ticker

from walletwatch.asyncstore import AsyncStore
from walletwatch.clock import SystemClock
from walletwatch.health import EndpointHealth
from walletwatch.model import Balance, Direction, State, Transfer
from walletwatch.operator import OperatorView
from walletwatch.rows import transfer_to_row
from walletwatch.store import Store
from walletwatch.telemetry import Telemetry
from walletwatch.tracker import AccountState, TrackedBalance, TrackedTransfer
from walletwatch.watcher import AccountWatcher
from walletwatch.web import create_app

REQUESTS = (
    "/api/v1/accounts",
    "/api/v1/transfers",
    "/api/v1/transfers?state=stuck",
    "/api/v1/transfers?state=all",
    "/api/v1/transfers?state=all&limit=100000",
    "/api/v1/transfers?state=final&account=westwallet-00004",
    "/api/v1/events",
)


def in_flight(i: int, now: float) -> dict[tuple[Direction, str], TrackedTransfer]:
    """One withdrawal in flight, five on every tenth account; every seventh one stuck."""
    transfers = {}
    for n in range(5 if i % 10 == 0 else 1):
        age = 7200 if (i + n) % 7 == 0 else 600
        t = Transfer(
            id=f"{i}-out-{n}",
            direction=Direction.WITHDRAWAL,
            currency="BTC",
            amount=Decimal("0.25"),
            status="pending",
            state=State.PENDING,
            txid=f"{i:032x}{n:032x}",
            created_at=now - age - i % 600,
        )
        transfers[t.key] = TrackedTransfer(t, first_seen=now - age)
    return transfers


def settled_rows(i: int, name: str, count: int, now: float) -> list[tuple[object, ...]]:
    """``count`` settled USDT transfers of one account, as the store writes them."""
    rows = []
    for n in range(count):
        t = Transfer(
            id=f"{i}-{n}",
            direction=Direction.DEPOSIT if n % 5 else Direction.WITHDRAWAL,
            currency="USDT",
            amount=Decimal(f"{i % 97}.{n:02d}"),
            status="completed",
            state=State.OK,
            txid=f"{i:032x}{n:032x}",
            created_at=now - 86400 * 30 + n * 3600 + i,
        )
        rows.append(transfer_to_row(name, TrackedTransfer(t, first_seen=t.created_at or now)))
    return rows


def build(path: Path, accounts: int, transfers: int) -> tuple[list[AccountWatcher], AsyncStore]:
    """The watchers, and their state file filled with the settled transfers."""
    store = Store(path)
    now = time.time()
    db = store.connection
    db.execute("BEGIN")
    watchers = []
    telemetry, clock = Telemetry(), SystemClock()
    async_store = AsyncStore(store)
    for i in range(accounts):
        config = account_config(i)
        rows = settled_rows(i, config.name, transfers, now)
        marks = ", ".join("?" * len(rows[0]))
        db.executemany(f"INSERT INTO transfers VALUES ({marks})", rows)  # noqa: S608 - fixed text
        state = AccountState(
            transfers=in_flight(i, now),
            balances={"USDT": TrackedBalance(Balance("USDT", Decimal(i)), low=i % 9 == 0)},
            baselined=frozenset(Direction),
        )
        watcher = AccountWatcher(
            config, SETTINGS, NoClient(), state, store=async_store, telemetry=telemetry, clock=clock
        )
        for endpoint in ENDPOINTS:
            watcher.health[endpoint] = EndpointHealth(ok=i % 50 != 0, last_success=now - 30)
        watchers.append(watcher)
    db.execute("COMMIT")
    return watchers, async_store


async def measure(url: str, repetitions: int) -> tuple[list[float], int, float]:
    """``repetitions`` requests by curl: their seconds, the body size, the longest stall."""
    stalls: list[float] = []
    stop = asyncio.Event()
    tick = asyncio.create_task(ticker(stalls, stop))
    seconds, size = [], 0
    try:
        for _ in range(repetitions):
            took, size = await curl(url)
            seconds.append(took)
    finally:
        stop.set()
        await tick
    return seconds, size, max(stalls)


async def main(accounts: int, transfers: int, repetitions: int) -> None:
    """Build, serve, ask, print."""
    with tempfile.TemporaryDirectory() as tmp:
        began = time.perf_counter()
        watchers, store = build(Path(tmp) / "state.db", accounts, transfers)
        print(
            f"{accounts} accounts, {accounts * transfers} settled transfers in the state file, "
            f"{sum(len(w.state.transfers) for w in watchers)} in flight "
            f"(built in {time.perf_counter() - began:.1f} s)"
        )
        view = OperatorView(lambda: watchers, lambda: store, SystemClock())
        app = create_app(None, lambda: watchers, view=view)  # type: ignore[arg-type]
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        try:
            idle: list[float] = []
            stop = asyncio.Event()
            tick = asyncio.create_task(ticker(idle, stop))
            await asyncio.sleep(3)
            stop.set()
            await tick
            print(
                "longest stall of the idle loop over 3 s (the machine's noise): "
                f"{max(idle) * 1000:.1f} ms"
            )
            print(f"{'request':<58} {'p50':>8} {'p99':>8} {'bytes':>11} {'stall':>8}")
            for path in REQUESTS:
                seconds, size, stall = await measure(f"http://127.0.0.1:{port}{path}", repetitions)
                print(
                    f"{path:<58} {percentile(seconds, 0.5) * 1000:6.0f}ms "
                    f"{percentile(seconds, 0.99) * 1000:6.0f}ms {size:>11,} "
                    f"{stall * 1000:6.1f}ms"
                )
        finally:
            await runner.cleanup()
            store.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--accounts", type=int, default=10_000)
    parser.add_argument("--transfers", type=int, default=50)
    parser.add_argument("--requests", type=int, default=5)
    parser.add_argument("--no-gc", action="store_true")
    args = parser.parse_args()
    if args.no_gc:
        gc.disable()
    asyncio.run(main(args.accounts, args.transfers, args.requests))
