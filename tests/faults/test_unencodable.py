"""Strings that cannot be encoded as given: a lone surrogate from a provider's JSON.

A JSON text may spell a lone UTF-16 surrogate (``"\\ud800"``); Python decodes it into a str
that UTF-8 cannot encode. It must be kept as the escaped text ``\\ud800`` (six characters),
so that it can be stored, announced and served, and never stop an account or /metrics.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.hostile.harness import (
    BY_NAME,
    WHEN,
    Answer,
    HostileServer,
    make_config,
    serve,
    started,
)
from walletwatch.app import Daemon
from walletwatch.events import Event
from walletwatch.model import Direction
from walletwatch.store import Store
from walletwatch.types import SystemClock

SURROGATE = "\\ud800"  # the JSON text of a lone surrogate, and the escaped text it is kept as
WESTWALLET, BITEXBIT = BY_NAME["westwallet"], BY_NAME["bitexbit"]


def deposits(*hashes: str) -> bytes:
    """A WestWallet deposits answer: one completed deposit per hash (JSON text), ids from 1."""
    items = ",".join(
        f'{{"id": {n}, "created_at": "{WHEN}", "updated_at": "{WHEN}", "type": "receive", '
        f'"amount": "1.5", "fee": "0", "address": "addr1", "currency": "BTC", '
        f'"status": "completed", "blockchain_confirmations": 3, "blockchain_hash": "{h}"}}'
        for n, h in enumerate(hashes, 1)
    )
    return f'{{"error": "ok", "result": [{items}]}}'.encode()


def methods(ticker: str) -> bytes:
    """A bitexbit payment-methods answer with one method of ``ticker`` (JSON text)."""
    return (
        f'[{{"ticker": "{ticker}", "network": "BTC", "is_deposit_enabled": true, '
        f'"is_withdraw_enabled": true}}]'
    ).encode()


@pytest.fixture(name="server")
def fixture_server() -> HostileServer:
    """A hostile server answering every route well."""
    server = HostileServer()
    server.serve_good(WESTWALLET)
    good_bitexbit = HostileServer()
    good_bitexbit.serve_good(BITEXBIT)
    server.answers.update(good_bitexbit.answers)
    return server


@pytest.fixture(name="url")
async def fixture_url(server: HostileServer) -> AsyncIterator[str]:
    """The server on a loopback port."""
    async for url in serve(server.app()):
        yield url


@pytest.fixture(name="daemon")
async def fixture_daemon(url: str, tmp_path: Path) -> AsyncIterator[Daemon]:
    """A daemon serving /metrics on loopback, watching a WestWallet and a bitexbit account."""
    config = make_config(
        tmp_path,
        [WESTWALLET.account(url, name="ww"), BITEXBIT.account(url, name="bx")],
    )
    daemon = Daemon(config, clock=SystemClock())
    await daemon.start(serve=True)
    try:
        yield daemon
    finally:
        await daemon.close()


def outbox(path: Path) -> list[Event]:
    """Every event the store holds in its outbox, read back from its JSON."""
    store = Store(path)
    try:
        rows = store._db.execute("SELECT body FROM outbox ORDER BY seq").fetchall()  # noqa: SLF001
    finally:
        store.close()
    return [Event.from_json(body) for (body,) in rows]


async def scrape(daemon: Daemon) -> tuple[int, str]:
    """GET /metrics: the status and the body."""
    async with aiohttp.ClientSession() as session, session.get(daemon.url + "/metrics") as resp:
        return resp.status, await resp.text(errors="strict")


def samples(text: str, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    """The samples of one metric in an exposition, by their sorted labels."""
    return {
        tuple(sorted(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == name
    }


class TestWestWallet:
    async def test_surrogate_in_blockchain_hash(
        self, daemon: Daemon, server: HostileServer, tmp_path: Path
    ) -> None:
        """A deposit whose hash is a lone surrogate is stored and announced with it escaped,
        and the deposits after it are announced too."""
        watcher = daemon.watchers["ww"]
        server.answers["/ww/wallet/transactions:receive"] = Answer(deposits("h1"))
        assert (await watcher.poll("deposits")).ok  # the baseline
        server.answers["/ww/wallet/transactions:receive"] = Answer(deposits("h1", SURROGATE))
        assert (await watcher.poll("deposits")).ok, watcher.health["deposits"]
        server.answers["/ww/wallet/transactions:receive"] = Answer(
            deposits("h1", SURROGATE, "h3")
        )
        assert (await watcher.poll("deposits")).ok, watcher.health["deposits"]
        assert daemon.telemetry.store_errors["westwallet"] == 0
        detected = {
            e.fields["transfer_id"]: e.fields.get("txid")
            for e in outbox(tmp_path / "state.db")
            if e.event == "deposit.detected"
        }
        assert detected == {"2": SURROGATE, "3": "h3"}
        stored = Store(tmp_path / "state.db")
        try:
            state = stored.load()["ww"]
        finally:
            stored.close()
        assert state.known(Direction.DEPOSIT, "2") and state.known(Direction.DEPOSIT, "3")

    async def test_surrogate_in_a_balances_currency_key(
        self, daemon: Daemon, server: HostileServer
    ) -> None:
        """A currency key that is a lone surrogate is kept escaped: stored, served, no crash."""
        watcher = daemon.watchers["ww"]
        server.answers["/ww/wallet/balances"] = Answer(
            f'{{"BTC": "2", "{SURROGATE}": "1.5", "error": "ok"}}'.encode()
        )
        assert (await watcher.poll("balances")).ok, watcher.health.get("balances")
        assert set(watcher.state.balances) == {"BTC", SURROGATE}
        assert daemon.telemetry.store_errors["westwallet"] == 0
        status, text = await scrape(daemon)
        assert status == 200
        balances = samples(text, "walletwatch_balance")
        key = (("account", "ww"), ("currency", SURROGATE), ("provider", "westwallet"))
        assert balances[key] == 1.5


class TestBitexbit:
    async def test_surrogate_in_a_payment_method_ticker(
        self, daemon: Daemon, server: HostileServer
    ) -> None:
        """/metrics answers 200 with the ticker escaped, and still does once the answer is fixed."""
        watcher = daemon.watchers["bx"]
        for endpoint in daemon.watchers["ww"].endpoints:
            assert (await daemon.watchers["ww"].poll(endpoint)).ok
        server.answers["/api/gateway/payment-methods"] = Answer(methods(SURROGATE))
        assert (await watcher.poll("payment_methods")).ok, watcher.health
        status, text = await scrape(daemon)
        assert status == 200
        enabled = samples(text, "walletwatch_payment_method_enabled")
        assert {dict(k)["ticker"] for k in enabled} == {SURROGATE}
        assert samples(text, "walletwatch_up")[(("account", "ww"), ("provider", "westwallet"))] == 1
        server.answers["/api/gateway/payment-methods"] = Answer(methods("BTC"))
        assert (await watcher.poll("payment_methods")).ok
        status, text = await scrape(daemon)
        assert status == 200
        assert "BTC" in {dict(k)["ticker"] for k in samples(text, "walletwatch_payment_method_enabled")}
