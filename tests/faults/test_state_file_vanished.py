"""A state file removed or replaced under a running daemon is noticed, reported, not written."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.simthread import serve_in_thread
from tests.test_cli import DEADLINE, KEY, SECRET, free_port, wait_for, write_config
from walletwatch.sim import Simulator
from walletwatch.store import StateFileLost, Store
from walletwatch.tracker import AccountState

COMPANIONS = ("", "-wal", "-shm")


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


def run(config: Path) -> subprocess.Popen[str]:
    """walletwatch run as a child process."""
    return subprocess.Popen(
        [sys.executable, "-m", "walletwatch", "run", "-c", str(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


def sample(body: str, name: str, **labels: str) -> float | None:
    """The value of one sample of a /metrics body, None when absent."""
    for family in text_string_to_metric_families(body):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return float(s.value)
    return None


def metrics_show(port: int, **expected: float) -> str:
    """Wait until /metrics shows every ``name=value`` given (account labels implied)."""

    def shows(body: str) -> bool:
        return all(sample(body, name) == value for name, value in expected.items())

    return wait_for(f"http://127.0.0.1:{port}/metrics", shows)


def move(state: Path, suffix_from: str, suffix_to: str) -> None:
    """Rename the state file and its companions (a real rename: the inode stays)."""
    for companion in COMPANIONS:
        source = state.with_name(state.name + suffix_from + companion)
        if source.exists():
            source.rename(state.with_name(state.name + suffix_to + companion))


def events(path: Path) -> list[str]:
    """The names of the events in the events file."""
    if not path.exists():
        return []
    return [json.loads(line)["event"] for line in path.read_text().splitlines()]


class TestVanishedUnderTheDaemon:
    """The daemon notices within an interval, reports it, commits nothing, and recovers."""

    def test_renamed_away_and_back(self, tmp_path: Path, sim: Simulator, sim_url: str) -> None:
        """Away: state_file_ok 0, up 0, polls fail with reason store, no event; back: all kept."""
        port = free_port()
        config = write_config(tmp_path, sim_url, listen=f"127.0.0.1:{port}")
        state, events_file = tmp_path / "state.db", tmp_path / "events.jsonl"
        proc = run(config)
        try:
            metrics_show(port, walletwatch_up=1.0, walletwatch_state_file_ok=1.0)
            move(state, "", ".moved")
            gone = time.monotonic()
            metrics_show(port, walletwatch_up=0.0, walletwatch_state_file_ok=0.0)
            noticed = time.monotonic() - gone
            sim.westwallet.add_transaction(
                KEY, type="receive", currency="BTC", amount=Decimal(2), status="completed"
            )
            body = wait_for(
                f"http://127.0.0.1:{port}/metrics",
                lambda b: (sample(b, "walletwatch_poll_errors_total", reason="store") or 0) > 0,
            )
            assert (sample(body, "walletwatch_store_errors_total") or 0) > 0
            assert "deposit.detected" not in events(events_file)  # nothing went to the orphan
            move(state, ".moved", "")
            metrics_show(port, walletwatch_up=1.0, walletwatch_state_file_ok=1.0)
            wait_for(
                f"http://127.0.0.1:{port}/metrics",
                lambda _: events(events_file).count("deposit.detected") == 1,
            )
        finally:
            proc.send_signal(signal.SIGTERM)
            out, err = proc.communicate(timeout=DEADLINE)
        assert proc.returncode == 0, err
        assert noticed < 3.0  # the interval is 1s; the scrape loop polls every 0.1s
        assert events(events_file).count("deposit.detected") == 1
        assert events(events_file).count("deposit.confirmed") == 1
        logged = [json.loads(line) for line in out.splitlines()]
        lost = [e for e in logged if e["event"] == "store.file_lost"]
        assert [(e["level"], e["path"]) for e in lost] == [("error", str(state))]
        assert [e["event"] for e in logged].count("store.file_recovered") == 1

    def test_deleted_file_is_reported_and_the_next_start_warns(
        self, tmp_path: Path, sim_url: str
    ) -> None:
        """Unlinked: up 0; the next start creates a file and warns what a new baseline means."""
        port = free_port()
        config = write_config(tmp_path, sim_url, listen=f"127.0.0.1:{port}")
        state = tmp_path / "state.db"
        proc = run(config)
        try:
            metrics_show(port, walletwatch_up=1.0, walletwatch_state_file_ok=1.0)
            for companion in COMPANIONS:
                state.with_name(state.name + companion).unlink(missing_ok=True)
            metrics_show(port, walletwatch_up=0.0, walletwatch_state_file_ok=0.0)
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.communicate(timeout=DEADLINE)
        assert not state.exists()  # the stop did not write to a new file either
        port = free_port()
        proc = run(write_config(tmp_path, sim_url, listen=f"127.0.0.1:{port}"))
        try:
            metrics_show(port, walletwatch_up=1.0, walletwatch_state_file_ok=1.0)
        finally:
            proc.send_signal(signal.SIGTERM)
            out, _ = proc.communicate(timeout=DEADLINE)
        logged = [json.loads(line) for line in out.splitlines()]
        (created,) = [e for e in logged if e["event"] == "store.created"]
        assert (created["level"], created["path"]) == ("warning", str(state))
        assert "baseline" in created["note"]
        assert "not announced" in created["note"]


class TestStoreRefusesOrphans:
    """The Store commits nothing once its path names another file, and resumes on the same one."""

    def test_commit_refused_while_renamed_and_resumed_after(self, tmp_path: Path) -> None:
        """StateFileLost while away; nothing written to the moved file; commits after it is back."""
        state = tmp_path / "state.db"
        store = Store(state)
        try:
            state.rename(tmp_path / "moved.db")
            with pytest.raises(StateFileLost, match="was removed"):
                store.commit("acct", "westwallet", AccountState(), AccountState(), ())
            (tmp_path / "other.db").write_bytes(b"")
            (tmp_path / "other.db").rename(state)
            with pytest.raises(StateFileLost, match="replaced"):
                store.commit("acct", "westwallet", AccountState(), AccountState(), ())
            (tmp_path / "moved.db").rename(state)
            store.commit("acct", "westwallet", AccountState(), AccountState(), ())
            assert store.load().keys() == {"acct"}
        finally:
            store.close()
