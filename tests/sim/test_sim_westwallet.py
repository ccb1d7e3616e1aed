"""The WestWallet simulation: auth, rate limit, read endpoints, refused writes, balances."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from decimal import Decimal
from email.utils import parsedate_to_datetime
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from walletwatch.sim import Simulator
from walletwatch.sim.westwallet import sign, verify

KEY = "key-1"
SECRET = "secret-1"
T0 = 1_700_000_000.0

Client = TestClient[web.Request, web.Application]


class FakeClock:
    """A clock that moves only when told to."""

    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture(name="clock")
def fixture_clock() -> FakeClock:
    return FakeClock()


@pytest.fixture(name="sim")
def fixture_sim(clock: FakeClock) -> Simulator:
    sim = Simulator(clock=clock)
    sim.westwallet.add_account(KEY, SECRET, {"BTC": Decimal("1.11"), "USDT": Decimal("250.5")})
    return sim


@pytest.fixture(name="client")
async def fixture_client(sim: Simulator) -> AsyncIterator[Client]:
    async with TestClient(TestServer(sim.app())) as client:
        yield client


async def call(
    client: Client,
    path: str,
    body: object = None,
    *,
    key: str = KEY,
    secret: str = SECRET,
    timestamp: int = int(T0),
    method: str | None = None,
) -> tuple[int, Any, dict[str, str]]:
    """Send a signed WestWallet call; return status, JSON body (Decimals exact), headers."""
    raw = b"" if body is None else json.dumps(body).encode()
    ts = str(timestamp)
    headers = {"X-API-KEY": key, "X-ACCESS-TIMESTAMP": ts, "X-ACCESS-SIGN": sign(secret, ts, raw)}
    if body is not None:
        headers["Content-Type"] = "application/json"
    verb = method or ("GET" if body is None else "POST")
    async with client.request(verb, "/westwallet" + path, data=raw or None, headers=headers) as r:
        return r.status, json.loads(await r.text(), parse_float=Decimal), dict(r.headers)


class TestSignature:
    """The X-ACCESS-SIGN check, pinned to the vectors in NOTES.md."""

    @pytest.mark.parametrize(
        ("body", "expected"),
        [
            (b'{"id": 435}', "c41a7cd87efaf40ff8a1441a88a3fe36e0c2f255ba52e830db97a279904a362c"),
            (b'{"id":435}', "172cb1a147120f7428c4c2effcef73e5642290812e611b6200aec522ab95e9c4"),
            (b"", "1c0b2cfdd15f27ac2679bbc7eba2aef8f882822f798ea6a30fe233887518671b"),
        ],
    )
    def test_vectors(self, body: bytes, expected: str) -> None:
        """Each NOTES.md vector verifies and is exactly what sign() computes."""
        assert verify("s", "1700000000", body, expected)
        assert sign("s", "1700000000", body) == expected

    def test_other_bytes_fail(self) -> None:
        """A signature over spaced JSON does not verify compact JSON, nor another timestamp."""
        spaced = "c41a7cd87efaf40ff8a1441a88a3fe36e0c2f255ba52e830db97a279904a362c"
        assert not verify("s", "1700000000", b'{"id":435}', spaced)
        assert not verify("s", "1700000001", b'{"id": 435}', spaced)
        assert not verify("t", "1700000000", b'{"id": 435}', spaced)


class TestAuth:
    """Requests the simulator refuses with 401 wrong_credentials."""

    @pytest.mark.parametrize(
        "overrides",
        [
            {"key": "nobody"},
            {"secret": "wrong"},
            {"timestamp": int(T0) - 61},
            {"timestamp": int(T0) + 61},
        ],
        ids=["unknown-key", "bad-signature", "old-timestamp", "future-timestamp"],
    )
    async def test_refused(self, client: Client, overrides: dict[str, Any]) -> None:
        """An unknown key, a bad signature or a timestamp over 60 s off gets 401."""
        status, body, _ = await call(client, "/wallet/balances", **overrides)
        assert (status, body) == (401, {"error": "wrong_credentials"})

    async def test_timestamp_within_skew(self, client: Client) -> None:
        """A timestamp exactly 60 s off the sim clock is still accepted."""
        status, _, _ = await call(client, "/wallet/balances", timestamp=int(T0) - 60)
        assert status == 200

    async def test_missing_headers(self, client: Client) -> None:
        """A call without the auth headers gets 401."""
        async with client.get("/westwallet/wallet/balances") as resp:
            assert resp.status == 401
            assert await resp.json() == {"error": "wrong_credentials"}

    async def test_signature_covers_raw_bytes(self, client: Client) -> None:
        """A body re-serialized after signing (same JSON value, other bytes) is refused."""
        headers = _headers(b'{"id": 1}')
        path = "/westwallet/wallet/transaction"
        async with client.post(path, data=b'{"id":1}', headers=headers) as resp:
            assert resp.status == 401


class TestRateLimit:
    """The per-key limit of 2 requests/s without burst."""

    async def test_second_call_429_in_seconds(self, client: Client) -> None:
        """An immediate second call gets 429, Retry-After 1 and too_many_requests."""
        assert (await call(client, "/wallet/balances"))[0] == 200
        status, body, headers = await call(client, "/wallet/balances")
        assert (status, body, headers["Retry-After"]) == (429, {"error": "too_many_requests"}, "1")

    async def test_allowed_after_clock_advances(self, client: Client, clock: FakeClock) -> None:
        """After half a second of fake time the key may call again."""
        await call(client, "/wallet/balances")
        clock.now += 0.25
        assert (await call(client, "/wallet/balances"))[0] == 429
        clock.now += 0.25
        assert (await call(client, "/wallet/balances"))[0] == 200

    async def test_http_date_form(self, clock: FakeClock) -> None:
        """With retry_after_date, Retry-After is the HTTP-date when the next call is allowed."""
        sim = Simulator(clock=clock, retry_after_date=True)
        sim.westwallet.add_account(KEY, SECRET)
        clock.now = T0 + 0.3
        async with TestClient(TestServer(sim.app())) as client:
            await call(client, "/wallet/balances")
            status, _, headers = await call(client, "/wallet/balances")
        assert status == 429
        assert parsedate_to_datetime(headers["Retry-After"]).timestamp() == T0 + 1

    async def test_keys_are_independent(self, sim: Simulator, client: Client) -> None:
        """One key's spent token does not limit another key."""
        sim.westwallet.add_account("key-2", "secret-2")
        await call(client, "/wallet/balances")
        status, _, _ = await call(client, "/wallet/balances", key="key-2", secret="secret-2")
        assert status == 200

    async def test_refused_auth_spends_nothing(self, client: Client) -> None:
        """Calls that fail auth do not use up the key's token."""
        await call(client, "/wallet/balances", secret="wrong")
        assert (await call(client, "/wallet/balances"))[0] == 200

    async def test_custom_rate(self, clock: FakeClock) -> None:
        """rate_limit sets the refill rate: at 0.5/s the next call waits 2 s."""
        sim = Simulator(clock=clock, rate_limit=0.5)
        sim.westwallet.add_account(KEY, SECRET)
        async with TestClient(TestServer(sim.app())) as client:
            await call(client, "/wallet/balances")
            _, _, headers = await call(client, "/wallet/balances")
        assert headers["Retry-After"] == "2"


class TestBalances:
    """GET /wallet/balances."""

    async def test_exact_numbers(self, sim: Simulator, client: Client) -> None:
        """Balances are JSON numbers with every digit kept, beside error ok."""
        sim.westwallet.set_balance(KEY, "ETH", Decimal("0.123456789012345678"))
        async with client.get("/westwallet/wallet/balances", headers=_headers(b"")) as resp:
            text = await resp.text()
        assert '"ETH": 0.123456789012345678' in text
        assert json.loads(text, parse_float=Decimal) == {
            "BTC": Decimal("1.11"),
            "USDT": Decimal("250.5"),
            "ETH": Decimal("0.123456789012345678"),
            "error": "ok",
        }

    async def test_wrong_method(self, client: Client) -> None:
        """POST to the balances endpoint gets 405."""
        status, _, _ = await call(client, "/wallet/balances", {}, method="POST")
        assert status == 405


class TestTransactions:
    """POST /wallet/transactions and /wallet/transaction."""

    @pytest.fixture(name="ids")
    def fixture_ids(self, sim: Simulator) -> list[int]:
        ww = sim.westwallet
        return [
            ww.add_transaction(
                KEY,
                type="receive" if n % 2 else "send",
                currency=currency,
                amount=Decimal(n),
                status="completed",
            )
            for n, currency in enumerate(["BTC", "USDT"] * 6, start=1)
        ]

    async def test_default_newest_first(self, client: Client, ids: list[int]) -> None:
        """Without params, the 10 newest come first."""
        _, body, _ = await call(client, "/wallet/transactions", {})
        assert body["error"] == "ok"
        assert [item["id"] for item in body["result"]] == ids[::-1][:10]

    async def test_paging_ascending(self, client: Client, ids: list[int]) -> None:
        """limit, offset and order asc select a page oldest first."""
        _, body, _ = await call(
            client, "/wallet/transactions", {"limit": 3, "offset": 2, "order": "asc"}
        )
        assert [item["id"] for item in body["result"]] == ids[2:5]

    @pytest.mark.usefixtures("ids")
    @pytest.mark.parametrize(
        ("params", "expected"),
        [
            ({"type": "receive"}, 6),
            ({"currency": "USDT"}, 6),
            ({"type": "send", "currency": "USDT"}, 6),
            ({"type": "receive", "currency": "USDT"}, 0),
        ],
    )
    async def test_filters(self, client: Client, params: dict[str, str], expected: int) -> None:
        """type and currency keep only the transactions that match both."""
        _, body, _ = await call(client, "/wallet/transactions", {**params, "limit": 50})
        assert len(body["result"]) == expected
        for item in body["result"]:
            assert {k: item[k] for k in params} == params

    @pytest.mark.parametrize(
        ("params", "error"),
        [
            ({"limit": 51}, "bad_limit"),
            ({"limit": "5"}, "bad_limit"),
            ({"offset": -1}, "bad_offset"),
            ({"order": "up"}, "bad_order"),
            ({"type": "x"}, "bad_type"),
        ],
    )
    async def test_bad_params(self, client: Client, params: dict[str, object], error: str) -> None:
        """A limit over 50, an unknown order or type gets HTTP 400 with its error code."""
        status, body, _ = await call(client, "/wallet/transactions", params)
        assert (status, body) == (400, {"error": error})

    async def test_item_shape(self, sim: Simulator, client: Client) -> None:
        """An item carries every documented field, amount a number and fee a string."""
        tx_id = sim.westwallet.add_transaction(
            KEY,
            type="send",
            currency="BTC",
            amount=Decimal("0.10000001"),
            fee=Decimal("0.0001"),
            address="bc1qxyz",
            created_at=T0 - 60,
        )
        _, body, _ = await call(client, "/wallet/transaction", {"id": tx_id})
        assert body == {
            "id": tx_id,
            "created_at": "2023-11-14 22:12:20",
            "updated_at": "2023-11-14 22:12:20",
            "type": "send",
            "amount": Decimal("0.10000001"),
            "fee": "0.0001",
            "address": "bc1qxyz",
            "dest_tag": "",
            "label": "",
            "currency": "BTC",
            "status": "pending",
            "description": "",
            "blockchain_confirmations": 0,
            "blockchain_hash": "",
            "error": "ok",
        }

    async def test_unreadable_body(self, client: Client, clock: FakeClock) -> None:
        """A signed body that is not a JSON object gets 400 bad_json."""
        for raw in (b"{not json", b"[1]"):
            clock.now += 1
            path = "/westwallet/wallet/transactions"
            async with client.post(path, data=raw, headers=_headers(raw)) as resp:
                assert (resp.status, await resp.json()) == (400, {"error": "bad_json"})

    async def test_not_found_is_body_error(self, client: Client) -> None:
        """An unknown id answers HTTP 200 with error not_found."""
        status, body, _ = await call(client, "/wallet/transaction", {"id": 999})
        assert (status, body) == (200, {"error": "not_found"})

    async def test_status_change_visible(
        self, sim: Simulator, client: Client, clock: FakeClock
    ) -> None:
        """set_status changes status, confirmations, hash and updated_at as served."""
        ww = sim.westwallet
        tx_id = ww.add_transaction(KEY, type="receive", currency="BTC", amount=Decimal(1))
        clock.now += 30
        ww.set_status(KEY, tx_id, "completed", confirmations=2, txid="ab")
        _, body, _ = await call(client, "/wallet/transaction", {"id": tx_id})
        assert body["status"] == "completed"
        assert body["blockchain_confirmations"] == 2
        assert body["blockchain_hash"] == "ab"
        assert body["created_at"] == "2023-11-14 22:13:20"
        assert body["updated_at"] == "2023-11-14 22:13:50"


class TestWrites:
    """Endpoints that create or move money are refused and recorded."""

    @pytest.mark.parametrize(
        ("method", "path"),
        [
            ("POST", "/wallet/create_withdrawal"),
            ("POST", "/address/generate"),
            ("POST", "/wallet/create_withdrawal_many"),
            ("GET", "/address/generate"),
        ],
    )
    async def test_refused_and_recorded(
        self, sim: Simulator, client: Client, method: str, path: str
    ) -> None:
        """A write call gets 403 forbidden_in_simulator and lands in write_calls."""
        status, body, _ = await call(client, path, {"currency": "BTC"}, method=method)
        assert (status, body) == (403, {"error": "forbidden_in_simulator"})
        assert sim.write_calls == [("westwallet", path)]
        assert sim.requests.count(provider="westwallet", status=403) == 1

    async def test_unknown_path_404(self, sim: Simulator, client: Client) -> None:
        """An unknown read-like path is 404 and not a write."""
        status, _, _ = await call(client, "/wallet/nothing")
        assert status == 404
        assert sim.write_calls == []


class TestBalanceMovement:
    """Balances follow the transactions the way a wallet's would."""

    def test_receive_counts_when_completed(self, sim: Simulator) -> None:
        """A pending receive leaves the balance; completing it adds the amount."""
        ww = sim.westwallet
        tx_id = ww.add_transaction(KEY, type="receive", currency="BTC", amount=Decimal("0.5"))
        assert ww.balance(KEY, "BTC") == Decimal("1.11")
        ww.set_status(KEY, tx_id, "completed")
        assert ww.balance(KEY, "BTC") == Decimal("1.61")

    def test_send_debits_on_creation(self, sim: Simulator) -> None:
        """A send takes amount plus fee at once, and completing it changes nothing more."""
        ww = sim.westwallet
        tx_id = ww.add_transaction(
            KEY, type="send", currency="USDT", amount=Decimal(50), fee=Decimal("1.5")
        )
        assert ww.balance(KEY, "USDT") == Decimal("199.0")
        ww.set_status(KEY, tx_id, "completed")
        assert ww.snapshot(KEY)["balances"]["USDT"] == "199.0"

    def test_failed_send_refunded(self, sim: Simulator) -> None:
        """A send that fails gives amount and fee back."""
        ww = sim.westwallet
        tx_id = ww.add_transaction(KEY, type="send", currency="USDT", amount=Decimal(50))
        ww.set_status(KEY, tx_id, "failed")
        assert ww.balance(KEY, "USDT") == Decimal("250.5")

    def test_bad_type(self, sim: Simulator) -> None:
        """A type other than receive or send is refused."""
        with pytest.raises(ValueError, match="type"):
            sim.westwallet.add_transaction(KEY, type="swap", currency="BTC", amount=Decimal(1))

    def test_duplicate_account(self, sim: Simulator) -> None:
        """Adding an existing API key again is refused."""
        with pytest.raises(ValueError, match="exists"):
            sim.westwallet.add_account(KEY, "other")


def _headers(body: bytes) -> dict[str, str]:
    ts = str(int(T0))
    return {"X-API-KEY": KEY, "X-ACCESS-TIMESTAMP": ts, "X-ACCESS-SIGN": sign(SECRET, ts, body)}
