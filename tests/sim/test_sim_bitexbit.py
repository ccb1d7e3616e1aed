"""The bitexbit simulation: three verifiers, rate limit, paging, the ladder, controls, scenario."""

from __future__ import annotations

import hashlib
import hmac
import json
import random
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any
from urllib.parse import urlencode

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from walletwatch.sim import provider_app
from walletwatch.sim.bitexbit import (
    LADDER,
    BitexbitSim,
    gateway_signature,
    v1_signature,
    v2_signature,
)
from walletwatch.sim.bitexbit_scenario import (
    DEMO_BITEXBIT_ACCOUNT,
    HISTORY_DEPOSITS,
    MODERATION_AGE,
    BitexbitScenario,
)
from walletwatch.sim.common import SimContext

KEY, SECRET = "key-1", "secret-1"
T0 = 1_700_000_000.0
HISTORY = "/api/gateway/wallet/history"
WITHDRAWS = "/api/gateway/withdraw/history"
BALANCE = "/api/v2/private/balance"
Client = TestClient[web.Request, web.Application]


class FakeClock:
    """A clock that moves only when told to."""

    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def mac(secret: str, message: str) -> str:
    """Hex HMAC-SHA256 computed by the test, independently of the simulator."""
    return hmac.new(secret.encode(), message.encode(), hashlib.sha256).hexdigest()


@pytest.fixture(name="clock")
def fixture_clock() -> FakeClock:
    return FakeClock()


@pytest.fixture(name="ctx")
def fixture_ctx(clock: FakeClock) -> SimContext:
    return SimContext(clock=clock, rate_limit=2.0, retry_after_date=False)


@pytest.fixture(name="sim")
def fixture_sim(ctx: SimContext) -> BitexbitSim:
    sim = BitexbitSim(ctx)
    sim.add_account(KEY, SECRET)
    return sim


@pytest.fixture(name="client")
async def fixture_client(sim: BitexbitSim) -> AsyncIterator[Client]:
    async with TestClient(TestServer(provider_app(sim))) as client:
        yield client


class Signer:
    """Signs test requests under each scheme with strictly increasing nonces."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.nonce = int(T0 * 1000)

    def __call__(
        self, scheme: str, path: str, query: dict[str, str], key: str = KEY, secret: str = SECRET
    ) -> dict[str, str]:
        if scheme == "gateway":
            timeout = str(int(self.clock() * 1000) + 500)
            return {"X-Key": key, "X-Timeout": timeout, "X-Sign": mac(secret, key + path + timeout)}
        self.nonce += 1
        nonce = str(self.nonce)
        if scheme == "v2":
            signature = mac(secret, path + nonce)
        else:
            signature = mac(secret, key + urlencode(sorted(query.items())))
        return {"X-API-Key": key, "X-Nonce": nonce, "X-Signature": signature}


@pytest.fixture(name="get")
def fixture_get(client: Client, clock: FakeClock) -> Any:
    """GET an API path signed under a scheme; returns status, JSON body and headers."""
    signer = Signer(clock)

    async def get(
        path: str,
        scheme: str = "gateway",
        query: dict[str, str] | None = None,
        headers: dict[str, str] | None = None,
        **sign: str,
    ) -> tuple[int, Any, dict[str, str]]:
        query = query or {}
        full = "/bitexbit" + path
        clock.now += 0.5  # one request per rate-limit slot unless a test says otherwise
        signed = signer(scheme, full, query, **sign) if headers is None else headers
        async with client.get(full, params=query, headers=signed) as resp:
            return resp.status, json.loads(await resp.text()), dict(resp.headers)

    return get


class TestVerifiers:
    """The simulator's own signature algorithms, pinned to the vectors."""

    def test_gateway_vector(self) -> None:
        """gateway_signature reproduces the NOTES.md vector."""
        expected = "28dd3beb048906aa92472a00004a6c23c76ab8e121f31c21c78226732fb6500b"
        assert gateway_signature("k", "s", HISTORY, "1700000000000", b"") == expected

    def test_v2_vector(self) -> None:
        """v2_signature is HMAC over path + nonce + body (vector computed with hmac, pinned)."""
        expected = "69b53c4b15b5cacdfd69b1ee49b2a592158d16430a1fc25ba982ad4e752a2c87"
        assert mac("s", BALANCE + "1700000000000") == expected
        assert v2_signature("s", BALANCE, "1700000000000", b"") == expected

    @pytest.mark.parametrize(
        ("params", "expected"),
        [
            (
                [("page", "2"), ("ordering", "-id"), ("limit", "50")],
                "8c033c40707b6e7bb559170ab76bbf837edb58de673fe946a5bc0b016a5b08e1",
            ),
            ([], "eff4f79cbd30588f8586e3d777f64bc8ba44d0a03578d55cbc71c9204a4c6f39"),
        ],
    )
    def test_v1_vectors(self, params: list[tuple[str, str]], expected: str) -> None:
        """v1_signature is HMAC over key + params sorted and urlencoded."""
        assert v1_signature("k", "s", params) == expected


class TestAuth:
    """Each scheme is verified on its own terms; anything else is 401."""

    @pytest.mark.parametrize("scheme", ["gateway", "v2", "v1"])
    async def test_accepted(self, sim: BitexbitSim, get: Any, scheme: str) -> None:
        """A correctly signed read under any scheme is answered and its scheme recorded."""
        status, body, _ = await get(HISTORY, scheme, {"ordering": "-id", "limit": "5"})
        assert (status, body["results"]) == (200, [])
        assert list(sim.calls) == [(KEY, HISTORY, scheme)]

    @pytest.mark.parametrize(
        ("scheme", "headers"),
        [
            ("gateway", {"X-Key": KEY, "X-Timeout": "1700000000499", "X-Sign": "0"}),
            ("gateway", {"X-Key": KEY, "X-Timeout": "soon", "X-Sign": "0"}),
            ("v2", {"X-API-Key": KEY, "X-Nonce": "x1", "X-Signature": "0"}),
            ("v2", {}),
        ],
        ids=["expired", "timeout-not-a-number", "nonce-not-a-number", "no-headers"],
    )
    async def test_malformed(
        self, sim: BitexbitSim, get: Any, scheme: str, headers: dict[str, str]
    ) -> None:
        """An expired X-Timeout (by the sim clock), odd header values or none at all: 401."""
        status, body, _ = await get(HISTORY, scheme, headers=headers)
        assert status == 401
        assert "detail" in body
        assert not sim.calls

    @pytest.mark.parametrize("scheme", ["gateway", "v2", "v1"])
    @pytest.mark.parametrize(
        "sign", [{"secret": "wrong"}, {"key": "nobody"}], ids=["bad-secret", "unknown-key"]
    )
    async def test_bad_signature(self, get: Any, scheme: str, sign: dict[str, str]) -> None:
        """A signature with another secret, or an unknown key, is refused under every scheme."""
        status, _, _ = await get(HISTORY, scheme, {"page": "1"}, **sign)
        assert status == 401

    async def test_path_is_signed(self, get: Any, clock: FakeClock) -> None:
        """A gateway signature over another path (the real service's) does not verify here."""
        timeout = str(int(clock() * 1000) + 1000)
        headers = {
            "X-Key": KEY,
            "X-Timeout": timeout,
            "X-Sign": mac(SECRET, KEY + HISTORY + timeout),
        }
        assert (await get(HISTORY, headers=headers))[:2] == (401, {"detail": "Invalid signature."})

    async def test_nonce_must_grow(self, get: Any, clock: FakeClock) -> None:
        """Replaying a v2 request, or a smaller nonce, is refused."""
        path = "/bitexbit" + BALANCE
        headers = {"X-API-Key": KEY, "X-Nonce": "500", "X-Signature": mac(SECRET, path + "500")}
        assert (await get(BALANCE, headers=headers))[0] == 200
        clock.now += 1
        status, body, _ = await get(BALANCE, headers=headers)
        assert (status, body) == (401, {"detail": "Invalid nonce."})

    async def test_balance_is_v2_only(self, get: Any) -> None:
        """The v2 balance refuses the gateway and v1 schemes."""
        for scheme, expected in (("gateway", 401), ("v1", 401), ("v2", 200)):
            assert (await get(BALANCE, scheme))[0] == expected


class TestRateLimit:
    """2 requests/s per key, across the gateway and the v2 API."""

    async def test_second_call_in_the_same_slot(self, get: Any, clock: FakeClock) -> None:
        """An immediate second call on the key gets 429 with Retry-After; half a second on, 200."""
        await get(HISTORY)
        clock.now -= 0.5 + 0.25  # the second call lands a quarter second after the first
        status, body, headers = await get(BALANCE, "v2")
        assert (status, body, headers["Retry-After"]) == (
            429,
            {"detail": "Request was throttled."},
            "1",
        )
        clock.now += 0.25  # half a second after the first call
        assert (await get(BALANCE, "v2"))[0] == 200

    async def test_keys_and_refusals(self, sim: BitexbitSim, get: Any, clock: FakeClock) -> None:
        """Another key has its own budget; a refused signature spends none."""
        sim.add_account("key-2", "secret-2")
        await get(HISTORY)
        clock.now -= 0.5  # the same moment, on the other key
        assert (await get(HISTORY, key="key-2", secret="secret-2"))[0] == 200
        assert (await get(HISTORY, key="key-2", secret="wrong"))[0] == 401
        clock.now -= 0.5  # the slot the refused call would have taken
        assert (await get(HISTORY, key="key-2", secret="secret-2"))[0] == 200


class TestPaging:
    """Histories page as {count, next, previous, results}, newest first by default."""

    @pytest.fixture(name="ids")
    def fixture_ids(self, sim: BitexbitSim) -> list[int]:
        return [
            sim.add_withdrawal(KEY, ticker="USDT", network="tron", amount=Decimal(n))
            for n in range(1, 26)
        ]

    async def test_pages_with_space_led_next(
        self, client: Client, get: Any, ids: list[int]
    ) -> None:
        """20 a page by default; next carries a leading space and the other parameters."""
        _, first, _ = await get(WITHDRAWS, query={"ordering": "-id"})
        origin = f"http://{client.host}:{client.port}"
        assert first["count"] == 25
        assert [w["id"] for w in first["results"]] == ids[::-1][:20]
        assert first["next"] == f" {origin}/bitexbit{WITHDRAWS}?ordering=-id&page=2"
        assert first["previous"] is None
        _, second, _ = await get(WITHDRAWS, query={"ordering": "-id", "page": "2"})
        assert [w["id"] for w in second["results"]] == ids[::-1][20:]
        assert second["next"] is None
        assert second["previous"] == f"{origin}/bitexbit{WITHDRAWS}?ordering=-id&page=1"

    @pytest.mark.parametrize(
        ("query", "expected"),
        [
            ({"ordering": "id", "limit": "3"}, [1, 2, 3]),
            ({"limit": "2", "page": "3"}, [21, 20]),
            ({"limit": "1000"}, list(range(25, 0, -1))),
            ({"limit": "x"}, list(range(25, 5, -1))),
            ({"status": "10", "ordering": "id", "limit": "1"}, [1]),
            ({"status": "30"}, []),
        ],
    )
    async def test_parameters(
        self, get: Any, ids: list[int], query: dict[str, str], expected: list[int]
    ) -> None:
        """ordering, limit (capped at 100, default 20), page and filters select the rows."""
        _, body, _ = await get(WITHDRAWS, query=query)
        assert [w["id"] for w in body["results"]] == [ids[n - 1] for n in expected]

    @pytest.mark.usefixtures("ids")
    @pytest.mark.parametrize("page", ["3", "0", "two"])
    async def test_invalid_page(self, get: Any, page: str) -> None:
        """A page past the end or not a number is 404 Invalid page."""
        status, body, _ = await get(WITHDRAWS, query={"page": page})
        assert (status, body) == (404, {"detail": "Invalid page."})


class TestTransfers:
    """Deposits, the withdrawal ladder and the balances they move."""

    async def test_deposit_listing(self, sim: BitexbitSim, get: Any) -> None:
        """A deposit is listed as the doc shows it, without an id, status as a string."""
        sim.add_deposit(
            KEY, ticker="BTC", network="bitcoin", amount=Decimal("0.5"), created_at=T0,
            txid="ab", address="bc1q", aml_success=True, aml_risk=Decimal("0.1"),
        )  # fmt: skip
        _, body, _ = await get(HISTORY)
        (item,) = body["results"]
        assert "id" not in item
        assert {k: item[k] for k in ("status", "txid", "address", "amount", "aml_risk")} == {
            "status": "1",
            "txid": "ab",
            "address": "bc1q",
            "amount": "0.5",
            "aml_risk": 0.1,
        }
        assert item["created_at"] == item["date"] == "2023-11-14T22:13:20.000000Z"
        assert (item["actual_confirmations"], item["required_confirmations"]) == (0, 3)

    def test_deposit_confirms_and_credits(self, sim: BitexbitSim) -> None:
        """A pending deposit is confirmed at its required confirmations and credited then."""
        did = sim.add_deposit(KEY, ticker="BTC", network="bitcoin", amount=Decimal("0.5"))
        assert sim.update_deposit(KEY, did, confirmations=2)["status"] == "1"
        assert sim.balance(KEY, "BTC") == (Decimal(0), Decimal(0))
        assert sim.update_deposit(KEY, did, confirmations=3)["status"] == "5"
        assert sim.balance(KEY, "BTC") == (Decimal("0.5"), Decimal(0))

    def test_ladder(self, sim: BitexbitSim) -> None:
        """advance climbs 10, 20, 23, 25, 26, 30 one rung at a time, then stays; txid at 30."""
        sim.set_balance(KEY, "USDT", Decimal(100))
        wid = sim.add_withdrawal(KEY, ticker="USDT", network="tron", amount=Decimal(30))
        assert sim.balance(KEY, "USDT") == (Decimal(70), Decimal(30))
        climbed = [sim.advance_withdrawal(KEY, wid) for _ in range(7)]
        assert climbed == [*LADDER[1:], 30, 30]
        assert sim.withdrawal(KEY, wid)["txid"]
        assert sim.balance(KEY, "USDT") == (Decimal(70), Decimal(0))

    def test_held_and_refused(self, sim: BitexbitSim) -> None:
        """A held withdrawal never leaves moderation; a refused one gives its amount back."""
        sim.set_balance(KEY, "USDT", Decimal(100))
        held = sim.add_withdrawal(KEY, ticker="USDT", network="tron", amount=Decimal(5), hold=True)
        assert [sim.advance_withdrawal(KEY, held) for _ in range(6)] == [20, 23, 25, 25, 25, 25]
        assert sim.set_withdrawal_status(KEY, held, 40) == 40
        assert sim.balance(KEY, "USDT") == (Decimal(100), Decimal(0))

    async def test_methods_and_balance(self, sim: BitexbitSim, get: Any) -> None:
        """Payment methods carry both flags; the v2 balance lists available and reserved."""
        sim.set_payment_method("USDT", "ethereum", deposit=True, withdraw=False)
        sim.set_balance(KEY, "USDT", Decimal("12.5"), Decimal(2))
        _, methods, _ = await get("/api/gateway/payment-methods", "v1")
        flags = {(m["ticker"], m["network"]): (m["is_deposit_enabled"], m["is_withdraw_enabled"])
                 for m in methods}  # fmt: skip
        assert flags == {
            ("BTC", "bitcoin"): (True, True),
            ("USDT", "tron"): (True, True),
            ("USDT", "ethereum"): (True, False),
        }
        _, balance, _ = await get(BALANCE, "v2")
        assert balance == [{"symbol": "USDT", "available": "12.5", "reserved": "2"}]


class TestWritesAndControl:
    """Writes are refused and recorded; the control endpoints drive the simulation."""

    @pytest.mark.parametrize(
        ("method", "path"),
        [
            ("POST", "/api/gateway/withdraw/create"),
            ("POST", "/api/gateway/wallet/create"),
            ("GET", "/api/gateway/withdraw/create"),
            ("DELETE", HISTORY),
        ],
    )
    async def test_writes_refused(
        self, ctx: SimContext, client: Client, method: str, path: str
    ) -> None:
        """Any non-GET, or a create path, is 403 and lands in write_calls."""
        async with client.request(method, "/bitexbit" + path, json={}) as resp:
            assert resp.status == 403
        assert ctx.write_calls == [("bitexbit", path)]
        assert ctx.requests.count(provider="bitexbit", status=403) == 1

    async def test_unknown_path(self, client: Client) -> None:
        """An unknown read path is 404."""
        async with client.get("/bitexbit/api/gateway/wallets") as resp:
            assert resp.status == 404

    async def test_control_flow(self, client: Client) -> None:
        """Accounts, deposits and withdrawals are made and moved over /_sim/bitexbit."""

        async def call(method: str, path: str, body: object = None) -> tuple[int, Any]:
            async with client.request(method, "/_sim/bitexbit" + path, json=body) as resp:
                return resp.status, await resp.json()

        assert (await call("POST", "/accounts", {"api_key": "k2", "secret_key": "s"}))[0] == 201
        new = {"ticker": "BTC", "network": "bitcoin", "amount": "0.2"}
        _, deposit = await call("POST", "/k2/deposits", new)
        _, withdrawal = await call("POST", "/k2/withdrawals", {**new, "amount": "0.1"})
        _, confirmed = await call("POST", f"/k2/deposits/{deposit['id']}", {"confirmations": 3})
        assert confirmed["status"] == "5"
        _, climbed = await call("POST", f"/k2/withdrawals/{withdrawal['id']}", {})
        _, refused = await call("POST", f"/k2/withdrawals/{withdrawal['id']}", {"status": 40})
        assert (climbed["status"], refused["status"]) == (20, 40)
        _, snapshot = await call("GET", "/k2")
        ((symbol, available, reserved),) = [tuple(b.values()) for b in snapshot["balances"]]
        assert (symbol, Decimal(available), Decimal(reserved)) == (
            "BTC",
            Decimal("0.2"),
            Decimal(0),
        )
        assert (await call("GET", "/nobody"))[0] == 404
        assert (await call("POST", "/k2/withdrawals", {**new, "amount": "x"}))[0] == 400


def scenario(seed: int) -> tuple[BitexbitSim, BitexbitScenario]:
    """A simulator with the demo scenario for ``seed`` on a frozen clock."""
    sim = BitexbitSim(SimContext(clock=lambda: T0, rate_limit=2.0, retry_after_date=False))
    return sim, BitexbitScenario(sim, random.Random(f"{seed}/bitexbit"), lambda: T0)


DEMO_KEY = DEMO_BITEXBIT_ACCOUNT[1]
SEEDS = [0, 1, 7, 20240601, 99991]


class TestScenario:
    """The seeded demo story."""

    def test_deterministic(self) -> None:
        """The same seed tells the same story step by step; another seed another story."""

        def story(seed: int) -> list[Any]:
            sim, demo = scenario(seed)
            snaps = []
            for _ in range(15):
                demo.step()
                snaps.append((sim.snapshot(DEMO_KEY), dict(sim.methods)))
            return snaps

        assert story(1) == story(1)
        assert story(1) != story(2)

    def test_start(self) -> None:
        """More than a page of history, a withdrawal held in moderation for 3 h, a method off."""
        sim, demo = scenario(0)
        snap = sim.snapshot(DEMO_KEY)
        assert len(snap["deposits"]) == HISTORY_DEPOSITS > 50
        held = sim.withdrawal(DEMO_KEY, demo.held_id)
        assert held["status"] == 25
        assert held["created_at"] == "2023-11-14T19:13:20.000000Z"  # T0 - MODERATION_AGE
        assert MODERATION_AGE == 3 * 3600
        assert sim.methods[("USDT", "ethereum")] == (True, False)

    @pytest.mark.parametrize("seed", SEEDS)
    def test_withdrawals_climb_one_rung_a_step(self, seed: int) -> None:
        """Every scenario withdrawal moves one rung per step (or is refused in moderation),
        the first one is done within six steps, and the held one never moves."""
        sim, demo = scenario(seed)
        seen: dict[int, list[int]] = {}
        for _ in range(12):
            demo.step()
            for w in sim.snapshot(DEMO_KEY)["withdrawals"]:
                seen.setdefault(w["id"], []).append(w["status"])
        new = {i: s for i, s in seen.items() if s[0] == 10}
        assert new
        for statuses in new.values():
            climbed = [s for i, s in enumerate(statuses) if i == 0 or s != statuses[i - 1]]
            assert climbed in (list(LADDER[: len(climbed)]), [10, 20, 23, 25, 40])
        first = new[min(new)]
        assert first[5] in (30, 40)
        assert set(seen[demo.held_id]) == {25}

    @pytest.mark.parametrize("seed", SEEDS)
    def test_deposits_confirm_and_balances_stay_positive(self, seed: int) -> None:
        """New deposits confirm within three steps; no balance goes below zero."""
        sim, demo = scenario(seed)
        for _ in range(40):
            demo.step()
            for row in sim.snapshot(DEMO_KEY)["balances"]:
                assert Decimal(row["available"]) >= 0
                assert Decimal(row["reserved"]) >= 0
        pending = [d for d in sim.snapshot(DEMO_KEY)["deposits"] if d["status"] != "5"]
        assert all(d["actual_confirmations"] < 3 for d in pending)
