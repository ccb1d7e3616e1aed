"""Benchmark: PostgreSQL beside SQLite at 10,000 accounts, and takeover time over 20 kills.

Run: .venv/bin/python bench/postgres.py [--accounts 10000] [--seconds 60] [--kills 20]

Part 1, per engine: the daemon of bench/scale.py (simulator in its own process, accounts
seeded with ``--transfers`` settled deposits, every account on ``--interval``) runs for
``--seconds`` once every account has been polled; prints the commit latency per poll (p50,
p99, max: the time Store.commit takes on the store's worker thread, for the commits that
seed every account: a poll that found ``--transfers`` new transfers, with their events) and
the requests per second served in the window, SQLite first, then PostgreSQL on a throwaway
local cluster (fsync on, as a real one). Part 2: two `walletwatch run` replicas (lease
``--lease``) on one account of the in-process simulator (tests/faults/test_replicas.py's);
the leader is SIGKILLed ``--kills`` times, restarted as a follower each time; prints the
takeover time (kill to the other replica's walletwatch_leader 1) min, p50, max. Not a test:
nothing is asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import functools
import gc
import logging
import os
import signal
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from scale import add_accounts, every_polled, http_requests, make_config, seed, timed_commits
from simproc import percentile, simulator

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the tests' cluster and replicas

from tests.faults.test_replicas import KR_KEY, KR_SECRET, WW_KEY, WW_SECRET, Replica
from tests.pgcluster import PASSWORD, running_cluster
from tests.simthread import serve_in_thread
from walletwatch import logs
from walletwatch.app import Daemon
from walletwatch.clock import SystemClock
from walletwatch.configmodel import Secret, StoreConfig
from walletwatch.sim import Simulator

SIM_RATE_LIMIT = 1000.0  # per key, in the simulator: it answers, it does not throttle


async def engine_run(args: argparse.Namespace, url: str | None) -> tuple[list[float], float]:
    """(commit seconds, requests per second) of one engine: SQLite when ``url`` is None."""
    commits: list[float] = []
    async with simulator(rate_limit=SIM_RATE_LIMIT) as sim:
        await add_accounts(sim, args.accounts)
        with tempfile.TemporaryDirectory(prefix="walletwatch-pgbench-") as tmp:
            config = make_config(sim, Path(tmp), args.accounts, args.interval)
            if url is not None:
                config = dataclasses.replace(
                    config, store=StoreConfig(url, Secret(PASSWORD), lease=15.0)
                )
            daemon = Daemon(config, clock=SystemClock())
            await daemon.start(serve=True)
            while not daemon.collector.leading:  # noqa: ASYNC110 - a property, no event
                await asyncio.sleep(0.05)
            timed_commits(daemon, commits)
            await seed(daemon, args.transfers)
            gc.collect()
            daemon.run_scheduler()
            await every_polled(daemon)
            requests0, wall0 = http_requests(daemon), time.perf_counter()
            await asyncio.sleep(args.seconds)
            rate = (http_requests(daemon) - requests0) / (time.perf_counter() - wall0)
            await daemon.close()
    return commits, rate


def takeovers(kills: int, lease: float, url: str, root: Path) -> list[float]:
    """Seconds from each SIGKILL of the leader to the other replica leading."""
    os.umask(0o077)  # the configs hold literal (simulator) secrets: they must be private
    sim = Simulator(rate_limit=2.0)
    sim.westwallet.add_account(WW_KEY, WW_SECRET)
    sim.kredswallet.add_account(KR_KEY, KR_SECRET)
    secret = root / "pg_password"
    secret.write_text(PASSWORD)
    times = []
    with serve_in_thread(sim) as sim_url:
        replicas = [Replica(n, root, url, sim_url, secret, lease=lease) for n in ("a", "b")]
        for replica in replicas:
            replica.start()
        try:
            for _ in range(kills):
                leader = _wait_leader(replicas)
                other = next(r for r in replicas if r is not leader)
                leader.signal(signal.SIGKILL)
                killed = time.monotonic()
                _until(functools.partial(_leads, other), "a takeover")
                times.append(time.monotonic() - killed)
                leader.start()
                _until(functools.partial(_answers, leader), "the killed replica up again")
        finally:
            for replica in replicas:
                replica.stop()
    return times


def _wait_leader(replicas: list[Replica]) -> Replica:
    _until(lambda: any(_leads(r) for r in replicas), "a leader")
    return next(r for r in replicas if _leads(r))


def _leads(replica: Replica) -> bool:
    return replica.leader() == 1.0


def _answers(replica: Replica) -> bool:
    return replica.leader() is not None


def _until(probe: Callable[[], bool], what: str, deadline: float = 60.0) -> None:
    end = time.monotonic() + deadline
    while not probe():
        if time.monotonic() > end:
            raise RuntimeError(f"no {what} within {deadline:g}s (see the replicas' logs)")
        time.sleep(0.01)


def report(name: str, commits: list[float], rate: float) -> None:
    """Print one engine's figures."""
    ms = sorted(c * 1000 for c in commits)
    print(
        f"{name:<10} commits {len(ms):>6}  latency p50 {percentile(ms, 0.5):6.2f} ms  "
        f"p99 {percentile(ms, 0.99):6.2f} ms  max {ms[-1] if ms else 0:7.2f} ms  "
        f"requests {rate:6.0f}/s"
    )


def main() -> None:
    """Parse the arguments and run both parts."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--accounts", type=int, default=10_000)
    parser.add_argument("--transfers", type=int, default=50)
    parser.add_argument("--interval", type=float, default=60.0)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--lease", type=float, default=3.0)
    args = parser.parse_args()
    logs.configure("console", sys.stderr, level=logging.WARNING)
    print(f"accounts: {args.accounts}, interval {args.interval:g}s, window {args.seconds:g}s")
    with running_cluster(fsync=True) as cluster, contextlib.suppress(KeyboardInterrupt):
        report("sqlite", *asyncio.run(engine_run(args, None)))
        report("postgresql", *asyncio.run(engine_run(args, cluster.create())))
        with tempfile.TemporaryDirectory(prefix="walletwatch-takeover-") as tmp:
            times = sorted(takeovers(args.kills, args.lease, cluster.create(), Path(tmp)))
        print(
            f"takeover over {len(times)} kills (lease {args.lease:g}s): min {times[0]:.2f}s "
            f"p50 {percentile(times, 0.5):.2f}s max {times[-1]:.2f}s"
        )


if __name__ == "__main__":
    main()
