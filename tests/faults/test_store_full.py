"""A state file that can no longer grow: every commit fails, and `up` says so."""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest

from tests.faults.test_state_file_vanished import events, metrics_show, sample
from tests.simthread import serve_in_thread
from tests.test_cli import DEADLINE, KEY, SECRET, free_port, wait_for, write_config
from walletwatch.sim import Simulator

# The daemon with SIGXFSZ ignored: a write past RLIMIT_FSIZE then fails with EFBIG, as a
# write to a full disk fails with ENOSPC, instead of killing the process.
LIMITED = (
    "import signal, sys\n"
    "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
    "from walletwatch.cli import main\n"
    "sys.exit(main(sys.argv[1:]))\n"
)
UNLIMITED = resource.RLIM_INFINITY


@pytest.fixture(name="sim")
def fixture_sim() -> Simulator:
    """A simulator with one funded account."""
    sim = Simulator(rate_limit=100_000)
    sim.westwallet.add_account(KEY, SECRET, {"BTC": Decimal("1.5")})
    return sim


@pytest.fixture(name="sim_url")
def fixture_sim_url(sim: Simulator) -> Iterator[str]:
    """The simulator served from a thread."""
    with serve_in_thread(sim) as url:
        yield url


class TestStoreFull:
    """Fetched but not recorded is a failed poll: up 0, reason store, then recovery."""

    def test_up_is_zero_while_commits_fail(
        self, tmp_path: Path, sim: Simulator, sim_url: str
    ) -> None:
        """With the WAL unable to grow, a deposit's poll fails (store) and up goes 0; then back."""
        port = free_port()
        config = write_config(tmp_path, sim_url, listen=f"127.0.0.1:{port}")
        wal, events_file = tmp_path / "state.db-wal", tmp_path / "events.jsonl"
        proc = subprocess.Popen(
            [sys.executable, "-c", LIMITED, "run", "-c", str(config)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        try:
            metrics_show(port, walletwatch_up=1.0)
            # No file may grow any more: the next commit needs WAL frames past the limit.
            size = wal.stat().st_size
            resource.prlimit(proc.pid, resource.RLIMIT_FSIZE, (size, UNLIMITED))
            sim.westwallet.add_transaction(
                KEY, type="receive", currency="BTC", amount=Decimal(2), status="completed"
            )
            body = wait_for(
                f"http://127.0.0.1:{port}/metrics",
                lambda b: (sample(b, "walletwatch_poll_errors_total", reason="store") or 0) > 1,
            )
            assert sample(body, "walletwatch_up") == 0.0
            assert (sample(body, "walletwatch_store_errors_total") or 0) > 1
            assert "deposit.detected" not in events(events_file)
            resource.prlimit(proc.pid, resource.RLIMIT_FSIZE, (UNLIMITED, UNLIMITED))
            metrics_show(port, walletwatch_up=1.0)
            wait_for(
                f"http://127.0.0.1:{port}/metrics",
                lambda _: events(events_file).count("deposit.detected") == 1,
            )
        finally:
            proc.send_signal(signal.SIGTERM)
            out, err = proc.communicate(timeout=DEADLINE)
        assert proc.returncode == 0, err
        assert events(events_file).count("deposit.detected") == 1
        logged = [json.loads(line) for line in out.splitlines()]
        failed = [e for e in logged if e["event"] == "store.commit_failed"]
        assert [e["level"] for e in failed] == ["error"]  # once, on the transition
        assert "full" in failed[0]["error"] or "disk" in failed[0]["error"]
        polls = [e for e in logged if e["event"] == "poll.failed"]
        assert {e["reason"] for e in polls} == {"store"}
        assert [e["event"] for e in logged].count("store.commit_recovered") == 1
