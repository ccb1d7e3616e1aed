"""A receiver that echoes the request in its error: no sink secret reaches any output.

Issue 16, item 3. A real aiohttp server on loopback answers every POST with a 4xx or 5xx
whose body repeats the request line, every header and the body, as some receivers and
proxies do. The URL's path and query, the Authorization header, the HMAC key and the
signature must then be found in no log entry, no parked reason, no error and no repr.
"""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from prometheus_client import CollectorRegistry, generate_latest

from tests.fakes import FakeClock
from tests.test_sinks import commit, make_events
from tests.test_store import captured_logs
from walletwatch.asyncstore import AsyncStore
from walletwatch.config import Secret, WebhookConfig
from walletwatch.metrics import WalletwatchCollector
from walletwatch.sinks import DeliveryError, Dispatcher, WebhookSink, signature
from walletwatch.store import Store
from walletwatch.telemetry import Telemetry

PATH_TOKEN = "pathTOKEN7f3a9c"
QUERY_TOKEN = "queryTOKEN0b1d2e"
BEARER = "bearerTOKEN5e6f7a"
HMAC_KEY = "hmacKEY8c9d0e1f"
API_KEY = "apiKEY2a3b4c5d6e"


class Echo:
    """Answers each POST with ``status`` and the request, verbatim, in the body."""

    def __init__(self, status: int) -> None:
        self.status = status
        self.signatures: list[str] = []
        self.port = 0
        self._runner: web.AppRunner | None = None

    async def up(self) -> None:
        """Listen on a free loopback port."""
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        self.port = int(self._runner.addresses[0][1])

    async def down(self) -> None:
        """Stop listening."""
        if self._runner is not None:
            await self._runner.cleanup()

    async def _handle(self, request: web.Request) -> web.Response:
        self.signatures.append(request.headers.get("X-Walletwatch-Signature", ""))
        line = f"{request.method} {request.raw_path} HTTP/1.1"
        headers = "\n".join(f"{k}: {v}" for k, v in request.headers.items())
        body = (await request.read()).decode()
        # The secrets first, as a proxy quoting what it refused would: none is cut off.
        first = "\n".join(
            f"{name}: {request.headers.get(name, '')}"
            for name in ("X-Walletwatch-Signature", "Authorization", "X-Api-Key")
        )
        return web.Response(status=self.status, text=f"echo: {first}\n{line}\n{headers}\n\n{body}")

    @property
    def url(self) -> str:
        """The sink URL, credentials and tokens included."""
        return f"http://127.0.0.1:{self.port}/hooks/{PATH_TOKEN}/in?token={QUERY_TOKEN}&v=2"


@pytest.fixture(name="store")
def fixture_store(tmp_path: Path) -> Iterator[AsyncStore]:
    """A state database on disk."""
    store = AsyncStore(Store(tmp_path / "state.db"))
    yield store
    store.close()


@pytest.fixture(name="echo", params=[400, 500])
async def fixture_echo(request: pytest.FixtureRequest) -> AsyncIterator[Echo]:
    """An echoing receiver answering 400 (the event is parked) or 500 (retried)."""
    echo = Echo(request.param)
    await echo.up()
    yield echo
    await echo.down()


def secrets(echo: Echo) -> list[str]:
    """Every secret string that must not be shown, and the forms an echo could show it in."""
    shown = [PATH_TOKEN, QUERY_TOKEN, BEARER, HMAC_KEY, API_KEY]
    for sent in echo.signatures:
        shown += [sent, sent.removeprefix("sha256=")]
    return shown


def assert_hidden(text: str, echo: Echo) -> None:
    """No secret, nor any long piece of one, is in ``text``."""
    for secret in secrets(echo):
        for start in range(len(secret) - 7):
            assert secret[start : start + 8] not in text, (secret, text)


class TestEchoingReceiver:
    async def test_no_secret_in_logs_parked_errors_or_metrics(
        self, echo: Echo, store: AsyncStore, clock: FakeClock
    ) -> None:
        """sink.failed / sink.event_parked, the parked table, errors and /metrics mask them."""
        config = WebhookConfig(
            name="hook",
            url=Secret(echo.url),
            headers={"Authorization": Secret(f"Bearer {BEARER}"), "X-Api-Key": Secret(API_KEY)},
            secret=Secret(HMAC_KEY),
            timeout=5.0,
        )
        telemetry = Telemetry()
        async with aiohttp.ClientSession() as session:
            sink = WebhookSink(config, session, clock)
            dispatcher = Dispatcher(store, [sink], clock, telemetry=telemetry)
            await dispatcher.prepare()
            await commit(store, make_events(0, 2))
            with captured_logs() as logs:
                await dispatcher.drain()
            with pytest.raises(DeliveryError) as caught:
                await sink.deliver(make_events(5, 1))
        assert echo.signatures, "the receiver was never reached"
        assert echo.signatures[0] == signature(HMAC_KEY, make_events(0, 1)[0].to_json().encode())
        failures = [e for e in logs if e["event"] in ("sink.failed", "sink.event_parked")]
        assert failures, logs
        assert "POST *** HTTP/1.1" in caught.value.args[0]  # the body is shown, masked
        parked = await store.call(store.store.parked, "hook")
        assert len(parked) == (2 if echo.status == 400 else 0)
        registry = CollectorRegistry()
        registry.register(WalletwatchCollector(lambda: (), telemetry, clock))
        outputs = [
            repr(logs),
            repr([p.reason for p in parked]),
            str(caught.value),
            repr(caught.value),
            repr(caught.value.__cause__),
            repr(sink),
            repr(config),
            generate_latest(registry).decode(),
        ]
        for text in outputs:
            assert_hidden(text, echo)

    async def test_url_credentials_are_masked_too(self, echo: Echo, clock: FakeClock) -> None:
        """A password in the URL, and the Basic header aiohttp makes of it, are masked."""
        password = "passWORD2a3b4c5d"
        url = echo.url.replace("http://", f"http://hookuser:{password}@")
        config = WebhookConfig(name="hook", url=Secret(url), headers={}, secret=None, timeout=5.0)
        async with aiohttp.ClientSession() as session:
            with pytest.raises(DeliveryError) as caught:
                await WebhookSink(config, session, clock).deliver(make_events(0, 1))
        basic = base64.b64encode(f"hookuser:{password}".encode()).decode()
        assert "POST *** HTTP/1.1" in str(caught.value)
        for secret in (password, basic, PATH_TOKEN, QUERY_TOKEN):
            assert secret not in str(caught.value)
