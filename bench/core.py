"""Benchmark of walletwatch's core paths: tracker step, memory, GC pauses, commit, scrape.

Run: .venv/bin/python bench/core.py [--accounts N] [--transfers M]

Every account gets its own history page of M settled deposits, as JSON text parsed the way a
provider client parses it (distinct ids, 64-hex txids, addresses and Decimal amounts; every
string a separate object, as json.loads makes them), folded in by the tracker. Prints one
figure per line: observe() on an unchanged page (a fresh parse of the same text, as each
poll brings), bytes per settled tracked transfer (traced allocations), RSS per account
(target <= 20 KB), the objects the cyclic GC tracks and its longest full (gen2) collection
with N accounts, the SQLite commit per poll and a /metrics scrape over every account.
Not a test: no thresholds are asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import hashlib
import json
import os
import tempfile
import time
import tracemalloc
from decimal import Decimal
from pathlib import Path
from typing import Any

from walletwatch.asyncstore import AsyncStore
from walletwatch.clock import SystemClock
from walletwatch.config import AccountConfig, Config, parse_config
from walletwatch.metrics import WalletwatchCollector
from walletwatch.model import Balance, Direction, Observation, State, Transfer
from walletwatch.store import Store
from walletwatch.telemetry import Telemetry
from walletwatch.tracker import AccountState, observe
from walletwatch.types import Tracked
from walletwatch.watcher import AccountWatcher

NOW = 1_700_000_000.0
DEPOSITS = frozenset({Direction.DEPOSIT})


class NoClient:
    """A provider client that is never polled here."""

    endpoints = ("balances", "deposits", "withdrawals")

    async def poll(self, endpoint: str, tracked: Tracked) -> Observation:
        """Never called."""
        del tracked
        raise AssertionError(endpoint)


def page_text(account: int, n: int) -> bytes:
    """A provider's JSON answer: n settled deposits of one account, all distinct."""
    items = []
    for i in range(n):
        seed = f"{account}:{i}".encode()
        items.append(
            {
                "id": account * 1_000_000 + i,
                "currency": "USDT",
                "amount": f"{(account * 7919 + i * 104729) % 100_000}.{i:06d}",
                "address": "T" + hashlib.sha256(b"addr" + seed).hexdigest()[:33],
                "txid": hashlib.sha256(seed).hexdigest(),
                "status": "completed",
                "created_at": NOW - 86400 + account + i * 60,
            }
        )
    return json.dumps({"result": items}).encode()


def parse(text: bytes) -> Observation:
    """A deposits page as a provider client turns it into an Observation."""
    body: dict[str, Any] = json.loads(text)
    transfers = tuple(
        Transfer(
            id=str(item["id"]),
            direction=Direction.DEPOSIT,
            currency=item["currency"],
            amount=Decimal(item["amount"]),
            status=item["status"],
            state=State.OK if item["status"] == "completed" else State.PENDING,
            address=item["address"],
            txid=item["txid"],
            created_at=float(item["created_at"]),
        )
        for item in body["result"]
    )
    return Observation("deposits", transfers=transfers, directions=DEPOSITS)


def kept(state: AccountState) -> AccountState:
    """The state an AccountWatcher keeps once the step is committed."""
    return state.saved()


def account_state(account: int, n: int, policy: AccountConfig) -> AccountState:
    """An account after its first poll (the baseline) and a balances poll."""
    state, _ = observe(AccountState(), parse(page_text(account, n)), policy, NOW)
    balances = Observation("balances", balances=(Balance("USDT", Decimal(500 + account)),))
    state, _ = observe(kept(state), balances, policy, NOW + 1)
    return kept(state)


def main() -> None:
    """Run every benchmark and print the figures."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--accounts", type=int, default=10_000)
    parser.add_argument("--transfers", type=int, default=50)
    args = parser.parse_args()
    n = args.transfers

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

    state = account_state(0, n, policy)
    # The same answer parsed afresh for every poll, as a client does: new objects each time.
    pages = [parse(page_text(0, n)) for _ in range(1000)]
    start = time.perf_counter()
    for page in pages:
        observe(state, page, policy, NOW + 60)
    per_step = (time.perf_counter() - start) / len(pages)
    same = observe(state, pages[0], policy, NOW + 60)[0] is state
    del pages
    print(
        f"tracker: observe() of an unchanged page of {n}: {per_step * 1e6:.1f} us per poll "
        f"(returns the same state: {same})"
    )

    gc.collect()
    rss_before = _rss_kib()
    states = [account_state(i, n, config.accounts[i]) for i in range(args.accounts)]
    gc.collect()
    rss = _rss_kib() - rss_before
    print(
        f"memory: {len(states)} accounts x {n} settled transfers: RSS +{rss / 1024:.1f} MiB, "
        f"{rss * 1024 / len(states) / 1000:.1f} KB per account (target <= 20 KB)"
    )
    print(f"memory: {bytes_per_transfer(n, policy):.0f} bytes per settled tracked transfer")
    pauses = gc_pauses()
    print(
        f"gc: {len(gc.get_objects())} tracked objects; full (gen2) collection "
        f"longest {max(pauses) * 1e3:.1f} ms of {len(pauses)}"
    )

    with tempfile.TemporaryDirectory() as tmp:
        store = Store(Path(tmp) / "bench.db")
        polls = 300
        current = states[0]
        start = time.perf_counter()
        for i in range(polls):
            new, events = observe(
                current,
                Observation("balances", balances=(Balance("USDT", Decimal(i)),)),
                policy,
                NOW + 100 + i,
            )
            store.commit("acct-0", "westwallet", current, new, events)
            current = kept(new)
        per_commit = (time.perf_counter() - start) / polls
        print(f"store: commit per poll (synchronous=FULL): {per_commit * 1e3:.2f} ms")

        asyncio.run(scrape(config, states, store))
        store.close()


def bytes_per_transfer(n: int, policy: AccountConfig, accounts: int = 500) -> float:
    """Traced bytes the states keep per settled transfer: n transfers an account, minus none."""
    retained = []
    for count in (0, n):
        gc.collect()
        tracemalloc.start()
        states = [account_state(i, count, policy) for i in range(accounts)]
        gc.collect()
        retained.append(tracemalloc.get_traced_memory()[0])
        tracemalloc.stop()
        del states
    return (retained[1] - retained[0]) / (accounts * n)


def gc_pauses(collections: int = 5) -> list[float]:
    """Durations of full collections, timed by gc.callbacks from start to stop."""
    pauses: list[float] = []
    started = [0.0]

    def callback(phase: str, info: dict[str, int]) -> None:
        if info["generation"] != 2:
            return
        if phase == "start":
            started[0] = time.perf_counter()
        else:
            pauses.append(time.perf_counter() - started[0])

    gc.callbacks.append(callback)
    try:
        for _ in range(collections):
            gc.collect()
    finally:
        gc.callbacks.remove(callback)
    return pauses


async def scrape(config: Config, states: list[AccountState], store: Store) -> None:
    """Time a full /metrics exposition over every account with tracked transfers."""
    astore = AsyncStore(store)
    telemetry, clock = Telemetry(), SystemClock()
    watchers = [
        AccountWatcher(
            account,
            config.providers["westwallet"],
            NoClient(),
            state,
            store=astore,
            telemetry=telemetry,
            clock=clock,
        )
        for account, state in zip(config.accounts, states, strict=True)
    ]
    collector = WalletwatchCollector(lambda: watchers, telemetry, clock)
    times = []
    for _ in range(10):
        start = time.perf_counter()
        body = collector.render()
        times.append(time.perf_counter() - start)
    times.sort()
    print(
        f"metrics: scrape of {len(watchers)} accounts: "
        f"p50 {times[len(times) // 2] * 1e3:.1f} ms, max {times[-1] * 1e3:.1f} ms, "
        f"{len(body) / 1024:.0f} KiB"
    )


def _rss_kib() -> float:
    with open(f"/proc/{os.getpid()}/status") as fh:  # noqa: PTH123 - Linux only, fine here
        for line in fh:
            if line.startswith("VmRSS:"):
                return float(line.split()[1])
    return float("nan")


if __name__ == "__main__":
    main()
