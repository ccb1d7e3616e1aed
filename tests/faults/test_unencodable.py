"""Strings that cannot be encoded as given: a lone surrogate from a provider's JSON.

A JSON text may spell a lone UTF-16 surrogate (``"\\ud800"``); Python decodes it into a str
that UTF-8 cannot encode. It must be kept as the escaped text ``\\ud800`` (six characters),
so that it can be stored, announced and served, and never stop an account or /metrics.
"""

from __future__ import annotations

import contextlib
import io
import json
import sqlite3
from collections.abc import AsyncIterator
from dataclasses import replace
from decimal import Decimal
from pathlib import Path
from typing import cast

import aiohttp
import pytest
import structlog
from prometheus_client.parser import text_string_to_metric_families
from structlog.testing import capture_logs

from tests.fakes import ScriptedProvider
from tests.hostile.harness import (
    BY_NAME,
    WHEN,
    Answer,
    HostileServer,
    make_config,
    serve,
)
from tests.monitoring.tools import promtool
from walletwatch import logs
from walletwatch.app import Daemon
from walletwatch.clock import SystemClock
from walletwatch.escape import SURROGATES, escaped
from walletwatch.events import Event, event_id
from walletwatch.exposition import EXPOSITION_ERRORS
from walletwatch.model import Balance, Direction, Gauge, Observation
from walletwatch.store import Store, StoreError
from walletwatch.tracker import AccountState, TrackedBalance

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
    """Every event the store holds in its outbox, read back from its JSON (read-only: the
    running daemon holds the state)."""
    with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
        rows = db.execute("SELECT body FROM outbox ORDER BY seq").fetchall()
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
        server.answers["/ww/wallet/transactions:receive"] = Answer(deposits("h1", SURROGATE, "h3"))
        assert (await watcher.poll("deposits")).ok, watcher.health["deposits"]
        assert daemon.telemetry.store_errors["westwallet"] == 0
        detected = {
            e.fields["transfer_id"]: e.fields.get("txid")
            for e in outbox(tmp_path / "state.db")
            if e.event == "deposit.detected"
        }
        assert detected == {"2": SURROGATE, "3": "h3"}
        state = (await daemon.store.call(daemon.store.store.load))["ww"]
        assert state.known(Direction.DEPOSIT, "2")
        assert state.known(Direction.DEPOSIT, "3")

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
        assert "BTC" in {
            dict(k)["ticker"] for k in samples(text, "walletwatch_payment_method_enabled")
        }


# Behind the parser: values that reach each output as they are, as a bug past parsing could
# let them. Each output must still take them, escaped.
RAW = '\ud800 \x00\x1b]0;title\x07 \x85 "quoted" back\\slash \n end'
RAW_ESCAPED = '\\ud800 \\u0000\\u001b]0;title\\u0007 \\u0085 "quoted" back\\slash \n end'


class TestBehindTheParser:
    def test_a_commit_that_raises_anything_is_a_store_error(self, tmp_path: Path) -> None:
        """A state SQLite cannot take fails the commit as StoreError, and the next commits work."""
        store = Store(tmp_path / "state.db")
        try:
            bad = AccountState(balances={RAW: TrackedBalance(Balance(RAW, Decimal(1)))})
            with pytest.raises(StoreError, match="UnicodeEncodeError"):
                store.commit("acct", "westwallet", AccountState(), bad, [])
            good = AccountState(balances={"BTC": TrackedBalance(Balance("BTC", Decimal(1)))})
            store.commit("acct", "westwallet", AccountState(), good, [])
            assert set(store.load()["acct"].balances) == {"BTC"}
        finally:
            store.close()

    async def test_raw_label_values_are_served_escaped(self, daemon: Daemon) -> None:
        """Surrogates and control characters in label values are served as escape text; the
        exposition parses and promtool accepts it."""
        watcher = daemon.watchers["bx"]
        gauge = Gauge("payment_method_enabled", (("ticker", RAW),), Decimal(1))
        watcher.gauges[(gauge.name, gauge.labels)] = gauge
        status, text = await scrape(daemon)
        assert status == 200
        enabled = samples(text, "walletwatch_payment_method_enabled")
        assert {dict(k)["ticker"] for k in enabled} == {RAW_ESCAPED}
        checked = promtool("check", "metrics", stdin=text)
        assert checked.returncode == 0, checked.stdout + checked.stderr

    async def test_an_account_that_cannot_render_shows_down_and_recovers(
        self, daemon: Daemon
    ) -> None:
        """One account whose series fail shows up 0 while every other account is served, is
        logged once, and is served again once its state is fine: nothing failed is kept."""
        for watcher in daemon.watchers.values():
            for endpoint in watcher.endpoints:
                assert (await watcher.poll(endpoint)).ok
        ww = daemon.watchers["ww"]
        good = ww.state
        broken = Balance("BTC", cast(Decimal, "not a number"))  # float() of it raises
        ww.state = replace(good, balances={"BTC": TrackedBalance(broken)})
        with capture_logs() as logs:
            first, second = await scrape(daemon), await scrape(daemon)
        for status, text in (first, second):
            assert status == 200
            up = samples(text, "walletwatch_up")
            assert up[(("account", "ww"), ("provider", "westwallet"))] == 0
            assert up[(("account", "bx"), ("provider", "bitexbit"))] == 1
            assert {dict(k)["account"] for k in samples(text, "walletwatch_balance")} == {"bx"}
        assert [e["event"] for e in logs if e["log_level"] == "error"] == ["metrics.account_failed"]
        ww.state = good
        status, text = await scrape(daemon)
        assert status == 200
        assert samples(text, "walletwatch_up")[(("account", "ww"), ("provider", "westwallet"))] == 1
        assert {dict(k)["account"] for k in samples(text, "walletwatch_balance")} == {"bx", "ww"}

    def test_event_json_is_strict_json(self) -> None:
        """An event carrying a lone surrogate, or a value JSON has no form for, is written as
        JSON that strict parsers accept."""
        fields = {"txid": RAW, "details": ((RAW, RAW),), "odd": frozenset({"a"})}
        event = Event("deposit.detected", event_id(RAW), 0.0, "westwallet", RAW, fields)
        text = event.to_json()
        text.encode("utf-8")  # strict
        assert "\\ud800" not in text.replace("\\\\", "")  # no lone surrogate escape left
        back = Event.from_json(text)
        assert (back.account, back.fields["txid"]) == (escaped(RAW, SURROGATES),) * 2
        assert back.fields["details"] == [[escaped(RAW, SURROGATES)] * 2]
        assert back.fields["odd"] == "frozenset({'a'})"

    def test_the_exposition_encodes_whatever_it_is_given(self) -> None:
        """Text the label escaping did not see is encoded as escape text a label value or
        HELP line may hold, never as an error."""
        assert "a\ud800b".encode("utf-8", EXPOSITION_ERRORS) == b"a\\\\ud800b"

    @pytest.mark.parametrize("fmt", ["json", "console"])
    def test_logs_never_raise(self, fmt: str) -> None:
        """A log line with a lone surrogate or control characters, in a value or in the
        traceback, is written with them escaped."""
        buffer = io.BytesIO()
        stream = io.TextIOWrapper(buffer, encoding="utf-8", errors="strict", write_through=True)
        logs.configure(fmt, stream)
        try:
            structlog.get_logger("test").error("poll.crashed", error=RAW, exc_info=ValueError(RAW))
        finally:
            structlog.reset_defaults()
        text = buffer.getvalue().decode("utf-8")
        if fmt == "json":  # what a reader of the JSON gets back: text, no raw characters
            text = "".join(str(value) for value in json.loads(text).values())
        assert "\\ud800" in text
        assert "\ud800" not in text
        assert "\x1b]0;" not in text  # the console's own colours aside, no escape character
        assert "\x00" not in text

    async def test_status_page_renders(self, daemon: Daemon) -> None:
        """The status page shows an account with unencodable balances as UTF-8 text."""
        ww = daemon.watchers["ww"]
        ww.state = replace(ww.state, balances={RAW: TrackedBalance(Balance(RAW, Decimal(1)))})
        async with aiohttp.ClientSession() as session, session.get(daemon.url + "/") as resp:
            assert resp.status == 200
            page = (await resp.read()).decode("utf-8")  # strict
        assert "\\ud800" in page


class TestCrashingPolls:
    @pytest.mark.parametrize(
        "answer",
        [KeyError("balance"), cast(Observation, object())],
        ids=["client_raises", "tracker_raises"],
    )
    async def test_a_poll_that_raises_is_a_failed_poll(
        self, answer: Observation | Exception, daemon: Daemon, tmp_path: Path
    ) -> None:
        """Whatever a poll raises, in the client or past it, it fails as reason internal: up 0,
        counted, logged with its traceback once, and account.down after down_after of them."""
        ww = daemon.watchers["ww"]
        for endpoint in ww.endpoints:
            assert (await ww.poll(endpoint)).ok
        scripted = ScriptedProvider(ww.endpoints)
        ww.client = scripted
        with capture_logs() as logs:
            for _ in range(ww.down_after):
                scripted.answers["balances"].append(answer)
                assert not (await ww.poll("balances")).ok
        assert ww.health["balances"].reason == "internal"
        assert ww.up is False
        errors = daemon.telemetry.poll_errors[("westwallet", "ww", "balances", "internal")]
        assert errors == ww.down_after
        assert [e["event"] for e in logs if e["log_level"] == "error"] == ["poll.crashed"]
        assert "account.down" in [e.event for e in outbox(tmp_path / "state.db")]
        status, text = await scrape(daemon)
        assert status == 200
        assert samples(text, "walletwatch_up")[(("account", "ww"), ("provider", "westwallet"))] == 0
