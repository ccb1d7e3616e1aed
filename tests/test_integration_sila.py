"""Sila end to end in both auth modes: simulator and daemon on loopback, /metrics, events."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import AsyncIterator, Mapping
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from walletwatch.app import Daemon
from walletwatch.clock import SystemClock
from walletwatch.config import Config, parse_config
from walletwatch.providers.sila import Sila
from walletwatch.sim import provider_app, serve
from walletwatch.sim.common import SimContext
from walletwatch.sim.sila import SilaSim
from walletwatch.sim.sila_auth import address_of_key

APP, USER, OTHER_USER = "it-app", "it-wallet", "it-wallet-2"
APP_KEY = hashlib.sha256(b"walletwatch it sila app").hexdigest()
USER_KEY = hashlib.sha256(b"walletwatch it sila user").hexdigest()
CLIENT_ID, CLIENT_SECRET = "it-client", "it-client-secret-5f1d"
READ_PATHS = {"/get_wallet", "/get_transactions", "/auth_token"}
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


@pytest.fixture(name="auth", params=["ecdsa", "token"])
def fixture_auth(request: pytest.FixtureRequest) -> str:
    """The account's auth mode."""
    mode: str = request.param
    return mode


@pytest.fixture(name="family", params=["doc", "sdk"])
def fixture_family(request: pytest.FixtureRequest) -> str:
    """Which balance field names the simulated wallet answers with."""
    name: str = request.param
    return name


@pytest.fixture(name="ctx")
def fixture_ctx() -> SimContext:
    """Simulator services on the real clock, limits far above the client's pace."""
    return SimContext(clock=time.time, rate_limit=100_000.0, retry_after_date=False)


@pytest.fixture(name="sim")
def fixture_sim(ctx: SimContext, family: str) -> SilaSim:
    """An app with two wallets: a settled issue and a redeem in review for two hours."""
    sim = SilaSim(ctx)
    sim.add_app(
        APP, address=address_of_key(APP_KEY), client_id=CLIENT_ID, client_secret=CLIENT_SECRET
    )
    for user in (USER, OTHER_USER):
        sim.add_user(
            APP, user, address=address_of_key(USER_KEY), available=Decimal(5000), family=family
        )
    now = time.time()
    sim.add_transaction(
        APP, USER, type="issue", amount=Decimal(1000), status="success", created_at=now - 86400
    )
    sim.add_transaction(
        APP, USER, type="redeem", amount=Decimal(700), status="review", created_at=now - 7200
    )
    return sim


@pytest.fixture(name="sim_url")
async def fixture_sim_url(sim: SilaSim) -> AsyncIterator[str]:
    """The simulator's API at /sila and controls at /_sim/sila, on a loopback port."""
    runner, port = await serve(provider_app(sim))
    yield f"http://127.0.0.1:{port}"
    await runner.cleanup()


def account(sim_url: str, auth: str, name: str = "sila", **credentials: str) -> dict[str, Any]:
    """An account entry for the simulator's wallet in ``auth`` mode."""
    secrets = (
        {"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET}
        if auth == "token"
        else {"app_private_key": APP_KEY, "user_private_key": USER_KEY}
    )
    return {
        "name": name,
        "provider": "sila",
        "auth": auth,
        "base_url": f"{sim_url}/sila",
        "credentials": {"app_handle": APP, "user_handle": USER, **secrets, **credentials},
        "withdrawal_stuck_after": "1h",
    }


def make_config(tmp_path: Path, *accounts: Mapping[str, Any]) -> Config:
    """A daemon config watching ``accounts``, Sila paced at 1000 requests/s."""
    return parse_config(
        {
            "listen": "127.0.0.1:0",
            "state_path": "state.db",
            "events_file": "events.jsonl",
            "providers": {"sila": {"rate_limit": 1000}},
            "accounts": list(accounts),
        },
        base_dir=tmp_path,
        environ={},
    )


@pytest.fixture(name="daemon")
async def fixture_daemon(sim_url: str, auth: str, tmp_path: Path) -> AsyncIterator[Daemon]:
    """A started daemon watching the wallet (polls are driven by the test)."""
    daemon = Daemon(
        make_config(tmp_path, account(sim_url, auth)),
        clock=SystemClock(),
        providers={"sila": Sila},
    )
    await daemon.start()
    yield daemon
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


def sample(samples: Samples, name: str, account: str = "sila", **labels: str) -> float | None:
    """One sample of the account, or None when absent."""
    key = {"provider": "sila", "account": account, **labels}
    return samples.get((f"walletwatch_{name}", frozenset(key.items())))


def events(daemon: Daemon) -> list[dict[str, Any]]:
    """The events file, parsed."""
    path = daemon.config.events_file
    assert path is not None
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


class TestSilaEndToEnd:
    """A Sila wallet through the whole house, in both auth modes and both field families."""

    async def test_balances_transfers_and_stuck_review(
        self, daemon: Daemon, sim: SilaSim, ctx: SimContext, auth: str
    ) -> None:
        """Baseline shows the stuck review redeem; an issue is detected and confirmed once."""
        await daemon.poll_once()
        metrics = await scrape(daemon)
        assert sample(metrics, "up") == 1.0
        assert sample(metrics, "balance", currency="SILA") == 5300.0
        assert sample(metrics, "balance_pending", currency="SILA") == 0.0
        assert sample(metrics, "wallet_whitelisted") == 1.0
        stuck = {"currency": "SILA", "direction": "withdrawal"}
        assert sample(metrics, "transfers_stuck", **stuck) == 1.0
        assert [e["event"] for e in events(daemon)] == ["withdrawal.stuck"]

        issue = sim.add_transaction(APP, USER, type="issue", amount=Decimal(250))
        await daemon.poll_once()
        assert sample(await scrape(daemon), "balance_pending", currency="SILA") == 250.0
        sim.set_status(APP, USER, issue, "success")
        sim.set_wallet(APP, USER, whitelisted=False)
        await daemon.poll_once()

        seen = events(daemon)
        deposits = [e for e in seen if e["event"].startswith("deposit.")]
        assert [(e["event"], e["transfer_id"], e["amount"]) for e in deposits] == [
            ("deposit.detected", issue, "250"),
            ("deposit.confirmed", issue, "250"),
        ]
        metrics = await scrape(daemon)
        assert sample(metrics, "balance", currency="SILA") == 5550.0
        assert sample(metrics, "wallet_whitelisted") == 0.0
        done = {"currency": "SILA", "direction": "deposit", "state": "ok"}
        assert sample(metrics, "transfers_total", **done) == 1.0
        assert sample(metrics, "transfers_stuck", **stuck) == 1.0

        assert ctx.write_calls == []
        assert {row["path"] for row in ctx.requests.as_json()} <= READ_PATHS
        assert len(sim.references) == len(set(sim.references)) >= 9  # 3 polls x 3 endpoints
        assert ctx.requests.count(path="/auth_token") == (1 if auth == "token" else 0)

    @pytest.mark.parametrize("auth", ["token"], indirect=True)
    async def test_revoked_token_is_refetched_once(
        self, daemon: Daemon, sim: SilaSim, ctx: SimContext
    ) -> None:
        """After the provider drops the token, one 401 fetches a new one and the poll succeeds."""
        await daemon.poll_once()
        sim.revoke_tokens()
        await daemon.poll_once()

        assert sample(await scrape(daemon), "up") == 1.0
        assert sim.tokens.issued == 2
        assert ctx.requests.count(path="/get_wallet", status=401) == 1

    @pytest.mark.parametrize("family", ["doc"], indirect=True)
    async def test_accounts_on_one_client_share_a_token(
        self, sim_url: str, sim: SilaSim, ctx: SimContext, tmp_path: Path
    ) -> None:
        """Two wallets polled concurrently under one client id fetch a single token."""
        other = account(sim_url, "token", name="sila-2", user_handle=OTHER_USER)
        config = make_config(tmp_path, account(sim_url, "token"), other)
        daemon = Daemon(config, clock=SystemClock(), providers={"sila": Sila})
        await daemon.start()
        try:
            await daemon.poll_once()
            metrics = await scrape(daemon)
        finally:
            await daemon.close()

        assert (sample(metrics, "up"), sample(metrics, "up", account="sila-2")) == (1.0, 1.0)
        assert (sim.tokens.issued, ctx.requests.count(path="/auth_token")) == (1, 1)

    @pytest.mark.parametrize("family", ["doc"], indirect=True)
    async def test_refused_credentials(self, sim_url: str, auth: str, tmp_path: Path) -> None:
        """A wrong user key or client secret: up 0, reason auth, no secret in the events."""
        wrong = (
            {"client_secret": "revoked-secret"}
            if auth == "token"
            else {"user_private_key": APP_KEY}
        )
        config = make_config(tmp_path, account(sim_url, auth, **wrong))
        daemon = Daemon(config, clock=SystemClock(), providers={"sila": Sila})
        await daemon.start()
        try:
            await daemon.poll_once()
            metrics = await scrape(daemon)
        finally:
            await daemon.close()

        assert sample(metrics, "up") == 0.0
        errors = sample(metrics, "poll_errors_total", endpoint="balances", reason="auth")
        assert errors == 1.0
        written = json.dumps(events(daemon))
        assert "revoked-secret" not in written
        assert APP_KEY not in written


async def switch(sim_url: str, action: str, **fields: object) -> None:
    """Call one of the simulator's control actions over HTTP."""
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{sim_url}/_sim/sila/{action}", json=fields) as resp,
    ):
        assert resp.status == 200


class TestSilaLeftOpen:
    """What Sila's documents leave open, read end to end: token answers and filtered pages."""

    @pytest.mark.parametrize("auth", ["token"], indirect=True)
    @pytest.mark.parametrize("family", ["doc"], indirect=True)
    @pytest.mark.parametrize(
        ("shape", "expiration"),
        [
            ("sila", "milliseconds"),
            ("sila", "iso"),
            ("sila", "iso_unzoned"),
            ("sila", "unreadable"),
            ("oauth2", "seconds"),
            ("oauth2", "missing"),
        ],
    )
    async def test_token_answers(
        self, daemon: Daemon, sim_url: str, ctx: SimContext, shape: str, expiration: str
    ) -> None:
        """Every token answer the simulator can give serves polls; one token covers them all."""
        await switch(sim_url, "set_token_answer", shape=shape, expiration=expiration)

        await daemon.poll_once()
        await daemon.poll_once()

        metrics = await scrape(daemon)
        assert sample(metrics, "up") == 1.0
        assert sample(metrics, "balance", currency="SILA") == 5300.0
        assert ctx.requests.count(path="/auth_token") == 1
        assert ctx.requests.count(path="/get_wallet", status=401) == 0

    @pytest.mark.parametrize("family", ["doc"], indirect=True)
    async def test_type_filter_ignored(self, daemon: Daemon, sim: SilaSim, sim_url: str) -> None:
        """Pages listing every type: the others are skipped and counted, the rest observed."""
        await switch(sim_url, "set_type_filter", honoured=False)

        await daemon.poll_once()
        issue = sim.add_transaction(APP, USER, type="issue", amount=Decimal(250))
        await daemon.poll_once()

        metrics = await scrape(daemon)
        assert sample(metrics, "up") == 1.0
        # Counted at every poll that lists them: the redeem twice; one issue, then two.
        for endpoint, skipped in (("deposits", 2.0), ("withdrawals", 3.0)):
            assert sample(metrics, "skipped_records_total", endpoint=endpoint) == skipped
            assert sample(metrics, "malformed_records_total", endpoint=endpoint) is None
        stuck = {"currency": "SILA", "direction": "withdrawal"}
        assert sample(metrics, "transfers_stuck", **stuck) == 1.0
        transfers = [(e["event"], e["transfer_id"]) for e in events(daemon) if "transfer_id" in e]
        assert transfers == [("withdrawal.stuck", transfers[0][1]), ("deposit.detected", issue)]
