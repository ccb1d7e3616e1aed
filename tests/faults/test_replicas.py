"""Replicas on PostgreSQL under faults: kills, a pause past the lease, a database restart.

Three `walletwatch run` processes share one PostgreSQL database (lease 3 s) and poll the
simulator at the providers' real limit (2 requests/s per key) while deposits and withdrawals
keep coming, on a WestWallet account and on a KredsWallet one (whose nonces must rise). In
turn: the leader is SIGKILLed; the new leader is SIGSTOPped past its lease and resumed; the
database is restarted; a follower is SIGKILLed. Then the test stops changing the accounts,
lets the leader catch up, stops every replica and checks:

- every fact (a transfer's detection and its settling) has exactly one event in the shared
  outbox, under one event_id, and every outbox event reached some replica's events file;
  a file may repeat an event only under the same event_id (delivered, not acknowledged,
  then the leader changed);
- the simulator answered no 429 and refused no nonce: the keys' budgets were never spent
  twice, and nonces went on rising across leaders;
- each takeover after a kill or a pause came within the lease plus one second, measured
  from the kill or from the moment the paused leader's lease ran out;
- the paused leader, resumed, stepped down: it followed within a second, and wrote nothing.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import TypeVar

import psycopg
import pytest
import yaml

from tests.pgcluster import PASSWORD, Cluster, free_port, wait_until_up
from tests.simthread import serve_in_thread
from walletwatch.sim import Simulator

LEASE = 3.0
WW_KEY, WW_SECRET = "replica-ww-key", "replica-ww-secret"
KR_KEY, KR_SECRET = "replica-kr-key", "replica-kr-secret"
WAIT = 20.0  # seconds any one wait may take before the test fails
T = TypeVar("T")


def wait_for(probe: Callable[[], T | None], what: str, deadline: float = WAIT) -> T:
    """Call ``probe`` every 50 ms until it returns something other than None."""
    end = time.monotonic() + deadline
    while True:
        result = probe()
        if result is not None:
            return result
        if time.monotonic() > end:
            pytest.fail(f"timed out after {deadline:.0f}s waiting for {what}")
        time.sleep(0.05)


class Replica:
    """One `walletwatch run` process with its own port, events file and log."""

    def __init__(
        self, name: str, root: Path, url: str, sim_url: str, secret: Path, *, lease: float = LEASE
    ) -> None:
        self.name = name
        self.port = free_port()
        self.events = root / f"events-{name}.jsonl"
        self.log_path = root / f"{name}.log"
        self.config = root / f"{name}.yaml"
        self.config.write_text(
            yaml.safe_dump(
                {
                    "listen": f"127.0.0.1:{self.port}",
                    "events_file": self.events.name,
                    "log_format": "json",
                    "store": {
                        "url": url,
                        "password": {"file": str(secret)},
                        "lease": f"{lease:g}s",
                    },
                    "accounts": [
                        {
                            "name": "ww",
                            "provider": "westwallet",
                            "base_url": f"{sim_url}/westwallet",
                            "credentials": {"api_key": WW_KEY, "secret_key": WW_SECRET},
                            "interval": "2s",
                        },
                        {
                            "name": "kr",
                            "provider": "kredswallet",
                            "base_url": f"{sim_url}/kredswallet/api",
                            "credentials": {"api_key": KR_KEY, "api_secret": KR_SECRET},
                            "interval": "2s",
                        },
                    ],
                }
            )
        )
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start the process (again)."""
        with self.log_path.open("a") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "walletwatch", "run", "-c", str(self.config)],
                stdout=log,
                stderr=log,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )

    def signal(self, sig: signal.Signals) -> None:
        """Send ``sig``; the process must be running."""
        assert self.proc is not None
        assert self.proc.poll() is None, f"{self.name} exited by itself ({self.proc.returncode})"
        self.proc.send_signal(sig)
        if sig == signal.SIGKILL:
            self.proc.wait(timeout=10)

    def stop(self) -> None:
        """SIGTERM and wait; it must exit 0."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            assert self.proc.wait(timeout=30) == 0, self.name

    def leader(self) -> float | None:
        """walletwatch_leader from /metrics, or None when it does not answer."""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=1) as resp:
                text = resp.read().decode()
        except (OSError, urllib.error.URLError):
            return None
        match = re.search(r"^walletwatch_leader (\S+)$", text, re.MULTILINE)
        return None if match is None else float(match[1])

    def log_events(self) -> list[str]:
        """The ``event`` of every JSON log line so far."""
        names = []
        for line in self.log_path.read_text().splitlines():
            try:
                names.append(str(json.loads(line).get("event")))
            except ValueError:
                continue
        return names


class Traffic:
    """Deposits and withdrawals made on both accounts, from a thread, until stopped."""

    def __init__(self, sim: Simulator) -> None:
        self.sim = sim
        self.ww_ids: list[int] = []
        self.kr_ids: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._pending: list[int] = []

    def start(self) -> None:
        """Start changing the accounts."""
        self._thread.start()

    def stop(self) -> None:
        """Stop, and settle every transfer still pending."""
        self._stop.set()
        self._thread.join(timeout=10)
        for tx_id in self._pending:
            self.sim.westwallet.set_status(WW_KEY, tx_id, "completed")

    def _run(self) -> None:
        n = 0
        while not self._stop.wait(0.4):
            n += 1
            ww = self.sim.westwallet
            kind = "receive" if n % 2 else "send"
            tx_id = ww.add_transaction(WW_KEY, type=kind, currency="BTC", amount=Decimal(n))
            self.ww_ids.append(tx_id)
            self._pending.append(tx_id)
            if len(self._pending) > 3:  # each stays pending long enough to be seen so, mostly
                ww.set_status(WW_KEY, self._pending.pop(0), "completed")
            if n % 3 == 0:
                self.kr_ids.append(
                    self.sim.kredswallet.add_deposit(KR_KEY, Decimal(n), confirmations=10)
                )


@pytest.fixture(name="sim")
def fixture_sim() -> Iterator[tuple[Simulator, str]]:
    """The simulator at the providers' real limit, with both accounts."""
    sim = Simulator(rate_limit=2.0)
    sim.westwallet.add_account(WW_KEY, WW_SECRET, {"BTC": Decimal(1000)})
    sim.kredswallet.add_account(KR_KEY, KR_SECRET, Decimal(1000))
    with serve_in_thread(sim) as url:
        yield sim, url


def outbox(url: str) -> list[dict[str, object]]:
    """Every event in the shared outbox, in seq order."""
    with psycopg.connect(url, password=PASSWORD) as db:
        rows = db.execute("SELECT body FROM outbox ORDER BY seq").fetchall()
    return [json.loads(body) for (body,) in rows]


def baselined(url: str) -> bool | None:
    """True once both accounts took their baselines (both directions each)."""
    try:
        with psycopg.connect(url, password=PASSWORD) as db:
            rows = db.execute("SELECT state FROM accounts").fetchall()
    except psycopg.Error:
        return None
    done = [len(json.loads(body)["baselined"]) == 2 for (body,) in rows]
    return True if len(done) == 2 and all(done) else None


def test_replicas_under_faults(
    tmp_path: Path, pg_cluster: Cluster, pg_url: str, sim: tuple[Simulator, str]
) -> None:
    """Kills, a pause, a database restart: one leader at a time, each fact once, no 429."""
    simulator, sim_url = sim
    secret = tmp_path / "pg_password"
    secret.write_text(PASSWORD)
    replicas = [Replica(n, tmp_path, pg_url, sim_url, secret) for n in ("a", "b", "c")]
    traffic = Traffic(simulator)
    takeovers: list[float] = []

    def leaders(among: list[Replica]) -> list[Replica]:
        return [r for r in among if r.leader() == 1.0]

    def one_leader(among: list[Replica]) -> Replica | None:
        found = leaders(among)
        return found[0] if len(found) == 1 else None

    try:
        for replica in replicas:
            replica.start()
        first = wait_for(lambda: one_leader(replicas), "a first leader")
        wait_for(lambda: baselined(pg_url), "both accounts' baselines")
        traffic.start()
        time.sleep(2)

        # 1. The leader is SIGKILLed: another takes over within the lease and a second.
        first.signal(signal.SIGKILL)
        killed = time.monotonic()
        rest = [r for r in replicas if r is not first]
        second = wait_for(lambda: one_leader(rest), "a leader after the kill")
        takeovers.append(time.monotonic() - killed)
        first.start()
        time.sleep(2)

        # 2. The leader is paused past its lease, then resumed: it steps down, writes nothing.
        paused_log = len(second.log_events())
        second.signal(signal.SIGSTOP)
        stopped = time.monotonic()
        others = [r for r in replicas if r is not second]
        wait_for(lambda: one_leader(others), "a leader while the old one is paused")
        takeovers.append(time.monotonic() - stopped)
        time.sleep(1)
        second.signal(signal.SIGCONT)
        resumed = time.monotonic()
        wait_for(lambda: True if second.leader() == 0.0 else None, "the paused leader to follow")
        assert time.monotonic() - resumed < 1.5
        after = second.log_events()[paused_log:]
        assert "lease.lost" in after
        time.sleep(1)

        # 3. The database restarts: a leader again afterwards (the same or another).
        pg_cluster.restart()
        wait_until_up(pg_cluster)
        wait_for(lambda: one_leader(replicas), "a leader after the database restart")
        time.sleep(2)

        # 4. A follower is SIGKILLed: the leader goes on.
        leader = wait_for(lambda: one_leader(replicas), "the leader")
        follower = next(r for r in replicas if r is not leader)
        follower.signal(signal.SIGKILL)
        time.sleep(1)
        assert one_leader([r for r in replicas if r is not follower]) is leader

        # The end: no more changes; the leader catches up, every replica stops cleanly.
        traffic.stop()
        expected = 2 * len(traffic.ww_ids) + 2 * len(traffic.kr_ids)

        def caught_up() -> bool | None:
            facts = [e for e in outbox(pg_url) if e["event"] != "balance.changed"]
            transfer_events = [e for e in facts if "transfer_id" in e]
            return True if len(transfer_events) >= expected else None

        wait_for(caught_up, "the leader to catch up")
        time.sleep(1)  # its last deliveries
    finally:
        for replica in replicas:
            if replica.proc is not None and replica.proc.poll() is None:
                try:
                    replica.proc.send_signal(signal.SIGCONT)
                    replica.stop()
                except AssertionError:
                    replica.proc.kill()
                    raise

    events = outbox(pg_url)
    facts = Counter((str(e["event"]), str(e["transfer_id"])) for e in events if "transfer_id" in e)
    assert all(n == 1 for n in facts.values()), [f for f, n in facts.items() if n > 1]
    for tx_id in traffic.ww_ids:
        kinds = {k for k, i in facts if i == str(tx_id)}
        assert len(kinds) == 2, (tx_id, kinds)  # detected and settled, once each
    ids = [str(e["event_id"]) for e in events]
    assert len(ids) == len(set(ids))
    delivered: Counter[str] = Counter()
    for replica in replicas:
        if replica.events.exists():
            for line in replica.events.read_text().splitlines():
                delivered[json.loads(line)["event_id"]] += 1
    assert set(ids) <= set(delivered), "an event of the outbox reached no events file"
    assert set(delivered) <= set(ids), "an events file holds an event the outbox never had"
    assert simulator.requests.count(status=429) == 0
    assert simulator.requests.count(provider="kredswallet", status=400) == 0  # nonce refusals
    assert all(t <= LEASE + 1.0 for t in takeovers), takeovers
    print(f"takeovers (s): {', '.join(f'{t:.2f}' for t in takeovers)}")
