"""A KredsWallet account end to end: simulator and daemon on loopback, /metrics and events."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from tests.test_integration import events, named, scrape
from walletwatch.app import Daemon
from walletwatch.clock import SystemClock
from walletwatch.config import Config, parse_config
from walletwatch.sim import Simulator, start

KEY, SECRET = "it-kreds-key", "it-kreds-secret"
LABELS = {"provider": "kredswallet", "account": "kreds"}
REQUIRED = 3
START_BALANCE = Decimal(500)


class LaggingClock(SystemClock):
    """The system clock set an hour back, as on a host whose clock is wrong."""

    def time(self) -> float:
        """An hour before now."""
        return time.time() - 3600.0


@pytest.fixture(name="sim")
def fixture_sim() -> Simulator:
    """A wallet instance with one account: a balance and confirmed history both ways."""
    sim = Simulator()
    kw = sim.kredswallet
    kw.confirmations_required = REQUIRED
    kw.add_account(KEY, SECRET)
    kw.add_deposit(KEY, Decimal(200), confirmations=120, created_at=time.time() - 86400)
    kw.add_withdraw(KEY, Decimal(50), confirmations=60, created_at=time.time() - 3600)
    kw.set_balance(KEY, START_BALANCE)
    return sim


@pytest.fixture(name="sim_url")
async def fixture_sim_url(sim: Simulator) -> AsyncIterator[str]:
    """The simulator served on a loopback port."""
    runner, port = await start(sim, "127.0.0.1", 0)
    yield f"http://127.0.0.1:{port}"
    await runner.cleanup()


def make_config(sim_url: str, tmp_path: Path, secret: str = SECRET) -> Config:
    """A daemon config watching the simulator's account (a base_url with a path, as self-hosted)."""
    return parse_config(
        {
            "listen": "127.0.0.1:0",
            "state_path": "state.db",
            "events_file": "events.jsonl",
            "providers": {"kredswallet": {"rate_limit": 1000}},
            "accounts": [
                {
                    "name": "kreds",
                    "provider": "kredswallet",
                    "base_url": f"{sim_url}/kredswallet/api",
                    "credentials": {"api_key": KEY, "api_secret": secret},
                    "confirmations_required": REQUIRED,
                    "low_balance": {"KREDS": "100"},
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


def sample(samples: dict[Any, float], name: str, **labels: str) -> float | None:
    """One sample of the kreds account's, or None when absent."""
    return samples.get((name, frozenset({**LABELS, **labels}.items())))


def transfer_events(config: Config) -> list[tuple[str, str, str]]:
    """(event, transfer_id, status) of every transfer event so far."""
    return [(e["event"], e["transfer_id"], e["status"]) for e in events(config) if "txid" in e]


class TestKredsWallet:
    """Balances, pending, deposits, withdraws and API status through the whole house."""

    async def test_baseline(self, daemon: Daemon, config: Config) -> None:
        """The first poll is up, shows balance, pending and api_enabled, and emits no transfer."""
        await daemon.poll_once()

        metrics = await scrape(daemon)
        assert sample(metrics, "walletwatch_up") == 1.0
        assert sample(metrics, "walletwatch_balance", currency="KREDS") == float(START_BALANCE)
        assert sample(metrics, "walletwatch_balance_pending", currency="KREDS") == 0.0
        assert sample(metrics, "walletwatch_api_enabled") == 1.0
        for endpoint in ("status", "balances", "deposits", "withdrawals"):
            assert sample(metrics, "walletwatch_polls_total", endpoint=endpoint) == 1.0
        assert transfer_events(config) == []

    async def test_deposit_detected_then_confirmed(
        self, sim: Simulator, daemon: Daemon, config: Config
    ) -> None:
        """A deposit shows as pending, gains confirmations, and is confirmed once at 3."""
        kw = sim.kredswallet
        await daemon.poll_once()
        txid = kw.add_deposit(KEY, Decimal("42.5"))

        await daemon.poll_once()
        metrics = await scrape(daemon)
        assert sample(metrics, "walletwatch_balance_pending", currency="KREDS") == 42.5
        in_flight = sample(
            metrics, "walletwatch_transfers_in_flight", currency="KREDS", direction="deposit"
        )
        assert in_flight == 1.0
        for _ in range(REQUIRED - 1):
            kw.mine()
            await daemon.poll_once()
        assert transfer_events(config) == [("deposit.detected", txid, "unconfirmed")]

        kw.mine()
        await daemon.poll_once()

        assert transfer_events(config) == [
            ("deposit.detected", txid, "unconfirmed"),
            ("deposit.confirmed", txid, "confirmed"),
        ]
        [confirmed] = named(events(config), "deposit.confirmed")
        assert (confirmed["amount"], confirmed["state"], confirmed["confirmations"]) == (
            "42.50000000",
            "ok",
            REQUIRED,
        )
        assert confirmed["confirmations_required"] == str(REQUIRED)
        metrics = await scrape(daemon)
        flow = {"currency": "KREDS", "direction": "deposit", "state": "ok"}
        assert sample(metrics, "walletwatch_transfers_total", **flow) == 1.0
        assert sample(metrics, "walletwatch_transfer_amount_total", **flow) == 42.5
        assert sample(metrics, "walletwatch_balance", currency="KREDS") == 542.5
        assert sample(metrics, "walletwatch_balance_pending", currency="KREDS") == 0.0
        assert (
            sample(
                metrics, "walletwatch_transfers_in_flight", currency="KREDS", direction="deposit"
            )
            == 0.0
        )

    async def test_withdraw_completes(self, sim: Simulator, daemon: Daemon, config: Config) -> None:
        """A withdraw is detected with a positive amount and its fee, moves once, completes."""
        kw = sim.kredswallet
        await daemon.poll_once()
        txid = kw.add_withdraw(KEY, Decimal(25), fee=Decimal("0.01"))
        await daemon.poll_once()
        for _ in range(REQUIRED):
            kw.mine()
            await daemon.poll_once()

        assert transfer_events(config) == [
            ("withdrawal.detected", txid, "unconfirmed"),
            ("withdrawal.status_changed", txid, "confirming"),
            ("withdrawal.completed", txid, "confirmed"),
        ]
        [detected] = named(events(config), "withdrawal.detected")
        assert (detected["amount"], detected["fee"]) == ("25.00000000", "0.01000000")
        metrics = await scrape(daemon)
        flow = {"currency": "KREDS", "direction": "withdrawal", "state": "ok"}
        assert sample(metrics, "walletwatch_transfers_total", **flow) == 1.0
        assert sample(metrics, "walletwatch_transfer_amount_total", **flow) == 25.0
        assert sample(metrics, "walletwatch_balance", currency="KREDS") == pytest.approx(474.99)

    async def test_api_disabled(self, sim: Simulator, daemon: Daemon) -> None:
        """An instance with its API switched off shows api_enabled 0 (and the account down)."""
        await daemon.poll_once()
        sim.kredswallet.api_enabled = False

        await daemon.poll_once()

        metrics = await scrape(daemon)
        assert sample(metrics, "walletwatch_api_enabled") == 0.0
        assert sample(metrics, "walletwatch_up") == 0.0

    async def test_wrong_secret_is_auth_and_down(self, sim_url: str, tmp_path: Path) -> None:
        """A wrong secret: poll_errors_total{reason="auth"} and walletwatch_up 0."""
        config = make_config(sim_url, tmp_path, secret="revoked")
        daemon = Daemon(config, clock=SystemClock())
        await daemon.start()
        try:
            await daemon.poll_once()
            metrics = await scrape(daemon)
        finally:
            await daemon.close()

        assert sample(metrics, "walletwatch_up") == 0.0
        for endpoint in ("balances", "deposits", "withdrawals"):
            errors = sample(
                metrics, "walletwatch_poll_errors_total", endpoint=endpoint, reason="auth"
            )
            assert errors == 1.0
        reasons = {
            dict(labels)["reason"]
            for name, labels in metrics
            if name == "walletwatch_poll_errors_total"
        }
        assert reasons == {"auth"}
        assert sample(metrics, "walletwatch_api_enabled") == 1.0  # the public status still reads
        assert "revoked" not in json.dumps(events(config))

    async def test_restart_reuses_no_nonce(self, sim: Simulator, config: Config) -> None:
        """A restarted daemon's nonces start above the old ones: the wallet accepts them."""
        first = Daemon(config, clock=SystemClock())
        await first.start()
        await first.poll_once()
        await first.close()
        before = sim.kredswallet.last_nonce(KEY)

        second = Daemon(config, clock=SystemClock())
        await second.start()
        try:
            await second.poll_once()
            metrics = await scrape(second)
        finally:
            await second.close()

        assert sample(metrics, "walletwatch_up") == 1.0
        assert sim.kredswallet.last_nonce(KEY) > before

    async def test_nonce_refused_is_not_auth(
        self, sim: Simulator, daemon: Daemon, config: Config, tmp_path: Path
    ) -> None:
        """A second walletwatch on the key, clock behind: http_4xx naming the nonce, not auth."""
        await daemon.poll_once()
        behind = Daemon(config, clock=LaggingClock(), state_path=tmp_path / "other.db")
        await behind.start(serve=False)
        try:
            await behind.poll_once()
            watcher = behind.watchers["kreds"]
            failures = behind.telemetry.poll_errors
        finally:
            await behind.close()

        assert not watcher.up
        assert failures[("kredswallet", "kreds", "balances", "http_4xx")] == 1
        assert not any(reason == "auth" for *_, reason in failures)
        error = watcher.health["balances"].error or ""
        assert "nonce" in error
        assert "not the key" in error
        assert sim.kredswallet.last_nonce(KEY) > 0

    async def test_reads_only_under_the_api_root(self, sim: Simulator, daemon: Daemon) -> None:
        """Every call the daemon makes is a read under /api; nothing is written."""
        for _ in range(3):
            await daemon.poll_once()

        paths = {row["path"] for row in sim.requests.as_json() if row["provider"] == "kredswallet"}
        assert paths
        assert all(str(path).startswith("/api/") for path in paths)
        assert sim.write_calls == []
