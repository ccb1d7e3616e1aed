"""A slow webhook receiver: other sinks go on, pending counts stay live, shutdown is bounded.

Issue 16, item 2. The receiver is a real aiohttp server on loopback that holds each answer
until the test lets it go (no real time passes while it is "slow"); the shutdown time is
measured on a real daemon process stopped with SIGTERM while the receiver takes 4 s a request.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from aiohttp import web

from tests.fakes import FakeClock, settle
from tests.test_sinks import RecordingSink, commit, make_events
from walletwatch.asyncstore import AsyncStore
from walletwatch.config import Secret, WebhookConfig
from walletwatch.sinks import DELIVERY_GRACE, Dispatcher, FileSink, WebhookSink
from walletwatch.store import Store
from walletwatch.telemetry import Telemetry
from walletwatch.tracker import AccountState
from walletwatch.types import Sink


class HeldReceiver:
    """A receiver on loopback that answers 200 only when the test releases each request."""

    def __init__(self) -> None:
        self.arrived: list[str] = []  # event_ids in arrival order
        self.answered: list[str] = []  # event_ids answered 200
        self.release = asyncio.Semaphore(0)
        self.url = ""
        self._runner: web.AppRunner | None = None

    async def up(self) -> None:
        """Listen on a free loopback port."""
        app = web.Application()
        app.router.add_post("/hook", self._handle)
        # A request the client gave up on is not answered later: it was never delivered.
        self._runner = web.AppRunner(app, access_log=None, handler_cancellation=True)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}/hook"

    async def down(self) -> None:
        """Let every held request go, and stop listening."""
        for _ in range(1000):
            self.release.release()
        if self._runner is not None:
            await self._runner.cleanup()

    async def _handle(self, request: web.Request) -> web.Response:
        event_id = json.loads(await request.read())["event_id"]
        self.arrived.append(event_id)
        await self.release.acquire()  # "slow": as slow as the test wants
        self.answered.append(event_id)
        return web.Response(status=200)

    async def wait_arrivals(self, count: int) -> None:
        """Return once ``count`` requests have arrived (real sockets: real, short waits)."""
        async with asyncio.timeout(10):
            while len(self.arrived) < count:  # noqa: ASYNC110 - fed by real sockets
                await asyncio.sleep(0.005)


@pytest.fixture(name="receiver")
async def fixture_receiver() -> AsyncIterator[HeldReceiver]:
    """A held receiver, listening."""
    receiver = HeldReceiver()
    await receiver.up()
    yield receiver
    await receiver.down()


@pytest.fixture(name="store")
def fixture_store(tmp_path: Path) -> Iterator[AsyncStore]:
    """A state database on disk."""
    store = AsyncStore(Store(tmp_path / "state.db"))
    yield store
    store.close()


def hook(url: str) -> WebhookConfig:
    """A webhook sink config with a timeout far above anything the test waits."""
    return WebhookConfig(name="hook", url=Secret(url), headers={}, secret=None, timeout=60.0)


async def until(check: Any) -> None:
    """Let the loop and the store's thread run until ``check()`` holds (bounded)."""
    async with asyncio.timeout(10):
        while not check():  # noqa: ASYNC110 - the store's thread and sockets run in real time
            await asyncio.sleep(0.002)


async def counted(clock: FakeClock, check: Any) -> None:
    """Move virtual time a second at a time (counts are refreshed at most once a second)
    until ``check()`` holds; fails after 100 virtual seconds."""
    for _ in range(100):
        await clock.advance(1.0)
        await asyncio.sleep(0.01)  # the store's worker thread runs in real time
        if check():
            return
    raise AssertionError("the pending counts never got there")


class TestSlowWebhook:
    async def test_other_sinks_do_not_wait_for_a_slow_webhook(
        self, store: AsyncStore, receiver: HeldReceiver, clock: FakeClock, tmp_path: Path
    ) -> None:
        """While the webhook holds its first request, the events file and stdout get everything."""
        async with aiohttp.ClientSession() as session:
            memory = RecordingSink("stdout")
            events_file = FileSink(tmp_path / "events.jsonl")
            sinks: list[Sink] = [
                WebhookSink(hook(receiver.url), session, clock),
                events_file,
                memory,
            ]
            dispatcher = Dispatcher(store, sinks, clock)
            await dispatcher.prepare()
            dispatcher.start()
            for first in range(0, 12, 3):
                await commit(store, make_events(first, 3))
                dispatcher.wake()
                await until(lambda n=first + 3: len(memory.ids) == n)
            expected = [f"hot-{n:05d}" for n in range(12)]
            assert memory.ids == expected
            await until((tmp_path / "events.jsonl").exists)
            lines = (tmp_path / "events.jsonl").read_text().splitlines()
            assert [json.loads(line)["event_id"] for line in lines] == expected
            assert receiver.arrived == ["hot-00000"]
            for _ in range(12):
                receiver.release.release()
            await until(lambda: len(receiver.answered) == 12)
            assert receiver.answered == expected
            await dispatcher.close(0.0)

    async def test_pending_counts_are_live(
        self, store: AsyncStore, receiver: HeldReceiver, clock: FakeClock
    ) -> None:
        """outbox_pending follows commits and acknowledgements per sink, while one is stalled."""
        telemetry = Telemetry()
        async with aiohttp.ClientSession() as session:
            memory = RecordingSink("stdout")
            sinks: list[Sink] = [WebhookSink(hook(receiver.url), session, clock), memory]
            dispatcher = Dispatcher(store, sinks, clock, telemetry=telemetry)
            await dispatcher.prepare()
            dispatcher.start()
            await commit(store, make_events(0, 5))
            dispatcher.wake()
            await receiver.wait_arrivals(1)
            await counted(clock, lambda: telemetry.outbox_pending == {"hook": 5, "stdout": 0})
            await commit(store, make_events(5, 4))
            dispatcher.wake()
            await counted(clock, lambda: telemetry.outbox_pending == {"hook": 9, "stdout": 0})
            receiver.release.release()
            receiver.release.release()
            await receiver.wait_arrivals(3)
            await counted(clock, lambda: telemetry.outbox_pending["hook"] == 7)
            for _ in range(7):
                receiver.release.release()
            await dispatcher.close(0.0)

    async def test_shutdown_is_bounded_and_resends_nothing_delivered(
        self, store: AsyncStore, receiver: HeldReceiver, clock: FakeClock
    ) -> None:
        """close() stops after its grace; the next start sends only what was not answered."""
        async with aiohttp.ClientSession() as session:
            dispatcher = Dispatcher(store, [WebhookSink(hook(receiver.url), session, clock)], clock)
            await dispatcher.prepare()
            dispatcher.start()
            await commit(store, make_events(0, 6))
            dispatcher.wake()
            for _ in range(3):
                receiver.release.release()
            await receiver.wait_arrivals(4)  # three answered, the fourth held
            closing = asyncio.ensure_future(dispatcher.close(DELIVERY_GRACE))
            await settle()
            assert not closing.done()
            await clock.advance(DELIVERY_GRACE)
            await until(closing.done)
            await closing
            assert receiver.answered == [f"hot-{n:05d}" for n in range(3)]
            left = await store.call(store.store.pending, "hook")
            assert [e.event_id for _, e in left] == [f"hot-{n:05d}" for n in range(3, 6)]
            for _ in range(3):
                receiver.release.release()
            again = Dispatcher(store, [WebhookSink(hook(receiver.url), session, clock)], clock)
            await again.prepare()
            assert await again.drain() is None
        # Each event answered once: the held one was abandoned, never answered, so sent again.
        assert receiver.answered == [f"hot-{n:05d}" for n in range(6)]


class SlowHandler(BaseHTTPRequestHandler):
    """Answers every POST 200 after SLOW seconds."""

    def do_POST(self) -> None:
        """Read the event, wait, answer."""
        self.rfile.read(int(self.headers["Content-Length"]))
        self.server.arrivals += 1  # type: ignore[attr-defined]
        time.sleep(SLOW)
        try:
            self.send_response(200)
            self.end_headers()
        except OSError:
            pass  # the daemon stopped waiting: it will send this one again

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base's name
        """Quiet."""


SLOW = 4.0  # under the webhook's 5 s timeout, as in the issue
PENDING = 20


def free_port() -> int:
    """A loopback port nobody listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class TestShutdownTime:
    def test_sigterm_with_a_slow_receiver_stops_well_inside_timeoutstopsec(
        self, tmp_path: Path
    ) -> None:
        """A daemon with 20 events pending for a receiver answering in 4 s exits in < 12 s."""
        state = Store(tmp_path / "state.db")
        state.commit("hot", "westwallet", AccountState(), AccountState(), make_events(0, PENDING))
        for sink in ("hook", "events_file"):
            state.ack(sink, 0)  # known sinks that have delivered nothing yet
        state.close()
        server = ThreadingHTTPServer(("127.0.0.1", 0), SlowHandler)
        server.arrivals = 0  # type: ignore[attr-defined]
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, daemon=True).start()
        config = tmp_path / "config.yaml"
        config.write_text(
            yaml.safe_dump(
                {
                    "listen": "127.0.0.1:0",
                    "state_path": "state.db",
                    "events_file": "events.jsonl",
                    "log_format": "json",
                    "accounts": [
                        {
                            "name": "hot",
                            "provider": "westwallet",
                            "base_url": f"http://127.0.0.1:{free_port()}",
                            "credentials": {"api_key": "k", "secret_key": "s"},
                            "interval": "1h",
                        }
                    ],
                    "sinks": [
                        {
                            "type": "webhook",
                            "name": "hook",
                            "url": f"http://127.0.0.1:{server.server_address[1]}/hook",
                            "timeout": "5s",
                        }
                    ],
                }
            )
        )
        log = (tmp_path / "daemon.log").open("w")
        proc = subprocess.Popen(
            [sys.executable, "-m", "walletwatch", "run", "-c", str(config)],
            stdout=log,
            stderr=log,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        try:
            deadline = time.monotonic() + 20
            while server.arrivals < 1:  # type: ignore[attr-defined]
                assert time.monotonic() < deadline, "the daemon never sent a request"
                assert proc.poll() is None, (tmp_path / "daemon.log").read_text()
                time.sleep(0.02)
            events = tmp_path / "events.jsonl"
            while not events.exists() or len(events.read_text().splitlines()) < PENDING:
                assert time.monotonic() < deadline, "the events file waited for the webhook"
                time.sleep(0.02)
            started = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            code = proc.wait(timeout=25)
            took = time.monotonic() - started
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            server.shutdown()
            server.server_close()
            log.close()
        assert code == 0
        assert took < 12.0, f"shutdown took {took:.1f} s"
        print(f"shutdown with a 4 s receiver and {PENDING} events pending: {took:.2f} s")
        state = Store(tmp_path / "state.db")
        try:
            assert 0 < state.pending_count("hook") < PENDING
        finally:
            state.close()
