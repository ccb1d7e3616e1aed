"""The /_sim control endpoints and start(), over real HTTP on loopback."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import aiohttp
import pytest

from walletwatch.sim import Simulator, start
from walletwatch.sim.westwallet import sign

T0 = 1_700_000_000.0


@pytest.fixture(name="sim")
def fixture_sim() -> Simulator:
    return Simulator(clock=lambda: T0)


@pytest.fixture(name="base")
async def fixture_base(sim: Simulator) -> AsyncIterator[str]:
    runner, port = await start(sim)
    yield f"http://127.0.0.1:{port}"
    await runner.cleanup()


@pytest.fixture(name="http")
async def fixture_http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def send(
    http: aiohttp.ClientSession, method: str, url: str, body: object = None
) -> tuple[int, Any]:
    """Call a control endpoint with a JSON body; return status and JSON answer."""
    async with http.request(method, url, json=body) as resp:
        return resp.status, json.loads(await resp.text(), parse_float=Decimal)


class TestControl:
    """Driving the WestWallet simulation through /_sim/westwallet."""

    async def test_account_lifecycle(self, base: str, http: aiohttp.ClientSession) -> None:
        """Accounts, balances, transactions and status changes all show in the snapshot."""
        ctl = base + "/_sim/westwallet"
        status, _ = await send(
            http, "POST", ctl + "/accounts", {"api_key": "k", "secret_key": "s", "balances": {}}
        )
        assert status == 201
        status, _ = await send(http, "PUT", ctl + "/k/balances", {"BTC": "1.5", "USDT": 10})
        assert status == 200
        status, created = await send(
            http,
            "POST",
            ctl + "/k/transactions",
            {"type": "receive", "currency": "BTC", "amount": "0.25", "created_at": T0 - 7200},
        )
        assert status == 201
        status, item = await send(
            http,
            "POST",
            f"{ctl}/k/transactions/{created['id']}",
            {"status": "completed", "confirmations": 3, "txid": "beef"},
        )
        assert (status, item["status"], item["blockchain_hash"]) == (200, "completed", "beef")
        status, snap = await send(http, "GET", ctl + "/k")
        assert status == 200
        assert snap["balances"] == {"BTC": "1.75", "USDT": "10"}
        [tx] = snap["transactions"]
        assert (tx["id"], tx["amount"], tx["created_at"]) == (
            created["id"],
            "0.25",
            "2023-11-14 20:13:20",
        )

    async def test_created_account_serves_signed_calls(
        self, base: str, http: aiohttp.ClientSession
    ) -> None:
        """An account made over HTTP answers the signed balances call."""
        await send(
            http,
            "POST",
            base + "/_sim/westwallet/accounts",
            {"api_key": "k", "secret_key": "s", "balances": {"ETH": "3.22"}},
        )
        ts = str(int(T0))
        headers = {"X-API-KEY": "k", "X-ACCESS-TIMESTAMP": ts, "X-ACCESS-SIGN": sign("s", ts, b"")}
        async with http.get(base + "/westwallet/wallet/balances", headers=headers) as resp:
            assert json.loads(await resp.text(), parse_float=Decimal) == {
                "ETH": Decimal("3.22"),
                "error": "ok",
            }

    @pytest.mark.parametrize(
        ("method", "path", "body", "expected"),
        [
            ("GET", "/nobody", None, 404),
            ("PUT", "/nobody/balances", {"BTC": "1"}, 404),
            ("POST", "/nobody/transactions/1", {"status": "completed"}, 404),
            ("POST", "/accounts", {"secret_key": "s"}, 400),
            ("POST", "/accounts", ["k"], 400),
            ("PUT", "/k/balances", {"BTC": "lots"}, 400),
            ("PUT", "/k/balances", {"BTC": "NaN"}, 400),
            ("POST", "/k/transactions", {"type": "swap", "currency": "BTC", "amount": 1}, 400),
            ("POST", "/k/transactions", {"type": "send", "currency": "BTC"}, 400),
        ],
    )
    async def test_errors(
        self,
        *,
        sim: Simulator,
        base: str,
        http: aiohttp.ClientSession,
        method: str,
        path: str,
        body: object,
        expected: int,
    ) -> None:
        """Unknown accounts answer 404 and malformed input 400, each as a JSON error."""
        sim.westwallet.add_account("k", "s")
        status, answer = await send(http, method, base + "/_sim/westwallet" + path, body)
        assert status == expected
        assert "error" in answer

    async def test_request_log(
        self, sim: Simulator, base: str, http: aiohttp.ClientSession
    ) -> None:
        """GET /_sim/requests lists API responses and write calls, not control calls."""
        async with http.get(base + "/westwallet/wallet/balances"):
            pass
        async with http.post(base + "/westwallet/address/generate", json={}):
            pass
        status, log = await send(http, "GET", base + "/_sim/requests")
        assert status == 200
        assert log == {
            "requests": [
                {"provider": "westwallet", "path": "/address/generate", "status": 403, "count": 1},
                {"provider": "westwallet", "path": "/wallet/balances", "status": 401, "count": 1},
            ],
            "write_calls": [["westwallet", "/address/generate"]],
        }
        assert sim.requests.count(provider="westwallet") == 2
        assert sim.requests.count(path="/wallet/balances", status=401) == 1

    async def test_advance(self, sim: Simulator, base: str, http: aiohttp.ClientSession) -> None:
        """POST /_sim/advance runs one step."""
        status, answer = await send(http, "POST", base + "/_sim/advance")
        assert (status, answer, sim.steps) == (200, {"steps": 1}, 1)


class TestStart:
    """start() serving on an ephemeral loopback port."""

    async def test_tick_advances_until_cleanup(self) -> None:
        """With tick, steps happen in the background and stop at runner.cleanup()."""
        sim = Simulator(clock=lambda: T0, scenario=True)
        runner, port = await start(sim, tick=0)
        assert port > 0
        for _ in range(1000):
            if sim.steps >= 3:
                break
            await asyncio.sleep(0)
        await runner.cleanup()
        steps = sim.steps
        assert steps >= 3
        for _ in range(10):
            await asyncio.sleep(0)
        assert sim.steps == steps

    @pytest.mark.usefixtures("base")
    async def test_no_tick_no_steps(self, sim: Simulator) -> None:
        """Without tick nothing advances on its own."""
        for _ in range(10):
            await asyncio.sleep(0)
        assert sim.steps == 0

    async def test_negative_tick(self, sim: Simulator) -> None:
        """A negative tick is refused."""
        with pytest.raises(ValueError, match="tick"):
            await start(sim, tick=-1)
