"""The Sila simulation: independent signature recovery, tokens, reads, refused writes, scenario."""

from __future__ import annotations

import base64
import json
import random
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from coincurve import PrivateKey
from Crypto.Hash import keccak

from walletwatch.sim import provider_app
from walletwatch.sim.common import SimContext
from walletwatch.sim.sila import SilaSim
from walletwatch.sim.sila_auth import TOKEN_TTL, address_of_key, recover_address
from walletwatch.sim.sila_scenario import (
    DEMO_SILA_ACCOUNTS,
    DEMO_SILA_APP,
    DEMO_SILA_APP_KEY,
    DEMO_SILA_CLIENT_ID,
    DEMO_SILA_CLIENT_SECRET,
    DEMO_SILA_ECDSA_USER,
    DEMO_SILA_OAUTH_USER,
    DEMO_SILA_USER_KEY,
    STUCK_AGE,
    SilaScenario,
)

T0 = 1_700_000_000.0
APP, USER = "app.silamoney.eth", "user.silamoney.eth"
APP_KEY = "4c0883a69102937d6231471b5dbb6204fe5129617082792ae468d01a3f362318"  # NOTES.md
USER_KEY = "11" * 32
CLIENT_ID, CLIENT_SECRET = "client-1", "client-secret-1"
VECTOR_BODY = (
    b'{"header": {"created": 1700000000, "app_handle": "app_handle", "user_handle": '
    b'"user_handle", "version": "0.2", "reference": "ref"}}'
)
VECTOR_SIGNATURE = (
    "7bfddff72fbe5a23c5b997c9588f7cd792e126a2b43d7abbd5188b107946f86b"
    "2ad936ec4c60f57a2744b0cff011b13c5061471a6034e64e851de41b36f5edad1b"
)
VECTOR_ADDRESS = "0x2c7536E3605D9C16a7a3D7b1898e529396a65c23"

Client = TestClient[web.Request, web.Application]


class FakeClock:
    """A clock that moves only when told to."""

    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def signature(key: str, body: bytes) -> str:
    """A test-side signer written from the spec alone: keccak256, recoverable, v + 27."""
    digest = keccak.new(digest_bits=256, data=body).digest()
    raw = PrivateKey.from_hex(key).sign_recoverable(digest, hasher=None)
    return (raw[:64] + bytes([raw[64] + 27])).hex()


def body_of(
    clock: FakeClock, user: str | None = USER, reference: object = "ref-1", **fields: Any
) -> bytes:
    """A request body with a Sila header at the sim's current time."""
    header: dict[str, object] = {"created": int(clock.now), "app_handle": APP}
    if user is not None:
        header["user_handle"] = user
    header |= {"version": "0.2", "reference": reference}
    return json.dumps({"header": header, **fields}).encode()


def basic(client_id: str = CLIENT_ID, secret: str = CLIENT_SECRET) -> str:
    """An HTTP Basic Authorization value."""
    return "Basic " + base64.b64encode(f"{client_id}:{secret}".encode()).decode()


@pytest.fixture(name="clock")
def fixture_clock() -> FakeClock:
    return FakeClock()


@pytest.fixture(name="ctx")
def fixture_ctx(clock: FakeClock) -> SimContext:
    return SimContext(clock=clock, rate_limit=1000.0, retry_after_date=False)


@pytest.fixture(name="sim")
def fixture_sim(ctx: SimContext) -> SilaSim:
    """One app (ECDSA and token) with one user holding 300 SILA."""
    sim = SilaSim(ctx)
    sim.add_app(
        APP, address=address_of_key(APP_KEY), client_id=CLIENT_ID, client_secret=CLIENT_SECRET
    )
    sim.add_user(APP, USER, address=address_of_key(USER_KEY), available=Decimal(300))
    return sim


@pytest.fixture(name="client")
async def fixture_client(sim: SilaSim) -> AsyncIterator[Client]:
    async with TestClient(TestServer(provider_app(sim))) as client:
        yield client


async def post(
    client: Client, clock: FakeClock, path: str, body: bytes, headers: dict[str, str]
) -> tuple[int, Any]:
    """POST to the API a second after the last call (so the rate limit never interferes)."""
    clock.now += 1.0
    async with client.post("/sila" + path, data=body, headers=headers) as resp:
        return resp.status, json.loads(await resp.text(), parse_float=Decimal)


async def signed(
    client: Client,
    clock: FakeClock,
    path: str = "/get_wallet",
    *,
    app_key: str = APP_KEY,
    user_key: str = USER_KEY,
    **fields: Any,
) -> tuple[int, Any]:
    """An ECDSA-signed call; ``fields`` go into the body beside the header."""
    clock.now += 1.0
    body = body_of(clock, **fields)
    clock.now -= 1.0
    headers = {
        "authsignature": signature(app_key, body),
        "usersignature": signature(user_key, body),
    }
    return await post(client, clock, path, body, headers)


async def token(client: Client, clock: FakeClock) -> str:
    """A fresh access token through /auth_token."""
    status, answer = await post(
        client, clock, "/auth_token", body_of(clock, None), {"Authorization": basic()}
    )
    assert status == 200
    value: str = answer["access_token"]["token"]
    return value


class TestVerification:
    """Signature recovery from the documented algorithm alone."""

    def test_notes_vector(self) -> None:
        """The NOTES.md signature recovers to its address, EIP-55 case included."""
        assert recover_address(VECTOR_BODY, VECTOR_SIGNATURE) == VECTOR_ADDRESS
        assert address_of_key(APP_KEY) == VECTOR_ADDRESS

    @pytest.mark.parametrize(
        "sig",
        [
            "",
            "zz",
            VECTOR_SIGNATURE[:-2],
            VECTOR_SIGNATURE[:-2] + "1d",
            VECTOR_SIGNATURE[:-2] + "00",
            "00" * 65,
        ],
        ids=["empty", "not-hex", "64-bytes", "v-29", "v-0", "zeros"],
    )
    def test_malformed(self, sig: str) -> None:
        """Malformed signatures recover nothing."""
        assert recover_address(VECTOR_BODY, sig) is None

    def test_other_body_other_signer(self) -> None:
        """The vector's signature does not recover its address over compact JSON of the body."""
        compact = json.dumps(json.loads(VECTOR_BODY), separators=(",", ":")).encode()
        assert recover_address(compact, VECTOR_SIGNATURE) != VECTOR_ADDRESS


class TestEcdsaAuth:
    """Both signatures must recover to the registered addresses."""

    async def test_accepted(self, client: Client, clock: FakeClock) -> None:
        """A correctly signed get_wallet answers in the doc's field family."""
        status, answer = await signed(client, clock)
        assert status == 200
        assert (answer["success"], answer["reference"]) == (True, "ref-1")
        assert (
            answer["available_balance"],
            answer["pending_balance"],
            answer["is_whitelisted"],
        ) == (
            Decimal(300),
            Decimal(0),
            True,
        )
        assert "sila_balance" not in answer

    @pytest.mark.parametrize(
        ("overrides", "status"),
        [
            ({"app_key": USER_KEY}, 403),
            ({"user_key": APP_KEY}, 403),
            ({"user": "stranger"}, 400),
            ({"reference": None}, 400),
            ({"reference": ""}, 400),
        ],
        ids=[
            "wrong-app-key",
            "wrong-user-key",
            "unknown-user",
            "null-reference",
            "empty-reference",
        ],
    )
    async def test_refused(
        self, client: Client, clock: FakeClock, overrides: dict[str, Any], status: int
    ) -> None:
        """Wrong signers get 403, an unknown user or a null reference 400, all success false."""
        got, answer = await signed(client, clock, **overrides)
        assert (got, answer["success"]) == (status, False)

    async def test_signature_covers_raw_bytes(self, client: Client, clock: FakeClock) -> None:
        """A body re-serialized after signing (same JSON, other bytes) is refused."""
        body = body_of(clock)
        headers = {
            "authsignature": signature(APP_KEY, body),
            "usersignature": signature(USER_KEY, body),
        }
        compact = json.dumps(json.loads(body), separators=(",", ":")).encode()
        assert (await post(client, clock, "/get_wallet", compact, headers))[0] == 403

    @pytest.mark.parametrize("skew", [-301, 301])
    async def test_created_must_be_current(
        self, client: Client, clock: FakeClock, skew: int
    ) -> None:
        """A header.created over five minutes off the server clock is refused."""
        body = body_of(FakeClock(clock.now + 1 + skew))
        headers = {
            "authsignature": signature(APP_KEY, body),
            "usersignature": signature(USER_KEY, body),
        }
        assert (await post(client, clock, "/get_wallet", body, headers))[0] == 400

    async def test_unsigned(self, client: Client, clock: FakeClock) -> None:
        """A call with neither signature nor token is 403."""
        assert (await post(client, clock, "/get_wallet", body_of(clock), {}))[0] == 403


class TestTokens:
    """/auth_token with HTTP Basic, Bearer tokens, expiry on the sim clock."""

    async def test_bearer_read(self, client: Client, clock: FakeClock, sim: SilaSim) -> None:
        """A token from /auth_token authorizes reads until the sim clock passes its expiry."""
        value = await token(client, clock)
        bearer = {"Authorization": f"Bearer {value}"}
        assert (await post(client, clock, "/get_wallet", body_of(clock), bearer))[0] == 200
        clock.now += TOKEN_TTL
        status, answer = await post(client, clock, "/get_wallet", body_of(clock), bearer)
        assert (status, answer["success"]) == (401, False)
        assert sim.tokens.issued == 1

    @pytest.mark.parametrize(
        "authorization", [basic(secret="wrong"), basic(client_id="other"), "Bearer x", "Basic !!"]
    )
    async def test_bad_client(self, client: Client, clock: FakeClock, authorization: str) -> None:
        """Wrong client credentials or another scheme get 401 from /auth_token."""
        status, _ = await post(
            client, clock, "/auth_token", body_of(clock, None), {"Authorization": authorization}
        )
        assert status == 401

    @pytest.mark.parametrize(
        ("elapsed", "same"), [(TOKEN_TTL - 1801, True), (TOKEN_TTL - 1799, False)]
    )
    async def test_reissue(
        self, client: Client, clock: FakeClock, elapsed: float, same: bool
    ) -> None:
        """While over 30 minutes remain the same token comes back; after that a new one."""
        first = await token(client, clock)
        clock.now += elapsed - 1
        assert (await token(client, clock) == first) is same

    async def test_revoked(self, client: Client, clock: FakeClock, sim: SilaSim) -> None:
        """After revoke_tokens the old token gets 401."""
        bearer = {"Authorization": f"Bearer {await token(client, clock)}"}
        sim.revoke_tokens()
        assert (await post(client, clock, "/get_wallet", body_of(clock), bearer))[0] == 401


class TestTokenAnswers:
    """/auth_token answered in Sila's shape with each expiry form, or in the OAuth2 shape."""

    @pytest.mark.parametrize(
        ("expiration", "written"),
        [
            ("seconds", int(T0) + 8 * 3600 + 1),
            ("milliseconds", (int(T0) + 8 * 3600 + 1) * 1000),
            ("iso", "2023-11-15T06:13:21Z"),
            ("iso_unzoned", "2023-11-15T06:13:21"),
            ("unreadable", "in eight hours"),
        ],
    )
    async def test_expiration_forms(
        self, client: Client, clock: FakeClock, sim: SilaSim, expiration: str, written: object
    ) -> None:
        """Each expiration form writes the same expiry its own way; the token still works."""
        sim.set_token_answer(expiration=expiration)
        status, answer = await post(
            client, clock, "/auth_token", body_of(clock, None), {"Authorization": basic()}
        )
        assert (status, answer["success"]) == (200, True)
        assert answer["access_token"]["expiration"] == written
        bearer = {"Authorization": f"Bearer {answer['access_token']['token']}"}
        assert (await post(client, clock, "/get_wallet", body_of(clock), bearer))[0] == 200

    async def test_expiration_missing(self, client: Client, clock: FakeClock, sim: SilaSim) -> None:
        """The missing form leaves expiration out of access_token."""
        sim.set_token_answer(expiration="missing")
        _, answer = await post(
            client, clock, "/auth_token", body_of(clock, None), {"Authorization": basic()}
        )
        assert set(answer["access_token"]) == {"token"}

    @pytest.mark.parametrize(
        ("expiration", "expires_in"), [("seconds", 8 * 3600), ("missing", None)]
    )
    async def test_oauth2_shape(
        self,
        client: Client,
        clock: FakeClock,
        sim: SilaSim,
        expiration: str,
        expires_in: int | None,
    ) -> None:
        """The OAuth2 shape: the token string in access_token, expires_in, no Sila envelope."""
        sim.set_token_answer(shape="oauth2", expiration=expiration)
        status, answer = await post(
            client, clock, "/auth_token", body_of(clock, None), {"Authorization": basic()}
        )
        assert status == 200
        assert isinstance(answer["access_token"], str)
        assert "success" not in answer
        assert answer.get("expires_in") == expires_in
        bearer = {"Authorization": f"Bearer {answer['access_token']}"}
        assert (await post(client, clock, "/get_wallet", body_of(clock), bearer))[0] == 200

    def test_unknown_forms_refused(self, sim: SilaSim) -> None:
        """An unknown shape or expiration form is a ValueError."""
        with pytest.raises(ValueError, match="shape"):
            sim.set_token_answer(shape="jwt")
        with pytest.raises(ValueError, match="expiration"):
            sim.set_token_answer(expiration="hours")


class TestReads:
    """Wallet field families, balances moved by transactions, history pages."""

    async def test_type_filter_ignored(
        self, client: Client, clock: FakeClock, sim: SilaSim
    ) -> None:
        """With the type filter off, a page asked for issues lists every type."""
        issue = sim.add_transaction(APP, USER, type="issue", amount=Decimal(5), created_at=T0 - 9)
        redeem = sim.add_transaction(APP, USER, type="redeem", amount=Decimal(7), created_at=T0)
        filters = {"transaction_types": ["issue"]}
        _, honoured = await signed(client, clock, "/get_transactions", search_filters=filters)
        sim.set_type_filter(honoured=False)
        _, ignored = await signed(client, clock, "/get_transactions", search_filters=filters)
        assert [tx["transaction_id"] for tx in honoured["transactions"]] == [issue]
        assert [tx["transaction_id"] for tx in ignored["transactions"]] == [redeem, issue]

    async def test_sdk_family(self, client: Client, clock: FakeClock, sim: SilaSim) -> None:
        """A user set to the sdk family answers with sila_* balance fields only."""
        sim.set_wallet(APP, USER, family="sdk", pending=Decimal(5), whitelisted=False)
        _, answer = await signed(client, clock)
        assert (
            answer["sila_balance"],
            answer["sila_available_balance"],
            answer["sila_pending_balance"],
        ) == (
            Decimal(300),
            Decimal(300),
            Decimal(5),
        )
        assert answer["is_whitelisted"] is False
        assert "available_balance" not in answer

    @pytest.mark.parametrize(
        ("kind", "status", "balance"),
        [
            ("issue", "queued", (300, 50)),
            ("issue", "success", (350, 0)),
            ("issue", "failed", (300, 0)),
            ("redeem", "review", (250, 0)),
            ("redeem", "success", (250, 0)),
            ("redeem", "rollback", (300, 0)),
        ],
    )
    def test_balance_effects(
        self, sim: SilaSim, kind: str, status: str, balance: tuple[int, int]
    ) -> None:
        """Issues count as pending until success; redeems hold their amount unless they fail."""
        tx = sim.add_transaction(APP, USER, type=kind, amount=Decimal(50))
        sim.set_status(APP, USER, tx, status)
        assert sim.balance(APP, USER) == (Decimal(balance[0]), Decimal(balance[1]))

    async def test_history_pages(self, client: Client, clock: FakeClock, sim: SilaSim) -> None:
        """Issues come newest first in pages; types, ids and statuses are filtered."""
        ids = [
            sim.add_transaction(APP, USER, type="issue", amount=Decimal(n), created_at=T0 - 100 + n)
            for n in range(1, 6)
        ]
        redeem = sim.add_transaction(APP, USER, type="redeem", amount=Decimal(7), status="review")
        filters = {
            "transaction_types": ["issue"],
            "page": 2,
            "per_page": 2,
            "sort_ascending": False,
        }
        _, answer = await signed(client, clock, "/get_transactions", search_filters=filters)
        assert [tx["transaction_id"] for tx in answer["transactions"]] == [ids[2], ids[1]]
        assert answer["pagination"] == {
            "returned_count": 2,
            "total_count": 5,
            "current_page": 2,
            "total_pages": 3,
        }
        _, answer = await signed(
            client, clock, "/get_transactions", search_filters={"transaction_id": redeem}
        )
        (item,) = answer["transactions"]
        assert (item["transaction_type"], item["status"], item["sila_amount"]) == (
            "redeem",
            "review",
            Decimal(7),
        )
        assert item["created_epoch"] == int(T0)

    @pytest.mark.parametrize(
        "filters",
        [{"per_page": 101}, {"page": 0}, {"transaction_types": ["mint"]}, {"amount": 1}, []],
    )
    async def test_bad_filters(self, client: Client, clock: FakeClock, filters: object) -> None:
        """Out-of-range pages, unknown types or unsimulated filters get 400."""
        status, _ = await signed(client, clock, "/get_transactions", search_filters=filters)
        assert status == 400


class TestRefusals:
    """Writes, wrong methods, rate limit."""

    @pytest.mark.parametrize(
        "path", ["/issue_sila", "/redeem_sila", "/transfer_sila", "/register_wallet"]
    )
    async def test_writes_refused_and_recorded(
        self, client: Client, clock: FakeClock, ctx: SimContext, path: str
    ) -> None:
        """Any POST outside the three reads is refused with 403 and recorded as a write."""
        status, _ = await signed(client, clock, path)
        assert status == 403
        assert ctx.write_calls == [("sila", path)]

    async def test_get_is_not_allowed(self, client: Client) -> None:
        """Reads are POSTs: GET /get_wallet is 405."""
        async with client.get("/sila/get_wallet") as resp:
            assert resp.status == 405

    async def test_rate_limited(self, client: Client, clock: FakeClock) -> None:
        """A second call in the same instant at the per-app limit gets 429 with Retry-After."""
        body = body_of(clock)
        headers = {
            "authsignature": signature(APP_KEY, body),
            "usersignature": signature(USER_KEY, body),
        }
        for expected in (200, 429):
            async with client.post("/sila/get_wallet", data=body, headers=headers) as resp:
                assert resp.status == expected
        assert resp.headers["Retry-After"] == "1"


class TestControl:
    """The /_sim/sila control endpoints call the Python API."""

    async def test_actions(self, client: Client) -> None:
        """Apps, users, transactions and statuses are set through control calls."""
        calls = [
            ("add_app", {"app_handle": "a2", "client_id": "c", "client_secret": "s"}),
            (
                "add_user",
                {"app_handle": "a2", "user_handle": "u", "available": "10", "family": "sdk"},
            ),
            (
                "add_transaction",
                {"app_handle": "a2", "user_handle": "u", "type": "issue", "amount": 5},
            ),
        ]
        for action, body in calls:
            async with client.post(f"/_sim/sila/{action}", json=body) as resp:
                assert resp.status == 200
                result = (await resp.json())["result"]
        async with client.post(
            "/_sim/sila/set_status",
            json={"app_handle": "a2", "user_handle": "u", "tx_id": result, "status": "success"},
        ) as resp:
            assert resp.status == 200
        async with client.get("/_sim/sila/a2/u") as resp:
            snapshot = await resp.json()
        assert (snapshot["available"], snapshot["family"]) == ("15", "sdk")

    async def test_variant_switches(self, client: Client, sim: SilaSim) -> None:
        """The token answer and the type filter are switched through control calls."""
        switches = [
            ("set_token_answer", {"shape": "oauth2", "expiration": "missing"}),
            ("set_type_filter", {"honoured": False}),
        ]
        for action, body in switches:
            async with client.post(f"/_sim/sila/{action}", json=body) as resp:
                assert resp.status == 200
        assert (sim.token_shape, sim.token_expiration, sim.type_filter) == (
            "oauth2",
            "missing",
            False,
        )

    @pytest.mark.parametrize(
        ("action", "body", "status"),
        [
            ("set_token_answer", {"expiration": "fortnight"}, 400),
            ("set_type_filter", {"honoured": "no"}, 400),
            ("mint", {}, 404),
            ("add_user", {"app_handle": "nope", "user_handle": "u"}, 404),
            ("set_wallet", {"app_handle": APP, "user_handle": USER, "whitelisted": "yes"}, 400),
        ],
    )
    async def test_errors(
        self, client: Client, action: str, body: dict[str, object], status: int
    ) -> None:
        """Unknown actions and apps are 404, malformed fields 400."""
        async with client.post(f"/_sim/sila/{action}", json=body) as resp:
            assert resp.status == status


class TestScenario:
    """The seeded demo on the two demo wallets."""

    @staticmethod
    def run(seed: str, steps: int) -> list[Any]:
        """Snapshots of both demo wallets after each of ``steps`` steps (5 s apart)."""
        clock = FakeClock()
        sim = SilaSim(SimContext(clock=clock, rate_limit=2.0, retry_after_date=False))
        scenario = SilaScenario(sim, random.Random(seed), clock)
        history = []
        for _ in range(steps):
            scenario.step()
            clock.now += 5
            history.append([sim.snapshot(DEMO_SILA_APP, user) for _, _, user in DEMO_SILA_ACCOUNTS])
        return history

    def test_deterministic(self) -> None:
        """The same seed tells the same story; another seed another."""
        assert self.run("1/sila", 12) == self.run("1/sila", 12)
        assert self.run("1/sila", 12) != self.run("2/sila", 12)

    @pytest.mark.parametrize("seed", ["1/sila", "20240601/sila", "x"])
    def test_promises(self, seed: str) -> None:
        """Issues arrive and settle, a review redeem stays stuck past 1h, balances stay >= 0."""
        history = self.run(seed, 15)
        ecdsa, oauth = history[-1]
        stuck = [tx for tx in ecdsa["transactions"] if tx["status"] == "review"]
        assert [(tx["transaction_type"], tx["created_epoch"]) for tx in stuck] == [
            ("redeem", int(T0 - STUCK_AGE))
        ]
        assert STUCK_AGE > 3600
        fresh = [
            tx
            for snap in (ecdsa, oauth)
            for tx in snap["transactions"]
            if tx["created_epoch"] >= T0
        ]
        assert {tx["transaction_type"] for tx in fresh} >= {"issue"}
        assert any(tx["status"] == "success" for tx in fresh)
        assert all(Decimal(s["available"]) >= 0 for step in history for s in step)
        assert (ecdsa["family"], oauth["family"]) == ("doc", "sdk")

    async def test_demo_credentials(self, clock: FakeClock) -> None:
        """The demo keys sign for the demo app and user; the demo client gets a token."""
        sim = SilaSim(SimContext(clock=clock, rate_limit=1000.0, retry_after_date=False))
        SilaScenario(sim, random.Random(1), clock)
        async with TestClient(TestServer(provider_app(sim))) as client:
            header = {
                "created": int(clock.now),
                "app_handle": DEMO_SILA_APP,
                "user_handle": DEMO_SILA_ECDSA_USER,
                "version": "0.2",
                "reference": "r",
            }
            body = json.dumps({"header": header}).encode()
            headers = {
                "authsignature": signature(DEMO_SILA_APP_KEY, body),
                "usersignature": signature(DEMO_SILA_USER_KEY, body),
            }
            async with client.post("/sila/get_wallet", data=body, headers=headers) as resp:
                assert resp.status == 200
            clock.now += 1
            header |= {"created": int(clock.now), "user_handle": DEMO_SILA_OAUTH_USER}
            auth = {"Authorization": basic(DEMO_SILA_CLIENT_ID, DEMO_SILA_CLIENT_SECRET)}
            async with client.post(
                "/sila/auth_token", json={"header": header}, headers=auth
            ) as resp:
                assert resp.status == 200
