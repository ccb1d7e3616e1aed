"""Size, time, redirects and TLS: what a hostile or broken server can do below the JSON.

Real loopback servers throughout: aiohttp's own decompression, timeouts and TLS handshake are
what is under test, so nothing here is mocked.
"""

from __future__ import annotations

import asyncio
import ssl
import time
import tracemalloc
import zlib
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
import trustme
from aiohttp import web

from tests.fakes import FakeClock
from tests.hostile.harness import (
    BY_NAME,
    PROVIDERS,
    Answer,
    HostileServer,
    Provider,
    make_config,
    serve,
    started,
)
from walletwatch.errors import BadPayload
from walletwatch.http import MAX_BODY_BYTES, Http
from walletwatch.telemetry import Telemetry

WW = BY_NAME["westwallet"]


def gzip_bomb(size: int) -> bytes:
    """``size`` zero bytes, gzipped (about a thousandth of the size)."""
    packer = zlib.compressobj(9, zlib.DEFLATED, 31)
    block = b"\0" * (1 << 20)
    return b"".join(packer.compress(block) for _ in range(size >> 20)) + packer.flush()


@pytest.fixture(name="server")
def fixture_server() -> HostileServer:
    """A hostile server answering the WestWallet routes well until told otherwise."""
    server = HostileServer()
    server.serve_good(WW)
    return server


@pytest.fixture(name="url")
async def fixture_url(server: HostileServer) -> AsyncIterator[str]:
    """The server on a loopback port."""
    async for url in serve(server.app()):
        yield url


async def poll_once(
    tmp_path: Path, account: dict[str, object], **settings: dict[str, object]
) -> tuple[bool, str | None, str | None]:
    """Poll the account's balances once: (ok, reason, error)."""
    daemon = await started(make_config(tmp_path, [account], **settings))
    try:
        watcher = daemon.watchers["acct"]
        outcome = await watcher.poll(watcher.endpoints[0])
        health = watcher.health[watcher.endpoints[0]]
        return outcome.ok, health.reason, health.error
    finally:
        await daemon.close()


class TestSize:
    """Bodies are read with a cap, after decompression too."""

    async def test_oversized_body_is_cut_off(
        self, server: HostileServer, url: str, tmp_path: Path
    ) -> None:
        """A body beyond MAX_BODY_BYTES fails the poll as bad_payload."""
        server.fallback = Answer(b'{"error": "ok", "pad": "' + b"x" * MAX_BODY_BYTES + b'"}')
        ok, reason, error = await poll_once(tmp_path, WW.account(url))
        assert (ok, reason) == (False, "bad_payload")
        assert error is not None
        assert "larger than" in error

    async def test_gzip_bomb_is_cut_off_without_inflating_it(
        self, server: HostileServer, url: str
    ) -> None:
        """64 MB of gzipped zeros (64 kB on the wire) stop at the cap; memory stays small.

        aiohttp 3.14 inflates at most max(chunk size, low water mark) per network read and
        only when the reader has room (http_parser.DeflateBuffer), so iter_chunked sees the
        decompressed stream in bounded pieces and Http's cap ends it early.
        """
        bomb = gzip_bomb(64 << 20)
        assert len(bomb) < 256 << 10
        server.fallback = Answer(bomb, headers={"Content-Encoding": "gzip"})
        cap = 1 << 20
        async with aiohttp.ClientSession() as session:
            http = Http(
                session,
                provider="westwallet",
                buckets=(),
                telemetry=Telemetry(),
                clock=FakeClock(),
                timeout=aiohttp.ClientTimeout(total=10),
                max_backoff=1.0,
                max_bytes=cap,
            )
            tracemalloc.start()
            try:
                with pytest.raises(BadPayload, match="larger than"):
                    await http.request("GET", url + "/ww/wallet/balances", endpoint="balances")
                _, peak = tracemalloc.get_traced_memory()
            finally:
                tracemalloc.stop()
        assert peak < 16 * cap  # nowhere near the 64 MB the bomb inflates to


def drip(interval: float, total: float) -> web.Application:
    """An app that answers 200 and then sends one byte every ``interval`` for ``total`` s."""

    async def handler(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        response.content_length = 1000
        await response.prepare(request)
        deadline = time.monotonic() + total
        while time.monotonic() < deadline:
            await response.write(b" ")
            await asyncio.sleep(interval)
        return response

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    return app


class TestTime:
    """Slow servers are cut off by explicit timeouts, and a poll by its own budget."""

    @pytest.mark.parametrize(
        ("interval", "settings"),
        [
            # One byte a second: the read timeout (no byte for 0.3 s) fires first.
            (1.0, {"read_timeout": "300ms", "timeout": "5s"}),
            # A byte every 0.1 s keeps every read in time: the total timeout fires.
            (0.1, {"read_timeout": "1s", "timeout": "800ms"}),
        ],
        ids=["read_timeout", "total_timeout"],
    )
    async def test_slow_drip_is_cut_off(
        self, interval: float, settings: dict[str, object], tmp_path: Path
    ) -> None:
        """A response trickling in fails the poll as timeout, well before it would end."""
        async for url in serve(drip(interval, 10.0)):
            started_at = time.monotonic()
            ok, reason, _ = await poll_once(tmp_path, WW.account(url), westwallet=settings)
            elapsed = time.monotonic() - started_at
            assert (ok, reason) == (False, "timeout")
            assert elapsed < 2.0

    async def test_poll_never_outlasts_its_budget(self, tmp_path: Path) -> None:
        """A poll over its poll_timeout fails as timeout even though no request timed out."""
        slow = web.Application()

        async def handler(_request: web.Request) -> web.Response:
            await asyncio.sleep(0.8)
            return web.json_response({"BTC": "1", "error": "ok"})

        slow.router.add_route("*", "/{tail:.*}", handler)
        async for url in serve(slow):
            started_at = time.monotonic()
            ok, reason, error = await poll_once(
                tmp_path, WW.account(url), westwallet={"poll_timeout": "300ms", "timeout": "5s"}
            )
            assert time.monotonic() - started_at < 0.75
            assert (ok, reason) == (False, "timeout")
            assert error == "balances: poll took over 0.3s"

    def test_poll_budget_defaults_to_twice_the_request_timeout(self, tmp_path: Path) -> None:
        """Without poll_timeout a poll may take two request timeouts."""
        config = make_config(tmp_path, [WW.account("https://x.test")], westwallet={"timeout": "7s"})
        assert config.providers["westwallet"].poll_budget == 14.0


class TestRedirects:
    """Redirects are not followed, so credentials never reach another host."""

    @pytest.mark.parametrize("provider", PROVIDERS, ids=lambda p: p.name)
    @pytest.mark.parametrize("status", [301, 302, 307, 308])
    async def test_redirect_to_another_host_sends_nothing_there(
        self, provider: Provider, status: int, server: HostileServer, url: str, tmp_path: Path
    ) -> None:
        """Every endpoint answered with a redirect fails; the other host sees no request."""
        elsewhere = HostileServer()
        async for other in serve(elsewhere.app()):
            server.fallback = Answer(b"", status=status, headers={"Location": other + "/steal"})
            daemon = await started(make_config(tmp_path, [provider.account(url)]))
            try:
                watcher = daemon.watchers["acct"]
                for endpoint in watcher.endpoints:
                    assert not (await watcher.poll(endpoint)).ok
                    assert watcher.health[endpoint].reason == "http_4xx"
            finally:
                await daemon.close()
        assert server.seen
        assert elsewhere.seen == []


@pytest.fixture(name="ca", scope="module")
def fixture_ca() -> trustme.CA:
    """A certificate authority nobody trusts."""
    return trustme.CA()


@pytest.fixture(name="tls_url")
async def fixture_tls_url(ca: trustme.CA, server: HostileServer) -> AsyncIterator[str]:
    """The hostile server over HTTPS, with a certificate for 127.0.0.1 from the untrusted CA."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    runner = web.AppRunner(server.app(), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context)
    await site.start()
    yield f"https://127.0.0.1:{runner.addresses[0][1]}"
    await runner.cleanup()


class TestTls:
    """Certificates are verified."""

    async def test_untrusted_certificate_fails_the_poll(
        self, tls_url: str, server: HostileServer, tmp_path: Path
    ) -> None:
        """A certificate from an unknown CA is a connection failure; no request gets through."""
        ok, reason, error = await poll_once(tmp_path, WW.account(tls_url))
        assert (ok, reason) == (False, "connection")
        assert error is not None
        assert "certificate not trusted: unable to get local issuer certificate" in error
        assert server.seen == []  # the handshake failed before any header was sent

    async def test_same_server_trusted_explicitly_answers(
        self, tls_url: str, ca: trustme.CA, server: HostileServer
    ) -> None:
        """The control: with the CA trusted, the same request succeeds."""
        context = ssl.create_default_context()
        ca.configure_trust(context)
        connector = aiohttp.TCPConnector(ssl=context)
        async with aiohttp.ClientSession(connector=connector) as session:
            http = Http(
                session,
                provider="westwallet",
                buckets=(),
                telemetry=Telemetry(),
                clock=FakeClock(),
                timeout=aiohttp.ClientTimeout(total=5),
                max_backoff=1.0,
            )
            response = await http.request(
                "GET", tls_url + "/ww/wallet/balances", endpoint="balances"
            )
        assert response.status == 200
        assert len(server.seen) == 1
