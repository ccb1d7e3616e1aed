"""Idle and slow connections to the web server never starve polling nor flood the log.

`walletwatch run` runs as a child process under an open files limit of LIMIT (hard and soft:
it cannot raise it), polling the simulator's WestWallet every second. The test opens IDLE
connections that send nothing and SLOW ones that send a request a byte at a time, more than
the limit allows, and keeps scraping /metrics meanwhile; MALFORMED requests before them
would each have logged a traceback. Before the fix, accept() ran out of
descriptors: polls failed with reason="connection", /metrics stopped answering, and asyncio
logged "socket.accept() out of system resource" without end.
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.simthread import serve_in_thread
from walletwatch.listener import HEADER_TIMEOUT
from walletwatch.sim import Simulator

KEY, SECRET = "idle-key", "idle-secret"
LIMIT = 256
"""The child's open files limit: the flood below needs more than that."""
IDLE = 300
SLOW = 20
MALFORMED = 50
WAIT = 15.0  # the longest the daemon may take to start and poll before the test fails
SCRAPE_TIMEOUT = 2.0


@dataclass
class Daemon:
    """The running child, its log, and the URL of its web server."""

    proc: subprocess.Popen[bytes]
    log: Path
    url: str

    def lines(self) -> list[dict[str, object]]:
        """The log's JSON lines (and any other line as {"raw": ...})."""
        out: list[dict[str, object]] = []
        for line in self.log.read_text(errors="replace").splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                out.append({"raw": line})
        return out

    def scrape(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        """Every sample of /metrics, keyed by name and sorted labels."""
        url = f"{self.url}/metrics"
        with urllib.request.urlopen(url, timeout=SCRAPE_TIMEOUT) as answer:  # noqa: S310
            text = answer.read().decode()
        return {
            (sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
        }


def _limit_open_files() -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (LIMIT, LIMIT))


def _polls(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float]) -> float:
    return sum(v for (name, _), v in samples.items() if name == "walletwatch_polls_total")


def _connection_errors(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float]) -> float:
    return sum(
        v
        for (name, labels), v in samples.items()
        if name == "walletwatch_poll_errors_total" and ("reason", "connection") in labels
    )


@pytest.fixture(name="daemon")
def fixture_daemon(tmp_path: Path) -> Iterator[Daemon]:
    """The simulator on a loopback thread and `walletwatch run` polling it, until it polled."""
    sim = Simulator(rate_limit=100_000)
    sim.westwallet.add_account(KEY, SECRET, {"BTC": Decimal(1), "USDT": Decimal(100)})
    log = tmp_path / "daemon.log"
    with serve_in_thread(sim) as sim_url, log.open("ab") as out:
        config = tmp_path / "config.yaml"
        config.write_text(
            yaml.safe_dump(
                {
                    "listen": "127.0.0.1:0",
                    "state_path": str(tmp_path / "state.db"),
                    "log_format": "json",
                    "providers": {"westwallet": {"rate_limit": 1000}},
                    "accounts": [
                        {
                            "name": "hot",
                            "provider": "westwallet",
                            "base_url": f"{sim_url}/westwallet",
                            "credentials": {"api_key": KEY, "secret_key": SECRET},
                            "interval": "1s",
                        }
                    ],
                }
            )
        )
        proc = subprocess.Popen(
            [sys.executable, "-m", "walletwatch", "run", "-c", str(config)],
            stdout=out,
            stderr=out,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
            preexec_fn=_limit_open_files,  # noqa: PLW1509 - only sets a limit, no threads touched
        )
        try:
            daemon = Daemon(proc, log, _started_url(proc, log))
            deadline = time.monotonic() + WAIT
            while _polls(daemon.scrape()) < 3:
                assert time.monotonic() < deadline, "the daemon never polled"
                time.sleep(0.1)
            yield daemon
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=WAIT)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _started_url(proc: subprocess.Popen[bytes], log: Path) -> str:
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        assert proc.poll() is None, log.read_text()
        for line in log.read_text(errors="replace").splitlines():
            if '"walletwatch.started"' in line:
                return str(json.loads(line)["listen"])
        time.sleep(0.05)
    raise AssertionError(f"the daemon did not start: {log.read_text()}")


def _connect(port: int, count: int) -> list[socket.socket]:
    """Up to ``count`` connections to ``port`` (those the kernel does not take are skipped)."""
    socks = []
    for _ in range(count):
        sock = socket.socket()
        sock.settimeout(0.2)
        try:
            sock.connect(("127.0.0.1", port))
        except OSError:
            sock.close()
            continue
        socks.append(sock)
    return socks


def _closed(sock: socket.socket) -> bool:
    """Whether the server closed ``sock`` (EOF, a reset, or a 503 followed by EOF)."""
    sock.settimeout(0.05)
    try:
        while data := sock.recv(4096):
            if not data.startswith(b"HTTP/1.1 503"):
                return False
    except TimeoutError:
        return False
    except OSError:
        return True
    return True


class TestIdleConnections:
    """A flood of idle and slow connections, more than the descriptors allow."""

    def test_polls_and_scrapes_go_on_and_idle_connections_are_cut(self, daemon: Daemon) -> None:
        """Polls keep succeeding, /metrics answers in time, idle and slow clients are cut off,
        and the log holds a few lines about it."""
        port = int(daemon.url.rsplit(":", 1)[1])
        for sock in _connect(port, MALFORMED):  # each logged with a traceback by aiohttp
            with sock, contextlib.suppress(OSError):
                sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nno colon here\r\n\r\n")
                sock.recv(64)
        before = daemon.scrape()
        stop = threading.Event()
        slow = _connect(port, SLOW)

        def trickle() -> None:  # slow-loris: one byte of a request at a time
            request = b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"a" * 100
            for byte in request:
                if stop.wait(0.25):
                    return
                for sock in slow:
                    with contextlib.suppress(OSError):
                        sock.send(bytes([byte]))

        thread = threading.Thread(target=trickle, daemon=True)
        thread.start()
        idle = _connect(port, IDLE)
        try:
            started = time.monotonic()
            scrapes: list[float] = []
            samples = before
            while time.monotonic() - started < HEADER_TIMEOUT + 2:
                t0 = time.monotonic()
                samples = daemon.scrape()  # raises (fails the test) after SCRAPE_TIMEOUT
                scrapes.append(time.monotonic() - t0)
                time.sleep(0.25)
            stop.set()
            thread.join()
            assert len(idle) + len(slow) > LIMIT
            assert max(scrapes) < SCRAPE_TIMEOUT
            assert _connection_errors(samples) == _connection_errors(before) == 0
            assert _polls(samples) >= _polls(before) + 4  # two endpoints a second
            still_open = [s for s in idle + slow if not _closed(s)]
            assert still_open == []
            assert (
                samples[("walletwatch_web_connections", ())]
                <= samples[("walletwatch_web_connections_limit", ())]
            )
            closed = sum(
                v
                for (name, _), v in samples.items()
                if name == "walletwatch_web_connections_closed_total"
            )
            assert closed >= IDLE
        finally:
            stop.set()
            for sock in idle + slow:
                sock.close()
        lines = daemon.lines()
        noisy = [
            line
            for line in lines
            if "raw" in line or str(line.get("event", "")).startswith(("web.", "loop."))
        ]
        assert len(noisy) <= 6, noisy
        assert daemon.log.stat().st_size < 64 * 1024
