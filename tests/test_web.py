"""Tests of web.py: /metrics, /healthz, /readyz and the index page, served on loopback, and
the rendering of /metrics on the event loop."""

from __future__ import annotations

import asyncio
import gc
import gzip
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from aiohttp.typedefs import Handler
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.exposition import choose_encoder
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as parse_openmetrics,
)
from prometheus_client.parser import text_string_to_metric_families as parse_text
from structlog.testing import capture_logs

from tests.fakes import FakeClock, ScriptedProvider
from walletwatch.asyncstore import AsyncStore
from walletwatch.config import AccountConfig, ProviderSettings
from walletwatch.errors import Unavailable
from walletwatch.metrics import WalletwatchCollector
from walletwatch.model import Balance, Direction, Observation
from walletwatch.operator import OperatorView
from walletwatch.store import Store
from walletwatch.telemetry import Telemetry
from walletwatch.tracker import AccountState
from walletwatch.watcher import AccountWatcher
from walletwatch.web import Renders, create_app, negotiate, render

SETTINGS = ProviderSettings(
    rate_limit=1.0,
    host_rate_limit=None,
    connect_timeout=5.0,
    read_timeout=10.0,
    timeout=30.0,
    max_backoff=300.0,
    max_pages=10,
)
ENDPOINTS = ("balances", "withdrawals")
WebClient = TestClient[web.Request, web.Application]


def account_config(name: str, provider: str = "westwallet") -> AccountConfig:
    """A minimal account."""
    return AccountConfig(
        name=name,
        provider=provider,
        base_url="https://api.example.test",
        credentials={},
        interval=30.0,
        currencies=None,
        low_balance={},
        withdrawal_stuck_after=3600.0,
        deposit_stuck_after=6 * 3600.0,
        down_after=3,
        options={},
    )


def answer(endpoint: str) -> Observation:
    """A successful answer for one endpoint."""
    if endpoint == "balances":
        return Observation("balances", balances=(Balance("BTC", Decimal("1.25")),))
    return Observation(endpoint, directions=frozenset({Direction.WITHDRAWAL}))


@dataclass
class Site:
    """Watchers on a real store, a registry with the collector, and the web app over them."""

    store: AsyncStore
    clock: FakeClock = field(default_factory=FakeClock)
    telemetry: Telemetry = field(default_factory=Telemetry)
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)
    watchers: list[AccountWatcher] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.collector = WalletwatchCollector(lambda: self.watchers, self.telemetry, self.clock)
        self.registry.register(self.collector)

    def add(self, name: str, provider: str = "westwallet") -> AccountWatcher:
        """Watch one more account."""
        watcher = AccountWatcher(
            account_config(name, provider),
            SETTINGS,
            ScriptedProvider(ENDPOINTS),
            AccountState(),
            store=self.store,
            telemetry=self.telemetry,
            clock=self.clock,
        )
        self.watchers.append(watcher)
        return watcher

    async def poll(
        self, watcher: AccountWatcher, endpoint: str, result: Observation | Exception
    ) -> None:
        """Have the watcher poll ``endpoint`` and receive ``result``."""
        provider = watcher.client
        assert isinstance(provider, ScriptedProvider)
        provider.answers[endpoint].append(result)
        with capture_logs():
            await watcher.poll(endpoint)


@pytest.fixture(name="store")
def fixture_store(tmp_path: Path) -> Iterator[AsyncStore]:
    """A real state database on tmp_path."""
    store = AsyncStore(Store(tmp_path / "state.db"))
    yield store
    store.close()


@pytest.fixture(name="site")
def fixture_site(store: AsyncStore) -> Site:
    """A site with no accounts yet."""
    return Site(store)


@pytest.fixture(name="client")
async def fixture_client(site: Site) -> AsyncIterator[WebClient]:
    """A client of the app served on 127.0.0.1, the status page and API over the site."""
    view = OperatorView(lambda: site.watchers, lambda: site.store, site.clock)
    app = create_app(site.collector, lambda: site.watchers, view=view, clock=site.clock)
    async with TestClient(TestServer(app, host="127.0.0.1")) as client:
        yield client


class TestMetricsEndpoint:
    async def test_text_exposition(self, site: Site, client: WebClient) -> None:
        """/metrics serves the Prometheus text format with its content type."""
        watcher = site.add("hot")
        await site.poll(watcher, "balances", answer("balances"))
        response = await client.get("/metrics")
        assert response.status == 200
        assert response.headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
        families = {f.name: f for f in parse_text(await response.text())}
        balance = families["walletwatch_balance"].samples
        assert [(s.labels, s.value) for s in balance] == [
            ({"provider": "westwallet", "account": "hot", "currency": "BTC"}, 1.25)
        ]
        assert "walletwatch_build_info" in families

    @pytest.mark.parametrize(
        "accept",
        [
            "application/openmetrics-text",
            "application/openmetrics-text; version=1.0.0",
            "text/plain;q=0.5, application/openmetrics-text; version=1.0.0",
        ],
    )
    async def test_openmetrics_when_asked(self, accept: str, site: Site, client: WebClient) -> None:
        """/metrics serves OpenMetrics, ending in # EOF, when Accept asks for it."""
        watcher = site.add("hot")
        await site.poll(watcher, "balances", answer("balances"))
        response = await client.get("/metrics", headers={"Accept": accept})
        assert response.status == 200
        media_type = response.headers["Content-Type"].split(";")[0]
        assert media_type == "application/openmetrics-text"
        text = await response.text()
        assert text.endswith("# EOF\n")
        # prometheus_client's OpenMetrics parser carries no annotations.
        parsed = parse_openmetrics(text)  # type: ignore[no-untyped-call]
        families = {f.name: f for f in parsed}
        samples = families["walletwatch_balance"].samples
        assert [s.value for s in samples] == [1.25]
        assert "walletwatch_events" in families

    @pytest.mark.parametrize("accept", ["", "*/*", "text/plain", "application/json"])
    async def test_text_unless_openmetrics_is_asked(self, accept: str, client: WebClient) -> None:
        """Any Accept that does not name OpenMetrics gets the plain text format."""
        response = await client.get("/metrics", headers={"Accept": accept})
        assert response.status == 200
        assert response.headers["Content-Type"].split(";")[0] == "text/plain"
        assert "# EOF" not in await response.text()

    @pytest.mark.parametrize(
        "accept",
        [
            "",
            "text/plain",
            "text/plain; version=0.0.4",
            "text/plain; version=1.0.0; escaping=allow-utf-8",
            "application/openmetrics-text",
            "application/openmetrics-text; version=0.0.1",
            "application/openmetrics-text; version=1.0.0; escaping=dots",
            "application/openmetrics-text; version=2.0.0",
            "text/html;q=0.9, application/openmetrics-text;q=0.8",
        ],
    )
    async def test_same_choice_and_bytes_as_prometheus_client(
        self, accept: str, site: Site, client: WebClient
    ) -> None:
        """For any Accept, /metrics has the content type and bytes prometheus_client's pick."""
        watcher = site.add('a"b\\c')
        await site.poll(watcher, "balances", answer("balances"))
        encoder, content_type = choose_encoder(accept)
        response = await client.get("/metrics", headers={"Accept": accept})
        assert response.headers["Content-Type"] == content_type
        assert await response.read() == encoder(site.registry)

    @pytest.mark.parametrize(
        ("accept_encoding", "remote", "gzipped"),
        [
            ("gzip", "192.0.2.7", True),
            ("gzip, deflate", "2001:db8::7", True),
            ("deflate;q=1.0, GZIP;q=0.5", "192.0.2.7", True),
            ("", "192.0.2.7", False),
            ("deflate, br", "192.0.2.7", False),
            ("gzip", "127.0.0.1", False),
            ("gzip", "::1", False),
            ("gzip", None, True),
        ],
    )
    def test_gzip_when_accepted_over_the_network(
        self, accept_encoding: str, remote: str | None, gzipped: bool
    ) -> None:
        """The body is gzipped when the scraper accepts gzip, unless it is on loopback."""
        assert negotiate("", accept_encoding, remote).gzip is gzipped

    async def test_gzip_over_the_network(self, site: Site) -> None:
        """A scraper on another host that accepts gzip gets the body gzipped, and says so."""
        site.add("hot")

        @web.middleware
        async def from_afar(request: web.Request, handler: Handler) -> web.StreamResponse:
            return await handler(request.clone(remote="192.0.2.7"))

        app = create_app(site.collector, lambda: site.watchers)
        app.middlewares.append(from_afar)
        async with TestClient(TestServer(app, host="127.0.0.1")) as client:
            response = await client.get(
                "/metrics", headers={"Accept-Encoding": "gzip"}, auto_decompress=False
            )
            assert response.headers["Content-Encoding"] == "gzip"
            body = await response.read()
        assert response.headers["Content-Length"] == str(len(body))
        assert gzip.decompress(body) == generate_latest(site.registry)

    async def test_loopback_gets_it_plain(self, site: Site, client: WebClient) -> None:
        """Over loopback /metrics is sent as it is, Accept-Encoding gzip or not."""
        site.add("hot")
        response = await client.get("/metrics", headers={"Accept-Encoding": "gzip"})
        assert "Content-Encoding" not in response.headers
        assert await response.read() == generate_latest(site.registry)

    async def test_head(self, site: Site, client: WebClient) -> None:
        """HEAD /metrics answers with the headers of a GET and no body."""
        site.add("hot")
        get = await client.get("/metrics")
        head = await client.head("/metrics")
        assert head.status == 200
        assert head.headers["Content-Length"] == get.headers["Content-Length"]
        assert await head.read() == b""
        assert (await client.get("/metrics")).status == 200  # the connection is still sound


class TestRender:
    async def test_other_tasks_run_while_it_renders(self, site: Site) -> None:
        """Rendering yields to the event loop between its steps, not only once it is done."""
        for i in range(50):
            site.add(f"acct-{i:02d}")
        collector = WalletwatchCollector(lambda: site.watchers, site.telemetry, site.clock)
        body = negotiate(accept="", accept_encoding="")
        rendering = asyncio.create_task(render(collector, body, slice_seconds=0))
        seen: list[bool] = []

        async def probe() -> None:
            while not rendering.done():
                seen.append(rendering.done())
                await asyncio.sleep(0)

        await asyncio.gather(rendering, probe())
        assert len(seen) > 50  # it ran between the steps: at least one per account
        assert b"".join(rendering.result()) == collector.render()

    async def test_no_garbage_collection_during_renders(self, site: Site) -> None:
        """The cyclic collector is off while renders run, overlapping ones too, and on after."""
        for i in range(20):
            site.add(f"acct-{i:02d}")
        collector = WalletwatchCollector(lambda: site.watchers, site.telemetry, site.clock)
        text, openmetrics = negotiate("", ""), negotiate("application/openmetrics-text", "")
        first = asyncio.create_task(render(collector, text, slice_seconds=0))
        second = asyncio.create_task(render(collector, openmetrics, slice_seconds=0))
        during: list[bool] = []
        while not (first.done() and second.done()):
            during.append(gc.isenabled())
            await asyncio.sleep(0)
        assert len(during) > 2
        assert not any(during[1:-1])  # the first look comes before either render starts
        assert gc.isenabled()

    async def test_concurrent_scrapes_share_a_render(self, site: Site) -> None:
        """Scrapes arriving while a render is under way get its body; none starts another."""
        site.add("hot")
        calls: list[int] = []

        def watchers() -> list[AccountWatcher]:
            calls.append(1)
            return site.watchers

        collector = WalletwatchCollector(watchers, site.telemetry, site.clock)
        renders = Renders(slice_seconds=0)
        plain, packed = negotiate("", ""), negotiate("", "gzip", "192.0.2.7")
        first, second, gzipped = await asyncio.gather(
            renders.body(collector, plain),
            renders.body(collector, plain),
            renders.body(collector, packed),
        )
        assert first is second
        assert gzip.decompress(b"".join(gzipped)) == b"".join(first)
        assert len(calls) == 2  # one render per kind of body
        await renders.body(collector, plain)
        assert len(calls) == 3  # a scrape after it renders anew


class TestProbes:
    async def test_healthz(self, site: Site, client: WebClient) -> None:
        """/healthz answers 200 even before any poll."""
        site.add("hot")
        response = await client.get("/healthz")
        assert response.status == 200

    async def test_readyz_waits_for_every_endpoint_of_every_watcher(
        self, site: Site, client: WebClient
    ) -> None:
        """/readyz is 503 until each watcher polled each endpoint once, failed or not; then 200."""
        hot, cold = site.add("hot"), site.add("cold")
        assert (await client.get("/readyz")).status == 503
        await site.poll(hot, "balances", answer("balances"))
        await site.poll(hot, "withdrawals", answer("withdrawals"))
        assert (await client.get("/readyz")).status == 503
        await site.poll(cold, "balances", answer("balances"))
        assert (await client.get("/readyz")).status == 503
        await site.poll(cold, "withdrawals", Unavailable("down"))
        assert (await client.get("/readyz")).status == 200

    async def test_readyz_stays_ready_when_polls_fail_later(
        self, site: Site, client: WebClient
    ) -> None:
        """Once ready, /readyz stays 200 through failures; health is /metrics' business."""
        watcher = site.add("hot")
        for endpoint in ENDPOINTS:
            await site.poll(watcher, endpoint, answer(endpoint))
        await site.poll(watcher, "balances", Unavailable("down"))
        assert (await client.get("/readyz")).status == 200


class TestStatusPage:
    async def test_lists_accounts_with_escaped_names(self, site: Site, client: WebClient) -> None:
        """The page lists every account, its name HTML-escaped, under a strict policy."""
        site.add("<script>alert('x')</script>")
        site.add("ops & treasury", "kredswallet")
        response = await client.get("/")
        assert response.status == 200
        assert response.headers["Content-Type"].split(";")[0] == "text/html"
        assert response.headers["Content-Security-Policy"].startswith("default-src 'none'")
        page = await response.text()
        assert "<b>&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;</b>" in page
        assert page.count("<script>") == 1  # the page's own
        assert "<b>ops &amp; treasury</b><div class='muted'>kredswallet</div>" in page

    async def test_shows_each_accounts_state(self, site: Site, client: WebClient) -> None:
        """An account shows as waiting before its polls, up when they succeed, DOWN on failure."""
        waiting, up, down = site.add("a-waiting"), site.add("b-up"), site.add("c-down")
        for endpoint in ENDPOINTS:
            await site.poll(up, endpoint, answer(endpoint))
            await site.poll(down, endpoint, answer(endpoint))
        await site.poll(down, "withdrawals", Unavailable("connection refused"))
        page = await (await client.get("/")).text()
        row = "<tr class='row-{}'><td data-label='State'><span class='badge {}'>{}</span></td>"
        assert (
            row.format("waiting", "waiting", "… waiting")
            + f"<td data-label='Account' class='who'><b>{waiting.name}</b>"
        ) in page
        assert (
            row.format("up", "up", "✔ up")
            + f"<td data-label='Account' class='who'><b>{up.name}</b>"
        ) in page
        assert (
            row.format("down", "down", "✖ DOWN")
            + f"<td data-label='Account' class='who'><b>{down.name}</b>"
        ) in page
        assert "<b>withdrawals</b>: connection refused" in page
        assert page.index(down.name) < page.index(waiting.name) < page.index(up.name)
        assert "<code>1.25</code> BTC" in page
