"""Benchmark: the daemon at scale, 10,000 accounts against the simulator in its own process.

Run: .venv/bin/python bench/scale.py [--accounts 10000] [--interval 60] [--seconds 60]

Starts ``walletwatch simulate`` (simproc.py) with ``--accounts`` accounts spread over the
providers of simproc.KINDS, each on its own API key (the simulator's per-key limit is then
far above what one account asks, and the daemon's host limits are raised: the simulator is
not the bottleneck). The daemon runs in this process, its state seeded through the tracker
and the store with ``--transfers`` settled deposits per account before polling starts.

Prints: time from start to every account polled once; requests per second served; daemon
CPU seconds per 1,000 requests and the same for a bare aiohttp loop making the same signed
WestWallet requests in the same run, paced at the rate the daemon made them (the floor), and
their ratio (target <= 1.5), with the bare loop flat out for reference; CPU by thread and
the garbage collector's pauses; RSS per account (target <= 20 KB); /metrics scrape time
p50/p99 (target p50 <= 250 ms) and the longest event-loop stall during a scrape (target
<= 50 ms); SQLite commit cost per poll. Not a test: nothing is asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import gc
import json
import logging
import os
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp
from simproc import KINDS, GcPauses, SimProcess, curl, percentile, simulator, ticker

from walletwatch import logs
from walletwatch.app import Daemon
from walletwatch.clock import SystemClock
from walletwatch.config import AccountConfig, Config, parse_config
from walletwatch.events import Event
from walletwatch.model import Direction, Observation, State, Transfer
from walletwatch.providers import westwallet
from walletwatch.tracker import AccountState, observe

PROVIDERS = sorted(KINDS)  # sila needs key pairs per account; the other four share a shape
SCRAPES = 20
QUIET = 10.0  # seconds of polling without scrapes, for the event loop's own stalls
SIM_RATE_LIMIT = 1000.0  # per key, in the simulator: it answers, it does not throttle


def plan(accounts: int) -> list[tuple[str, str, str]]:
    """(name, provider, API key) of every account, round robin over PROVIDERS."""
    return [
        (f"{PROVIDERS[i % len(PROVIDERS)]}-{i:05d}", PROVIDERS[i % len(PROVIDERS)], f"key-{i:05d}")
        for i in range(accounts)
    ]


def make_config(sim: SimProcess, workdir: Path, accounts: int, interval: float) -> Config:
    """The daemon's config: every account, host limits out of the way."""
    data: dict[str, Any] = {
        "listen": "127.0.0.1:0",
        "state_path": "state.db",
        "providers": {p: {"host_rate_limit": None} for p in PROVIDERS},
        "accounts": [
            {
                "name": name,
                "provider": provider,
                "base_url": sim.base_url(provider),
                "credentials": KINDS[provider].credentials(key),
                "interval": f"{interval:g}s",
            }
            for name, provider, key in plan(accounts)
        ],
    }
    return parse_config(data, base_dir=workdir, environ={})


def history(n: int, now: float, account: int) -> Observation:
    """n settled deposits of the last hour (kept: younger than any retention), the account's own.

    Every transfer has its own id, txid and amount, and its strings are made at run time the
    way a JSON parser makes them (one object per value): what a daemon holds after real polls
    or a restart, not one page shared by every account.
    """
    transfers = tuple(
        Transfer(
            id=str(account * 1000 + i),
            direction=Direction.DEPOSIT,
            currency="".join(["US", "DT"]),
            amount=Decimal(f"{account % 97}.{i:02d}"),
            status="".join(["comp", "leted"]),
            state=State.OK,
            txid=f"{account:032x}{i:032x}",
            address=f"TXYZ{account:030d}",
            created_at=now - 3600 + i,
        )
        for i in range(n)
    )
    return Observation("deposits", transfers=transfers, directions=frozenset({Direction.DEPOSIT}))


def cpu_seconds() -> float:
    """User + system CPU of this process, every thread."""
    return time.process_time()


def thread_cpu() -> dict[str, float]:
    """CPU seconds of this process by thread name (threads of one name prefix summed)."""
    tick = os.sysconf("SC_CLK_TCK")
    names = {t.native_id: t.name for t in threading.enumerate()}
    result: dict[str, float] = {}
    for task in Path("/proc/self/task").iterdir():
        try:
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:  # the thread ended meanwhile
            continue
        name = names.get(int(task.name), "other").split("_")[0]
        result[name] = result.get(name, 0.0) + (int(fields[11]) + int(fields[12])) / tick
    return result


def rss_bytes() -> int:
    """Resident set size of this process."""
    with open("/proc/self/status") as fh:  # noqa: PTH123 - Linux only, fine here
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


@dataclass
class Result:
    """What one run measured."""

    accounts: int = 0
    transfers: int = 0
    seed_seconds: float = 0.0
    rss_base: int = 0
    rss_seeded: int = 0
    all_polled: float = 0.0
    seconds: float = 0.0
    requests: int = 0
    cpu: float = 0.0
    scrapes: list[float] = field(default_factory=list)
    scrape_bytes: int = 0
    stalls: list[float] = field(default_factory=list)
    quiet_stalls: list[float] = field(default_factory=list)  # polling, no scrape
    commits: list[float] = field(default_factory=list)
    floor_requests: int = 0
    floor_cpu: float = 0.0
    floor_seconds: float = 0.0
    flat_requests: int = 0  # the bare loop flat out, for reference
    flat_cpu: float = 0.0
    responses: dict[int, int] = field(default_factory=dict)
    threads: dict[str, float] = field(default_factory=dict)  # CPU by thread, measured window
    gc: dict[int, list[float]] = field(default_factory=dict)  # pauses by generation, polling
    scrape_gc: tuple[float, int] = (0.0, -1)  # the longest pause during scrapes, its generation


def timed_commits(daemon: Daemon, sink: list[float]) -> None:
    """Record the wall time of every Store.commit (on the store's worker thread)."""
    assert daemon._store is not None
    store = daemon._store.store
    commit: Callable[..., Any] = store.commit

    def timed(*args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return commit(*args, **kwargs)
        finally:
            sink.append(time.perf_counter() - start)

    store.commit = timed  # type: ignore[method-assign]


def http_requests(daemon: Daemon) -> int:
    """Responses (and errors) the daemon counted so far."""
    return sum(daemon.telemetry.http_requests.values())


async def seed(daemon: Daemon, transfers: int) -> None:
    """Give every account ``transfers`` settled deposits, through the tracker and the store."""
    now = time.time()

    def step(
        state: AccountState, page: Observation, config: AccountConfig
    ) -> tuple[AccountState, list[Event]]:
        return observe(state, page, config, now)

    for i, watcher in enumerate(daemon.watchers.values()):
        page = history(transfers, now, i)
        await watcher._apply(functools.partial(step, page=page, config=watcher.config))


async def floor(
    sim: SimProcess, accounts: int, seconds: float, rate: float | None, workers: int = 100
) -> tuple[int, float]:
    """A bare aiohttp loop making the daemon's WestWallet requests: (requests, CPU seconds).

    With ``rate``, the requests go out evenly paced at that many a second, as the daemon's
    do: the same requests in the same spread, so every one pays for its own trip through the
    event loop. Without it, ``workers`` requests are always in flight, flat out, and the
    loop shares each wake-up among many of them: a floor no poller at a steady rate has.
    """
    keys = [key for _, provider, key in plan(accounts) if provider == "westwallet"]
    base = sim.base_url("westwallet")
    body = json.dumps(
        {"type": "receive", "limit": westwallet.PAGE_SIZE, "offset": 0, "order": "desc"},
        separators=(",", ":"),
    )
    count = 0
    loop = asyncio.get_running_loop()
    start = loop.time()
    deadline = start + seconds

    async def worker(session: aiohttp.ClientSession, first: int) -> None:
        nonlocal count
        i = first
        while True:
            if rate is not None:
                await asyncio.sleep(max(0.0, start + i / rate - loop.time()))
            if loop.time() >= deadline:
                return
            key = keys[i % len(keys)]
            i += workers
            stamp = int(time.time())
            if i % 3 == 0:
                headers = westwallet.auth_headers(key, f"secret-{key}", stamp, "")
                request = session.get(base + "/wallet/balances", headers=headers)
            else:
                headers = westwallet.auth_headers(key, f"secret-{key}", stamp, body)
                request = session.post(
                    base + "/wallet/transactions", headers=headers, data=body.encode()
                )
            async with request as resp:
                await resp.json(content_type=None)
            count += 1

    connector = aiohttp.TCPConnector(limit=100, ttl_dns_cache=300)
    async with aiohttp.ClientSession(connector=connector, trust_env=False) as session:
        before = cpu_seconds()
        await asyncio.gather(*(worker(session, k) for k in range(workers)))
        return count, cpu_seconds() - before


async def every_polled(daemon: Daemon) -> None:
    """Return once every account has been polled (a property: no event to wait on)."""
    while not all(w.polled for w in daemon.watchers.values()):  # noqa: ASYNC110
        await asyncio.sleep(0.25)


async def add_accounts(sim: SimProcess, accounts: int) -> None:
    """Create every planned account in the simulator, 50 at a time."""
    gate = asyncio.Semaphore(50)

    async def one(provider: str, key: str) -> None:
        async with gate:
            await sim.add_account(provider, key)

    await asyncio.gather(*(one(p, k) for _, p, k in plan(accounts)))


async def run(args: argparse.Namespace) -> Result:
    """Run every phase and return what was measured."""
    result = Result(accounts=args.accounts, transfers=args.transfers)
    async with simulator(rate_limit=SIM_RATE_LIMIT) as sim:
        await add_accounts(sim, args.accounts)
        with tempfile.TemporaryDirectory(prefix="walletwatch-scale-") as tmp:
            config = make_config(sim, Path(tmp), args.accounts, args.interval)
            gc.collect()
            result.rss_base = rss_bytes()
            daemon = Daemon(config, clock=SystemClock())
            await daemon.start(serve=True)
            began = time.perf_counter()
            await seed(daemon, args.transfers)
            result.seed_seconds = time.perf_counter() - began
            gc.collect()
            result.rss_seeded = rss_bytes()
            timed_commits(daemon, result.commits)

            began = time.perf_counter()
            daemon.run_scheduler()
            await every_polled(daemon)
            result.all_polled = time.perf_counter() - began

            cpu0, requests0, wall0 = cpu_seconds(), http_requests(daemon), time.perf_counter()
            threads0 = thread_cpu()
            with GcPauses() as pauses:
                await asyncio.sleep(args.seconds)
            result.cpu = cpu_seconds() - cpu0
            result.threads = {k: v - threads0.get(k, 0.0) for k, v in thread_cpu().items()}
            result.gc = pauses.pauses
            result.requests = http_requests(daemon) - requests0
            result.seconds = time.perf_counter() - wall0

            stop = asyncio.Event()
            tick = asyncio.create_task(ticker(result.quiet_stalls, stop))
            await asyncio.sleep(QUIET)
            stop.set()
            await tick

            stop = asyncio.Event()
            tick = asyncio.create_task(ticker(result.stalls, stop))
            with GcPauses() as pauses:
                for _ in range(SCRAPES):
                    seconds, result.scrape_bytes = await curl(daemon.url + "/metrics")
                    result.scrapes.append(seconds)
            result.scrape_gc = pauses.longest()
            stop.set()
            await tick
            await daemon.close()
        result.floor_seconds = args.floor_seconds
        result.floor_requests, result.floor_cpu = await floor(
            sim, args.accounts, args.floor_seconds, rate=result.requests / result.seconds
        )
        result.flat_requests, result.flat_cpu = await floor(
            sim, args.accounts, args.floor_seconds, rate=None
        )
        for row in await sim.responses():
            result.responses[row["status"]] = result.responses.get(row["status"], 0) + row["count"]
    return result


def report(r: Result) -> None:
    """Print the figures."""
    n = r.accounts
    print(f"accounts: {n} over {', '.join(PROVIDERS)}, one API key each")
    print(f"seeded {r.transfers} settled transfers per account in {r.seed_seconds:.1f}s")
    print(f"time from start to every account polled once: {r.all_polled:.1f}s")
    rate = r.requests / r.seconds
    print(f"requests served: {r.requests} in {r.seconds:.1f}s = {rate:.0f}/s")
    daemon = r.cpu / max(r.requests, 1) * 1000
    floor = r.floor_cpu / r.floor_requests * 1000
    flat = r.flat_cpu / r.flat_requests * 1000
    print(f"daemon CPU per 1000 requests: {daemon:.3f}s ({r.cpu:.1f}s CPU)")
    print(
        f"floor (bare aiohttp, the same signed WestWallet requests paced at the daemon's "
        f"{rate:.0f}/s) CPU per 1000 requests: {floor:.3f}s ({r.floor_requests} requests)"
    )
    print(f"ratio daemon/floor: {daemon / floor:.2f} (target <= 1.5)")
    print(
        f"for reference, the bare loop flat out ({r.flat_requests / r.floor_seconds:.0f}/s, "
        f"100 in flight): {flat:.3f}s per 1000 requests; daemon/that {daemon / flat:.2f}"
    )
    busy = sorted(r.threads.items(), key=lambda item: -item[1])
    print("daemon CPU by thread: " + ", ".join(f"{k} {v:.1f}s" for k, v in busy if v >= 0.05))
    full = r.gc.get(2, [])
    print(
        f"garbage collector while polling: {sum(map(len, r.gc.values()))} collections, "
        f"{len(full)} full, longest full {max(full, default=0) * 1e3:.0f} ms"
    )
    print(
        f"RSS: {r.rss_seeded / 2**20:.0f} MiB with {r.transfers} transfers per account; "
        f"{r.rss_seeded / n / 1000:.1f} KB per account in all, "
        f"{(r.rss_seeded - r.rss_base) / n / 1000:.1f} KB per account over the process "
        f"before the daemon (target <= 20 KB)"
    )
    print(
        f"/metrics scrape ({r.scrape_bytes / 2**20:.1f} MiB): "
        f"p50 {percentile(r.scrapes, 0.5) * 1e3:.0f} ms, "
        f"p99 {percentile(r.scrapes, 0.99) * 1e3:.0f} ms over {len(r.scrapes)} "
        "(target p50 <= 250 ms)"
    )
    print(f"longest event-loop stall during scrapes: {max(r.stalls) * 1e3:.0f} ms (target <= 50)")
    print(
        f"longest garbage collector pause during scrapes: {r.scrape_gc[0] * 1e3:.0f} ms "
        f"(generation {r.scrape_gc[1]})"
    )
    print(f"longest event-loop stall while polling, no scrape: {max(r.quiet_stalls) * 1e3:.0f} ms")
    polls = r.commits
    print(
        f"SQLite commit per poll: p50 {percentile(polls, 0.5) * 1e3:.2f} ms, "
        f"p99 {percentile(polls, 0.99) * 1e3:.2f} ms over {len(polls)} commits"
    )
    print(f"simulator responses by status: {dict(sorted(r.responses.items()))}")


def main() -> None:
    """Parse the arguments and run."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--accounts", type=int, default=10_000)
    parser.add_argument("--transfers", type=int, default=50)
    parser.add_argument("--interval", type=float, default=60.0)
    # At least one interval: a shorter window may fall between two rounds of polls.
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--floor-seconds", type=float, default=15.0)
    args = parser.parse_args()
    logs.configure("console", sys.stderr, level=logging.WARNING)
    with contextlib.suppress(KeyboardInterrupt):
        report(asyncio.run(run(args)))


if __name__ == "__main__":
    main()
