"""The KredsWallet simulation: signature and nonce checks, reads, the chain, writes, scenario."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from hypothesis import example, given, settings
from hypothesis import strategies as st

from walletwatch.config import Listen
from walletwatch.demo import demo_config
from walletwatch.sim import DEMO_KREDSWALLET_ACCOUNT, DEMO_SEED, Simulator, start
from walletwatch.sim.kredswallet import read_nonce, sign, verify
from walletwatch.sim.kredswallet_scenario import (
    DEMO_KREDSWALLET_CONFIRMATIONS,
    DEMO_KREDSWALLET_START_BALANCE,
)

KEY = "key-1"
SECRET = "secret-1"
T0 = 1_700_000_000.0
NONCE = 1_700_000_000_000
ROOT = "/kredswallet/api"

Client = TestClient[web.Request, web.Application]

# NOTES.md vector: secret "s", nonce 1700000000000.
VECTOR_PAYLOAD = "eyJub25jZSI6IjE3MDAwMDAwMDAwMDAifQ=="
VECTOR_SIGNATURE = (
    "b33f46a7d3cddf9e087b4708b72ec360a1e9488df666f77a5a3b2d7eccb7150d"
    "71ccd20037323e357526d8ce8755a1b145debf1ae15f8e7e84e9057f8f1eec6a"
)


def make_payload(nonce: object) -> str:
    """A payload as the PHP reference client builds it (the nonce given as is)."""
    return base64.b64encode(json.dumps({"nonce": nonce}, separators=(",", ":")).encode()).decode()


class Nonces:
    """Increasing nonces for the test's requests."""

    def __init__(self) -> None:
        self.last = NONCE

    def __call__(self) -> int:
        self.last += 1
        return self.last


@pytest.fixture(name="nonces")
def fixture_nonces() -> Nonces:
    return Nonces()


@pytest.fixture(name="sim")
def fixture_sim() -> Simulator:
    sim = Simulator(clock=lambda: T0)
    sim.kredswallet.add_account(KEY, SECRET, Decimal("1.66"))
    return sim


@pytest.fixture(name="client")
async def fixture_client(sim: Simulator) -> AsyncIterator[Client]:
    async with TestClient(TestServer(sim.app())) as client:
        yield client


async def call(
    client: Client,
    path: str,
    *,
    nonce: int | None,
    key: str = KEY,
    secret: str = SECRET,
    method: str = "GET",
    payload: str | None = None,
) -> tuple[int, Any, dict[str, str]]:
    """A signed call under the API root (unsigned when nonce and payload are None)."""
    headers = {"Accept": "application/json"}
    if nonce is not None or payload is not None:
        text = payload if payload is not None else make_payload(str(nonce))
        headers |= {
            "X-WWT-APIKEY": key,
            "X-WWT-PAYLOAD": text,
            "X-WWT-SIGNATURE": sign(secret, text),
        }
    async with client.request(method, ROOT + path, headers=headers) as resp:
        return resp.status, json.loads(await resp.text(), parse_float=Decimal), dict(resp.headers)


class TestSignature:
    """The X-WWT-SIGNATURE check, pinned to the NOTES.md vector."""

    def test_vector(self) -> None:
        """The vector verifies, sign() reproduces it, and its payload holds the nonce as text."""
        assert verify("s", VECTOR_PAYLOAD, VECTOR_SIGNATURE)
        assert sign("s", VECTOR_PAYLOAD) == VECTOR_SIGNATURE
        assert read_nonce(VECTOR_PAYLOAD) == NONCE

    def test_other_payload_or_secret_fails(self) -> None:
        """The signature covers the exact base64 text and the secret."""
        other = make_payload(str(NONCE + 1))
        assert not verify("s", other, VECTOR_SIGNATURE)
        assert not verify("t", VECTOR_PAYLOAD, VECTOR_SIGNATURE)

    @pytest.mark.parametrize(
        "payload",
        [
            make_payload(NONCE),  # a number, not the documented string
            make_payload("12a"),
            make_payload(None),
            base64.b64encode(b"[1]").decode(),
            "not base64!",
        ],
    )
    def test_unreadable_nonce(self, payload: str) -> None:
        """A nonce that is not a string of digits inside a base64 JSON object is unreadable."""
        assert read_nonce(payload) is None


class TestAuth:
    """Requests the simulator refuses, and the nonce rule."""

    @pytest.mark.parametrize(
        "overrides", [{"key": "nobody"}, {"secret": "wrong"}], ids=["unknown-key", "bad-signature"]
    )
    async def test_refused(self, client: Client, overrides: dict[str, str]) -> None:
        """An unknown key or a bad signature gets 401 with the documented error body."""
        status, body, _ = await call(client, "/user/balance", nonce=NONCE, **overrides)
        assert status == 401
        assert set(body) == {"error", "code", "message"}
        assert body["code"] == 401

    async def test_unsigned(self, client: Client) -> None:
        """A user call without the auth headers gets 401."""
        status, _, _ = await call(client, "/user/balance", nonce=None)
        assert status == 401

    async def test_nonce_must_increase(self, client: Client) -> None:
        """A nonce equal to or below the last accepted one gets 400 naming the nonce."""
        assert (await call(client, "/user/balance", nonce=NONCE + 5))[0] == 200
        for nonce in (NONCE + 5, NONCE + 4):
            status, body, _ = await call(client, "/user/balance", nonce=nonce)
            assert status == 400
            assert "nonce" in body["message"].lower()
        assert (await call(client, "/user/balance", nonce=NONCE + 6))[0] == 200

    async def test_forged_request_burns_no_nonce(self, sim: Simulator, client: Client) -> None:
        """A badly signed request with a huge nonce does not move the key's last nonce."""
        await call(client, "/user/balance", nonce=NONCE + 10**9, secret="wrong")
        assert sim.kredswallet.last_nonce(KEY) == 0
        assert (await call(client, "/user/balance", nonce=NONCE))[0] == 200
        assert sim.kredswallet.last_nonce(KEY) == NONCE

    async def test_keys_have_their_own_nonces(self, sim: Simulator, client: Client) -> None:
        """Another key may use a nonce the first key already used."""
        sim.kredswallet.add_account("key-2", "secret-2")
        await call(client, "/user/balance", nonce=NONCE)
        status, _, _ = await call(
            client, "/user/balance", nonce=NONCE, key="key-2", secret="secret-2"
        )
        assert status == 200

    @pytest.mark.parametrize("payload", [make_payload(NONCE), make_payload("x")])
    async def test_unreadable_payload(self, client: Client, payload: str) -> None:
        """A well-signed payload without a nonce string of digits gets 400."""
        status, body, _ = await call(client, "/user/balance", nonce=None, payload=payload)
        assert (status, body["message"]) == (400, "Invalid payload")

    async def test_nonce_echoed(self, client: Client) -> None:
        """Answers repeat the request's nonce in X-WWT-NONCE, refusals included."""
        _, _, ok = await call(client, "/user/balance", nonce=NONCE + 2)
        _, _, refused = await call(client, "/user/balance", nonce=NONCE + 1)
        assert (ok["X-WWT-NONCE"], refused["X-WWT-NONCE"]) == (str(NONCE + 2), str(NONCE + 1))

    async def test_api_disabled(self, sim: Simulator, client: Client, nonces: Nonces) -> None:
        """With the API disabled, /status says so and user calls get 401."""
        sim.kredswallet.api_enabled = False
        assert (await call(client, "/status", nonce=None))[:2] == (200, {"apiEnabled": False})
        status, body, _ = await call(client, "/user/balance", nonce=nonces())
        assert status == 401
        assert "disabled" in body["message"]


class TestRoot:
    """The API lives under /api, as on the real service."""

    async def test_status_is_public(self, client: Client) -> None:
        """GET /status needs no auth."""
        assert (await call(client, "/status", nonce=None))[:2] == (200, {"apiEnabled": True})

    async def test_root_path_required(self, client: Client, nonces: Nonces) -> None:
        """A call that drops /api from the base URL gets 404."""
        text = make_payload(str(nonces()))
        headers = {
            "X-WWT-APIKEY": KEY,
            "X-WWT-PAYLOAD": text,
            "X-WWT-SIGNATURE": sign(SECRET, text),
        }
        async with client.get("/kredswallet/user/balance", headers=headers) as resp:
            assert resp.status == 404


class TestReads:
    """The signed read endpoints."""

    async def test_balance_and_summary(
        self, sim: Simulator, client: Client, nonces: Nonces
    ) -> None:
        """Balance counts confirmed deposits; the summary shows the pending ones."""
        kw = sim.kredswallet
        kw.add_deposit(KEY, Decimal(2), confirmations=6)
        kw.add_deposit(KEY, Decimal("0.33"), confirmations=1)
        _, balance, _ = await call(client, "/user/balance", nonce=nonces())
        _, summary, _ = await call(client, "/user/summary", nonce=nonces())
        assert balance == {"balance": "3.66000000"}
        assert summary["balance"] == "3.66000000"
        assert summary["balance_pending"] == "0.33000000"
        assert (summary["transactions"], summary["transactions_pending"]) == (2, 1)

    async def test_deposits_newest_first_and_paged(
        self, sim: Simulator, client: Client, nonces: Nonces
    ) -> None:
        """Deposits list newest first; page and pagesize select a slice, defaults 1 and 100."""
        ids = [sim.kredswallet.add_deposit(KEY, Decimal(n), confirmations=1) for n in (1, 2, 3)]
        _, everything, _ = await call(client, "/user/deposits", nonce=nonces())
        _, page_two, _ = await call(client, "/user/deposits/2/2", nonce=nonces())
        assert [item["txid"] for item in everything] == ids[::-1]
        assert [item["txid"] for item in page_two] == ids[:1]

    async def test_deposit_shape(self, sim: Simulator, client: Client, nonces: Nonces) -> None:
        """A mined deposit carries the documented fields; an unconfirmed one no block fields."""
        kw = sim.kredswallet
        kw.add_deposit(KEY, Decimal("1.5"), address="Kdep", confirmations=2, created_at=T0 - 60)
        kw.add_deposit(KEY, Decimal(1))
        _, (fresh, mined), _ = await call(client, "/user/deposits/1/100", nonce=nonces())
        assert list(mined) == [
            "txid",
            "blockhash",
            "blockindex",
            "amount",
            "confirmations",
            "label",
            "blocktime",
            "address",
        ]
        assert (mined["amount"], mined["confirmations"], mined["address"]) == (
            "1.50000000",
            2,
            "Kdep",
        )
        assert mined["blocktime"] == "2023-11-14 22:12:20"
        assert set(fresh) == {"txid", "amount", "confirmations", "label", "address"}
        assert fresh["confirmations"] == 0

    async def test_withdraws_negative_with_total(
        self, sim: Simulator, client: Client, nonces: Nonces
    ) -> None:
        """Withdraws list negative amounts; total includes the fee; only withdraws are listed."""
        kw = sim.kredswallet
        kw.add_deposit(KEY, Decimal(5), confirmations=6)
        txid = kw.add_withdraw(KEY, Decimal("0.1"), fee=Decimal("0.01"), address="Kout")
        _, items, _ = await call(client, "/user/withdraws/1/100", nonce=nonces())
        assert items == [
            {
                "address_to": "Kout",
                "txid": txid,
                "amount": "-0.10000000",
                "total": "-0.11000000",
                "confirmations": 0,
                "label": "",
            }
        ]

    async def test_transaction(self, sim: Simulator, client: Client, nonces: Nonces) -> None:
        """One transaction by txid; an unknown txid gets 400."""
        txid = sim.kredswallet.add_deposit(KEY, Decimal(1), confirmations=3)
        status, item, _ = await call(client, f"/user/transaction/{txid}", nonce=nonces())
        assert (status, item["txid"], item["confirmations"]) == (200, txid, 3)
        status, _, _ = await call(client, f"/user/transaction/{'0' * 64}", nonce=nonces())
        assert status == 400

    @pytest.mark.parametrize("path", ["/user/deposits/0/10", "/user/deposits/1/x", "/user/nothing"])
    async def test_bad_paths(self, client: Client, nonces: Nonces, path: str) -> None:
        """Bad paging gets 400, an unknown user path 404."""
        status, body, _ = await call(client, path, nonce=nonces())
        assert status in (400, 404)
        assert body["code"] == status


class TestChain:
    """Blocks add confirmations and move balances."""

    def test_mining_confirms(self, sim: Simulator) -> None:
        """An unconfirmed deposit gets 1 confirmation in the next block, then one per block."""
        kw = sim.kredswallet
        txid = kw.add_deposit(KEY, Decimal(1))
        assert kw.confirmations(KEY, txid) == 0
        kw.mine()
        assert kw.confirmations(KEY, txid) == 1
        kw.mine(4)
        assert kw.confirmations(KEY, txid) == 5

    def test_deposit_counts_at_required_confirmations(self, sim: Simulator) -> None:
        """A deposit is pending until confirmations_required, then in the balance."""
        kw = sim.kredswallet
        kw.confirmations_required = 3
        kw.add_deposit(KEY, Decimal(1))
        kw.mine(2)
        assert (kw.balance(KEY), kw.pending(KEY)) == (Decimal("1.66"), Decimal(1))
        kw.mine()
        assert (kw.balance(KEY), kw.pending(KEY)) == (Decimal("2.66"), Decimal(0))

    def test_withdraw_debits_at_once(self, sim: Simulator) -> None:
        """A withdraw takes amount plus fee as it is made."""
        kw = sim.kredswallet
        kw.add_withdraw(KEY, Decimal("0.5"), fee=Decimal("0.01"))
        assert kw.balance(KEY) == Decimal("1.15")

    def test_conflicted(self, sim: Simulator) -> None:
        """A conflicted transfer reports -1 confirmations and leaves the balance alone."""
        kw = sim.kredswallet
        txid = kw.add_withdraw(KEY, Decimal("0.5"))
        kw.conflict(KEY, txid)
        kw.mine()
        assert (kw.confirmations(KEY, txid), kw.balance(KEY)) == (-1, Decimal("1.66"))

    def test_set_balance_keeps_transfers(self, sim: Simulator) -> None:
        """set_balance sets the available balance; later transfers move it from there."""
        kw = sim.kredswallet
        kw.add_deposit(KEY, Decimal(3), confirmations=10)
        kw.set_balance(KEY, Decimal(100))
        kw.add_withdraw(KEY, Decimal(10), fee=Decimal(0))
        assert kw.balance(KEY) == Decimal(90)

    @pytest.mark.parametrize(
        ("amount", "fee"),
        [(Decimal(0), Decimal(0)), (Decimal(-1), Decimal(0)), (Decimal(1), Decimal(-1))],
    )
    def test_bad_transfers(self, sim: Simulator, amount: Decimal, fee: Decimal) -> None:
        """Amounts must be positive and fees not negative."""
        with pytest.raises(ValueError, match="amount"):
            sim.kredswallet.add_withdraw(KEY, amount, fee=fee)


class TestWrites:
    """Calls that create, move or need admin rights are refused and recorded."""

    @pytest.mark.parametrize(
        ("method", "path"),
        [
            ("POST", "/user/address"),
            ("POST", "/user/withdraw/KKto/1.5/true"),
            ("GET", "/admin/account/balance"),
            ("POST", "/admin/account/credit/acct/1"),
        ],
    )
    async def test_refused_and_recorded(
        self, sim: Simulator, client: Client, nonces: Nonces, method: str, path: str
    ) -> None:
        """A write or admin call gets 403 and lands in write_calls."""
        status, body, _ = await call(client, path, nonce=nonces(), method=method)
        assert (status, body["code"]) == (403, 403)
        assert sim.write_calls == [("kredswallet", "/api" + path)]
        assert sim.requests.count(provider="kredswallet", status=403) == 1


@pytest.fixture(name="control")
async def fixture_control() -> AsyncIterator[tuple[Simulator, str]]:
    """A fresh simulator on a loopback port, and its /_sim/kredswallet URL."""
    sim = Simulator(clock=lambda: T0)
    runner, port = await start(sim)
    yield sim, f"http://127.0.0.1:{port}/_sim/kredswallet"
    await runner.cleanup()


async def send(url: str, method: str = "GET", body: object = None) -> tuple[int, Any]:
    """Call a control endpoint with a JSON body; return status and JSON answer."""
    async with aiohttp.ClientSession() as http, http.request(method, url, json=body) as resp:
        return resp.status, json.loads(await resp.text())


class TestControl:
    """Driving the simulation through /_sim/kredswallet over loopback."""

    async def test_lifecycle(self, control: tuple[Simulator, str]) -> None:
        """Accounts, deposits, blocks, withdraws and the API switch all show in the snapshot."""
        sim, ctl = control
        account = {"api_key": "k", "api_secret": "s"}
        assert (await send(ctl + "/accounts", "POST", account))[0] == 201
        assert (await send(ctl + "/k/balance", "PUT", {"balance": "10"}))[0] == 200
        status, made = await send(ctl + "/k/deposits", "POST", {"amount": "2.5"})
        assert status == 201
        assert await send(ctl + "/mine", "POST", {"blocks": 6}) == (200, {"height": 76058})
        withdraw = {"amount": "1", "fee": "0.1"}
        assert (await send(ctl + "/k/withdraws", "POST", withdraw))[0] == 201
        off = {"apiEnabled": False}
        assert await send(ctl + "/status", "PUT", off) == (200, off)

        status, snap = await send(ctl + "/k")

        assert status == 200
        assert (snap["balance"], snap["balance_pending"]) == ("11.40000000", "0.00000000")
        assert [(t["type"], t["confirmations"]) for t in snap["transfers"]] == [
            ("receive", 6),
            ("send", 0),
        ]
        assert snap["transfers"][0]["txid"] == made["txid"]
        assert sim.kredswallet.api_enabled is False

    @pytest.mark.parametrize(
        ("method", "path", "body", "status"),
        [
            ("GET", "/nobody", None, 404),
            ("POST", "/nobody/deposits", {"amount": "1"}, 404),
            ("POST", "/accounts", {"api_key": "k"}, 400),
            ("PUT", "/status", {"apiEnabled": "no"}, 400),
        ],
    )
    async def test_errors(
        self,
        control: tuple[Simulator, str],
        method: str,
        path: str,
        body: object,
        status: int,
    ) -> None:
        """Unknown accounts get 404, bad bodies 400."""
        _, ctl = control
        assert (await send(ctl + path, method, body))[0] == status


# The demo's promises must hold for every seed, not just the default one.
any_seed = given(seed=st.integers(min_value=0, max_value=2**64))
DEMO_KEY = DEMO_KREDSWALLET_ACCOUNT[1]


def demo(seed: int = DEMO_SEED) -> Simulator:
    """A scenario simulator on a still clock."""
    return Simulator(seed=seed, clock=lambda: T0, scenario=True)


def transfers(sim: Simulator) -> dict[str, dict[str, Any]]:
    """The demo account's transfers by txid."""
    return {t["txid"]: t for t in sim.kredswallet.snapshot(DEMO_KEY)["transfers"]}


class TestScenario:
    """Deterministic demo activity on the demo KredsWallet account."""

    def test_same_seed_same_story(self) -> None:
        """Two simulators with the same seed give identical snapshots step by step."""
        a, b = demo(), demo()
        for _ in range(8):
            a.advance()
            b.advance()
            assert a.kredswallet.snapshot(DEMO_KEY) == b.kredswallet.snapshot(DEMO_KEY)

    def test_initial_state(self) -> None:
        """The account starts at its balance with confirmed history and nothing pending."""
        sim = demo()
        kw = sim.kredswallet
        assert (kw.balance(DEMO_KEY), kw.pending(DEMO_KEY)) == (
            DEMO_KREDSWALLET_START_BALANCE,
            Decimal(0),
        )
        kinds = {t["type"] for t in transfers(sim).values()}
        assert kinds == {"receive", "send"}
        assert all(t["confirmations"] > 30 for t in transfers(sim).values())

    @any_seed
    @example(seed=DEMO_SEED)
    @settings(max_examples=25)
    def test_deposit_confirms_over_steps(self, seed: int) -> None:
        """Step 1 brings an unconfirmed deposit; it gains a confirmation a step until confirmed."""
        sim = demo(seed)
        known = set(transfers(sim))
        sim.advance()
        [new] = [t for k, t in transfers(sim).items() if k not in known and t["type"] == "receive"]
        for expected in range(1, DEMO_KREDSWALLET_CONFIRMATIONS + 1):
            sim.advance()
            assert transfers(sim)[new["txid"]]["confirmations"] == expected
        assert sim.kredswallet.balance(DEMO_KEY) >= Decimal(new["amount"])

    @any_seed
    @example(seed=DEMO_SEED)
    @settings(max_examples=25)
    def test_withdraw_completes(self, seed: int) -> None:
        """Step 1 brings a withdraw that reaches the required confirmations within 4 steps."""
        sim = demo(seed)
        known = set(transfers(sim))
        sim.advance()
        [new] = [t for k, t in transfers(sim).items() if k not in known and t["type"] == "send"]
        for _ in range(DEMO_KREDSWALLET_CONFIRMATIONS):
            sim.advance()
        done = transfers(sim)[new["txid"]]
        assert done["confirmations"] == DEMO_KREDSWALLET_CONFIRMATIONS
        assert Decimal(done["total"]) < Decimal(done["amount"]) < 0

    @any_seed
    @example(seed=DEMO_SEED)
    @settings(max_examples=10)
    def test_balance_never_negative(self, seed: int) -> None:
        """However long the demo runs, the balance stays at or above zero."""
        sim = demo(seed)
        for _ in range(60):
            sim.advance()
            assert sim.kredswallet.balance(DEMO_KEY) >= 0

    def test_demo_config_watches_the_scenario(self) -> None:
        """The built-in demo config names the scenario's account, keys and confirmations."""
        config = demo_config("http://127.0.0.1:1", Listen("127.0.0.1", 0), Path("/nonexistent"))
        name, api_key, api_secret = DEMO_KREDSWALLET_ACCOUNT
        account = config.account(name)
        assert account.provider == "kredswallet"
        assert account.base_url == "http://127.0.0.1:1/kredswallet/api"
        assert account.credentials["api_key"].reveal() == api_key
        assert account.credentials["api_secret"].reveal() == api_secret
        assert account.options["confirmations_required"] == DEMO_KREDSWALLET_CONFIRMATIONS
