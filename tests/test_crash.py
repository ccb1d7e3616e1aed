"""Crash test: `walletwatch run` killed with SIGKILL at random moments, restarted each time.

The simulator (WestWallet) runs in this process; the daemon runs as a child process polling
it every second, with an events file and a webhook sink pointed at a receiver here. The test
kills the daemon KILLS times (MODES): right after the simulator answered one of its requests
(mid-poll: the answer is being folded in or committed), right after the state file's WAL grew
(mid-commit, or just after one), right after the events file grew (between a delivery and
the cursor move that records it), during start-up, and at a random moment after it caught
up. Between kills, while the daemon is down and while it runs, the test changes the account:
deposits arrive and confirm, withdrawals are created and move through statuses, the USDT
balance crosses its low threshold both ways, withdrawals and a deposit become or arrive
stuck. A last clean run catches up and stops on SIGTERM; then the events file is compared
with the ground truth. The webhook receiver answers 503 during about a third of the runs.

Ground truth, precisely. The test keeps, per transfer and for the USDT balance, the sequence
of *observable* values: the values the account held at moments the daemon could poll. A
change made while the daemon is down and changed again before it next runs is superseded
(never observable: a poller cannot see it). The test changes a value again only after the
events file shows the previous one, or within one down period; so every observable value is
seen by some successful poll, and the expected events are a function of these sequences:

- a transfer created after the baseline: one ``*.detected`` carrying its first observable
  status; a deposit: one ``deposit.confirmed`` if it completed; a withdrawal: one
  ``withdrawal.status_changed`` per later observable in-flight status, in order, and one
  ``withdrawal.completed`` if it completed (also when it was first seen completed);
- the baseline (history before the first poll, including a pending withdrawal and deposit
  already past their thresholds): no transfer events, but one ``*.stuck`` each;
- a transfer created past its threshold, or one that crosses it while pending: one
  ``*.stuck`` (they stay in flight to the end; every other transfer settles or is younger
  than its threshold, so gets none);
- USDT (threshold 1000): one ``balance.changed`` per observable change, one ``balance.low``
  per observable downward crossing and one ``balance.recovered`` per upward one; ETH starts
  under its threshold: one ``balance.low``, at the first poll;
- BTC moves with the transfers: its ``balance.changed`` events form one unbroken chain
  (each previous_amount is the amount before) ending at the final balance;
- nothing else: no ``account.down``, no event not listed above, no event_id twice.

A line cut by a kill in the middle of a write is cut off at the next start and written again
whole, so the file holds whole lines only. The webhook receiver must end with every event
of the file, first receipts in file order; repeats (at-least-once) are counted, not refused.
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.simthread import serve_in_thread
from walletwatch.sim import Simulator

SEED = 20261121
KEY, SECRET = "crash-key", "crash-secret"
HOOK_SECRET = "crash-hook-secret"
LOW = {"USDT": Decimal(1000), "ETH": Decimal(5)}
HOUR = 3600.0
WAIT = 20.0  # the longest any one wait for the daemon may take before the test fails
FAST = 0.0002  # seconds between looks when a kill must follow a moment closely
NUDGE = 0.5  # seconds without a commit before the test gives a caught-up daemon a change
# How many cycles pick each moment to kill (KILLS in all), in a seeded random order.
MODES = {"startup": 4, "poll": 6, "commit": 6, "deliver": 4, "settled": 4}
KILLS = sum(MODES.values())
IN_FLIGHT = ("pending", "processing", "sending")


@dataclass
class Tx:
    """One simulated transfer and its observable status sequence."""

    id: int
    kind: str  # deposit | withdrawal
    statuses: list[str]  # observable, in order
    baseline: bool = False
    stuck: bool = False  # expected to be announced stuck (and left in flight)
    superseded: list[str] = field(default_factory=list)

    @property
    def final(self) -> bool:
        """Completed: nothing more happens to it."""
        return self.statuses[-1] == "completed"

    def expected(self) -> list[tuple[str, str]]:
        """(event, status) of every transfer event its observable statuses give, in order."""
        if self.baseline:
            return []
        first = self.statuses[0]
        out = [(f"{self.kind}.detected", first)]
        if first == "completed":
            out.append(
                (f"{self.kind}.{'confirmed' if self.kind == 'deposit' else 'completed'}", first)
            )
        for status in self.statuses[1:]:
            if status == "completed":
                name = "deposit.confirmed" if self.kind == "deposit" else "withdrawal.completed"
            else:
                name = "withdrawal.status_changed"
            out.append((name, status))
        return out


class Truth:
    """Everything the test did to the account, and what the daemon should make of it."""

    def __init__(self) -> None:
        self.txs: dict[int, Tx] = {}
        self.usdt = [Decimal(5000)]  # observable values, the first is the baseline
        self.usdt_superseded: list[Decimal] = []

    def low_events(self) -> list[str]:
        """balance.low / balance.recovered for USDT, in order."""
        out, low = [], False
        for value in self.usdt:
            now_low = value < LOW["USDT"]
            if now_low != low:
                out.append("balance.low" if now_low else "balance.recovered")
            low = now_low
        return out


class Control:
    """Drives the simulator through its control endpoints, so changes run on its own loop."""

    def __init__(self, base: str) -> None:
        self.base = f"{base}/_sim/westwallet"

    def _call(self, method: str, path: str, body: dict[str, Any]) -> Any:
        request = urllib.request.Request(  # noqa: S310 - loopback only
            self.base + path,
            data=json.dumps(body).encode(),
            method=method,
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10) as resp:  # noqa: S310
            return json.loads(resp.read())

    def add(self, kind: str, amount: str, status: str, created_at: float | None = None) -> int:
        """Add a transaction; its id."""
        body: dict[str, Any] = {
            "type": "receive" if kind == "deposit" else "send",
            "currency": "BTC",
            "amount": amount,
            "status": status,
        }
        if created_at is not None:
            body["created_at"] = created_at
        return int(self._call("POST", f"/{KEY}/transactions", body)["id"])

    def status(self, tx_id: int, status: str) -> None:
        """Move a transaction to a status."""
        self._call("POST", f"/{KEY}/transactions/{tx_id}", {"status": status})

    def usdt(self, amount: Decimal) -> None:
        """Set the USDT balance."""
        self._call("PUT", f"/{KEY}/balances", {"USDT": str(amount)})


class Receiver(ThreadingHTTPServer):
    """A webhook receiver on a thread: answers 503 while ``failing``, records what it took."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Hook)
        self.failing = False
        self.accepted: list[str] = []
        self.refused = 0
        self.bad_signatures = 0
        self.lock = threading.Lock()


class _Hook(BaseHTTPRequestHandler):
    server: Receiver

    def do_POST(self) -> None:
        raw = self.rfile.read(int(self.headers["Content-Length"]))
        expected = hmac.new(HOOK_SECRET.encode(), raw, hashlib.sha256).hexdigest()
        with self.server.lock:
            if self.headers["X-Walletwatch-Signature"] != f"sha256={expected}":
                self.server.bad_signatures += 1
            failing = self.server.failing
            if failing:
                self.server.refused += 1
            else:
                self.server.accepted.append(json.loads(raw)["event_id"])
        self.send_response(503 if failing else 200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base's name
        """Quiet."""


@dataclass
class Seen:
    """The events file, parsed."""

    events: list[dict[str, Any]]
    fragments: list[str]

    def transfer_events(self, kind: str, tx_id: int) -> list[tuple[str, str]]:
        """(event, status) of the non-stuck events of one transfer, in file order."""
        return [
            (e["event"], e["status"])
            for e in self.events
            if e["event"].startswith(kind + ".")
            and e["event"] != f"{kind}.stuck"
            and e.get("transfer_id") == str(tx_id)
        ]

    def named(self, name: str, **match: str) -> list[dict[str, Any]]:
        """Events of one name whose fields match."""
        return [
            e
            for e in self.events
            if e["event"] == name and all(e.get(k) == v for k, v in match.items())
        ]


def read_events(path: Path) -> Seen:
    """Every complete event line, and the fragments a kill left."""
    if not path.exists():
        return Seen([], [])
    events, fragments = [], []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            events.append(json.loads(line))
        except ValueError:
            fragments.append(line)
    return Seen(events, fragments)


def wait(
    predicate: Callable[[], bool], what: str, deadline: float = WAIT, step: float = 0.005
) -> None:
    """Poll until predicate() holds (a real child process: there is no clock to fake)."""
    end = time.monotonic() + deadline
    while not predicate():
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(step)


class Crash:
    """The daemon, the simulator, the receiver and the record of what was done to them."""

    def __init__(self, tmp_path: Path, sim: Simulator, sim_url: str, receiver: Receiver) -> None:
        self.tmp = tmp_path
        self.sim = sim
        self.control = Control(sim_url)
        self.receiver = receiver
        self.rng = random.Random(SEED)
        self.truth = Truth()
        self.events_file = tmp_path / "events.jsonl"
        self.wal = tmp_path / "state.db-wal"
        self.log = (tmp_path / "daemon.log").open("a", encoding="utf-8")
        self.kills: Counter[str] = Counter()
        self.config = tmp_path / "config.yaml"
        self.config.write_text(
            yaml.safe_dump(
                {
                    "listen": "127.0.0.1:0",
                    "state_path": "state.db",
                    "events_file": "events.jsonl",
                    "log_format": "json",
                    "providers": {"westwallet": {"rate_limit": 1000}},
                    "accounts": [
                        {
                            "name": "hot",
                            "provider": "westwallet",
                            "base_url": f"{sim_url}/westwallet",
                            "credentials": {"api_key": KEY, "secret_key": SECRET},
                            "interval": "1s",
                            "low_balance": {c: str(v) for c, v in LOW.items()},
                            "withdrawal_stuck_after": "1h",
                            "deposit_stuck_after": "6h",
                        }
                    ],
                    "sinks": [
                        {
                            "type": "webhook",
                            "name": "hook",
                            "url": f"http://127.0.0.1:{receiver.server_address[1]}/hook",
                            "secret": HOOK_SECRET,
                            "timeout": "2s",
                        }
                    ],
                }
            )
        )
        self.late_stuck_made = False
        self.old_stuck_made = False

    # -- the daemon ----------------------------------------------------------------------------

    def spawn(self) -> subprocess.Popen[bytes]:
        """Start `walletwatch run`."""
        return subprocess.Popen(
            [sys.executable, "-m", "walletwatch", "run", "-c", str(self.config)],
            stdout=self.log,
            stderr=self.log,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )

    def kill(self, proc: subprocess.Popen[bytes], mode: str) -> None:
        """SIGKILL; the daemon must not have exited on its own before."""
        assert proc.poll() is None, f"the daemon exited by itself ({proc.returncode})"
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=WAIT)
        self.kills[mode] += 1

    def requests(self) -> int:
        """Answers the simulator has given so far."""
        while True:
            try:
                return self.sim.requests.count(provider="westwallet")
            except RuntimeError:  # its thread added a counter key while we summed
                continue

    def wal_state(self) -> tuple[int, int]:
        """Size and mtime of the WAL file (0, 0 when there is none)."""
        try:
            stat = self.wal.stat()
        except FileNotFoundError:
            return (0, 0)
        return (stat.st_size, stat.st_mtime_ns)

    # -- what the file shows -------------------------------------------------------------------

    def seen(self) -> Seen:
        """The events file now."""
        return read_events(self.events_file)

    def observed(self, tx: Tx, seen: Seen) -> bool:
        """The file shows the transfer's latest observable status (or it is baseline)."""
        actual, expected = seen.transfer_events(tx.kind, tx.id), tx.expected()
        if actual != expected[: len(actual)]:  # fail now rather than wait in vain
            raise AssertionError(f"{tx}: the file shows {actual}")
        return actual == expected

    def usdt_observed(self, seen: Seen) -> bool:
        """The file shows the latest observable USDT balance."""
        changes = [Decimal(e["amount"]) for e in seen.named("balance.changed", currency="USDT")]
        expected = self.truth.usdt[1:]
        if changes != expected[: len(changes)]:
            raise AssertionError(f"USDT: the file shows {changes}, expected {expected}")
        return changes == expected

    def baselined(self, seen: Seen) -> bool:
        """Every endpoint's first poll is committed: its start-up conditions are announced."""
        return bool(
            seen.named("withdrawal.stuck", transfer_id=str(self.w0))
            and seen.named("deposit.stuck", transfer_id=str(self.d0))
            and seen.named("balance.low", currency="ETH")
        )

    def caught_up(self) -> bool:
        """The file shows every observable value and every expected stuck event."""
        seen = self.seen()
        return (
            self.baselined(seen)
            and all(self.observed(tx, seen) for tx in self.truth.txs.values())
            and self.usdt_observed(seen)
        )

    # -- changes -------------------------------------------------------------------------------

    def setup(self) -> None:
        """The history before the first poll: the baseline."""
        ww = self.sim.westwallet
        ww.add_account(KEY, SECRET, {"BTC": Decimal(100), "USDT": Decimal(5000), "ETH": Decimal(1)})
        now = time.time()
        for n in range(3):
            tx_id = ww.add_transaction(
                KEY,
                type="receive",
                currency="BTC",
                amount=Decimal(n + 1),
                status="completed",
                created_at=now - 86400,
            )
            self.truth.txs[tx_id] = Tx(tx_id, "deposit", ["completed"], baseline=True)
        self.w0 = ww.add_transaction(
            KEY, type="send", currency="BTC", amount=Decimal(1), created_at=now - 2 * HOUR
        )
        self.d0 = ww.add_transaction(
            KEY, type="receive", currency="BTC", amount=Decimal(1), created_at=now - 7 * HOUR
        )
        for tx_id, kind in ((self.w0, "withdrawal"), (self.d0, "deposit")):
            self.truth.txs[tx_id] = Tx(tx_id, kind, ["pending"], baseline=True, stuck=True)

    def mutate(self, down: bool, budget: int) -> None:
        """Make up to ``budget`` changes, as a down period (may supersede) or a running one."""
        seen = self.seen()
        if not self.baselined(seen):
            return
        touched: set[int] = set()  # changed in this period
        added: set[int] = set()  # their last observable status was set in this period
        usdt_touched = usdt_added = False
        rng = self.rng
        for _ in range(budget):
            roll = rng.random()
            if not self.late_stuck_made:
                # Pending for 1h less 10 s: it crosses its threshold while the test runs.
                late = time.time() - HOUR + 10
                self.create("withdrawal", "pending", touched, added, late, stuck=True)
                self.late_stuck_made = True
            elif down and not self.old_stuck_made and rng.random() < 0.3:
                old = time.time() - 2 * HOUR
                self.create("withdrawal", "pending", touched, added, old, stuck=True)
                self.create("deposit", "pending", touched, added, old - 5 * HOUR, stuck=True)
                self.old_stuck_made = True
            elif roll < 0.25:
                status = rng.choice(["pending", "pending", "completed"])
                self.create("deposit", status, touched, added)
            elif roll < 0.45:
                status = rng.choice(["pending", "pending", "processing", "completed"])
                self.create("withdrawal", status, touched, added)
            elif roll < 0.85:
                movable = [
                    tx
                    for tx in self.truth.txs.values()
                    if not tx.baseline
                    and not tx.stuck
                    and not tx.final
                    and (
                        (tx.id in touched and down)
                        or (tx.id not in touched and self.observed(tx, seen))
                    )
                ]
                if movable:
                    tx = rng.choice(movable)
                    if tx.kind == "deposit":
                        target = "completed"
                    else:
                        choices = [s for s in (*IN_FLIGHT, "completed") if s != tx.statuses[-1]]
                        target = rng.choice(choices)
                    self.move(tx, target, touched, added)
            elif (down and usdt_touched) or (not usdt_touched and self.usdt_observed(seen)):
                value = Decimal(rng.choice([300, 700, 950, 1200, 2500, 4000]))
                if usdt_added:  # set earlier in this down period: never observable
                    self.truth.usdt_superseded.append(self.truth.usdt.pop())
                usdt_added = value != self.truth.usdt[-1]
                if usdt_added:
                    self.truth.usdt.append(value)
                self.control.usdt(value)
                usdt_touched = True

    def create(
        self,
        kind: str,
        status: str,
        touched: set[int],
        added: set[int],
        created_at: float | None = None,
        *,
        stuck: bool = False,
    ) -> None:
        """A new transfer."""
        amount = f"0.{self.rng.randint(1, 99):02d}"
        tx_id = self.control.add(kind, amount, status, created_at)
        self.truth.txs[tx_id] = Tx(tx_id, kind, [status], stuck=stuck)
        touched.add(tx_id)
        added.add(tx_id)

    def move(self, tx: Tx, status: str, touched: set[int], added: set[int]) -> None:
        """A status change; one made earlier in the same down period is superseded by it."""
        if tx.id in added:
            tx.superseded.append(tx.statuses.pop())
            added.discard(tx.id)
        if not tx.statuses or tx.statuses[-1] != status:
            tx.statuses.append(status)
            added.add(tx.id)
        self.control.status(tx.id, status)
        touched.add(tx.id)

    # -- one kill --------------------------------------------------------------------------------

    def cycle(self, mode: str) -> None:
        """Change things while down, start the daemon, and kill it at the ``mode`` moment."""
        rng = self.rng
        self.mutate(down=True, budget=rng.randint(2, 4))
        self.receiver.failing = rng.random() < 0.35
        if mode == "deliver" and self.caught_up():
            mode = "commit"  # nothing new will be written to the file
        proc = self.spawn()
        try:
            if mode == "startup":  # importing, opening or migrating the store, first polls
                time.sleep(rng.uniform(0.05, 0.7))
            elif mode == "poll":  # just after the simulator answered: mid-poll, pre-commit
                target = self.requests() + rng.randint(1, 4)
                wait(lambda: self.requests() >= target, "a request", step=FAST)
                time.sleep(rng.uniform(0.0, 0.004))
            elif mode == "commit":  # just after the WAL grew: a commit or a cursor move
                for _ in range(rng.randint(1, 3)):
                    self.await_commit()
            elif mode == "deliver":  # just after the events file grew, before its cursor moved
                size = self.file_size()
                wait(lambda: self.file_size() != size, "a delivery", step=FAST)
            else:  # caught up, then changed while running, then a random moment
                wait(self.caught_up, "the daemon to catch up")
                self.mutate(down=False, budget=rng.randint(1, 3))
                time.sleep(rng.uniform(0.1, 1.2))
        except BaseException:
            proc.kill()
            proc.wait()
            raise
        self.kill(proc, mode)

    def finish(self) -> None:
        """A clean last run: change things, catch up, deliver everything, stop with SIGTERM."""
        self.mutate(down=True, budget=3)
        self.receiver.failing = False
        proc = self.spawn()
        try:
            wait(self.caught_up, "the final catch-up", deadline=40.0)
            wait(self.stuck_announced, "the stuck events")
            wait(self.btc_settled, "the final BTC balance")
            file_ids = {e["event_id"] for e in self.seen().events}
            wait(lambda: set(self.receiver.accepted) >= file_ids, "the webhook to catch up")
        finally:
            proc.send_signal(signal.SIGTERM)
            code = proc.wait(timeout=WAIT)
        assert code == 0

    def file_size(self) -> int:
        """The events file's size (0 before it exists)."""
        try:
            return self.events_file.stat().st_size
        except FileNotFoundError:
            return 0

    def await_commit(self) -> None:
        """Return as soon as the WAL file changes.

        A poll that sees nothing new commits nothing: once the daemon has caught up, the test
        makes a change (as it may while the daemon runs) for the next poll to commit.
        """
        before = self.wal_state()
        end = time.monotonic() + WAIT
        nudge = time.monotonic() + NUDGE
        while self.wal_state() == before:
            now = time.monotonic()
            if now > end:
                raise AssertionError("timed out waiting for a commit")
            if now > nudge:
                if self.caught_up():
                    self.mutate(down=False, budget=1)
                nudge = now + NUDGE
            time.sleep(FAST)

    def stuck_announced(self) -> bool:
        """Every transfer expected stuck has its stuck event."""
        seen = self.seen()
        return all(
            seen.named(f"{tx.kind}.stuck", transfer_id=str(tx.id))
            for tx in self.truth.txs.values()
            if tx.stuck
        )

    def btc_settled(self) -> bool:
        """The last BTC balance.changed shows the simulator's balance."""
        changes = self.seen().named("balance.changed", currency="BTC")
        final = self.sim.westwallet.balance(KEY, "BTC")
        return bool(changes) and Decimal(changes[-1]["amount"]) == final


@pytest.fixture(name="crash")
def fixture_crash(tmp_path: Path) -> Iterator[Crash]:
    """Simulator and receiver on loopback threads, and the test's record."""
    sim = Simulator(rate_limit=100_000)
    receiver = Receiver()
    thread = threading.Thread(target=receiver.serve_forever, daemon=True)
    thread.start()
    crash: Crash | None = None
    try:
        with serve_in_thread(sim) as url:
            crash = Crash(tmp_path, sim, url, receiver)
            crash.setup()
            yield crash
    finally:
        receiver.shutdown()
        receiver.server_close()
        if crash is not None:
            crash.log.close()


def test_sigkill_anywhere_loses_and_repeats_nothing(crash: Crash) -> None:
    """After KILLS random SIGKILLs, the events file holds every fact once and nothing else."""
    started = time.monotonic()
    schedule = [mode for mode, count in MODES.items() for _ in range(count)]
    crash.rng.shuffle(schedule)
    for mode in schedule:
        crash.cycle(mode)
    crash.finish()
    elapsed = time.monotonic() - started

    seen = crash.seen()
    truth = crash.truth
    ids = [e["event_id"] for e in seen.events]
    assert len(ids) == len(set(ids)), "an event_id appears twice"
    assert not seen.fragments, "a write cut by a kill stayed in the events file"

    facts = 0
    for tx in truth.txs.values():
        assert seen.transfer_events(tx.kind, tx.id) == tx.expected(), tx
        stuck = seen.named(f"{tx.kind}.stuck", transfer_id=str(tx.id))
        assert len(stuck) == (1 if tx.stuck else 0), tx
        facts += len(tx.expected()) + tx.stuck

    usdt = [Decimal(e["amount"]) for e in seen.named("balance.changed", currency="USDT")]
    assert usdt == truth.usdt[1:]
    crossings = [
        e["event"]
        for e in seen.events
        if e["event"] in ("balance.low", "balance.recovered") and e["currency"] == "USDT"
    ]
    assert crossings == truth.low_events()
    assert [e["currency"] for e in seen.named("balance.low")].count("ETH") == 1
    facts += len(usdt) + len(crossings) + 1

    btc = seen.named("balance.changed", currency="BTC")
    for before, after in itertools.pairwise(btc):
        assert after["previous_amount"] == before["amount"]
    assert Decimal(btc[-1]["amount"]) == crash.sim.westwallet.balance(KEY, "BTC")
    facts += len(btc)

    transfer_kinds = {
        f"{d}.{n}"
        for d in ("deposit", "withdrawal")
        for n in ("detected", "confirmed", "status_changed", "completed", "stuck")
    }
    allowed = transfer_kinds | {"balance.changed", "balance.low", "balance.recovered"}
    assert {e["event"] for e in seen.events} <= allowed  # no account.down, nothing invented
    mentioned = {e["transfer_id"] for e in seen.events if "transfer_id" in e}
    assert mentioned <= {str(tx_id) for tx_id in truth.txs}

    crash.log.flush()
    log = (crash.tmp / "daemon.log").read_text(encoding="utf-8", errors="replace")
    assert "Traceback" not in log
    assert not [line for line in log.splitlines() if '"level": "error"' in line]

    receiver = crash.receiver
    assert receiver.bad_signatures == 0
    first_receipts = list(dict.fromkeys(receiver.accepted))
    assert first_receipts == ids  # every event, first receipts in file order

    superseded = sum(len(tx.superseded) for tx in truth.txs.values()) + len(truth.usdt_superseded)
    assert sum(crash.kills.values()) == KILLS >= 20
    assert crash.kills["poll"] >= 1
    assert crash.kills["commit"] >= 1
    assert elapsed < 100
    print(  # quoted in the change's closing note
        f"\ncrash test: {sum(crash.kills.values())} kills {dict(crash.kills)}, "
        f"{len(seen.events)} events, {facts} facts checked "
        f"({len(truth.txs)} transfers, {superseded} superseded changes), "
        f"webhook {len(receiver.accepted)} deliveries "
        f"({len(receiver.accepted) - len(ids)} repeats, {receiver.refused} answered 503); "
        f"{elapsed:.1f}s"
    )
