"""bitexbit end to end: its simulator and the daemon on loopback, at the real 2 requests/s.

The simulator enforces the published limit and the daemon paces at its default bitexbit
rate_limit, so every request costs about 0.53 s of real time: the tests keep to a few rounds.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from walletwatch.app import Daemon
from walletwatch.clock import SystemClock
from walletwatch.config import Config, parse_config
from walletwatch.providers.bitexbit import Bitexbit
from walletwatch.sim import provider_app, serve
from walletwatch.sim.bitexbit import BitexbitSim
from walletwatch.sim.common import SimContext

KEY, SECRET = "bx-it-key", "bx-it-secret"
READS = {
    "/api/gateway/wallet/history",
    "/api/gateway/withdraw/history",
    "/api/gateway/payment-methods",
    "/api/v2/private/balance",
}
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


@pytest.fixture(name="ctx")
def fixture_ctx() -> SimContext:
    """The simulator's context at the real 2 requests/s per key, with its request log."""
    return SimContext(clock=time.time, rate_limit=2.0, retry_after_date=False)


@pytest.fixture(name="sim")
def fixture_sim(ctx: SimContext) -> BitexbitSim:
    """A simulator with a settled history, an extra payment method and a balance."""
    sim = BitexbitSim(ctx)
    sim.add_account(KEY, SECRET)
    sim.set_balance(KEY, "USDT", Decimal(1500))
    sim.set_payment_method("USDT", "ethereum", deposit=True, withdraw=False)
    sim.add_deposit(
        KEY,
        ticker="USDT",
        network="tron",
        amount=Decimal(100),
        status="5",
        confirmations=3,
        created_at=time.time() - 86400,
    )
    sim.add_withdrawal(
        KEY, ticker="USDT", network="tron", amount=Decimal(40), status=30, created_at=time.time()
    )
    return sim


@pytest.fixture(name="sim_url")
async def fixture_sim_url(sim: BitexbitSim) -> AsyncIterator[str]:
    """The simulator's API under /bitexbit and its controls under /_sim/bitexbit."""
    runner, port = await serve(provider_app(sim))
    yield f"http://127.0.0.1:{port}"
    await runner.cleanup()


def make_config(tmp_path: Path, *accounts: dict[str, Any]) -> Config:
    """A daemon config with the default bitexbit rate limits (no providers: section)."""
    return parse_config(
        {
            "listen": "127.0.0.1:0",
            "state_path": "state.db",
            "events_file": "events.jsonl",
            "accounts": list(accounts),
        },
        base_dir=tmp_path,
        environ={},
    )


def account(name: str, sim_url: str, **options: object) -> dict[str, Any]:
    """One bitexbit account on the simulator's key."""
    return {
        "name": name,
        "provider": "bitexbit",
        "base_url": f"{sim_url}/bitexbit/api/gateway",
        "credentials": {"api_key": KEY, "secret_key": SECRET},
        "withdrawal_stuck_after": "1h",
        **options,
    }


@pytest.fixture(name="daemon_for")
async def fixture_daemon_for(sim_url: str, tmp_path: Path) -> AsyncIterator[Any]:
    """Start a daemon for {account name: options}; every daemon is closed after the test."""
    started: list[Daemon] = []

    async def start(accounts: dict[str, dict[str, object]]) -> tuple[Daemon, Config]:
        config = make_config(
            tmp_path, *(account(name, sim_url, **options) for name, options in accounts.items())
        )
        daemon = Daemon(config, clock=SystemClock(), providers={"bitexbit": Bitexbit})
        await daemon.start()
        started.append(daemon)
        return daemon, config

    yield start
    for daemon in started:
        await daemon.close()


async def scrape(daemon: Daemon) -> Samples:
    """GET /metrics and index the samples by name and labels."""
    async with aiohttp.ClientSession() as session, session.get(f"{daemon.url}/metrics") as resp:
        assert resp.status == 200
        text = await resp.text()
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def sample(samples: Samples, name: str, **labels: str) -> float | None:
    """One sample of the account "bx", or None when absent."""
    labels = {"provider": "bitexbit", "account": "bx", **labels}
    return samples.get((f"walletwatch_{name}", frozenset(labels.items())))


def events(config: Config) -> list[dict[str, Any]]:
    """The events file, parsed."""
    assert config.events_file is not None
    if not config.events_file.exists():
        return []
    return [json.loads(line) for line in config.events_file.read_text().splitlines()]


async def poll_withdrawals(daemon: Daemon) -> None:
    """One poll of the withdrawal history only (a ladder step costs one request, not four)."""
    await daemon.watchers["bx"].poll("withdrawals")
    await daemon.deliver()


def assert_clean(sim: BitexbitSim, ctx: SimContext) -> None:
    """No 429, no refused signature, no write: every request was a read the sim accepted."""
    assert {path for _, path, _ in sim.calls} <= READS
    requests = ctx.requests
    assert requests.count(provider="bitexbit", status=429) == 0
    assert requests.count(provider="bitexbit") == requests.count(provider="bitexbit", status=200)
    assert requests.count(provider="bitexbit") == len(sim.calls) > 0
    assert ctx.write_calls == []


class TestEndToEnd:
    """A bitexbit account through the daemon under each signing scheme."""

    @pytest.mark.parametrize(
        "case", [("gateway", "v2"), ("v2", None), ("v1", None)], ids=["gateway", "v2", "v1"]
    )
    async def test_ladder_deposit_methods_balance(
        self, sim: BitexbitSim, ctx: SimContext, daemon_for: Any, case: tuple[str, str | None]
    ) -> None:
        """Each scheme signs every read; the ladder gives one event per step; gauges export."""
        scheme, balances = case  # the v2 balance poll goes with the gateway scheme
        options: dict[str, object] = {"auth_scheme": scheme}
        if balances is not None:
            options["balances"] = balances
        daemon, config = await daemon_for({"bx": options})

        await daemon.poll_once()
        metrics = await scrape(daemon)
        assert sample(metrics, "up") == 1.0
        assert events(config) == []
        enabled = {
            (t, n, d): sample(metrics, "payment_method_enabled", ticker=t, network=n, direction=d)
            for t, n in (("BTC", "bitcoin"), ("USDT", "ethereum"))
            for d in ("deposit", "withdrawal")
        }
        assert enabled == {
            ("BTC", "bitcoin", "deposit"): 1.0,
            ("BTC", "bitcoin", "withdrawal"): 1.0,
            ("USDT", "ethereum", "deposit"): 1.0,
            ("USDT", "ethereum", "withdrawal"): 0.0,
        }
        if balances is None:
            assert sample(metrics, "balance", currency="USDT") is None
        else:  # 1500 + 100 deposited - 40 withdrawn; nothing reserved
            assert sample(metrics, "balance", currency="USDT") == 1560.0
            assert sample(metrics, "balance_pending", currency="USDT") == 0.0

        wid = sim.add_withdrawal(KEY, ticker="USDT", network="tron", amount=Decimal("22.5"))
        did = sim.add_deposit(
            KEY,
            ticker="BTC",
            network="bitcoin",
            amount=Decimal("0.015"),
            confirmations=1,
            aml_success=True,
            aml_risk=Decimal("0.12"),
        )
        sim.set_payment_method("USDT", "ethereum", deposit=True, withdraw=True)
        await daemon.poll_once()  # detected: the withdrawal in 10, the deposit pending
        sim.advance_withdrawal(KEY, wid)
        sim.update_deposit(KEY, did, confirmations=3)
        await daemon.poll_once()  # 20; the deposit confirmed
        metrics = await scrape(daemon)
        labels = {"ticker": "USDT", "network": "ethereum", "direction": "withdrawal"}
        assert sample(metrics, "payment_method_enabled", **labels) == 1.0
        if balances is not None:  # the withdrawal's amount moved to reserved
            assert sample(metrics, "balance", currency="USDT") == 1537.5
            assert sample(metrics, "balance_pending", currency="USDT") == 22.5
        for _ in range(4):  # 23, 25, 26, 30
            sim.advance_withdrawal(KEY, wid)
            await poll_withdrawals(daemon)

        seen = events(config)
        ladder = [
            (e["event"], e["status"], e.get("status_name"))
            for e in seen
            if e.get("transfer_id") == str(wid)
        ]
        assert ladder == [
            ("withdrawal.detected", "10", "new"),
            ("withdrawal.status_changed", "20", "confirmed"),
            ("withdrawal.status_changed", "23", "verified"),
            ("withdrawal.status_changed", "25", "moderation"),
            ("withdrawal.status_changed", "26", "approved"),
            ("withdrawal.completed", "30", "done"),
        ]
        item = sim.deposit(KEY, did)
        deposit = [e for e in seen if e.get("transfer_id") == f"{item['txid']}:{item['address']}"]
        assert [(e["event"], e["confirmations"]) for e in deposit] == [
            ("deposit.detected", 1),
            ("deposit.confirmed", 3),
        ]
        assert deposit[1]["amount"] == "0.015"
        assert (deposit[1]["aml_success"], deposit[1]["aml_risk"]) == ("true", "0.12")
        assert deposit[1]["required_confirmations"] == "3"
        assert {scheme_used for _, path, scheme_used in sim.calls if "gateway" in path} == {scheme}
        if balances is not None:
            assert {s for _, path, s in sim.calls if "v2" in path} == {"v2"}
        assert_clean(sim, ctx)


class TestSharedKey:
    """Accounts on one API key share its 2/s budget."""

    async def test_two_accounts_one_key_never_429(
        self, sim: BitexbitSim, ctx: SimContext, daemon_for: Any
    ) -> None:
        """Two accounts polled at once on one key stay inside its limit: no 429 at all."""
        daemon, config = await daemon_for(
            {"bx": {}, "bx-v1": {"auth_scheme": "v1", "balances": "v2"}}
        )
        started = time.monotonic()

        await daemon.poll_once()
        wid = sim.add_withdrawal(KEY, ticker="USDT", network="tron", amount=Decimal(5))
        await daemon.poll_once()

        elapsed = time.monotonic() - started
        assert len(sim.calls) == 14  # 2 rounds of 3 + 4 endpoints
        assert elapsed >= 13 / 2.0  # 14 requests on one key, at most 2 per second
        detected = [e["account"] for e in events(config) if e["event"] == "withdrawal.detected"]
        assert sorted(detected) == ["bx", "bx-v1"]
        assert {e.get("transfer_id") for e in events(config) if "transfer_id" in e} == {str(wid)}
        metrics = await scrape(daemon)
        for name in ("bx", "bx-v1"):
            labels = {"provider": "bitexbit", "account": name}
            assert metrics[("walletwatch_up", frozenset(labels.items()))] == 1.0
        assert_clean(sim, ctx)
