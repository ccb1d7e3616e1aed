"""sd_notify over a real datagram socket, the watchdog period, and pings that need progress."""

from __future__ import annotations

import asyncio
import os
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog
from structlog.testing import capture_logs

from tests.fakes import FakeClock, settle
from walletwatch.arbiter import Ticket
from walletwatch.budget import TokenBucket
from walletwatch.health import AccountHealth
from walletwatch.notify import notify, watchdog, watchdog_period
from walletwatch.scheduler import STALL_SLACK, Outcome, Scheduler


@pytest.fixture(name="listener")
def fixture_listener(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    """A unix datagram socket bound to a path, standing in for systemd."""
    path = str(tmp_path / "notify.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(path)
        sock.settimeout(5)
        yield sock, path


class TestNotify:
    """notify() speaks sd_notify's datagram protocol."""

    def test_path_socket(self, listener: tuple[socket.socket, str]) -> None:
        """The message arrives as one datagram at $NOTIFY_SOCKET."""
        sock, path = listener
        assert notify("READY=1", {"NOTIFY_SOCKET": path})
        assert sock.recv(4096) == b"READY=1"

    def test_abstract_socket(self) -> None:
        """A name starting with '@' is an abstract socket (a leading NUL byte)."""
        name = f"walletwatch-test-{uuid.uuid4().hex}"
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.bind("\0" + name)
            sock.settimeout(5)
            assert notify("WATCHDOG=1", {"NOTIFY_SOCKET": "@" + name})
            assert sock.recv(4096) == b"WATCHDOG=1"

    def test_no_socket_is_a_no_op(self) -> None:
        """Without $NOTIFY_SOCKET nothing is sent and nothing fails."""
        assert not notify("READY=1", {})


class TestWatchdogPeriod:
    """The ping period is half of WATCHDOG_USEC, for this process only."""

    @pytest.mark.parametrize(
        ("environ", "expected"),
        [
            ({"WATCHDOG_USEC": "60000000"}, 30.0),
            ({"WATCHDOG_USEC": "60000000", "WATCHDOG_PID": str(os.getpid())}, 30.0),
            ({"WATCHDOG_USEC": "60000000", "WATCHDOG_PID": "1"}, None),
            ({"WATCHDOG_USEC": "0"}, None),
            ({"WATCHDOG_USEC": "soon"}, None),
            ({}, None),
        ],
    )
    def test_period(self, environ: dict[str, str], expected: float | None) -> None:
        """Each environment gives the expected period (None: no watchdog)."""
        assert watchdog_period(environ) == expected


class Poller:
    """A poller whose polls succeed at once, or hang forever once ``wedged``."""

    name = "acct"
    provider = "fake"
    interval = 10.0
    max_backoff = 60.0
    down_after = 3
    buckets: tuple[TokenBucket, ...] = ()

    def __init__(self) -> None:
        self.wedged = False
        self.health = AccountHealth(self.down_after)

    def interval_for(self, endpoint: str) -> float:  # noqa: ARG002 - the Poller protocol
        """Every endpoint every ``interval``."""
        return self.interval

    async def poll(self, endpoint: str, ticket: Ticket | None = None) -> Outcome:  # noqa: ARG002
        """Succeed, or never return once wedged."""
        if self.wedged:
            await asyncio.Event().wait()
        return Outcome(ok=True)


class TestWatchdog:
    """Pings go out while the scheduler makes progress, and stop when it does not."""

    async def test_pings_follow_scheduler_progress(
        self, clock: FakeClock, listener: tuple[socket.socket, str]
    ) -> None:
        """A working scheduler is pinged for; a wedged poll loop stops the pings."""
        sock, path = listener
        sock.setblocking(False)
        scheduler = Scheduler(clock)
        poller = Poller()
        scheduler.start(poller, ["balances"])

        def send(message: str) -> None:
            notify(message, {"NOTIFY_SOCKET": path})

        def received() -> list[bytes]:
            out = []
            while True:
                try:
                    out.append(sock.recv(4096))
                except BlockingIOError:
                    return out

        structlog.reset_defaults()  # whatever level an earlier in-process CLI test set
        with capture_logs() as logs:
            pinger = asyncio.create_task(
                watchdog(lambda: not scheduler.stalled(), 30.0, clock, send)
            )
            pings = []
            for _ in range(10):
                await clock.advance(30)
                pings += received()
            assert pings == [b"WATCHDOG=1"] * 11  # t=0, 30, ..., 300
            poller.wedged = True
            quiet = 2 * poller.max_backoff + STALL_SLACK
            for _ in range(int(quiet // 30) + 2):
                await clock.advance(30)
                received()
            for _ in range(10):
                await clock.advance(30)
                assert received() == []
            pinger.cancel()
            await scheduler.stop(0)
            await settle()
        assert {"event": "watchdog.stalled", "log_level": "error"}.items() <= logs[-1].items()
