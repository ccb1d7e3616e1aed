"""The operator API end to end: a daemon polling the simulator, asked over HTTP with basic auth."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp
import bcrypt
import pytest

from walletwatch.app import Daemon
from walletwatch.clock import SystemClock
from walletwatch.config import Config, parse_config
from walletwatch.errors import StoreError
from walletwatch.operator import json_chunks
from walletwatch.sim import Simulator, start

HOT, COLD = ("hot-key", "hot-secret"), ("cold-key", "cold-secret")
PASSWORD = "correct horse"
AUTH = {"Authorization": "Basic " + base64.b64encode(f"ops:{PASSWORD}".encode()).decode()}
HOSTILE_TXID = "<script>window.__pwned=1</script>" + "f" * 64


@pytest.fixture(name="sim")
def fixture_sim() -> Simulator:
    """Two accounts: hot with a settled deposit and a stuck withdrawal, cold with money."""
    sim = Simulator(rate_limit=100_000)
    ww = sim.westwallet
    ww.add_account(*HOT, {"BTC": Decimal(2), "USDT": Decimal(1500)})
    ww.add_account(*COLD, {"BTC": Decimal("0.1")})
    ww.add_transaction(
        HOT[0],
        type="receive",
        currency="BTC",
        amount=Decimal("0.5"),
        status="completed",
        confirmations=6,
        txid="aa" * 32,
        created_at=time.time() - 86400,
    )
    ww.add_transaction(
        HOT[0],
        type="send",
        currency="BTC",
        amount=Decimal("0.25"),
        fee=Decimal("0.0001"),
        address="bc1qstuck",
        txid=HOSTILE_TXID,
        created_at=time.time() - 2 * 3600,
    )
    return sim


@pytest.fixture(name="sim_url")
async def fixture_sim_url(sim: Simulator) -> AsyncIterator[str]:
    """The simulator served on a loopback port."""
    runner, port = await start(sim, "127.0.0.1", 0)
    yield f"http://127.0.0.1:{port}"
    await runner.cleanup()


def account(name: str, key: tuple[str, str], sim_url: str, **extra: Any) -> dict[str, Any]:
    """One westwallet account of the simulator."""
    return {
        "name": name,
        "provider": "westwallet",
        "base_url": f"{sim_url}/westwallet",
        "credentials": {"api_key": key[0], "secret_key": key[1]},
        "withdrawal_stuck_after": "1h",
        **extra,
    }


@pytest.fixture(name="config")
def fixture_config(sim_url: str, tmp_path: Path) -> Config:
    """hot (BTC below its threshold) and cold, whose secret the simulator refuses."""
    hashed = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=4)).decode()
    return parse_config(
        {
            "listen": "127.0.0.1:0",
            "state_path": "state.db",
            "web": {"basic_auth_users": {"ops": hashed}},
            "providers": {"westwallet": {"rate_limit": 1000}},
            "accounts": [
                account("hot", HOT, sim_url, low_balance={"BTC": "5", "USDT": "1000"}),
                account("cold", (COLD[0], "wrong-secret"), sim_url, down_after=1),
            ],
        },
        base_dir=tmp_path,
        environ={},
    )


@pytest.fixture(name="daemon")
async def fixture_daemon(config: Config) -> AsyncIterator[Daemon]:
    """A started daemon; polls are driven by the test."""
    daemon = Daemon(config, clock=SystemClock())
    await daemon.start()
    yield daemon
    await daemon.close()


async def get(daemon: Daemon, path: str, expect: int = 200) -> Any:
    """GET ``path`` with the credentials; the parsed JSON body."""
    async with (
        aiohttp.ClientSession(headers=AUTH) as session,
        session.get(f"{daemon.url}{path}") as resp,
    ):
        assert resp.status == expect, await resp.text()
        assert resp.content_type == "application/json"
        return json.loads(await resp.read())


class TestAccounts:
    async def test_up_and_down_accounts_say_why(self, daemon: Daemon) -> None:
        """An account up shows its balances against thresholds; one down says why and since."""
        waiting = await get(daemon, "/api/v1/accounts")
        assert [a["state"] for a in waiting["accounts"]] == ["waiting", "waiting"]

        before = time.time()
        await daemon.poll_once()
        body = await get(daemon, "/api/v1/accounts")
        hot, cold = body["accounts"]
        assert body["generated_at"].endswith("Z")

        assert (hot["provider"], hot["account"], hot["state"], hot["up"]) == (
            "westwallet",
            "hot",
            "up",
            True,
        )
        assert hot["down_since"] is None
        assert hot["last_success"] is not None
        assert all(e["last_error"] is None for e in hot["endpoints"].values())
        assert set(hot["endpoints"]) == set(daemon.watchers["hot"].endpoints)
        balances = {b["currency"]: b for b in hot["balances"]}
        assert balances["BTC"]["available"] == "2.2499"  # 2 + 0.5 - 0.25 - 0.0001
        assert (balances["BTC"]["low_threshold"], balances["BTC"]["low"]) == ("5", True)
        assert (balances["USDT"]["low_threshold"], balances["USDT"]["low"]) == ("1000", False)
        assert (hot["in_flight"], hot["stuck"]) == (1, 1)

        assert (cold["state"], cold["up"]) == ("down", False)
        assert cold["down_since"] is not None
        errors = [e["last_error"] for e in cold["endpoints"].values()]
        assert all(e is not None and e["reason"] == "auth" for e in errors)
        assert all(e["message"] and e["at"] for e in errors)
        assert "wrong-secret" not in json.dumps(body)
        since = time.mktime(time.strptime(cold["down_since"][:19], "%Y-%m-%dT%H:%M:%S"))
        assert since - time.timezone >= int(before) - 1

    async def test_down_since_stays_at_the_first_failure(self, daemon: Daemon) -> None:
        """A second failure moves last_error.at, not down_since."""
        await daemon.poll_once()
        first = (await get(daemon, "/api/v1/accounts"))["accounts"][1]
        for health in daemon.watchers["cold"].health.values():  # as if a second earlier
            assert health.failing_since is not None
            assert health.failed_at is not None
            health.failing_since -= 1
            health.failed_at -= 1
        await daemon.poll_once()
        second = (await get(daemon, "/api/v1/accounts"))["accounts"][1]
        assert second["down_since"] < first["down_since"]
        endpoint = next(iter(second["endpoints"]))
        assert (
            second["endpoints"][endpoint]["last_error"]["at"]
            >= first["endpoints"][endpoint]["last_error"]["at"]
        )


class TestTransfers:
    async def test_in_flight_is_the_default_and_carries_everything(self, daemon: Daemon) -> None:
        """The stuck withdrawal, whole: full txid (as text), amount, fee, age, stuck."""
        await daemon.poll_once()
        body = await get(daemon, "/api/v1/transfers")
        assert body["truncated"] is False
        [stuck] = body["transfers"]
        assert stuck["provider"] == "westwallet"
        assert (stuck["account"], stuck["direction"], stuck["currency"]) == (
            "hot",
            "withdrawal",
            "BTC",
        )
        assert (stuck["amount"], stuck["fee"], stuck["address"]) == ("0.25", "0.0001", "bc1qstuck")
        assert stuck["txid"] == HOSTILE_TXID
        assert stuck["state"] == "pending"
        assert stuck["stuck"] is True
        assert 2 * 3600 - 60 < stuck["age_seconds"] < 2 * 3600 + 60
        assert stuck["created_at"].endswith("Z")
        assert stuck["first_seen"].endswith("Z")
        [again] = (await get(daemon, "/api/v1/transfers?state=stuck"))["transfers"]
        assert again["age_seconds"] >= stuck["age_seconds"]
        assert {**again, "age_seconds": 0} == {**stuck, "age_seconds": 0}

    async def test_final_and_all_come_from_the_store_oldest_first(
        self, daemon: Daemon, sim: Simulator
    ) -> None:
        """Settled transfers are read from the state database and merged by age."""
        await daemon.poll_once()
        [settled] = (await get(daemon, "/api/v1/transfers?state=final"))["transfers"]
        assert (settled["direction"], settled["state"], settled["amount"]) == (
            "deposit",
            "ok",
            "0.5",
        )
        assert settled["txid"] == "aa" * 32
        assert settled["stuck"] is False
        every = (await get(daemon, "/api/v1/transfers?state=all"))["transfers"]
        assert [t["direction"] for t in every] == ["deposit", "withdrawal"]

        newest = sim.westwallet.add_transaction(
            HOT[0], type="receive", currency="USDT", amount=Decimal("1E+2"), status="completed"
        )
        await daemon.poll_once()
        every = (await get(daemon, "/api/v1/transfers?state=all"))["transfers"]
        assert [t["id"] for t in every][-1] == str(newest)
        assert every[-1]["amount"] == "100"  # never exponent form

    async def test_filters_and_limit(self, daemon: Daemon) -> None:
        """provider, account, direction and limit narrow the listing; truncated says so."""
        await daemon.poll_once()
        query = "/api/v1/transfers?state=all"
        assert len((await get(daemon, f"{query}&direction=deposit"))["transfers"]) == 1
        assert (await get(daemon, f"{query}&account=cold"))["transfers"] == []
        assert (await get(daemon, f"{query}&provider=sila"))["transfers"] == []
        assert len((await get(daemon, f"{query}&provider=westwallet"))["transfers"]) == 2
        cut = await get(daemon, f"{query}&limit=1")
        assert (len(cut["transfers"]), cut["truncated"]) == (1, True)
        assert cut["transfers"][0]["direction"] == "deposit"

    @pytest.mark.parametrize(
        ("query", "parameter"),
        [
            ("state=stale", "state"),
            ("direction=sideways", "direction"),
            ("limit=0", "limit"),
            ("limit=ten", "limit"),
            ("limit=100001", "limit"),
            ("limit=%D9%A1", "limit"),  # an Arabic-Indic one: a digit to str.isdigit only
            ("colour=red", "colour"),
        ],
    )
    async def test_a_bad_parameter_is_a_400_naming_it(
        self, daemon: Daemon, query: str, parameter: str
    ) -> None:
        """Each bad value is refused with a JSON error naming its parameter."""
        body = await get(daemon, f"/api/v1/transfers?{query}", expect=400)
        assert body["parameter"] == parameter
        assert body["error"]


class TestEvents:
    async def test_recent_events_oldest_first_and_after(
        self, daemon: Daemon, sim: Simulator
    ) -> None:
        """The outbox's events as the stream has them; after= pages forward."""
        await daemon.poll_once()
        deposit = sim.westwallet.add_transaction(
            HOT[0], type="receive", currency="USDT", amount=Decimal("250.10"), confirmations=1
        )
        await daemon.poll_once()
        events = (await get(daemon, "/api/v1/events"))["events"]
        names = [e["event"] for e in events]
        assert names.index("withdrawal.stuck") < names.index("deposit.detected")
        detected = next(e for e in events if e["event"] == "deposit.detected")
        assert (detected["transfer_id"], detected["amount"]) == (str(deposit), "250.10")
        assert detected["ts"].endswith("Z")
        assert detected["severity"] == "info"

        after = (await get(daemon, f"/api/v1/events?after={events[0]['event_id']}"))["events"]
        assert after == events[1:]
        assert (await get(daemon, "/api/v1/events?limit=1"))["events"] == events[-1:]
        body = await get(daemon, "/api/v1/events?after=nonesuch", expect=400)
        assert body["parameter"] == "after"


class TestGuarded:
    async def test_every_route_needs_the_credentials(self, daemon: Daemon) -> None:
        """The API sits behind the same basic auth as /metrics."""
        async with aiohttp.ClientSession() as session:
            for path in ("/api/v1/accounts", "/api/v1/transfers", "/api/v1/events"):
                async with session.get(f"{daemon.url}{path}") as resp:
                    assert resp.status == 401

    async def test_an_unreadable_store_is_a_503(
        self, daemon: Daemon, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A read that fails says so as JSON; the accounts, from memory, still answer."""

        async def broken(*_: Any) -> Any:
            raise StoreError("cannot read the state: disk I/O error")

        monkeypatch.setattr(daemon.store, "read", broken)
        await daemon.poll_once()
        body = await get(daemon, "/api/v1/transfers?state=final", expect=503)
        assert "disk I/O error" in body["error"]
        assert (await get(daemon, "/api/v1/events", expect=503))["error"]
        assert len((await get(daemon, "/api/v1/accounts"))["accounts"]) == 2
        assert len((await get(daemon, "/api/v1/transfers"))["transfers"]) == 1

    async def test_a_follower_says_it_follows(self, daemon: Daemon) -> None:
        """A replica without the lease answers every route with a 503 saying so, never an
        empty "all well"; once it leads again it answers as before."""
        await daemon.poll_once()
        daemon.collector.leading = False
        for path in ("/api/v1/accounts", "/api/v1/transfers", "/api/v1/events"):
            body = await get(daemon, path, expect=503)
            assert body["leader"] is False
            assert "walletwatch_leader 1" in body["error"]
        daemon.collector.lease = lambda: False  # leads, but its lease lapsed by its clock
        daemon.collector.leading = True
        assert (await get(daemon, "/api/v1/accounts", expect=503))["leader"] is False
        daemon.collector.lease = None
        assert len((await get(daemon, "/api/v1/accounts"))["accounts"]) == 2

    async def test_a_followers_status_page_says_it_follows(self, daemon: Daemon) -> None:
        """The page of a replica without the lease is a 503 saying so, refreshing itself."""
        await daemon.poll_once()
        daemon.collector.leading = False
        async with (
            aiohttp.ClientSession(headers=AUTH) as session,
            session.get(f"{daemon.url}/") as resp,
        ):
            page = await resp.text()
            assert resp.status == 503
            assert "this replica follows" in page
            assert 'http-equiv="refresh" content="30"' in page
            assert "Content-Security-Policy" in resp.headers
        daemon.collector.leading = True
        async with (
            aiohttp.ClientSession(headers=AUTH) as session,
            session.get(f"{daemon.url}/") as resp,
        ):
            assert resp.status == 200
            assert "this replica follows" not in await resp.text()


def test_json_keeps_a_lone_surrogate_escaped() -> None:
    """Text UTF-8 cannot carry is escaped, so strict parsers read the body."""
    rows = [{"txid": "ab\ud800cd", "n": i} for i in range(1200)]
    body = b"".join(json_chunks("transfers", rows, {"truncated": False}))
    parsed = json.loads(body.decode("utf-8", errors="strict"))
    assert parsed["transfers"][0]["txid"] == "ab\\ud800cd"
    assert [r["n"] for r in parsed["transfers"]] == list(range(1200))
    assert parsed["truncated"] is False
    assert json.loads(b"".join(json_chunks("events", [], {})).decode()) == {"events": []}
