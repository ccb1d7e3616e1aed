"""Tests of listener.py on loopback: the connection cap, making room, refusals, timeouts."""

from __future__ import annotations

import asyncio
import contextlib
import resource
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import pytest
import structlog
from aiohttp import web
from structlog.testing import capture_logs

from tests.fakes import FakeClock
from walletwatch.listener import (
    ACCEPT_BATCH,
    MIN_CONNECTIONS,
    RESERVE,
    Listener,
    connection_cap,
    raise_open_files,
)
from walletwatch.telemetry import WebConnections
from walletwatch.throttle import Throttle

HEADER_TIMEOUT = 0.3
KEEPALIVE_TIMEOUT = 0.3
REQUEST = b"GET /ok HTTP/1.1\r\nHost: x\r\n\r\n"


@dataclass
class Server:
    """A listener serving a small app: /ok answers, /block waits until ``release`` is set."""

    listener: Listener
    port: int
    release: asyncio.Event = field(default_factory=asyncio.Event)
    writers: list[asyncio.StreamWriter] = field(default_factory=list)
    handling: int = 0  # requests to /block under way

    @property
    def stats(self) -> WebConnections:
        """The listener's counts."""
        return self.listener.stats

    async def connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """A new connection to the server (closed at the end of the test)."""
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        self.writers.append(writer)
        return reader, writer


async def _serve(limit: int) -> AsyncIterator[Server]:
    stats = WebConnections(limit=limit)
    listener = Listener(
        stats, throttle=Throttle(FakeClock().monotonic, 60), header_timeout=HEADER_TIMEOUT
    )
    release = asyncio.Event()
    server: Server | None = None

    async def ok(_: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def block(_: web.Request) -> web.Response:
        assert server is not None
        server.handling += 1
        await release.wait()
        server.handling -= 1
        return web.Response(text="released")

    app = web.Application(middlewares=[listener.middleware])
    app.router.add_get("/ok", ok)
    app.router.add_get("/block", block)
    runner = web.AppRunner(
        app, access_log=None, handle_signals=False, keepalive_timeout=KEEPALIVE_TIMEOUT
    )
    await runner.setup()
    assert runner.server is not None
    await listener.start("127.0.0.1", 0, runner.server)
    server = Server(listener, listener.port, release)
    try:
        yield server
    finally:
        for writer in server.writers:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
        release.set()
        listener.close()
        await runner.cleanup()


@pytest.fixture(name="server")
async def fixture_server() -> AsyncIterator[Server]:
    """A server capped at 3 connections."""
    async for server in _serve(3):
        yield server


async def until(condition: Callable[[], bool], within: float = 2.0) -> None:
    """Wait until ``condition`` holds (the server runs in this loop); fail after ``within``."""
    for _ in range(int(within / 0.01)):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the condition never held")


async def closed(reader: asyncio.StreamReader, within: float) -> bytes:
    """What the server sent until it closed the connection; fails if it stays open."""
    async with asyncio.timeout(within):
        try:
            return await reader.read()
        except ConnectionResetError:
            return b""


async def answer(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, path: str = "/ok"
) -> bytes:
    """Send one request and read its answer's head and body."""
    writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    head = await reader.readuntil(b"\r\n\r\n")
    length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
    return head + await reader.readexactly(length)


class TestBudget:
    def test_cap_leaves_the_reserve_and_one_batch(self) -> None:
        """The web server gets the limit less the reserve for polling and one accept batch."""
        assert connection_cap(8192) == 8192 - RESERVE - ACCEPT_BATCH

    def test_cap_has_a_floor(self) -> None:
        """However low the limit, a few connections stay for /metrics."""
        assert connection_cap(64) == MIN_CONNECTIONS

    def test_soft_limit_raised_to_the_hard_one(self) -> None:
        """At start the soft open files limit goes up to the hard one."""
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (min(soft, 512), hard))
            files = raise_open_files()
            assert resource.getrlimit(resource.RLIMIT_NOFILE)[0] == files.limit
            assert files.found == min(soft, 512)
            assert files.limit == (hard if hard != resource.RLIM_INFINITY else 1 << 20)
            assert files.connections == connection_cap(files.limit)
        finally:
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


class TestTimeouts:
    async def test_idle_connection_is_closed(self, server: Server) -> None:
        """A connection that sends nothing is closed after the header timeout."""
        reader, writer = await server.connect()
        assert await closed(reader, HEADER_TIMEOUT + 1) == b""
        writer.close()
        assert server.stats.dropped["header_timeout"] == 1

    async def test_slow_headers_are_closed(self, server: Server) -> None:
        """A request sent a byte at a time is cut off at the header timeout, bytes or not."""
        reader, writer = await server.connect()
        loop = asyncio.get_running_loop()
        started = loop.time()
        for byte in REQUEST[:-4]:
            writer.write(bytes([byte]))
            await asyncio.sleep(HEADER_TIMEOUT / 5)  # the whole request: 5 timeouts
            if reader.at_eof() or writer.is_closing():
                break
        assert await closed(reader, HEADER_TIMEOUT + 2) == b""
        assert loop.time() - started < HEADER_TIMEOUT * 3
        assert server.stats.dropped["header_timeout"] == 1

    async def test_a_prompt_request_is_served_and_kept_alive_briefly(self, server: Server) -> None:
        """A request in time is answered; the idle keep-alive connection closes after it."""
        reader, writer = await server.connect()
        assert (await answer(reader, writer)).endswith(b"ok")
        assert await closed(reader, KEEPALIVE_TIMEOUT + 1) == b""
        assert server.stats.dropped["header_timeout"] == 0

    async def test_slow_second_request_is_closed(self, server: Server) -> None:
        """After a response, a next request trickling in is cut off at the keep-alive timeout."""
        reader, writer = await server.connect()
        await answer(reader, writer)
        for byte in REQUEST[:-4]:
            if reader.at_eof():
                break
            writer.write(bytes([byte]))
            await asyncio.sleep(KEEPALIVE_TIMEOUT / 5)
        assert await closed(reader, KEEPALIVE_TIMEOUT + 2) == b""

    async def test_a_long_request_is_not_cut(self, server: Server) -> None:
        """A request being handled outlives the header timeout."""
        reader, writer = await server.connect()
        writer.write(b"GET /block HTTP/1.1\r\nHost: x\r\n\r\n")
        await asyncio.sleep(HEADER_TIMEOUT * 2)
        server.release.set()
        head = await reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200")
        writer.close()


class TestCap:
    async def test_open_connections_are_counted(self, server: Server) -> None:
        """The gauge follows connections as they open and close."""
        conns = [await server.connect() for _ in range(2)]
        await until(lambda: server.stats.open == 2)
        for _, writer in conns:
            writer.close()
        await until(lambda: server.stats.open == 0)

    async def test_full_of_idle_connections_makes_room(self, server: Server) -> None:
        """At the cap, a new connection closes the longest-idle one and is served."""
        idle = [await server.connect() for _ in range(3)]
        await until(lambda: server.stats.open == 3)
        structlog.reset_defaults()  # whatever level an earlier in-process CLI test set
        with capture_logs() as logs:
            reader, writer = await server.connect()
            assert (await answer(reader, writer)).endswith(b"ok")
        assert await closed(idle[0][0], 2) == b""
        assert server.stats.dropped["evicted"] == 1
        assert server.stats.open <= 3
        assert [line["event"] for line in logs] == ["web.connection_evicted"]
        assert logs[0]["count"] == 1
        for writer in server.writers:
            writer.close()
        await until(lambda: server.stats.open == 0)
        idle = [await server.connect() for _ in range(3)]  # the cap is whole again
        await until(lambda: server.stats.open == 3)
        assert server.stats.dropped["evicted"] == 1

    async def test_full_of_busy_connections_refuses(self, server: Server) -> None:
        """At the cap with every connection handling a request, a new one gets a 503 and EOF."""
        busy = [await server.connect() for _ in range(3)]
        for _, writer in busy:
            writer.write(b"GET /block HTTP/1.1\r\nHost: x\r\n\r\n")
        await until(lambda: server.handling == 3)
        structlog.reset_defaults()  # whatever level an earlier in-process CLI test set
        with capture_logs() as logs:
            refused = [await server.connect() for _ in range(5)]
            answers = [await closed(reader, 2) for reader, _ in refused]
        assert all(a.startswith(b"HTTP/1.1 503 Service Unavailable\r\n") for a in answers)
        assert server.stats.dropped["refused"] == 5
        # Five refusals, one line: the rest are counted for the next.
        assert [line["event"] for line in logs] == ["web.connection_refused"]
        server.release.set()
        for reader, _ in busy:
            assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 200")
