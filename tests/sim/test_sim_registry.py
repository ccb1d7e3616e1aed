"""The simulator registry and the shared pipeline, driven by a toy provider defined here."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from walletwatch import sim as registry
from walletwatch.sim import (
    ApiSim,
    Call,
    Caller,
    Endpoint,
    Public,
    Refusal,
    Registration,
    SimContext,
    Simulator,
)
from walletwatch.sim.common import Clock, as_str, json_response, to_decimal

T0 = 1_700_000_000.0

Client = TestClient[web.Request, web.Application]


@dataclass(slots=True)
class _Account:
    token: str
    balance: Decimal = Decimal(0)
    deposits: list[Decimal] = field(default_factory=list)


_ACCOUNT_FIELDS = {"key": as_str, "token": as_str}


class ToySim(ApiSim[_Account]):
    """A provider whose callers send ``Authorization: <key>:<token>``."""

    name = "toy"
    forbidden = "no writes"
    throttled = "slow down"
    account_fields = _ACCOUNT_FIELDS
    snapshot_keys = ("key",)

    def __init__(self, ctx: SimContext) -> None:
        super().__init__(ctx)
        self.accounts: dict[str, _Account] = {}

    def add_account(self, key: str, token: str) -> None:
        """Create an account; ValueError if it exists."""
        if key in self.accounts:
            raise ValueError(f"account {key!r} exists")
        self.accounts[key] = _Account(token)

    def snapshot(self, key: str) -> dict[str, Any]:
        """The account's balance."""
        return {"key": key, "balance": self.accounts[key].balance}

    def is_write(self, _method: str, path: str) -> bool:
        """Anything under /pay."""
        return path.startswith("/pay")

    def route(self, method: str, path: str) -> Endpoint[_Account] | Public:
        """/ping for anyone, /balance signed."""
        if path == "/ping":
            return Public(lambda _call: {"pong": True})
        if path != "/balance":
            raise Refusal(404, "unknown")
        if method != "GET":
            raise Refusal(405, "GET only")
        return Endpoint(lambda account, _call: {"balance": account.balance})

    def authenticate(self, call: Call) -> Caller[_Account]:
        """The account whose token the Authorization header carries."""
        key, _, token = call.request.headers.get("Authorization", "").partition(":")
        account = self.accounts.get(key)
        if account is None or account.token != token:
            raise Refusal(401, "who are you")
        return Caller(account, key)

    def error_body(self, status: int, message: str) -> object:
        """``{"code": status, "why": message}``."""
        return {"code": status, "why": message}

    def control_routes(self, router: web.UrlDispatcher) -> None:
        """Credit an account."""
        router.add_post("/{key}/credit", self._c_credit)

    async def _c_credit(self, request: web.Request) -> web.Response:
        account = self.accounts[request.match_info["key"]]
        account.balance += to_decimal(await request.json())
        return json_response(self.snapshot(request.match_info["key"]))


class ToyScenario:
    """One demo account, credited one unit a step."""

    def __init__(self, sim: ToySim, _rng: random.Random, _clock: Clock) -> None:
        self._sim = sim
        sim.add_account("demo", "secret")

    def step(self) -> None:
        """Credit the demo account."""
        self._sim.accounts["demo"].balance += 1


@pytest.fixture(name="sim")
def fixture_sim() -> Simulator:
    return Simulator(
        clock=lambda: T0, rate_limit=1.0, simulators={"toy": Registration(ToySim, ToyScenario)}
    )


@pytest.fixture(name="client")
async def fixture_client(sim: Simulator) -> AsyncIterator[Client]:
    async with TestClient(TestServer(sim.app())) as client:
        yield client


async def call(client: Client, method: str, path: str, **kwargs: Any) -> tuple[int, Any]:
    """Status and JSON answer of one request."""
    async with client.request(method, path, **kwargs) as resp:
        return resp.status, await resp.json()


class TestPipeline:
    """A toy provider gets the shared pipeline by supplying its particular steps only."""

    async def test_write_refused_and_recorded(self, sim: Simulator, client: Client) -> None:
        """A write answers 403 in the provider's error shape and is recorded."""
        assert await call(client, "POST", "/toy/pay/now") == (
            403,
            {"code": 403, "why": "no writes"},
        )
        assert sim.write_calls == [("toy", "/pay/now")]

    async def test_route_refusals(self, client: Client) -> None:
        """Unknown paths and wrong methods are refused as the provider's route says."""
        assert await call(client, "GET", "/toy/nope") == (404, {"code": 404, "why": "unknown"})
        assert await call(client, "POST", "/toy/balance") == (405, {"code": 405, "why": "GET only"})

    async def test_public_read_needs_no_auth(self, client: Client) -> None:
        """A public read answers without credentials and without taking a rate-limit token."""
        for _ in range(3):
            assert await call(client, "GET", "/toy/ping") == (200, {"pong": True})

    async def test_auth_then_rate_limit(self, sim: Simulator, client: Client) -> None:
        """A bad caller gets 401; a good one its answer, then 429 with Retry-After."""
        sim.toy.add_account("k", "t")
        assert await call(client, "GET", "/toy/balance") == (
            401,
            {"code": 401, "why": "who are you"},
        )
        auth = {"Authorization": "k:t"}
        assert await call(client, "GET", "/toy/balance", headers=auth) == (200, {"balance": 0})
        async with client.get("/toy/balance", headers=auth) as resp:
            assert (resp.status, resp.headers["Retry-After"]) == (429, "1")
            assert await resp.json() == {"code": 429, "why": "slow down"}
        assert sim.requests.count(provider="toy", path="/balance") == 3

    async def test_control_app(self, client: Client) -> None:
        """POST /accounts, the provider's own control routes and the snapshot are served."""
        body = {"key": "k", "token": "t"}
        assert await call(client, "POST", "/_sim/toy/accounts", json=body) == (
            201,
            {"key": "k", "balance": 0},
        )
        assert (await call(client, "POST", "/_sim/toy/accounts", json=body))[0] == 400
        assert await call(client, "POST", "/_sim/toy/k/credit", json="2.5") == (
            200,
            {"key": "k", "balance": 2.5},
        )
        assert await call(client, "GET", "/_sim/toy/k") == (200, {"key": "k", "balance": 2.5})
        assert (await call(client, "GET", "/_sim/toy/missing"))[0] == 404


class TestRegistry:
    """Simulators are found by provider name in one registry that takes outside entries."""

    @pytest.fixture(name="registered")
    def fixture_registered(self) -> Iterator[None]:
        registry.register("toy", ToySim, ToyScenario)
        yield
        registry.unregister("toy")

    @pytest.mark.usefixtures("registered")
    def test_registered_simulator_is_served_with_its_scenario(self) -> None:
        """A Simulator built after register() serves the toy and steps its scenario."""
        sim = Simulator(clock=lambda: T0, scenario=True)
        assert isinstance(sim.sims["toy"], ToySim)
        sim.advance()
        sim.advance()
        assert sim.toy.snapshot("demo")["balance"] == 2

    @pytest.mark.usefixtures("registered")
    def test_a_name_registers_once(self) -> None:
        """Registering a taken name is refused."""
        with pytest.raises(ValueError, match="toy"):
            registry.register("toy", ToySim)

    def test_unregistered_is_not_served(self) -> None:
        """Without the toy's registration, the Simulator has no such simulator."""
        sim = Simulator()
        assert "toy" not in sim.sims
        with pytest.raises(AttributeError):
            _ = sim.toy

    def test_name_must_match_registration(self) -> None:
        """A simulator registered under another name than its own is refused."""
        with pytest.raises(ValueError, match="toy"):
            Simulator(simulators={"other": Registration(ToySim)})

    def test_every_registered_simulator_is_served(self) -> None:
        """The default Simulator serves every registry entry, each under its own name."""
        sim = Simulator()
        assert list(sim.sims) == list(registry.SIMULATORS)
        assert all(sim.sims[name].name == name for name in sim.sims)
