"""`walletwatch run` and its state file: refused when untrustworthy, reset only when asked."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest

from tests.simthread import serve_in_thread
from tests.test_cli import DEADLINE, KEY, SECRET, free_port, wait_for, write_config
from walletwatch.sim import Simulator
from walletwatch.store import SCHEMA_VERSION, Store


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


def damage(path: Path) -> bytes:
    """Make a real state file with some history, then overwrite pages past the header."""
    Store(path).close()
    db = sqlite3.connect(path)
    db.executemany(
        "INSERT INTO meta VALUES (?, ?)", [(f"filler:{n}", "x" * 500) for n in range(200)]
    )
    db.commit()
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()
    data = bytearray(path.read_bytes())
    data[4096 + 64 : 4096 * 4] = b"\x5a" * (4096 * 3 - 64)
    path.write_bytes(bytes(data))
    return bytes(data)


class TestRefusal:
    """A state file walletwatch cannot trust stops it, with a message and no traceback."""

    def test_damaged_state_file_stops_the_daemon(self, tmp_path: Path, sim_url: str) -> None:
        """Exit 1, the message names the file and the way out, the file is left as it was."""
        config = write_config(tmp_path, sim_url, listen=f"127.0.0.1:{free_port()}")
        original = damage(tmp_path / "state.db")
        proc = run(config)
        out, err = proc.communicate(timeout=DEADLINE)
        assert proc.returncode == 1
        assert "Traceback" not in err
        assert f"walletwatch: {tmp_path / 'state.db'}: " in err
        assert "--reset-state" in err
        assert (tmp_path / "state.db").read_bytes() == original
        logged = [json.loads(line) for line in out.splitlines()]
        assert [(e["event"], e["level"]) for e in logged] == [("store.unusable", "error")]

    def test_newer_state_file_stops_the_daemon(self, tmp_path: Path, sim_url: str) -> None:
        """A file from a newer walletwatch is refused with exit 1, not downgraded."""
        config = write_config(tmp_path, sim_url, listen=f"127.0.0.1:{free_port()}")
        Store(tmp_path / "state.db").close()
        db = sqlite3.connect(tmp_path / "state.db")
        db.execute("UPDATE meta SET value=? WHERE key='schema_version'", (SCHEMA_VERSION + 1,))
        db.commit()
        db.close()
        proc = run(config)
        _, err = proc.communicate(timeout=DEADLINE)
        assert proc.returncode == 1
        assert "is newer than this walletwatch understands" in err


class TestReset:
    """--reset-state moves the old file aside, says so loudly, and starts afresh."""

    def test_reset_moves_the_damaged_file_aside(self, tmp_path: Path, sim_url: str) -> None:
        """The daemon starts on a new file; the old one is kept byte for byte beside it."""
        port = free_port()
        config = write_config(tmp_path, sim_url, listen=f"127.0.0.1:{port}")
        original = damage(tmp_path / "state.db")
        proc = run(config, "--reset-state")
        try:
            wait_for(f"http://127.0.0.1:{port}/readyz")
        finally:
            proc.send_signal(signal.SIGTERM)
            out, err = proc.communicate(timeout=DEADLINE)
        assert proc.returncode == 0, err
        (moved,) = tmp_path.glob("state.db.reset-*")
        assert moved.read_bytes() == original
        logged = [json.loads(line) for line in out.splitlines()]
        (reset,) = [e for e in logged if e.get("event") == "state.reset"]
        assert (reset["level"], reset["moved_to"]) == ("warning", str(moved))
        assert Store(tmp_path / "state.db").load().keys() == {"hot"}
