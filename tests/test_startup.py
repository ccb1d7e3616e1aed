"""Start-up failures: one line naming the address or path and what to do, exit 1, no
traceback, nothing created; ``check`` reports the paths this host cannot write."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from walletwatch.hostcheck import path_problems

TIMEOUT = 20.0  # seconds a refused start gets; it takes well under one


@pytest.fixture(name="taken")
def fixture_taken() -> Iterator[int]:
    """A loopback port some other program listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield int(sock.getsockname()[1])


def config(tmp_path: Path, **top: object) -> Path:
    """A config with one account (no provider is reached: every start here is refused)."""
    body = {
        "listen": "127.0.0.1:0",
        "state_path": "state.db",
        "accounts": [
            {
                "name": "hot",
                "provider": "westwallet",
                "base_url": "http://127.0.0.1:9/westwallet",
                "credentials": {"api_key": {"env": "K"}, "secret_key": {"env": "S"}},
            }
        ],
        **top,
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(body))
    return path


def walletwatch(*args: str) -> subprocess.CompletedProcess[str]:
    """Run the command to its end."""
    return subprocess.run(
        [sys.executable, "-m", "walletwatch", *args],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        env={**os.environ, "K": "key", "S": "secret"},
        check=False,
    )


def refused(result: subprocess.CompletedProcess[str]) -> str:
    """The one line a refused start printed, after checking the rest of the rule."""
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    (line,) = result.stderr.splitlines()
    assert line.startswith("walletwatch: ")
    return line


class TestListen:
    def test_an_address_in_use(self, tmp_path: Path, taken: int) -> None:
        """Another program on the port: it says so and what to do; no state file is made."""
        line = refused(walletwatch("run", "-c", str(config(tmp_path, listen=f"127.0.0.1:{taken}"))))
        assert f"cannot listen on 127.0.0.1:{taken}: the address is in use" in line
        assert "set listen to a free port" in line
        assert sorted(p.name for p in tmp_path.iterdir()) == ["config.yaml"]

    def test_an_address_this_host_lacks(self, tmp_path: Path) -> None:
        """An address of no interface here (TEST-NET-1): it says the host has no such address."""
        line = refused(walletwatch("run", "-c", str(config(tmp_path, listen="192.0.2.1:9108"))))
        assert "cannot listen on 192.0.2.1:9108: this host has no such address" in line
        assert not (tmp_path / "state.db").exists()

    def test_the_demo_on_an_address_in_use(self, taken: int) -> None:
        """demo --listen on a taken port: the same one line."""
        line = refused(walletwatch("demo", "--listen", f"127.0.0.1:{taken}"))
        assert f"cannot listen on 127.0.0.1:{taken}: the address is in use" in line


class TestPaths:
    def test_a_state_directory_that_does_not_exist(self, tmp_path: Path) -> None:
        """run names the directory and says to create it, with no advice to reset the state;
        check reports the same, with the config's other problems."""
        path = config(tmp_path, state_path="missing/state.db")
        line = refused(walletwatch("run", "-c", str(path)))
        assert f"state_path: {tmp_path / 'missing'} does not exist: create it" in line
        assert "reset" not in line
        assert not (tmp_path / "missing").exists()
        checked = walletwatch("check", "-c", str(path))
        assert checked.returncode == 2
        assert f"state_path: {tmp_path / 'missing'} does not exist" in checked.stderr

    def test_an_events_file_in_a_missing_directory(self, tmp_path: Path) -> None:
        """check refuses it (it used to pass, and run retried the sink forever); run too."""
        path = config(tmp_path, events_file="logs/events.jsonl")
        checked = walletwatch("check", "-c", str(path))
        assert checked.returncode == 2
        assert f"events_file: {tmp_path / 'logs'} does not exist: create it" in checked.stderr
        line = refused(walletwatch("run", "-c", str(path)))
        assert "events_file:" in line
        assert not (tmp_path / "state.db").exists()

    def test_a_path_whose_parent_is_a_file(self, tmp_path: Path) -> None:
        """A state_path under a regular file: not a directory, said as much."""
        (tmp_path / "plain").write_text("")
        line = refused(walletwatch("run", "-c", str(config(tmp_path, state_path="plain/s.db"))))
        assert f"state_path: {tmp_path / 'plain'} is not a directory" in line

    def test_a_damaged_state_file_still_gets_the_reset_advice(self, tmp_path: Path) -> None:
        """Only a damaged file is answered with restore-or-reset advice."""
        (tmp_path / "state.db").write_bytes(b"not a database" * 100)
        result = walletwatch("run", "-c", str(config(tmp_path)))
        assert result.returncode == 1
        assert "--reset-state" in result.stderr
        assert "Traceback" not in result.stderr


class TestUnwritable:
    def test_a_directory_this_user_cannot_write(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A directory the user may not write (faked: the suite runs as root, for whom every
        directory is writable) is named with what to fix."""
        real = os.access
        monkeypatch.setattr(
            os, "access", lambda path, mode: False if Path(path) == tmp_path else real(path, mode)
        )
        (problem,) = path_problems(tmp_path / "state.db", None)
        assert problem == (
            f"state_path: the directory {tmp_path} is not writable by this user: fix its owner "
            "or mode, or choose a state_path in a directory it may write"
        )
