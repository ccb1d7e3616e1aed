"""The PotWallet simulation: signature check, refusals, reads over time, writes, controls, demo."""

from __future__ import annotations

import itertools
import json
import random
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from aiohttp.typedefs import Handler
from hypothesis import example, given, settings
from hypothesis import strategies as st

from walletwatch.sim import mount
from walletwatch.sim.common import SimContext
from walletwatch.sim.potwallet import PotWalletSim, sign, verify
from walletwatch.sim.potwallet_scenario import (
    DEMO_POTWALLET_ACCOUNT,
    DEMO_POTWALLET_PRICES,
    DEMO_POTWALLET_START_BALANCE,
    PotWalletScenario,
)

PUBLIC, PRIVATE = "pub-1", "priv-1"
T0 = 1_700_000_000.0
URL = "https://api.potwallet.com/v1/balance"
VECTORS = {
    "raw": "7a1d994562a6ffb314f9b2eb9faf39f895448322fc16b7237f3ef8192d0aa807",
    "sha1": "94e727105e507f7815fe989cd8ad596ffec99076ca488cf3bc602c0d82f6c0e9",
}
SEED = 20240601

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


@pytest.fixture(name="ctx")
def fixture_ctx(clock: FakeClock) -> SimContext:
    return SimContext(clock=clock, rate_limit=1000.0, retry_after_date=False)


@pytest.fixture(name="sim")
def fixture_sim(ctx: SimContext) -> PotWalletSim:
    sim = PotWalletSim(ctx)
    sim.add_account(PUBLIC, PRIVATE, Decimal("2002.002"))
    sim.set_price("USD", Decimal("0.00142"))
    sim.set_price("CAD", Decimal("0.00176341"))
    return sim


@pytest.fixture(name="client")
async def fixture_client(sim: PotWalletSim, clock: FakeClock) -> AsyncIterator[Client]:
    """The sim mounted as the Simulator mounts it: API at /potwallet, controls at /_sim.

    Each request takes a millisecond of fake time: the sim's 1000/s limit admits it.
    """

    @web.middleware
    async def tick(request: web.Request, handler: Handler) -> web.StreamResponse:
        clock.now += 0.001
        return await handler(request)

    app = web.Application(middlewares=[tick])
    mount(app, sim)
    async with TestClient(TestServer(app)) as client:
        yield client


_nonces = itertools.count(1)


async def call(
    client: Client,
    path: str,
    *,
    public: str = PUBLIC,
    private: str = PRIVATE,
    variant: str = "raw",
    nonce: str | None = None,
    signed_path: str | None = None,
    method: str = "GET",
) -> tuple[int, Any, dict[str, str]]:
    """A signed call; the hash covers the full URL (of ``signed_path`` when given)."""
    nonce = nonce or f"n{next(_nonces)}"
    url = str(client.make_url("/potwallet" + (signed_path or path)))
    headers = {
        "Access-Public": public,
        "Access-Hash": sign(private, url, nonce, variant),
        "Access-Nonce": nonce,
    }
    async with client.request(method, "/potwallet" + path, headers=headers) as resp:
        return resp.status, json.loads(await resp.text(), parse_float=Decimal), dict(resp.headers)


def refusal(message: str) -> dict[str, str]:
    """A PotWallet refusal body."""
    return {"success": "false", "message": message}


class TestSignature:
    """The independent Access-Hash check, pinned to the NOTES.md vectors."""

    @pytest.mark.parametrize(("variant", "expected"), VECTORS.items())
    def test_vectors(self, variant: str, expected: str) -> None:
        """Each vector is what sign() computes, and verify() names its variant."""
        assert sign("s", URL, "abc1234", variant) == expected
        assert verify("s", URL, "abc1234", expected) == variant

    @pytest.mark.parametrize(
        ("private", "url", "nonce", "variants"),
        [
            ("t", URL, "abc1234", ("raw", "sha1")),
            ("s", URL + "?currency=USD", "abc1234", ("raw", "sha1")),
            ("s", URL, "abc1235", ("raw", "sha1")),
            ("s", URL.replace("https", "http"), "abc1234", ("raw", "sha1")),
        ],
    )
    def test_other_requests_fail(
        self, private: str, url: str, nonce: str, variants: tuple[str, ...]
    ) -> None:
        """Neither vector verifies another key, URL, query, scheme or nonce."""
        for signature in VECTORS.values():
            assert verify(private, url, nonce, signature, variants) is None

    def test_variant_can_be_refused(self) -> None:
        """An account limited to one variant refuses the other's signature."""
        assert verify("s", URL, "abc1234", VECTORS["sha1"], ("raw",)) is None
        assert verify("s", URL, "abc1234", VECTORS["raw"], ("sha1",)) is None


class TestAuth:
    """Who may read, and how the rest are refused (HTTP 200, success "false")."""

    @pytest.mark.parametrize("variant", ["raw", "sha1"])
    async def test_both_variants_accepted(
        self, sim: PotWalletSim, client: Client, variant: str
    ) -> None:
        """A request signed with either key variant reads the balance."""
        status, body, _ = await call(client, "/balance", variant=variant)
        assert (status, body) == (200, {"success": "true", "message": "2002.002"})
        assert sim.accepted == [(PUBLIC, variant)]

    @pytest.mark.parametrize(
        ("overrides", "message"),
        [
            ({"public": "nobody"}, "Invalid public key"),
            ({"private": "wrong"}, "Invalid access hash"),
            ({"nonce": "x" * 65}, "Invalid nonce"),
            ({"signed_path": "/balance?x=1"}, "Invalid access hash"),
        ],
        ids=["unknown-key", "wrong-key", "long-nonce", "other-url"],
    )
    async def test_refused(self, client: Client, overrides: dict[str, Any], message: str) -> None:
        """Unknown key, bad hash, bad nonce or a hash of another URL: success "false"."""
        status, body, _ = await call(client, "/balance", **overrides)
        assert (status, body) == (200, refusal(message))

    async def test_missing_headers(self, client: Client) -> None:
        """An unsigned call is refused as an invalid public key."""
        async with client.get("/potwallet/balance") as resp:
            assert (resp.status, await resp.json()) == (200, refusal("Invalid public key"))

    async def test_query_is_signed(self, client: Client) -> None:
        """The hash must cover the query: signing /price alone does not read ?currency=CAD."""
        status, body, _ = await call(client, "/price?currency=CAD", signed_path="/price")
        assert (status, body) == (200, refusal("Invalid access hash"))

    async def test_variant_limited_account(self, sim: PotWalletSim, client: Client) -> None:
        """An account created for sha1 only refuses raw-key hashes."""
        sim.add_account("pub-2", PRIVATE, hash_keys=["sha1"])
        assert (await call(client, "/balance", public="pub-2"))[1] == refusal("Invalid access hash")
        assert (await call(client, "/balance", public="pub-2", variant="sha1"))[0] == 200

    async def test_nonce_replay_refused(self, client: Client) -> None:
        """A nonce is good once per key."""
        assert (await call(client, "/balance", nonce="same"))[1]["success"] == "true"
        assert (await call(client, "/balance", nonce="same"))[1] == refusal("Nonce already used")

    async def test_rate_limit(self, clock: FakeClock) -> None:
        """At 1 request/s a second immediate call gets 429 with Retry-After; later it passes."""
        sim = PotWalletSim(SimContext(clock=clock, rate_limit=1.0, retry_after_date=False))
        sim.add_account(PUBLIC, PRIVATE)
        app = web.Application()
        app.add_subapp("/potwallet", sim.api_app())
        async with TestClient(TestServer(app)) as client:
            assert (await call(client, "/balance"))[0] == 200
            status, body, headers = await call(client, "/balance")
            assert (status, body, headers["Retry-After"]) == (
                429,
                refusal("Too many requests"),
                "1",
            )
            clock.now += 1
            assert (await call(client, "/balance"))[0] == 200


class TestReads:
    """The read endpoints, and transactions appearing as the clock reaches them."""

    async def test_listings(self, sim: PotWalletSim, client: Client) -> None:
        """receive and send list their own category, /transactions both, in the doc's shape."""
        received = sim.add_transaction(
            PUBLIC, category="receive", amount=Decimal("5000.5"), address="PA", date=T0 - 60
        )
        sent = sim.add_transaction(
            PUBLIC, category="send", amount=Decimal(1000), blockhash="bh", label="l", date=T0 - 30
        )
        _, receive, _ = await call(client, "/transactions/receive")
        _, send, _ = await call(client, "/transactions/send")
        _, both, _ = await call(client, "/transactions")
        assert receive["message"] == [
            {
                "date": "2023-11-14 22:12:20",
                "amount": Decimal("5000.5"),
                "category": "receive",
                "address": "PA",
                "blockhash": None,
                "txid": received,
                "label": None,
            }
        ]
        assert [(t["txid"], t["blockhash"], t["label"]) for t in send["message"]] == [
            (sent, "bh", "l")
        ]
        assert [t["txid"] for t in both["message"]] == [received, sent]

    async def test_scheduled_transactions_appear_over_time(
        self, sim: PotWalletSim, client: Client, clock: FakeClock
    ) -> None:
        """A transaction dated ahead shows in listing and balance once the clock gets there."""
        txid = sim.add_transaction(PUBLIC, category="receive", amount=Decimal(8), date=T0 + 60)
        assert (await call(client, "/transactions/receive"))[1]["message"] == []
        assert (await call(client, "/balance"))[1]["message"] == "2002.002"
        clock.now = T0 + 60
        assert [t["txid"] for t in (await call(client, "/transactions/receive"))[1]["message"]] == [
            txid
        ]
        assert (await call(client, "/balance"))[1]["message"] == "2010.002"

    @pytest.mark.parametrize(
        ("query", "expected"),
        [
            ("", {"price": "0.00142", "currency": "USD"}),
            ("?currency=CAD", {"price": "0.00176341", "currency": "CAD"}),
            ("?CAD", {"price": "0.00176341", "currency": "CAD"}),
        ],
    )
    async def test_price(self, client: Client, query: str, expected: dict[str, str]) -> None:
        """The price defaults to USD and reads ?currency=X (NOTES.md) or the doc's bare ?X."""
        _, body, _ = await call(client, "/price" + query)
        assert body == {"success": "true", "message": expected}

    async def test_unknown_quote(self, client: Client) -> None:
        """A currency without a price is refused."""
        _, body, _ = await call(client, "/price?currency=XYZ")
        assert body == refusal("Unsupported currency")

    async def test_addresses(self, sim: PotWalletSim, client: Client) -> None:
        """The address reads list the receiving addresses."""
        sim.add_transaction(PUBLIC, category="receive", amount=Decimal(1), address="PB", date=T0)
        assert (await call(client, "/addresses"))[1]["message"] == ["PB"]
        assert (await call(client, "/address"))[1]["message"] == "PB"


class TestWrites:
    """Writes are refused and recorded; walletwatch must never make one."""

    @pytest.mark.parametrize(
        ("method", "path"),
        [
            ("POST", "/send"),
            ("GET", "/address/new"),
            ("GET", "/merchant/receive"),
            ("POST", "/balance"),
        ],
    )
    async def test_refused_and_recorded(
        self, sim: PotWalletSim, ctx: SimContext, client: Client, method: str, path: str
    ) -> None:
        """A write path, or any non-GET, gets 403 and lands in write_calls; nothing moves."""
        status, body, _ = await call(client, path, method=method)
        assert (status, body["success"]) == (403, "false")
        assert ctx.write_calls == [("potwallet", path)]
        assert sim.balance(PUBLIC) == Decimal("2002.002")

    async def test_unknown_read(self, ctx: SimContext, client: Client) -> None:
        """An unknown GET path is 404 and not a write."""
        assert (await call(client, "/trades/other"))[0] == 404
        assert ctx.write_calls == []
        assert ctx.requests.count(provider="potwallet", path="/trades/other", status=404) == 1


class TestControl:
    """The unsigned /_sim/potwallet endpoints."""

    async def test_drive_an_account(self, client: Client) -> None:
        """Accounts, balances, transactions and prices can all be set over HTTP."""
        base = "/_sim/potwallet"
        account = {"public_key": "p2", "private_key": "k2", "balance": "10", "hash_keys": ["sha1"]}
        async with client.post(f"{base}/accounts", json=account) as resp:
            assert resp.status == 201
        async with client.put(f"{base}/p2/balance", json={"balance": "12.5"}) as resp:
            assert (await resp.json())["balance"] == "12.5"
        tx = {"category": "send", "amount": "2.5", "txid": "t1", "date": T0}
        async with client.post(f"{base}/p2/transactions", json=tx) as resp:
            assert (resp.status, await resp.json()) == (201, {"txid": "t1"})
        async with client.put(f"{base}/prices", json={"EUR": "0.0013"}) as resp:
            assert (await resp.json())["EUR"] == "0.0013"
        async with client.get(f"{base}/p2") as resp:
            snapshot = await resp.json()
        assert (snapshot["balance"], snapshot["transactions"][0]["amount"]) == ("10.0", "2.5")
        assert (await call(client, "/balance", public="p2", private="k2", variant="sha1"))[0] == 200

    @pytest.mark.parametrize(
        ("method", "path", "payload", "status"),
        [
            ("GET", "/nobody", None, 404),
            ("PUT", "/nobody/balance", {"balance": "1"}, 404),
            ("POST", "/accounts", {"public_key": PUBLIC, "private_key": "x"}, 400),
            (
                "POST",
                "/accounts",
                {"public_key": "p3", "private_key": "x", "hash_keys": ["md5"]},
                400,
            ),
            ("POST", f"/{PUBLIC}/transactions", {"category": "fee", "amount": "1"}, 400),
            ("POST", f"/{PUBLIC}/transactions", {"category": "send", "amount": "-1"}, 400),
            ("PUT", "/prices", {"USD": "-1"}, 400),
        ],
    )
    async def test_bad_controls(
        self, client: Client, method: str, path: str, payload: object, status: int
    ) -> None:
        """Unknown accounts are 404; duplicates, bad variants, categories and amounts 400."""
        async with client.request(method, "/_sim/potwallet" + path, json=payload) as resp:
            assert resp.status == status


def scenario(seed: int, steps: int) -> tuple[PotWalletSim, list[dict[str, Any]]]:
    """The demo scenario run ``steps`` steps on a fixed clock; a snapshot after each."""
    sim = PotWalletSim(SimContext(clock=lambda: T0, rate_limit=1.0, retry_after_date=False))
    run = PotWalletScenario(sim, random.Random(f"{seed}/potwallet"), lambda: T0)
    history = []
    for _ in range(steps):
        run.step()
        history.append({**sim.snapshot(DEMO_POTWALLET_ACCOUNT[1]), "prices": sim.prices()})
    return sim, history


class TestScenario:
    """The seeded demo: transactions appear over steps and the price moves."""

    def test_same_seed_same_story(self) -> None:
        """The same seed gives identical snapshots step by step; another seed does not."""
        assert scenario(SEED, 10)[1] == scenario(SEED, 10)[1]
        assert scenario(SEED, 10)[1] != scenario(SEED + 1, 10)[1]

    def test_initial_state(self) -> None:
        """The demo account starts with settled history both ways, its balance and prices."""
        sim, _ = scenario(SEED, 0)
        snap = sim.snapshot(DEMO_POTWALLET_ACCOUNT[1])
        assert Decimal(snap["balance"]) == DEMO_POTWALLET_START_BALANCE
        assert {t["category"] for t in snap["transactions"]} == {"receive", "send"}
        assert sim.prices() == {c: format(p, "f") for c, p in DEMO_POTWALLET_PRICES.items()}

    @given(seed=st.integers(min_value=0, max_value=2**64))
    @example(seed=SEED)
    @settings(max_examples=25, deadline=None)
    def test_activity_over_steps(self, seed: int) -> None:
        """A receive on step 1, a send by step 2, prices always move within 4% and stay > 0."""
        _, history = scenario(seed, 12)
        start = len(scenario(seed, 0)[0].snapshot(DEMO_POTWALLET_ACCOUNT[1])["transactions"])
        categories = [t["category"] for t in history[1]["transactions"][start:]]
        assert categories[0] == "receive"
        assert "send" in categories
        usd = [DEMO_POTWALLET_PRICES["USD"]] + [Decimal(h["prices"]["USD"]) for h in history]
        assert len(set(usd)) > 1
        for before, after in itertools.pairwise(usd):
            assert after > 0
            assert abs(after - before) <= before * Decimal("0.04") + Decimal("0.00000001")
        assert all(Decimal(h["balance"]) >= 0 for h in history)
        assert len({t["txid"] for t in history[-1]["transactions"]}) == len(
            history[-1]["transactions"]
        )

    async def test_demo_credentials_read_the_demo(self, ctx: SimContext) -> None:
        """The demo constants sign valid requests for the demo account (raw key)."""
        sim = PotWalletSim(ctx)
        PotWalletScenario(sim, random.Random("x"), lambda: T0).step()
        app = web.Application()
        app.add_subapp("/potwallet", sim.api_app())
        _, public, private = DEMO_POTWALLET_ACCOUNT
        async with TestClient(TestServer(app)) as client:
            status, body, _ = await call(client, "/balance", public=public, private=private)
        assert (status, body["message"]) == (200, format(sim.balance(public), "f"))
