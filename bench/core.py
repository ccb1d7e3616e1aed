"""Benchmark of walletwatch's core paths: tracker step, SQLite commit per poll, /metrics scrape.

Run: .venv/bin/python bench/core.py [--accounts N] [--transfers M]
Prints one figure per line; not a test (no thresholds are asserted).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path

from prometheus_client import CollectorRegistry, generate_latest

from walletwatch.config import Config, parse_config
from walletwatch.metrics import WalletwatchCollector
from walletwatch.model import Balance, Direction, Observation, State, Transfer
from walletwatch.store import AsyncStore, Store
from walletwatch.telemetry import Telemetry
from walletwatch.tracker import AccountState, observe
from walletwatch.types import SystemClock
from walletwatch.watcher import AccountWatcher


class NoClient:
    """A provider client that is never polled here."""

    endpoints = ("balances", "deposits", "withdrawals")

    async def poll(self, endpoint: str, state: AccountState) -> Observation:
        """Never called."""
        del state
        raise AssertionError(endpoint)


def history(n: int, offset: int = 0) -> Observation:
    """n deposits, a tenth of them pending."""
    transfers = tuple(
        Transfer(
            id=str(offset + i),
            direction=Direction.DEPOSIT,
            currency="USDT",
            amount=Decimal("12.34"),
            status="pending" if i % 10 == 0 else "completed",
            state=State.PENDING if i % 10 == 0 else State.OK,
            created_at=1_700_000_000.0 + i,
        )
        for i in range(n)
    )
    return Observation("deposits", transfers=transfers, directions=frozenset({Direction.DEPOSIT}))


def timed(fn: Callable[[], object], repeat: int) -> float:
    """Seconds per call of fn()."""
    start = time.perf_counter()
    for _ in range(repeat):
        fn()
    return (time.perf_counter() - start) / repeat


def main() -> None:
    """Run every benchmark and print the figures."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--accounts", type=int, default=1000)
    parser.add_argument("--transfers", type=int, default=50)
    args = parser.parse_args()

    config = parse_config(
        {
            "accounts": [
                {
                    "name": f"acct-{i}",
                    "provider": "westwallet",
                    "credentials": {"api_key": f"k{i}", "secret_key": "s"},
                    "low_balance": {"USDT": "100"},
                }
                for i in range(args.accounts)
            ]
        },
        base_dir=Path(tempfile.gettempdir()),
        environ={},
    )
    policy = config.accounts[0]
    page = history(args.transfers)
    state, _ = observe(AccountState(), page, policy, 1_700_000_100.0)
    per_step = timed(lambda: observe(state, page, policy, 1_700_000_200.0), 2000)
    print(f"tracker: unchanged page of {args.transfers}: {per_step * 1e6:.1f} us per poll")

    with tempfile.TemporaryDirectory() as tmp:
        store = Store(Path(tmp) / "bench.db")
        polls = 300
        start = time.perf_counter()
        for i in range(polls):
            new, events = observe(
                state,
                Observation("balances", balances=(Balance("USDT", Decimal(i)),)),
                policy,
                1_700_000_300.0 + i,
            )
            store.commit("acct-0", "westwallet", state, new, events)
            state = new
        per_commit = (time.perf_counter() - start) / polls
        print(f"store: commit per poll (synchronous=FULL): {per_commit * 1e3:.2f} ms")

        asyncio.run(scrape(config, args.transfers, store))
        store.close()


async def scrape(config: Config, transfers: int, store: Store) -> None:
    """Time a full /metrics exposition over every account with tracked transfers."""
    astore = AsyncStore(store)
    telemetry, clock = Telemetry(), SystemClock()
    watchers = []
    for i, account in enumerate(config.accounts):
        state, _ = observe(AccountState(), history(transfers, i * transfers), account, 1.7e9)
        state, _ = observe(
            state,
            Observation("balances", balances=(Balance("USDT", Decimal(500)),)),
            account,
            1.7e9,
        )
        watchers.append(
            AccountWatcher(
                account,
                config.providers["westwallet"],
                NoClient(),
                state,
                store=astore,
                telemetry=telemetry,
                clock=clock,
            )
        )
    registry = CollectorRegistry()
    registry.register(WalletwatchCollector(lambda: watchers, telemetry, clock))
    times = []
    for _ in range(10):
        start = time.perf_counter()
        body = generate_latest(registry)
        times.append(time.perf_counter() - start)
    times.sort()
    rss = _rss_kib()
    print(
        f"metrics: scrape of {len(watchers)} accounts x {transfers} transfers: "
        f"p50 {times[len(times) // 2] * 1e3:.1f} ms, max {times[-1] * 1e3:.1f} ms, "
        f"{len(body) / 1024:.0f} KiB"
    )
    print(f"memory: RSS {rss / 1024:.1f} MiB, {rss / len(watchers):.1f} KiB per account")


def _rss_kib() -> float:
    with open(f"/proc/{os.getpid()}/status") as fh:  # noqa: PTH123 - Linux only, fine here
        for line in fh:
            if line.startswith("VmRSS:"):
                return float(line.split()[1])
    return float("nan")


if __name__ == "__main__":
    main()
