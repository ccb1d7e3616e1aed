"""walletwatch end to end: simulator and daemon on loopback, /metrics and the events file."""

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
from walletwatch.errors import ConfigError
from walletwatch.sim import Simulator, start

KEY, SECRET = "it-key", "it-secret"
LABELS = {"provider": "westwallet", "account": "hot"}


@pytest.fixture(name="sim")
def fixture_sim() -> Simulator:
    """A simulator with one account: BTC and USDT, a settled deposit, a stuck withdrawal."""
    sim = Simulator(rate_limit=100_000)  # well above the client's pace: no 429 here
    ww = sim.westwallet
    ww.add_account(KEY, SECRET, {"BTC": Decimal(2), "USDT": Decimal(1500)})
    ww.add_transaction(
        KEY,
        type="receive",
        currency="BTC",
        amount=Decimal("0.5"),
        status="completed",
        confirmations=6,
        created_at=time.time() - 86400,
    )
    ww.add_transaction(
        KEY, type="send", currency="BTC", amount=Decimal("0.25"), created_at=time.time() - 2 * 3600
    )
    return sim


@pytest.fixture(name="sim_url")
async def fixture_sim_url(sim: Simulator) -> AsyncIterator[str]:
    """The simulator served on a loopback port."""
    runner, port = await start(sim, "127.0.0.1", 0)
    yield f"http://127.0.0.1:{port}"
    await runner.cleanup()


def make_config(sim_url: str, tmp_path: Path, secret: str = SECRET) -> Config:
    """A daemon config watching the simulator's account."""
    return parse_config(
        {
            "listen": "127.0.0.1:0",
            "state_path": "state.db",
            "events_file": "events.jsonl",
            "providers": {"westwallet": {"rate_limit": 1000}},
            "accounts": [
                {
                    "name": "hot",
                    "provider": "westwallet",
                    "base_url": f"{sim_url}/westwallet",
                    "credentials": {"api_key": KEY, "secret_key": secret},
                    "low_balance": {"USDT": "1000"},
                    "withdrawal_stuck_after": "1h",
                }
            ],
        },
        base_dir=tmp_path,
        environ={},
    )


@pytest.fixture(name="config")
def fixture_config(sim_url: str, tmp_path: Path) -> Config:
    """The daemon's config."""
    return make_config(sim_url, tmp_path)


@pytest.fixture(name="daemon")
async def fixture_daemon(config: Config) -> AsyncIterator[Daemon]:
    """A started daemon serving /metrics on a loopback port (polls are driven by the test)."""
    daemon = Daemon(config, clock=SystemClock())
    await daemon.start()
    yield daemon
    await daemon.close()


async def scrape(daemon: Daemon) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """GET /metrics and index the samples by name and labels."""
    async with aiohttp.ClientSession() as session, session.get(f"{daemon.url}/metrics") as resp:
        assert resp.status == 200
        text = await resp.text()
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def sample(samples: dict[Any, float], name: str, **labels: str) -> float | None:
    """One sample's value, or None when absent."""
    return samples.get((name, frozenset({**LABELS, **labels}.items())))


def events(config: Config) -> list[dict[str, Any]]:
    """The events file, parsed."""
    assert config.events_file is not None
    if not config.events_file.exists():
        return []
    return [json.loads(line) for line in config.events_file.read_text().splitlines()]


def named(items: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    """Events of one name."""
    return [e for e in items if e["event"] == name]


class TestEndToEnd:
    """One account through every room of the house."""

    async def test_deposit_stuck_and_low(
        self, sim: Simulator, daemon: Daemon, config: Config
    ) -> None:
        """Baseline is silent; a deposit is detected and confirmed once; stuck and low show."""
        await daemon.poll_once()
        metrics = await scrape(daemon)
        assert sample(metrics, "walletwatch_up") == 1.0
        assert sample(metrics, "walletwatch_balance", currency="BTC") == float(
            sim.westwallet.balance(KEY, "BTC")
        )
        assert (
            sample(metrics, "walletwatch_transfers_stuck", currency="BTC", direction="withdrawal")
            == 1.0
        )
        baseline = events(config)
        assert [e["event"] for e in baseline] == ["withdrawal.stuck"]

        deposit = sim.westwallet.add_transaction(
            KEY, type="receive", currency="USDT", amount=Decimal("250.10"), confirmations=1
        )
        await daemon.poll_once()
        sim.westwallet.set_status(KEY, deposit, "completed", confirmations=12)
        await daemon.poll_once()
        await daemon.poll_once()

        seen = events(config)
        detected = named(seen, "deposit.detected")
        confirmed = named(seen, "deposit.confirmed")
        assert [(e["transfer_id"], e["amount"]) for e in detected] == [(str(deposit), "250.10")]
        assert [(e["transfer_id"], e["state"]) for e in confirmed] == [(str(deposit), "ok")]
        metrics = await scrape(daemon)
        assert (
            sample(
                metrics,
                "walletwatch_transfers_total",
                currency="USDT",
                direction="deposit",
                state="ok",
            )
            == 1.0
        )
        assert sample(
            metrics,
            "walletwatch_transfer_amount_total",
            currency="USDT",
            direction="deposit",
            state="ok",
        ) == pytest.approx(250.10)
        assert sample(metrics, "walletwatch_balance", currency="USDT") == pytest.approx(1750.10)

        sim.westwallet.set_balance(KEY, "USDT", Decimal(900))
        await daemon.poll_once()
        await daemon.poll_once()
        metrics = await scrape(daemon)
        assert sample(metrics, "walletwatch_balance", currency="USDT") == 900.0
        assert sample(metrics, "walletwatch_balance_low_threshold", currency="USDT") == 1000.0
        lows = named(events(config), "balance.low")
        assert [(e["currency"], e["amount"], e["threshold"]) for e in lows] == [
            ("USDT", "900", "1000")
        ]
        assert metrics[("walletwatch_events_total", frozenset({("event", "balance.low")}))] == 1.0
        ids = [e["event_id"] for e in events(config)]
        assert len(ids) == len(set(ids))

    async def test_restart_resumes_and_catches_up(self, sim: Simulator, config: Config) -> None:
        """After a restart nothing is re-emitted; a deposit made while down is emitted."""
        first = Daemon(config, clock=SystemClock())
        await first.start()
        await first.poll_once()
        await first.poll_once()
        await first.close()
        before = events(config)

        deposit = sim.westwallet.add_transaction(
            KEY, type="receive", currency="BTC", amount=Decimal("0.1"), status="completed"
        )
        second = Daemon(config, clock=SystemClock())
        await second.start()
        await second.poll_once()
        await second.poll_once()
        await second.close()
        after = events(config)[len(before) :]
        assert [(e["event"], e["transfer_id"]) for e in after if "transfer_id" in e] == [
            ("deposit.detected", str(deposit)),
            ("deposit.confirmed", str(deposit)),
        ]

    async def test_provider_down_keeps_last_values(
        self, sim_url: str, config: Config, tmp_path: Path
    ) -> None:
        """With a key the provider refuses, up is 0, the last balance stays, auth is counted."""
        good = Daemon(config, clock=SystemClock())
        await good.start()
        await good.poll_once()
        btc = sample(await scrape(good), "walletwatch_balance", currency="BTC")
        await good.close()
        assert btc is not None

        broken = make_config(sim_url, tmp_path, secret="revoked")
        daemon = Daemon(broken, clock=SystemClock())
        await daemon.start()
        try:
            await daemon.poll_once()
            metrics = await scrape(daemon)
        finally:
            await daemon.close()
        assert sample(metrics, "walletwatch_up") == 0.0
        assert sample(metrics, "walletwatch_balance", currency="BTC") == btc
        assert (
            sample(metrics, "walletwatch_poll_errors_total", endpoint="balances", reason="auth")
            == 1.0
        )
        assert "revoked" not in json.dumps(events(broken))

    async def test_readyz_and_index(self, daemon: Daemon) -> None:
        """/readyz turns ready after the first poll; / lists the account."""
        async with aiohttp.ClientSession() as session:
            async with session.get(f"{daemon.url}/readyz") as resp:
                assert resp.status == 503
            await daemon.poll_once()
            async with session.get(f"{daemon.url}/readyz") as resp:
                assert resp.status == 200
            async with session.get(f"{daemon.url}/") as resp:
                assert "hot" in await resp.text()

    async def test_never_calls_a_write_endpoint(self, sim: Simulator, daemon: Daemon) -> None:
        """Everything the daemon asks the simulator is a read."""
        for _ in range(3):
            await daemon.poll_once()
        assert sim.write_calls == []


class TestStartFailure:
    """A daemon that cannot start leaves nothing open behind it."""

    async def test_refused_credentials_close_what_was_opened(self, tmp_path: Path) -> None:
        """A client refusing its key fails start() with a config error; store and session close."""
        config = parse_config(
            {
                "listen": "127.0.0.1:0",
                "state_path": "state.db",
                "accounts": [
                    {
                        "name": "wallet",
                        "provider": "sila",
                        "credentials": {
                            "app_handle": "app",
                            "user_handle": "user",
                            "app_private_key": "not-a-key",
                            "user_private_key": "not-a-key",
                        },
                    }
                ],
            },
            base_dir=tmp_path,
            environ={},
        )
        daemon = Daemon(config, clock=SystemClock())
        with pytest.raises(ConfigError, match="app_private_key"):
            await daemon.start()
        assert daemon._session is not None
        assert daemon._session.closed
        assert daemon.watchers == {}
