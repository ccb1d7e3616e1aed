"""Benchmark: /metrics at 10,000 accounts, rendered in memory and served through the real app.

Run: .venv/bin/python bench/scrape.py [--accounts 10000] [--renders 20] [--scrapes 20]

Builds ``--accounts`` AccountWatchers in memory with the state a daemon holds after a day of
polling: a USDT balance (pending too on every third account), settled totals and 50 settled
transfers; on every fifth account a BTC balance, total and withdrawal in flight; health for
three endpoints, provider gauges, per-endpoint telemetry and one rate-limit bucket per
account. 10,000 of them make some 260,000 samples, 25 MiB (bench/scale.py's daemon served
230,000 samples, 20 MiB). Between renders and scrapes, polling is imitated: half of the
endpoints polled, 5% of the states changed.

Prints: samples and size; render time p50/p99 of both formats; as a follower (a replica
without the lease: daemon series only) the render time and size, and the first render after
taking the lease again (every account's kept lines are made afresh); then, serving /metrics
through create_app on loopback to curl (as a scraper on this host, served plain, and as one
on another host, served gzipped), the scrape time p50/p99, the longest event-loop stall (a
5 ms ticker) and GC pause during scrapes (targets: scrape p50 <= 250 ms, stall <= 50 ms).
Not a test: nothing is asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import functools
import random
import time
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware
from simproc import GcPauses, curl, percentile, ticker

from walletwatch.asyncstore import AsyncStore
from walletwatch.clock import SystemClock
from walletwatch.config import AccountConfig, ProviderSettings
from walletwatch.events import EVENT_NAMES
from walletwatch.health import EndpointHealth
from walletwatch.metrics import WalletwatchCollector
from walletwatch.model import Balance, Direction, Gauge, Observation, State, Transfer
from walletwatch.store import Store
from walletwatch.telemetry import Telemetry
from walletwatch.tracker import AccountState, Total, TrackedBalance, TrackedTransfer
from walletwatch.types import Tracked
from walletwatch.watcher import AccountWatcher
from walletwatch.web import create_app

PROVIDERS = ("bitexbit", "kredswallet", "potwallet", "sila", "westwallet")
ENDPOINTS = ("balances", "deposits", "withdrawals")
SETTINGS = ProviderSettings(
    rate_limit=2.0,
    host_rate_limit=None,
    connect_timeout=5.0,
    read_timeout=10.0,
    timeout=30.0,
    max_backoff=300.0,
    max_pages=10,
)
NOW = 1_700_000_000.0
HISTORY = 50  # settled deposits each account remembers (bench/scale.py's --transfers)
POLLED = 0.5  # of endpoints polled between two scrapes: a 60 s interval, scraped every 30 s
CHANGED = 0.05  # of accounts whose state changes between two scrapes (most polls change none)
METHODS = (("USDT", "TRC20"), ("BTC", "BTC"))  # bitexbit payment methods


class NoClient:
    """A provider client that is never polled here."""

    endpoints = ENDPOINTS

    async def poll(self, endpoint: str, tracked: Tracked) -> Observation:
        """Never called."""
        del tracked
        raise AssertionError(endpoint)


def account_config(i: int) -> AccountConfig:
    """The i-th account, round robin over the providers."""
    low_balance = {"USDT": Decimal(1000)} | ({"BTC": Decimal("0.5")} if i % 5 == 0 else {})
    return AccountConfig(
        name=f"{PROVIDERS[i % len(PROVIDERS)]}-{i:05d}",
        provider=PROVIDERS[i % len(PROVIDERS)],
        base_url="https://api.example.test",
        credentials={},
        interval=60.0,
        currencies=None,
        low_balance=low_balance,
        withdrawal_stuck_after=3600.0,
        deposit_stuck_after=6 * 3600.0,
        down_after=3,
        options={},
    )


def account_state(i: int) -> AccountState:
    """A day of settled USDT deposits and withdrawals; on every fifth account BTC too, with a
    withdrawal in flight."""
    transfers: dict[tuple[Direction, str], TrackedTransfer] = {}
    for n in range(HISTORY):
        t = Transfer(
            id=f"{i}-{n}",
            direction=Direction.DEPOSIT if n % 5 else Direction.WITHDRAWAL,
            currency="USDT",
            amount=Decimal(f"{i % 97}.{n:02d}"),
            status="completed",
            state=State.OK,
            txid=f"{i:032x}{n:032x}",
            created_at=NOW - 86400 + n * 600,
        )
        transfers[t.key] = TrackedTransfer(t, first_seen=NOW - 86400 + n * 600)
    usdt = Balance("USDT", Decimal(f"{i * 7 % 100000}.{i % 100:02d}"))
    usdt = Balance("USDT", usdt.available, Decimal("12.5") if i % 3 == 0 else None)
    balances = [usdt]
    totals = {
        ("USDT", Direction.DEPOSIT, State.OK): Total(40, Decimal("12500.5")),
        ("USDT", Direction.WITHDRAWAL, State.OK): Total(10, Decimal(f"{i % 1000}.25")),
    }
    if i % 5 == 0:
        t = Transfer(
            id=f"{i}-out",
            direction=Direction.WITHDRAWAL,
            currency="BTC",
            amount=Decimal("0.25"),
            status="pending",
            state=State.PENDING,
            created_at=NOW - 7200 + i % 3600,
        )
        transfers[t.key] = TrackedTransfer(t, first_seen=NOW - 60)
        balances.append(Balance("BTC", Decimal(f"{i % 13}.{i:08d}")))
        totals[("BTC", Direction.WITHDRAWAL, State.OK)] = Total(2, Decimal("0.5"))
    return AccountState(
        transfers=transfers,
        balances={b.currency: TrackedBalance(b) for b in balances},
        baselined=frozenset(Direction),
        totals=totals,
    )


def gauges(provider: str, i: int) -> list[Gauge]:
    """The provider-specific readings an account of ``provider`` keeps."""
    if provider == "bitexbit":
        return [
            Gauge(
                "payment_method_enabled",
                (("ticker", ticker), ("network", network), ("direction", direction)),
                Decimal((i + n) % 2),
            )
            for n, (ticker, network) in enumerate(METHODS)
            for direction in ("deposit", "withdrawal")
        ]
    if provider == "kredswallet":
        return [Gauge("api_enabled", (), Decimal(1))]
    if provider == "sila":
        return [Gauge("wallet_whitelisted", (), Decimal(1))]
    if provider == "potwallet":
        return [Gauge("price", (("currency", "POT"), ("quote", "USD")), Decimal("0.0123"))]
    return []


def build(accounts: int) -> tuple[list[AccountWatcher], Telemetry, Callable[[], None]]:
    """``accounts`` watchers with their state and telemetry, and a function closing the store."""
    store = AsyncStore(Store(Path(":memory:")))
    telemetry, clock = Telemetry(), SystemClock()
    watchers = []
    for i in range(accounts):
        config = account_config(i)
        watcher = AccountWatcher(
            config,
            SETTINGS,
            NoClient(),
            account_state(i),
            store=store,
            telemetry=telemetry,
            clock=clock,
        )
        failing = i % 50 == 0
        for endpoint in ENDPOINTS:
            watcher.health[endpoint] = EndpointHealth(
                ok=not (failing and endpoint == "withdrawals"), last_success=NOW - i % 60
            )
            telemetry.polls[(config.provider, config.name, endpoint)] += 1440
            if failing:
                telemetry.poll_errors[(config.provider, config.name, endpoint, "timeout")] += 3
        for gauge in gauges(config.provider, i):
            watcher.gauges[(gauge.name, gauge.labels)] = gauge
        stats = telemetry.bucket(f"{config.provider}:{i:012x}")
        stats.rate = stats.max_rate = 1.9
        stats.requests = 4320
        stats.wait_seconds = 1234.5 + i / 7
        watchers.append(watcher)
    for n, provider in enumerate(PROVIDERS):
        for endpoint in ENDPOINTS:
            for k in range(200):
                code = ("200", "429", "500", "error")[k % 4] if k % 10 == 0 else "200"
                telemetry.request(provider, endpoint, code, 0.01 * (k % 50 + n))
        for k in range(100):
            telemetry.delay(provider, 0.05 * k)
    for k, name in enumerate(EVENT_NAMES):
        telemetry.events[name] = k * 3
    telemetry.outbox_pending["stdout"] = 0
    return watchers, telemetry, store.close


def churn(watchers: list[AccountWatcher], telemetry: Telemetry, rng: random.Random) -> None:
    """What polling changes between two scrapes: half the endpoints polled, 5% of states.

    Changed as AccountWatcher.poll changes them, without a provider or a store: the poll
    counted, the endpoint's health updated in place, a new state object on a commit. Each
    poll took a slot of the account's rate-limit bucket, after a wait. (The scheduler spreads
    an account's endpoints over its interval, so with three endpoints polled every 60 s and
    a scrape every 30 s, every account would see a poll between two scrapes: this is milder.)
    """
    now = time.time()
    for i, watcher in enumerate(watchers):
        stats = telemetry.bucket(f"{watcher.provider}:{i:012x}")
        for endpoint in ENDPOINTS:
            if rng.random() < POLLED:
                telemetry.polls[(watcher.provider, watcher.name, endpoint)] += 1
                health = watcher.health[endpoint]
                health.ok, health.last_success, health.reason, health.error = True, now, None, None
                stats.requests += 1
                stats.wait_seconds += rng.random() / 8
        if rng.random() < CHANGED:
            usdt = Balance("USDT", Decimal(rng.randrange(10**7)) / 100)
            balances = {**watcher.state.balances, "USDT": TrackedBalance(usdt)}
            watcher.state = dataclasses.replace(watcher.state, balances=balances)


def renders(
    collector: WalletwatchCollector, openmetrics: bool, times: int, between: Callable[[], None]
) -> tuple[list[float], int]:
    """Seconds of each of ``times`` whole renders (``between`` runs before each), body size."""
    seconds, size = [], 0
    for _ in range(times):
        between()
        start = time.perf_counter()
        size = len(collector.render(openmetrics))
        seconds.append(time.perf_counter() - start)
    return seconds, size


def as_if_from(remote: str) -> Middleware:
    """A middleware making every request look as if it came from ``remote``."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        return await handler(request.clone(remote=remote))

    return middleware


async def serve(
    collector: WalletwatchCollector,
    watchers: list[AccountWatcher],
    scrapes: int,
    between: Callable[[], None],
) -> dict[str, tuple[list[float], int, float, GcPauses]]:
    """Scrape /metrics on loopback: per kind of scraper, seconds, bytes, stalls, GC pauses."""
    results = {}
    # Over loopback the body is sent plain; to a scraper on another host, gzipped.
    for scraper, remote, options in (
        ("on this host", None, ()),
        ("on another host, gzip", "192.0.2.1", ("--compressed",)),
    ):
        app = create_app(collector, lambda: watchers)
        if remote is not None:
            app.middlewares.append(as_if_from(remote))
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        url = f"http://127.0.0.1:{runner.addresses[0][1]}/metrics"
        stalls: list[float] = []
        seconds, size = [], 0
        pauses = GcPauses()
        try:
            for _ in range(scrapes):
                between()
                stop = asyncio.Event()
                tick = asyncio.create_task(ticker(stalls, stop))
                with pauses:
                    took, size = await curl(url, *options)
                seconds.append(took)
                stop.set()
                await tick
        finally:
            await runner.cleanup()
        results[scraper] = (seconds, size, max(stalls), pauses)
    return results


def main() -> None:
    """Build the accounts, render, serve, print."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--accounts", type=int, default=10_000)
    parser.add_argument("--renders", type=int, default=20)
    parser.add_argument("--scrapes", type=int, default=20)
    args = parser.parse_args()

    watchers, telemetry, close = build(args.accounts)
    collector = WalletwatchCollector(lambda: watchers, telemetry, SystemClock())
    rng = random.Random(1)
    between = functools.partial(churn, watchers, telemetry, rng)
    body = collector.render()
    samples = sum(1 for line in body.splitlines() if not line.startswith(b"#"))
    print(
        f"{args.accounts} accounts: {samples} samples, {len(body) / 2**20:.1f} MiB; between "
        f"renders {POLLED:.0%} of endpoints are polled and {CHANGED:.0%} of states change"
    )
    for name, openmetrics in (("text 0.0.4", False), ("OpenMetrics", True)):
        seconds, size = renders(collector, openmetrics, args.renders, between)
        print(
            f"render ({name}): p50 {percentile(seconds, 0.5) * 1e3:.0f} ms, "
            f"p99 {percentile(seconds, 0.99) * 1e3:.0f} ms over {args.renders}"
        )
    collector.leading = False
    seconds, size = renders(collector, False, args.renders, between)
    collector.leading = True
    start = time.perf_counter()
    collector.render()
    again = time.perf_counter() - start
    print(
        f"render as a follower: p50 {percentile(seconds, 0.5) * 1e3:.2f} ms, {size} bytes; "
        f"the first render on leading again {again * 1e3:.0f} ms (in steps)"
    )
    served = asyncio.run(serve(collector, watchers, args.scrapes, between))
    for scraper, (seconds, size, stall, pauses) in served.items():
        pause, generation = pauses.longest()
        print(
            f"scrape by curl {scraper} ({size / 2**20:.1f} MiB): "
            f"p50 {percentile(seconds, 0.5) * 1e3:.0f} ms, "
            f"p99 {percentile(seconds, 0.99) * 1e3:.0f} ms over {args.scrapes}; "
            f"longest event-loop stall {stall * 1e3:.1f} ms, "
            f"longest GC pause {pause * 1e3:.1f} ms (generation {generation})"
        )
    close()


if __name__ == "__main__":
    main()
