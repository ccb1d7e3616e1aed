"""Benchmark: SIGHUP reloads of a 10,000-account config, and how long they stall the loop.

Run: .venv/bin/python bench/reload.py [--accounts 10000] [--change 100]

Starts the simulator in its own process (simproc.py) with the accounts of scale.py's plan
plus ``--change`` more, writes the config file (about 1.8 MB at 10,000 accounts), starts the
daemon in this process from that file, polls every account once, and then sends itself
real SIGHUPs handled as ``walletwatch run`` handles them (cli.Reloader). Each new file
removes ``--change`` accounts, adds ``--change`` others and changes the interval of
``--change`` more. A ticker task sleeping 5 ms at a time measures the event loop's lateness.

Prints, for five seconds of polling without a reload (the floor), for one reload, for five
SIGHUPs sent 50 ms apart (they coalesce), and for a reload that changes every account: the
longest loop stall (target <= 100 ms), the p99 stall, the reload's duration, how many
reloads ran and the collector's longest pause. Not a test: nothing is asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from scale import PROVIDERS, add_accounts, every_polled, plan
from simproc import KINDS, GcPauses, SimProcess, percentile, simulator, ticker

from walletwatch import logs
from walletwatch.app import Daemon
from walletwatch.cli import Reloader
from walletwatch.clock import SystemClock
from walletwatch.config import load_config

SIM_RATE_LIMIT = 1000.0  # per key, in the simulator: it answers, it does not throttle


def write_config(
    sim: SimProcess, path: Path, accounts: int, change: int, version: int, *, every: bool = False
) -> None:
    """Config ``version``: the plan's accounts, ``change`` of them swapped and re-timed.

    Version 0 is the plan's first ``accounts``; version v > 0 drops ``change`` accounts and
    adds ``change`` others (alternating between two sets), and gives ``change`` more another
    interval. With ``every``, every account gets another interval.
    """
    everyone = plan(accounts + change)
    chosen = everyone[:accounts]
    if version % 2 == 1:
        chosen = everyone[change:accounts] + everyone[accounts:]
    retimed = [every or (version > 0 and i % (accounts // change) == 0) for i in range(accounts)]
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
                "interval": "61s" if retimed[i] else "60s",
            }
            for i, (name, provider, key) in enumerate(chosen)
        ],
    }
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    path.chmod(0o600)  # literal (fake) secrets: the loader refuses a world-readable file


@dataclass
class Phase:
    """What one phase measured."""

    name: str
    stalls: list[float]
    seconds: float
    runs: int
    gc: tuple[float, int]  # the collector's longest pause meanwhile, and its generation


async def phase(
    name: str, reloader: Reloader, signals: int, gap: float = 0.05, settle: float = 0.5
) -> Phase:
    """Send ``signals`` SIGHUPs ``gap`` apart and measure the loop until the reloads end."""
    stalls: list[float] = []
    stop = asyncio.Event()
    tick = asyncio.create_task(ticker(stalls, stop))
    with GcPauses() as pauses:
        await asyncio.sleep(settle)
        runs = reloader.runs
        began = time.perf_counter()
        for i in range(signals):
            if i:
                await asyncio.sleep(gap)
            os.kill(os.getpid(), signal.SIGHUP)
        await asyncio.sleep(0.01)  # the signal's handler runs on the loop's next turn
        await reloader.idle()
        seconds = time.perf_counter() - began
        await asyncio.sleep(settle)
    stop.set()
    await tick
    return Phase(name, stalls, seconds, reloader.runs - runs, pauses.longest())


async def run(args: argparse.Namespace) -> list[Phase]:
    """Every phase, in order."""
    phases = []
    async with simulator(rate_limit=SIM_RATE_LIMIT) as sim:
        await add_accounts(sim, args.accounts + args.change)
        with tempfile.TemporaryDirectory(prefix="walletwatch-reload-") as tmp:
            path = Path(tmp) / "config.yaml"
            # Every version is written before the daemon starts: dumping 1.8 MB of YAML here,
            # on the loop, would stall it (and pile up polls) just before a phase measures.
            versions = {name: Path(tmp) / f"{name}.yaml" for name in ("one", "five", "every")}
            write_config(sim, path, args.accounts, args.change, 0)
            write_config(sim, versions["one"], args.accounts, args.change, 1)
            write_config(sim, versions["five"], args.accounts, args.change, 2)
            write_config(sim, versions["every"], args.accounts, args.change, 2, every=True)
            print(f"config file: {path.stat().st_size / 1e6:.1f} MB", flush=True)
            daemon = Daemon(load_config(path), clock=SystemClock())
            await daemon.start(serve=True)
            reloader = Reloader(daemon, path)
            asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, reloader.request)
            try:
                daemon.run_scheduler()
                began = time.perf_counter()
                await every_polled(daemon)
                print(f"every account polled in {time.perf_counter() - began:.1f}s", flush=True)
                phases.append(await phase("no reload (polling only)", reloader, 0, settle=5.0))
                versions["one"].replace(path)
                phases.append(await phase("one reload", reloader, 1))
                versions["five"].replace(path)
                phases.append(await phase("five SIGHUPs 50 ms apart", reloader, 5))
                versions["every"].replace(path)
                phases.append(await phase("one reload changing every account", reloader, 1))
                assert len(daemon.watchers) == args.accounts
            finally:
                await reloader.close()
                await daemon.close()
    return phases


def report(phases: list[Phase]) -> None:
    """Print the figures."""
    for p in phases:
        print(
            f"{p.name}: longest loop stall {max(p.stalls) * 1e3:.0f} ms, "
            f"p99 {percentile(p.stalls, 0.99) * 1e3:.1f} ms; "
            f"{p.runs} reload(s) in {p.seconds:.2f}s; "
            f"longest collector pause {p.gc[0] * 1e3:.0f} ms (generation {p.gc[1]})"
        )


def main() -> None:
    """Parse the arguments and run."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--accounts", type=int, default=10_000)
    parser.add_argument("--change", type=int, default=100)
    args = parser.parse_args()
    logs.configure("console", sys.stderr, level=logging.WARNING)
    with contextlib.suppress(KeyboardInterrupt):
        report(asyncio.run(run(args)))


if __name__ == "__main__":
    main()
