"""PotWallet end to end: the simulator and the daemon on loopback, /metrics and the events file."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from walletwatch.app import Daemon
from walletwatch.clock import SystemClock
from walletwatch.config import Config, parse_config
from walletwatch.providers.potwallet import PotWallet
from walletwatch.sim import provider_app, serve
from walletwatch.sim.common import SimContext
from walletwatch.sim.potwallet import PotWalletSim

PUBLIC, PRIVATE = "it-pot-public", "it-pot-private"
READS = {"/balance", "/transactions/receive", "/transactions/send", "/price"}
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


@pytest.fixture(name="ctx")
def fixture_ctx() -> SimContext:
    """The simulation's context on the real clock, its limit far above the client's pace."""
    return SimContext(clock=time.time, rate_limit=100_000, retry_after_date=False)


@pytest.fixture(name="sim")
def fixture_sim(ctx: SimContext) -> PotWalletSim:
    """One account accepting both key variants: 1000 POT, a settled receive and send."""
    sim = PotWalletSim(ctx)
    sim.add_account(PUBLIC, PRIVATE)
    sim.add_transaction(PUBLIC, category="receive", amount=Decimal(1200), date=time.time() - 7200)
    sim.add_transaction(PUBLIC, category="send", amount=Decimal(200), date=time.time() - 3600)
    for currency, price in {"USD": "0.00142", "CAD": "0.00176341", "C D+": "9"}.items():
        sim.set_price(currency, Decimal(price))
    return sim


@pytest.fixture(name="sim_url")
async def fixture_sim_url(sim: PotWalletSim) -> AsyncIterator[str]:
    """The simulator served on a loopback port: API at /potwallet, controls at /_sim."""
    runner, port = await serve(provider_app(sim))
    yield f"http://127.0.0.1:{port}"
    await runner.cleanup()


def make_config(sim_url: str, tmp_path: Path, *accounts: dict[str, Any]) -> Config:
    """A daemon config watching ``accounts`` (name plus options) at the simulator."""
    entries = [
        {
            "provider": "potwallet",
            "base_url": f"{sim_url}/potwallet",
            "credentials": {"public_key": PUBLIC, "private_key": PRIVATE},
            **account,
        }
        for account in accounts
    ]
    return parse_config(
        {
            "listen": "127.0.0.1:0",
            "state_path": "state.db",
            "events_file": "events.jsonl",
            "providers": {"potwallet": {"rate_limit": 1000}},
            "accounts": entries,
        },
        base_dir=tmp_path,
        environ={},
    )


async def run(
    config: Config, polls: int = 1, between: Callable[[], Awaitable[None]] | None = None
) -> tuple[Samples, list[Any]]:
    """Start a daemon, poll every endpoint ``polls`` times (calling ``between`` after the
    first), scrape /metrics, close; return the samples and the events file."""
    daemon = Daemon(config, clock=SystemClock(), providers={"potwallet": PotWallet})
    await daemon.start()
    try:
        for n in range(polls):
            await daemon.poll_once()
            if n == 0 and between is not None:
                await between()
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"{daemon.url}/metrics") as resp,
        ):
            assert resp.status == 200
            text = await resp.text()
    finally:
        await daemon.close()
    samples = {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    assert config.events_file is not None
    lines = config.events_file.read_text().splitlines() if config.events_file.exists() else []
    return samples, [json.loads(line) for line in lines]


def sample(samples: Samples, name: str, account: str, **labels: str) -> float | None:
    """One sample's value for a potwallet account, or None when absent."""
    return samples.get(
        (name, frozenset({"provider": "potwallet", "account": account, **labels}.items()))
    )


def assert_only_reads(ctx: SimContext) -> None:
    """The daemon made no write call, and every request it made was to a read path."""
    rows = ctx.requests.as_json()
    assert rows
    assert ctx.write_calls == []
    assert {row["path"] for row in rows} <= READS


class TestEndToEnd:
    """PotWallet accounts through every room of the house."""

    async def test_both_variants_deposits_withdrawals_and_price(
        self, sim: PotWalletSim, ctx: SimContext, sim_url: str, tmp_path: Path
    ) -> None:
        """raw and sha1 accounts on one key poll cleanly; new transfers and price show."""
        config = make_config(
            sim_url,
            tmp_path,
            {"name": "raw"},
            {"name": "sha1", "hash_key": "sha1", "price_currency": "CAD"},
        )

        async def activity() -> None:
            async with aiohttp.ClientSession() as session:
                tx = {"category": "receive", "amount": "250.125", "txid": "in-1"}
                url = f"{sim_url}/_sim/potwallet/{PUBLIC}/transactions"
                async with session.post(url, json=tx) as resp:
                    assert resp.status == 201
            sim.add_transaction(PUBLIC, category="send", amount=Decimal("50.5"), txid="out-1")
            sim.set_price("USD", Decimal("0.0015"))

        metrics, events = await run(config, polls=2, between=activity)

        for account, quote, price in (("raw", "USD", 0.0015), ("sha1", "CAD", 0.00176341)):
            assert sample(metrics, "walletwatch_up", account) == 1.0
            assert sample(metrics, "walletwatch_balance", account, currency="POT") == 1199.625
            labels = {"currency": "POT", "quote": quote}
            assert sample(metrics, "walletwatch_price", account, **labels) == price
            for direction, state, amount in (
                ("deposit", "ok", 250.125),
                ("withdrawal", "ok", 50.5),
            ):
                labels = {"currency": "POT", "direction": direction, "state": state}
                assert sample(metrics, "walletwatch_transfers_total", account, **labels) == 1.0
                total = sample(metrics, "walletwatch_transfer_amount_total", account, **labels)
                assert total == amount
            mine = [(e["event"], e.get("transfer_id")) for e in events if e["account"] == account]
            assert [e for e in mine if e[1] is not None] == [
                ("deposit.detected", "in-1"),
                ("deposit.confirmed", "in-1"),
                ("withdrawal.detected", "out-1"),
                ("withdrawal.completed", "out-1"),
            ]
        assert {variant for _, variant in sim.accepted} == {"raw", "sha1"}
        assert_only_reads(ctx)

    async def test_wrong_key_is_an_auth_failure(
        self, sim: PotWalletSim, ctx: SimContext, sim_url: str, tmp_path: Path
    ) -> None:
        """A wrong private key: every endpoint counts one auth error and walletwatch_up is 0."""
        config = make_config(
            sim_url,
            tmp_path,
            {"name": "bad", "credentials": {"public_key": PUBLIC, "private_key": "revoked"}},
        )

        metrics, events = await run(config)

        assert sample(metrics, "walletwatch_up", "bad") == 0.0
        for endpoint in PotWallet.endpoints:
            labels = {"endpoint": endpoint}
            assert (
                sample(metrics, "walletwatch_poll_errors_total", "bad", **labels, reason="auth")
                == 1.0
            )
            assert sample(metrics, "walletwatch_polls_total", "bad", **labels) == 1.0
        assert sample(metrics, "walletwatch_balance", "bad", currency="POT") is None
        assert "revoked" not in json.dumps(events)
        assert sim.accepted == []
        assert_only_reads(ctx)

    async def test_odd_quote_is_signed_as_sent(self, sim_url: str, tmp_path: Path) -> None:
        """A quote needing percent-encoding still verifies: the client signs the URL on the wire."""
        config = make_config(sim_url, tmp_path, {"name": "odd", "price_currency": "C D+"})

        metrics, _ = await run(config)

        assert sample(metrics, "walletwatch_up", "odd") == 1.0
        assert sample(metrics, "walletwatch_price", "odd", currency="POT", quote="C D+") == 9.0
