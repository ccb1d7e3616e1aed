"""Benchmark: the real daemon against a strictly limiting simulator, at three times its budget.

Run: .venv/bin/python bench/ratelimit.py [--seconds 60]

Starts ``walletwatch simulate`` in its own process (per-key limits enforced strictly, see
simproc.py) and the daemon (``Daemon.run_scheduler``) on loopback: 20 accounts of PROVIDER
on two API keys, polled often enough to ask for three times the two keys' paced budget, plus
accounts of other providers on keys of their own at an ordinary pace. After ``--seconds`` it
prints the 429s received (target 0), requests served per overloaded key against what its
paced rate allows (target >= 0.95), max and p99 scheduler delay, and fairness: max/min polls
per overloaded account (target <= 1.2). Not a test: nothing is asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import random
import sys
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from simproc import KINDS, SimProcess, percentile, simulator

from walletwatch import logs
from walletwatch.app import Daemon
from walletwatch.budget import paced
from walletwatch.clock import SystemClock
from walletwatch.config import Config, parse_config
from walletwatch.providers import SCHEMAS as PROVIDERS
from walletwatch.scheduler import Scheduler

PROVIDER = "bitexbit"  # any provider of simproc.KINDS (and, for latency.py, INJECTORS)
OTHERS = {"kredswallet": 2, "potwallet": 2, "westwallet": 2}  # accounts on keys of their own
KEYS = 2
ACCOUNTS_PER_KEY = 10
OVERLOAD = 3.0
REQUESTS_PER_POLL = 1  # an empty history is one page; a balance one call
OTHER_INTERVAL = "10s"


def endpoints_of(provider: str) -> int:
    """How many endpoints an account of ``provider`` polls (with its default options)."""
    return {"westwallet": 3, "bitexbit": 3, "kredswallet": 4, "potwallet": 4}[provider]


def overload_interval(margin: float) -> float:
    """The interval at which ACCOUNTS_PER_KEY accounts ask OVERLOAD times a key's budget."""
    budget = paced(PROVIDERS[PROVIDER].rate_limit, margin)
    per_poll_round = ACCOUNTS_PER_KEY * endpoints_of(PROVIDER) * REQUESTS_PER_POLL
    return per_poll_round / (OVERLOAD * budget)


def plan_accounts() -> list[tuple[str, str, str, bool]]:
    """(name, provider, API key, overloaded) of every account."""
    accounts = [
        (f"{PROVIDER}-{k}-{i:02d}", PROVIDER, f"bench-key-{k}", True)
        for k in range(KEYS)
        for i in range(ACCOUNTS_PER_KEY)
    ]
    for provider, count in OTHERS.items():
        if provider == PROVIDER:
            continue
        accounts += [
            (f"{provider}-{i}", provider, f"{provider}-own-{i}", False) for i in range(count)
        ]
    return accounts


def make_config(sim: SimProcess, workdir: Path, interval: float) -> Config:
    """The daemon's config for the planned accounts."""
    accounts: list[dict[str, Any]] = [
        {
            "name": name,
            "provider": provider,
            "base_url": sim.base_url(provider),
            "credentials": KINDS[provider].credentials(key),
            "interval": f"{round(interval * 1000)}ms" if overloaded else OTHER_INTERVAL,
        }
        for name, provider, key, overloaded in plan_accounts()
    ]
    data = {"listen": "127.0.0.1:0", "state_path": "state.db", "accounts": accounts}
    return parse_config(data, base_dir=workdir, environ={})


@dataclass
class Result:
    """What one run measured."""

    config: Config
    elapsed: float = 0.0
    buckets: dict[str, tuple[int, int, float]] = field(default_factory=dict)  # requests, 429s, rate
    polls: Counter[str] = field(default_factory=Counter)  # by account
    delays: list[tuple[str, float]] = field(default_factory=list)  # (provider, seconds)
    responses: list[dict[str, Any]] = field(default_factory=list)  # the simulator's counts


async def run(seconds: float, seed: int) -> Result:
    """Run the daemon for ``seconds`` and return what it measured."""
    interval = overload_interval(0.05)
    async with simulator() as sim:
        for key in sorted({(p, k) for _, p, k, _ in plan_accounts()}):
            await sim.add_account(*key)
        with tempfile.TemporaryDirectory(prefix="walletwatch-bench-") as tmp:
            result = Result(make_config(sim, Path(tmp), interval))
            daemon = Daemon(result.config, clock=SystemClock())

            def on_delay(provider: str, late: float) -> None:
                daemon.telemetry.delay(provider, late)
                result.delays.append((provider, late))

            daemon.scheduler = Scheduler(daemon.clock, rng=random.Random(seed), on_delay=on_delay)
            await daemon.start(serve=False)
            loop = asyncio.get_running_loop()
            began = loop.time()
            daemon.run_scheduler()
            await asyncio.sleep(seconds)
            result.elapsed = loop.time() - began
            for name, stats in daemon.telemetry.buckets.items():
                result.buckets[name] = (stats.requests, stats.rate_limited, stats.rate)
            for (_, account, _), count in daemon.telemetry.polls.items():
                result.polls[account] += count
            await daemon.close()
        result.responses = await sim.responses()
    return result


def report(result: Result) -> None:
    """Print the benchmark's figures."""
    config, elapsed = result.config, result.elapsed
    loaded = [a for a in config.accounts if a.name.startswith(f"{PROVIDER}-")]
    limit = config.providers[PROVIDER].rate_limit
    rate = paced(limit, config.providers[PROVIDER].rate_margin)
    demand = ACCOUNTS_PER_KEY * endpoints_of(PROVIDER) * REQUESTS_PER_POLL / loaded[0].interval
    others = [a for a in config.accounts if a not in loaded]
    print(f"provider under load: {PROVIDER}, {len(loaded)} accounts on {KEYS} API keys")
    print(
        f"limit {limit:g}/s per key, paced at {rate:.2f}/s; interval {loaded[0].interval:.3f}s "
        f"x {endpoints_of(PROVIDER)} endpoints asks {demand:.2f}/s per key = "
        f"{demand / rate:.2f}x the budget"
    )
    names = ", ".join(sorted({a.provider for a in others}))
    print(f"other accounts: {len(others)} ({names}), own keys, every {OTHER_INTERVAL}")
    print(f"ran {elapsed:.1f}s")
    by_status = Counter[int]()
    limited = Counter[str]()
    for row in result.responses:
        by_status[row["status"]] += row["count"]
        if row["status"] == 429:
            limited[row["provider"]] += row["count"]
    print(f"429s received: {by_status[429]} (target 0) {dict(limited) or ''}".rstrip())
    print(f"simulator responses by status: {dict(sorted(by_status.items()))}")
    for key in sorted({a.credential_id for a in loaded}):
        requests, rate_limited, now = result.buckets[key]
        served, allowed = requests - rate_limited, rate * elapsed
        print(
            f"key {key}: served {served} = {served / elapsed:.3f}/s; the paced rate allows "
            f"{allowed:.1f}: served/allowed {served / allowed:.3f} (target >= 0.95); "
            f"bucket rate at the end {now:.2f}/s"
        )
    late = [s for p, s in result.delays if p == PROVIDER]
    print(
        f"scheduler delay, {PROVIDER}: max {max(late):.2f}s, p99 {percentile(late, 0.99):.2f}s, "
        f"p50 {percentile(late, 0.5):.2f}s over {len(late)} polls"
    )
    rest = [s for p, s in result.delays if p != PROVIDER]
    if rest:
        print(
            f"scheduler delay, other providers: max {max(rest):.2f}s, "
            f"p99 {percentile(rest, 0.99):.2f}s over {len(rest)} polls"
        )
    counts = [result.polls[a.name] for a in loaded]
    print(
        f"fairness: polls per {PROVIDER} account min {min(counts)}, max {max(counts)}, "
        f"max/min {max(counts) / min(counts):.3f} (target <= 1.2)"
    )


def main() -> None:
    """Parse the arguments and run."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    logs.configure("console", sys.stderr, level=logging.WARNING)
    report(asyncio.run(run(args.seconds, args.seed)))


if __name__ == "__main__":
    main()
