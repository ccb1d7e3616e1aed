"""Benchmark: how long a deposit or a withdrawal's move takes to become an alert event.

Run: .venv/bin/python bench/latency.py [--seconds 150] [--interval 20] [--fast-interval 5]

Starts ``walletwatch simulate`` in its own process (see simproc.py) and the real daemon
(``Daemon.run_scheduler``) on loopback: ACCOUNTS_PER_KEY accounts of PROVIDER on each of KEYS
API keys. Once every account has its baseline, for ``--seconds`` it injects deposits at random
moments, and creates withdrawals that, once the daemon has seen them in flight, it moves
(completes) at random moments. Each injection is timed from just before the simulator is told
to its alert event on the daemon's stdout sink (``deposit.detected``; the withdrawal's next
event). Prints p50, p99 and max per kind. Targets: deposits p99 <= interval + 1s; in-flight
withdrawal changes p99 <= fast_interval + 1s. Not a test: nothing is asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import itertools
import json
import logging
import math
import random
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

from simproc import KINDS, SimProcess, percentile, simulator

from walletwatch import logs
from walletwatch.app import Daemon
from walletwatch.clock import SystemClock
from walletwatch.config import Config, parse_config
from walletwatch.scheduler import Scheduler

PROVIDER = "bitexbit"  # any provider of simproc.KINDS (and, for latency.py, INJECTORS)
KEYS = 8
ACCOUNTS_PER_KEY = 2  # accounts on one key share its budget and see the same transfers
DEPOSITS_PER_SECOND = 2.0
WITHDRAWALS_PER_SECOND = 1.0


@dataclass(frozen=True, slots=True)
class Injector:
    """The simulator's control calls that create and move transfers of one provider."""

    deposit: Callable[[SimProcess, str, Decimal], Awaitable[Any]]
    withdrawal: Callable[[SimProcess, str, Decimal], Awaitable[str]]  # -> its id
    move: Callable[[SimProcess, str, str], Awaitable[Any]]


async def _ww_add(sim: SimProcess, key: str, kind: str, amount: Decimal) -> str:
    body = {"type": kind, "currency": "USDT", "amount": str(amount), "status": "pending"}
    return str((await sim.post(f"/_sim/westwallet/{key}/transactions", body))["id"])


async def _bxb_add(sim: SimProcess, key: str, kind: str, amount: Decimal) -> str:
    body = {"ticker": "USDT", "network": "TRC20", "amount": str(amount)}
    return str((await sim.post(f"/_sim/bitexbit/{key}/{kind}", body))["id"])


INJECTORS = {
    "westwallet": Injector(
        deposit=lambda sim, key, amount: _ww_add(sim, key, "receive", amount),
        withdrawal=lambda sim, key, amount: _ww_add(sim, key, "send", amount),
        move=lambda sim, key, tx: sim.post(
            f"/_sim/westwallet/{key}/transactions/{tx}", {"status": "completed"}
        ),
    ),
    "bitexbit": Injector(  # a move climbs one rung of the withdrawal status ladder
        deposit=lambda sim, key, amount: _bxb_add(sim, key, "deposits", amount),
        withdrawal=lambda sim, key, amount: _bxb_add(sim, key, "withdrawals", amount),
        move=lambda sim, key, tx: sim.post(f"/_sim/bitexbit/{key}/withdrawals/{tx}", {}),
    ),
}


class Recorder(io.StringIO):
    """The daemon's stdout sink: notes when each alert event arrives."""

    def __init__(self) -> None:
        super().__init__()
        self.events: list[tuple[float, dict[str, Any]]] = []

    def write(self, text: str) -> int:
        """Parse and time-stamp every event line."""
        now = time.time()
        self.events.extend((now, json.loads(line)) for line in text.splitlines() if line)
        return len(text)

    def first(self, name: str, account: str, amount: Decimal, after: float = 0.0) -> float | None:
        """When the first event ``name`` (or any but withdrawal.detected, for "move") of that
        account and amount arrived at or after ``after``."""
        for at, event in self.events:
            kind = event["event"]
            if name == "move":
                wanted = kind.startswith("withdrawal.") and kind != "withdrawal.detected"
            else:
                wanted = kind == name
            if (
                wanted
                and at >= after
                and event["account"] == account
                and Decimal(str(event.get("amount", "-1"))) == amount
            ):
                return at
        return None


@dataclass
class Run:
    """One benchmark run: the daemon, the simulator and what was injected when."""

    sim: SimProcess
    config: Config
    recorder: Recorder
    rng: random.Random
    deposits: list[tuple[str, Decimal, float]] = field(default_factory=list)  # key, amount, at
    moves: list[tuple[str, Decimal, float]] = field(default_factory=list)
    amounts: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    tasks: set[asyncio.Task[None]] = field(default_factory=set)

    @property
    def keys(self) -> list[str]:
        """The API keys of the accounts."""
        return [f"latency-key-{k}" for k in range(KEYS)]

    def accounts_of(self, key: str) -> list[str]:
        """The names of the accounts on ``key``."""
        return [a.name for a in self.config.accounts if a.credentials["api_key"].reveal() == key]

    async def inject_deposits(self, until: float) -> None:
        """Deposits at random moments (a Poisson process) until ``until``."""
        while (now := time.time()) < until:
            await asyncio.sleep(min(self.rng.expovariate(DEPOSITS_PER_SECOND), until - now))
            key = self.rng.choice(self.keys)
            amount = Decimal(f"1.{next(self.amounts):06d}")
            at = time.time()
            await INJECTORS[PROVIDER].deposit(self.sim, key, amount)
            self.deposits.append((key, amount, at))

    async def inject_withdrawals(self, until: float, fast_interval: float) -> None:
        """Withdrawals created at random moments; each moved at a random moment once in flight."""
        while (now := time.time()) < until:
            await asyncio.sleep(min(self.rng.expovariate(WITHDRAWALS_PER_SECOND), until - now))
            key = self.rng.choice(self.keys)
            amount = Decimal(f"2.{next(self.amounts):06d}")
            tx = await INJECTORS[PROVIDER].withdrawal(self.sim, key, amount)
            later = self.rng.uniform(0.0, 2 * fast_interval)
            task = asyncio.create_task(self.move_when_seen(key, tx, amount, later))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)

    async def move_when_seen(self, key: str, tx: str, amount: Decimal, later: float) -> None:
        """Once every account on ``key`` saw the withdrawal in flight, move it ``later`` on."""
        names = self.accounts_of(key)
        await poll_until(
            lambda: all(self.recorder.first("withdrawal.detected", n, amount) for n in names), 0.05
        )
        await asyncio.sleep(later)
        at = time.time()
        await INJECTORS[PROVIDER].move(self.sim, key, tx)
        self.moves.append((key, amount, at))

    def latencies(self) -> tuple[list[float], list[float], int]:
        """Deposit and withdrawal-move latencies, and how many events never came."""
        missing = 0
        found: dict[str, list[float]] = {"deposit.detected": [], "move": []}
        for name, injected in (("deposit.detected", self.deposits), ("move", self.moves)):
            for key, amount, at in injected:
                for account in self.accounts_of(key):
                    seen = self.recorder.first(name, account, amount, after=at)
                    if seen is None:
                        missing += 1
                    else:
                        found[name].append(seen - at)
        return found["deposit.detected"], found["move"], missing


async def poll_until(done: Callable[[], object], every: float, deadline: float = math.inf) -> None:
    """Check ``done`` every ``every`` seconds until it holds or wall time passes ``deadline``."""
    # The daemon's and the recorder's state have no event to await; a benchmark can poll.
    while not done() and time.time() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(every)


def make_config(sim: SimProcess, workdir: Path, interval: float, fast: float) -> Config:
    """ACCOUNTS_PER_KEY accounts on each of KEYS keys."""
    accounts = [
        {
            "name": f"{PROVIDER}-{k}-{i}",
            "provider": PROVIDER,
            "base_url": sim.base_url(PROVIDER),
            "credentials": KINDS[PROVIDER].credentials(f"latency-key-{k}"),
            "interval": f"{interval:g}s",
            "fast_interval": f"{fast:g}s",
        }
        for k in range(KEYS)
        for i in range(ACCOUNTS_PER_KEY)
    ]
    data = {"listen": "127.0.0.1:0", "state_path": "state.db", "accounts": accounts}
    return parse_config(data, base_dir=workdir, environ={})


async def main_async(args: argparse.Namespace) -> None:
    """Run the benchmark and print its figures."""
    interval, fast = args.interval, args.fast_interval
    delays: list[float] = []
    async with simulator() as sim:
        for k in range(KEYS):
            await sim.add_account(PROVIDER, f"latency-key-{k}")
        with tempfile.TemporaryDirectory(prefix="walletwatch-bench-") as tmp:
            config = make_config(sim, Path(tmp), interval, fast)
            recorder = Recorder()
            daemon = Daemon(config, clock=SystemClock(), stdout=recorder)

            def on_delay(provider: str, late: float) -> None:
                daemon.telemetry.delay(provider, late)
                delays.append(late)

            rng = random.Random(args.seed)
            daemon.scheduler = Scheduler(daemon.clock, rng=rng, on_delay=on_delay)
            await daemon.start(serve=False)
            daemon.run_scheduler()
            await poll_until(lambda: all(w.polled for w in daemon.watchers.values()), 0.1)
            run = Run(sim, config, recorder, rng)
            began = time.time()
            until = began + args.seconds
            await asyncio.gather(run.inject_deposits(until), run.inject_withdrawals(until, fast))
            drain = time.time() + interval + 2 * fast + 5
            await poll_until(lambda: not run.tasks and not run.latencies()[2], 0.5, drain)
            for task in run.tasks:
                task.cancel()
            polls = Counter[str]()
            for (_, _, endpoint), count in daemon.telemetry.polls.items():
                polls[endpoint] += count
            elapsed = time.time() - began
            await daemon.close()
        responses = await sim.responses()
    deposits, moves, missing = run.latencies()
    limited = sum(r["count"] for r in responses if r["status"] == 429)
    print(
        f"provider: {PROVIDER}, {KEYS * ACCOUNTS_PER_KEY} accounts on {KEYS} API keys; "
        f"interval {interval:g}s, fast_interval {fast:g}s"
    )
    print(
        f"injected for {args.seconds:g}s: {len(run.deposits)} deposits, {len(run.moves)} "
        f"withdrawal moves (each seen by {ACCOUNTS_PER_KEY} accounts); events missing: {missing}"
    )
    for label, values, target in (
        ("deposits", deposits, interval + 1),
        ("in-flight withdrawal changes", moves, fast + 1),
    ):
        print(
            f"{label}: {len(values)} events, p50 {percentile(values, 0.5):.2f}s, "
            f"p99 {percentile(values, 0.99):.2f}s, max {max(values):.2f}s "
            f"(target p99 <= {target:g}s)"
        )
    per_minute = {e: round(n * 60 / elapsed / len(config.accounts), 1) for e, n in polls.items()}
    print(f"polls per account per minute, by endpoint: {per_minute}")
    print(
        f"scheduler delay: p99 {percentile(delays, 0.99):.2f}s, max {max(delays):.2f}s; "
        f"429s received: {limited}"
    )


def main() -> None:
    """Parse the arguments and run."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=150.0, help="injection period")
    parser.add_argument("--interval", type=float, default=20.0)
    parser.add_argument("--fast-interval", type=float, default=5.0)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    logs.configure("console", sys.stderr, level=logging.WARNING)
    asyncio.run(main_async(args))


if __name__ == "__main__":
    main()
