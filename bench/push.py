"""Benchmark: push hints. How soon a pushed deposit is seen, and what a flood of hints costs.

Run: .venv/bin/python bench/push.py [--deposits 54] [--seconds 60] [--rate 1000]

Starts ``walletwatch simulate`` in its own process (per-key limits of 2 requests/s enforced
strictly, see simproc.py) and the daemon on loopback, in two parts:

1. Latency: 18 accounts (6 each of westwallet, potwallet and bitexbit, a key each) polled
   every 60 s. ``--deposits`` deposits are made round-robin, one every 0.4 s, each account's
   callbacks sent by the simulator to the daemon's push listener; the time from a deposit to
   its ``deposit.detected`` event, p50/p99/max (target p99 < 2 s). Then the same accounts with
   ``push: false`` and no callbacks: what the 60 s interval alone gives.
2. Flood: one westwallet account on a 2 requests/s key, ``--seconds`` quiet, then
   ``--seconds`` of ``--rate`` pushes a second at it from another process (32 connections).
   For each half: the key's requests a second, 429s received (target 0), /metrics scrape
   time p50/p99 (a scrape every 0.1 s), the daemon's RSS; and the pushes answered by result.
   It runs twice: at ``interval: 60s`` (a quiet key: the flood costs its burst of
   HINT_BURST hinted polls per transfer endpoint, then nothing over the routine polls) and at
   ``interval: 1s`` (a key already at its budget, which the flood must leave there).

Not a test: nothing is asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import logging
import subprocess
import sys
import tempfile
import time
from collections import Counter
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp
from simproc import KINDS, SimProcess, percentile, simulator

from walletwatch import logs
from walletwatch.app import Daemon
from walletwatch.clock import SystemClock
from walletwatch.config import Config, parse_config
from walletwatch.scheduler import HINT_GAP, STARTUP_SPREAD

TOKEN = "bench-push-token-0123456789abcdefghij"  # noqa: S105 - a fake, for loopback
PROVIDERS = ("westwallet", "potwallet", "bitexbit")
PER_PROVIDER = 6
SPACING = 0.4  # seconds between deposits: an account gets one every 7.2 s, past HINT_GAP
DEPOSIT_PATH = {
    "westwallet": "transactions",
    "potwallet": "transactions",
    "bitexbit": "deposits",
}


def deposit_body(provider: str, amount: Decimal) -> dict[str, str]:
    """The control call's body that adds a deposit of ``amount``."""
    if provider == "westwallet":
        return {"type": "receive", "currency": "BTC", "amount": str(amount), "status": "completed"}
    if provider == "potwallet":
        return {"category": "receive", "amount": str(amount)}
    return {"ticker": "USDT", "network": "tron", "amount": str(amount)}


class Detections(io.StringIO):
    """The daemon's stdout: when each deposit.detected event was written, by amount."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: dict[Decimal, float] = {}

    def write(self, text: str) -> int:
        """Note the deposits detected in one or more JSON lines; keep nothing else."""
        now = time.monotonic()
        for line in text.splitlines():
            if '"deposit.detected"' in line:
                self.seen.setdefault(Decimal(json.loads(line)["amount"]), now)
        return len(text)


def make_config(
    sim: SimProcess,
    workdir: Path,
    accounts: list[tuple[str, str]],
    *,
    push: bool,
    interval: str,
) -> Config:
    """The daemon's config for (name, provider) ``accounts``, each on a key named after it."""
    entries: list[dict[str, Any]] = [
        {
            "name": name,
            "provider": provider,
            "base_url": sim.base_url(provider),
            "credentials": KINDS[provider].credentials(name),
            "interval": interval,
            "push": push,
        }
        for name, provider in accounts
    ]
    data = {
        "listen": "127.0.0.1:0",
        "state_path": "state.db",
        "push": {"listen": "127.0.0.1:0", "token": TOKEN},
        "accounts": entries,
    }
    return parse_config(data, base_dir=workdir, environ={})


def push_base(daemon: Daemon) -> str:
    """The base URL of the daemon's push listener."""
    if daemon.push is None:
        raise RuntimeError("the daemon has no push section")
    return daemon.push.url


async def started(config: Config, stdout: Detections | None = None) -> Daemon:
    """The daemon started, polling, its first polls done and HINT_GAP behind it."""
    daemon = Daemon(config, clock=SystemClock(), stdout=stdout)
    await daemon.start()
    daemon.run_scheduler()
    await asyncio.sleep(STARTUP_SPREAD)
    while not all(w.polled for w in daemon.watchers.values()):  # noqa: ASYNC110 - no event
        await asyncio.sleep(0.1)
    await asyncio.sleep(HINT_GAP)
    return daemon


async def latency(deposits: int, *, push: bool) -> tuple[list[float], int]:
    """Seconds from each deposit to its event, and how many were never seen (75 s wait)."""
    accounts = [(f"{p}-{i}", p) for p in PROVIDERS for i in range(PER_PROVIDER)]
    async with simulator() as sim:
        for name, provider in accounts:
            await sim.add_account(provider, name)
        with tempfile.TemporaryDirectory(prefix="walletwatch-bench-") as tmp:
            config = make_config(sim, Path(tmp), accounts, push=push, interval="60s")
            seen = Detections()
            daemon = await started(config, seen)
            try:
                if push:
                    for name, provider in accounts:
                        url = f"{push_base(daemon)}/push/{name}/{TOKEN}"
                        await sim.post(f"/_sim/{provider}/{name}/push", {"url": url})
                made: dict[Decimal, float] = {}
                for n in range(deposits):
                    name, provider = accounts[n % len(accounts)]
                    amount = Decimal(f"1.{n + 1:04d}")
                    path = f"/_sim/{provider}/{name}/{DEPOSIT_PATH[provider]}"
                    made[amount] = time.monotonic()  # the control call's time counts too
                    await sim.post(path, deposit_body(provider, amount))
                    await asyncio.sleep(SPACING)
                end = time.monotonic() + 75
                while len(seen.seen.keys() & made.keys()) < len(made):
                    if time.monotonic() > end:
                        break
                    await asyncio.sleep(0.1)
            finally:
                await daemon.close()
    found = [seen.seen[a] - t for a, t in made.items() if a in seen.seen]
    return found, len(made) - len(found)


# Pushes from another process, as a provider's servers would send them.
_FLOOD = """
import asyncio, json, sys, time
from collections import Counter
import aiohttp

async def main(url, rate, seconds, connections):
    results = Counter()
    sem = asyncio.Semaphore(connections)
    async def one(session):
        try:
            async with sem, session.post(url, data=b"id=1&amount=1&status=completed") as resp:
                await resp.read()
                results[str(resp.status)] += 1
        except Exception as err:
            results[type(err).__name__] += 1
    tasks = set()
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=connections)) as s:
        began = time.monotonic()
        sent = 0
        while (now := time.monotonic()) - began < seconds:
            due = int((now - began) * rate) - sent
            for _ in range(max(0, min(due, connections * 4 - len(tasks)))):
                task = asyncio.ensure_future(one(s))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
                sent += 1
            await asyncio.sleep(0.005)
        await asyncio.gather(*tasks)
        elapsed = time.monotonic() - began
    print(json.dumps({"sent": sent, "seconds": elapsed, "results": results}))

asyncio.run(main(sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])))
"""


def rss() -> int:
    """This process's resident set size, in KiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


async def scraping(url: str, times: list[float], stop: asyncio.Event) -> None:
    """GET /metrics every 0.1 s, recording how long each took."""
    async with aiohttp.ClientSession() as session:
        while not stop.is_set():
            began = time.perf_counter()
            async with session.get(url) as resp:
                await resp.read()
            times.append(time.perf_counter() - began)
            await asyncio.sleep(0.1)


async def window(
    daemon: Daemon, sim: SimProcess, seconds: float, flood: list[str] | None
) -> dict[str, Any]:
    """Measure ``seconds`` of the daemon, flooded by the ``flood`` command if given."""
    bucket = next(iter(daemon.telemetry.buckets.values()))
    requests, limited = bucket.requests, bucket.rate_limited
    responses = Counter[int]()
    for row in await sim.responses():
        responses[row["status"]] += row["count"]
    times: list[float] = []
    stop = asyncio.Event()
    scraper = asyncio.create_task(scraping(f"{daemon.url}/metrics", times, stop))
    memory = [rss()]
    began = time.monotonic()
    answered: dict[str, Any] = {}
    if flood is None:
        await asyncio.sleep(seconds)
    else:
        proc = await asyncio.create_subprocess_exec(*flood, stdout=subprocess.PIPE)
        out, _ = await proc.communicate()
        answered = json.loads(out)
    elapsed = time.monotonic() - began
    memory.append(rss())
    stop.set()
    await scraper
    after = Counter[int]()
    for row in await sim.responses():
        after[row["status"]] += row["count"]
    return {
        "elapsed": elapsed,
        "rate": (bucket.requests - requests) / elapsed,
        "429s": after[429] - responses[429],
        "429s_counted": bucket.rate_limited - limited,
        "scrape_p50": percentile(times, 0.5),
        "scrape_p99": percentile(times, 0.99),
        "rss": memory,
        "answered": answered,
    }


async def flood(seconds: float, rate: float, interval: str) -> tuple[dict[str, Any], ...]:
    """A quiet window, then a flooded one, at one westwallet account on a 2/s key."""
    async with simulator() as sim:
        await sim.add_account("westwallet", "flooded")
        with tempfile.TemporaryDirectory(prefix="walletwatch-bench-") as tmp:
            accounts = [("flooded", "westwallet")]
            config = make_config(sim, Path(tmp), accounts, push=True, interval=interval)
            daemon = await started(config)
            try:
                url = f"{push_base(daemon)}/push/flooded/{TOKEN}"
                command = [sys.executable, "-c", _FLOOD, url, str(rate), str(seconds), "32"]
                quiet = await window(daemon, sim, seconds, None)
                loud = await window(daemon, sim, seconds, command)
                hints = {key[2]: count for key, count in daemon.telemetry.push.hints.items() if key}
                loud["hints"] = hints
            finally:
                await daemon.close()
    return quiet, loud


def report_latency(label: str, found: list[float], missed: int) -> None:
    """Print one latency run."""
    if not found:
        print(f"{label}: no deposit seen ({missed} missed)")
        return
    print(
        f"{label}: {len(found)} deposits seen, {missed} not within 75 s; detection latency "
        f"p50 {percentile(found, 0.5):.2f}s, p99 {percentile(found, 0.99):.2f}s, "
        f"max {max(found):.2f}s"
    )


def report_flood(interval: str, rate: float, quiet: dict[str, Any], loud: dict[str, Any]) -> None:
    """Print one flood run."""
    answered = loud["answered"]
    achieved = answered.get("sent", 0) / max(answered.get("seconds", 1), 1e-9)
    print(f"flood at interval {interval}: asked {rate:g} pushes/s, sent {achieved:.0f}/s")
    print(f"  answers: {dict(answered.get('results', {}))}; hints counted: {loud['hints']}")
    for name, part in (("quiet", quiet), ("flooded", loud)):
        print(
            f"  {name:<8} key {part['rate']:.3f} req/s (limit 2), 429s {part['429s']} "
            f"(counted {part['429s_counted']}), /metrics p50 {part['scrape_p50'] * 1000:.1f} ms "
            f"p99 {part['scrape_p99'] * 1000:.1f} ms, RSS {part['rss'][0] / 1024:.1f} -> "
            f"{part['rss'][1] / 1024:.1f} MiB"
        )


async def run(args: argparse.Namespace) -> None:
    """Every part, in order, printing as it goes."""
    if not args.skip_latency:
        found, missed = await latency(args.deposits, push=True)
        report_latency("with push", found, missed)
        found, missed = await latency(args.deposits, push=False)
        report_latency("without push (60 s interval alone)", found, missed)
    for interval in ("60s", "1s"):
        quiet, loud = await flood(args.seconds, args.rate, interval)
        report_flood(interval, args.rate, quiet, loud)


def main() -> None:
    """Parse the arguments and run."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--deposits", type=int, default=54)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--rate", type=float, default=1000.0)
    parser.add_argument("--skip-latency", action="store_true")
    args = parser.parse_args()
    logs.configure("console", sys.stderr, level=logging.WARNING)
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
