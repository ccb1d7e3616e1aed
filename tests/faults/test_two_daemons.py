"""Two daemons on one state: the second `walletwatch run` is refused and touches nothing."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest

from tests.simthread import serve_in_thread
from tests.test_cli import DEADLINE, KEY, SECRET, free_port, wait_for, write_config
from walletwatch.sim import Simulator
from walletwatch.store import StateLocked, Store


@pytest.fixture(name="sim_url")
def fixture_sim_url() -> Iterator[str]:
    """A simulator with one funded account, served from a thread."""
    sim = Simulator(rate_limit=100_000)
    sim.westwallet.add_account(KEY, SECRET, {"BTC": Decimal("1.5")})
    with serve_in_thread(sim) as url:
        yield url


def run(config: Path, *extra: str) -> subprocess.Popen[str]:
    """walletwatch run as a child process."""
    return subprocess.Popen(
        [sys.executable, "-m", "walletwatch", "run", "-c", str(config), *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


def config_in(directory: Path, sim_url: str, state: Path, port: int) -> Path:
    """A config of its own in ``directory``, differing from the others only in ``listen``."""
    directory.mkdir()
    return write_config(
        directory, sim_url, listen=f"127.0.0.1:{port}", state_path=str(state), events_file=None
    )


def snapshot(directory: Path) -> dict[str, bytes]:
    """Every file of the state's directory but the database pages a running daemon writes."""
    return {
        p.name: p.read_bytes() if p.name.endswith(".lock") else b""
        for p in sorted(directory.iterdir())
    }


class TestSecondDaemon:
    """A running daemon holds its state; another `run` on it exits 1 and changes nothing."""

    def test_second_run_is_refused_naming_file_and_holder(
        self, tmp_path: Path, sim_url: str
    ) -> None:
        """Exit 1, one line naming the state file and the first daemon's pid, no new files."""
        state_dir = tmp_path / "state"
        state_dir.mkdir()
        state = state_dir / "state.db"
        port = free_port()
        first = run(config_in(tmp_path / "a", sim_url, state, port))
        try:
            wait_for(f"http://127.0.0.1:{port}/readyz")
            before = snapshot(state_dir)
            second_port = free_port()
            second = run(config_in(tmp_path / "b", sim_url, state, second_port))
            out, err = second.communicate(timeout=DEADLINE)
            assert second.returncode == 1
            assert "Traceback" not in err
            (line,) = err.splitlines()
            assert line.startswith(f"walletwatch: {state}: in use by another walletwatch (pid ")
            assert f"pid {first.pid} on " in line
            assert snapshot(state_dir) == before
            logged = [json.loads(text) for text in out.splitlines()]
            assert [(e["event"], e["level"]) for e in logged] == [("store.locked", "error")]
            assert first.poll() is None
        finally:
            first.send_signal(signal.SIGTERM)
            first.communicate(timeout=DEADLINE)
        assert first.returncode == 0

    def test_reset_state_is_refused_while_held(self, tmp_path: Path, sim_url: str) -> None:
        """--reset-state does not move the state from under a running daemon."""
        state = tmp_path / "state.db"
        port = free_port()
        first = run(config_in(tmp_path / "a", sim_url, state, port))
        try:
            wait_for(f"http://127.0.0.1:{port}/readyz")
            second = run(config_in(tmp_path / "b", sim_url, state, free_port()), "--reset-state")
            _, err = second.communicate(timeout=DEADLINE)
            assert second.returncode == 1
            assert len(err.splitlines()) == 1
            assert f"pid {first.pid} on " in err
            assert state.exists()
            assert list(tmp_path.glob("state.db.reset-*")) == []
        finally:
            first.send_signal(signal.SIGTERM)
            first.communicate(timeout=DEADLINE)

    def test_killed_holder_leaves_no_stale_lock(self, tmp_path: Path, sim_url: str) -> None:
        """After SIGKILL of the holder, the next daemon starts and names itself the holder."""
        state = tmp_path / "state.db"
        port = free_port()
        first = run(config_in(tmp_path / "a", sim_url, state, port))
        try:
            wait_for(f"http://127.0.0.1:{port}/readyz")
        finally:
            first.kill()
            first.communicate(timeout=DEADLINE)
        assert first.returncode == -signal.SIGKILL
        port = free_port()
        second = run(config_in(tmp_path / "b", sim_url, state, port))
        try:
            wait_for(f"http://127.0.0.1:{port}/readyz")
            holder = (tmp_path / "state.db.lock").read_text()
            assert holder.startswith(f"pid {second.pid} on ")
        finally:
            second.send_signal(signal.SIGTERM)
            _, err = second.communicate(timeout=DEADLINE)
        assert second.returncode == 0, err


class TestStoreLock:
    """The lock is the Store's: two Stores on one path cannot be open at once."""

    def test_second_store_is_refused_until_the_first_closes(self, tmp_path: Path) -> None:
        """A second Store raises StateLocked naming this process; after close() it opens."""
        first = Store(tmp_path / "state.db")
        with pytest.raises(StateLocked, match=f"pid {os.getpid()} on "):
            Store(tmp_path / "state.db")
        first.close()
        Store(tmp_path / "state.db").close()

    def test_memory_state_takes_no_lock(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """`walletwatch once`'s in-memory state needs no file and leaves none."""
        monkeypatch.chdir(tmp_path)
        Store(Path(":memory:")).close()
        assert list(tmp_path.iterdir()) == []
