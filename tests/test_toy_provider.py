"""The proof of the house: a provider and its simulator defined in this one module, registered,
and run end to end through ``walletwatch run``'s own code path.

The toy provider signs each request with HMAC-SHA256 over ``METHOD PATH`` keyed by its token,
reports balances with one gauge of its own, and a deposit history in which a deposit is
``waiting`` until it is ``done``. Its simulator checks that signature on its own. Nothing
outside this module is edited: the registries take both entries for the test's duration.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import io
import json
import os
import signal
import socket
from collections.abc import Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families

from tests.simthread import serve_in_thread
from walletwatch import sim as simulators
from walletwatch.cli import _serve, main
from walletwatch.config import load_config
from walletwatch.configmodel import AccountConfig
from walletwatch.context import ProviderContext
from walletwatch.errors import BadPayload
from walletwatch.model import Balance, Direction, Gauge, Observation, State, Transfer
from walletwatch.providers import PROVIDERS, ProviderSpec, parse
from walletwatch.schema import ProviderSchema
from walletwatch.sim import ApiSim, Call, Caller, Endpoint, Refusal, SimContext, Simulator
from walletwatch.sim.common import as_str, json_response, to_decimal
from walletwatch.types import Tracked

KEY, TOKEN = "toy-key", "toy-token-5e1f"
UP = "walletwatch_up"
DEADLINE = 15.0  # seconds any one wait may take; each takes about a poll interval


def signature(token: str, method: str, path: str) -> str:
    """The toy scheme: hex HMAC-SHA256 of ``METHOD PATH`` keyed by the token."""
    return hmac.new(token.encode(), f"{method} {path}".encode(), hashlib.sha256).hexdigest()


# The provider: schema, signing, parsing and client.


class ToyClient:
    """Balances (with the toy's own gauge) and the deposit history of one toy account."""

    endpoints = ("balances", "deposits")

    def __init__(self, account: AccountConfig, context: ProviderContext) -> None:
        self._base = account.base_url.rstrip("/")
        self._key = account.credentials["key_id"].reveal()
        self._token = account.credentials["token"].reveal()
        self._http = context.http

    async def poll(self, endpoint: str, tracked: Tracked) -> Observation:
        """One signed GET, parsed strictly."""
        del tracked  # the whole history fits one answer
        if endpoint == "balances":
            body = await self._get("/balances", endpoint)
            if not isinstance(body, dict):
                raise BadPayload(f"{endpoint}: expected an object")
            balances = tuple(
                Balance(str(code), parse.amount(value, f"balances.{code}"))
                for code, value in body.items()
            )
            level = Gauge("toy_level", (), Decimal(len(balances)))
            return Observation(endpoint, balances=balances, gauges=(level,))
        items = await self._get("/deposits", endpoint)
        if not isinstance(items, list):
            raise BadPayload(f"{endpoint}: expected a list")
        transfers = tuple(
            Transfer(
                id=parse.text(item.get("id"), "id"),
                direction=Direction.DEPOSIT,
                currency=parse.text(item.get("currency"), "currency"),
                amount=parse.amount(item.get("amount"), "amount"),
                status=parse.text(item.get("status"), "status"),
                state={"done": State.OK, "waiting": State.PENDING}.get(
                    str(item.get("status")), State.UNKNOWN
                ),
            )
            for item in items
        )
        return Observation(endpoint, transfers=transfers, directions=frozenset({Direction.DEPOSIT}))

    async def _get(self, path: str, endpoint: str) -> Any:
        headers = {"X-Toy-Key": self._key, "X-Toy-Sign": signature(self._token, "GET", path)}
        response = await self._http.request(
            "GET", self._base + path, endpoint=endpoint, headers=headers
        )
        return response.json()


TOY = ProviderSpec(
    ProviderSchema(
        name="toy",
        base_url="https://toy.example",
        rate_limit=5.0,
        credentials=("key_id", "token"),
        identity="key_id",
    ),
    ToyClient,
    gauges={"toy_level": "How many currencies the toy account holds."},
)


# The simulator: its own check of the signature, a balance and a deposit history.


@dataclass(slots=True)
class _Account:
    token: str
    balances: dict[str, Decimal] = field(default_factory=dict)
    deposits: list[dict[str, str]] = field(default_factory=list)


class ToySim(ApiSim[_Account]):
    """Toy accounts served over HTTP; deposits added and settled through ``/_sim/toy``."""

    name = "toy"
    forbidden = "read only"
    throttled = "too fast"
    account_fields = {"key": as_str, "token": as_str}  # noqa: RUF012 - the ApiSim contract

    def __init__(self, ctx: SimContext) -> None:
        super().__init__(ctx)
        self.accounts: dict[str, _Account] = {}

    def add_account(self, key: str, token: str) -> None:
        """A toy account holding 100 USD."""
        self.accounts[key] = _Account(token, {"USD": Decimal(100)})

    def is_write(self, _method: str, path: str) -> bool:
        """Anything under /send."""
        return path.startswith("/send")

    def route(self, method: str, path: str) -> Endpoint[_Account]:
        """GET /balances and GET /deposits (newest first)."""
        if method != "GET":
            raise Refusal(405, "GET only")
        if path == "/balances":
            return Endpoint(lambda account, _call: dict(account.balances))
        if path == "/deposits":
            return Endpoint(lambda account, _call: list(reversed(account.deposits)))
        raise Refusal(404, "no such path")

    def authenticate(self, call: Call) -> Caller[_Account]:
        """The account whose token signed ``METHOD PATH``, checked here on its own."""
        account = self.accounts.get(call.request.headers.get("X-Toy-Key", ""))
        given = call.request.headers.get("X-Toy-Sign", "")
        if account is None:
            raise Refusal(401, "unknown key")
        wanted = hmac.new(
            account.token.encode(), f"{call.request.method} {call.path}".encode(), hashlib.sha256
        ).hexdigest()
        if not hmac.compare_digest(given, wanted):
            raise Refusal(401, "bad signature")
        return Caller(account, call.request.headers["X-Toy-Key"])

    def error_body(self, status: int, message: str) -> object:
        """``{"error": message}``."""
        return {"error": message, "status": status}

    def control_routes(self, router: web.UrlDispatcher) -> None:
        """Add a deposit; settle one."""
        router.add_post("/{key}/deposits", self._c_deposit)
        router.add_post("/{key}/deposits/{id}/done", self._c_done)

    async def _c_deposit(self, request: web.Request) -> web.Response:
        account = self.accounts[request.match_info["key"]]
        amount = to_decimal(await request.json())
        deposit = {
            "id": str(len(account.deposits) + 1),
            "currency": "USD",
            "amount": format(amount, "f"),
            "status": "waiting",
        }
        account.deposits.append(deposit)
        return json_response(deposit)

    async def _c_done(self, request: web.Request) -> web.Response:
        account = self.accounts[request.match_info["key"]]
        (deposit,) = [d for d in account.deposits if d["id"] == request.match_info["id"]]
        deposit["status"] = "done"
        account.balances["USD"] += Decimal(deposit["amount"])
        return json_response(deposit)


# The test: registered for its duration, run as `walletwatch run` runs.


@pytest.fixture(name="sim_url")
def fixture_sim_url(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """Both registered; a simulator (built after registering) serving the toy on loopback."""
    monkeypatch.setitem(PROVIDERS, "toy", TOY)
    simulators.register("toy", ToySim)
    try:
        sim = Simulator(rate_limit=100_000)
        toy = sim.sims["toy"]
        assert isinstance(toy, ToySim)
        toy.add_account(KEY, TOKEN)
        with serve_in_thread(sim) as url:
            yield url
    finally:
        simulators.unregister("toy")


def free_port() -> int:
    """A loopback port that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def write_config(tmp_path: Path, sim_url: str, port: int, **credentials: str) -> Path:
    """A config with one toy account at the simulator."""
    path = tmp_path / "config.yaml"
    account = {
        "name": "toy-acct",
        "provider": "toy",
        "base_url": f"{sim_url}/toy",
        "credentials": credentials or {"key_id": KEY, "token": TOKEN},
        "interval": "1s",
        "low_balance": {"usd": "50"},
    }
    body = {
        "listen": f"127.0.0.1:{port}",
        "state_path": "state.db",
        "events_file": "events.jsonl",
        "accounts": [account],
    }
    path.write_text(yaml.safe_dump(body))
    return path


async def until(probe: Any, what: str) -> Any:
    """Await ``probe()`` until it returns something true, for at most DEADLINE seconds."""
    async with asyncio.timeout(DEADLINE):
        while not (found := await probe()):  # noqa: ASYNC110 - another process' files, HTTP
            await asyncio.sleep(0.1)  # a real daemon and simulator: no clock to fake
    assert found, what
    return found


def events(path: Path, name: str) -> list[dict[str, Any]]:
    """The events of one name in the events file."""
    if not path.exists():
        return []
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    return [e for e in lines if e["event"] == name]


class TestToyProvider:
    def test_check_knows_it(
        self, tmp_path: Path, sim_url: str, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """check accepts the toy account, and names a credential its schema lacks."""
        assert main(["check", "-c", str(write_config(tmp_path, sim_url, free_port()))]) == 0
        assert "OK, 1 account(s)" in capsys.readouterr().out
        wrong = write_config(tmp_path, sim_url, free_port(), key_id=KEY, tokn=TOKEN)
        assert main(["check", "-c", str(wrong)]) == 2
        err = capsys.readouterr().err
        assert "accounts[0].credentials.tokn: unknown credential for toy (key_id, token)" in err
        assert "accounts[0].credentials: missing credential 'token'" in err

    async def test_runs_end_to_end(self, tmp_path: Path, sim_url: str) -> None:
        """Polled, a deposit announced once when detected and once when done, /metrics and the
        status page show the account up with its balance and the toy's own gauge."""
        port = free_port()
        path = write_config(tmp_path, sim_url, port)
        config = load_config(path)
        loop = asyncio.get_running_loop()
        running = asyncio.create_task(_serve(config, io.StringIO(), path=path))
        base = f"http://127.0.0.1:{port}"
        try:
            async with aiohttp.ClientSession() as http:

                async def scrape() -> str | None:
                    try:
                        async with http.get(base + "/metrics") as resp:
                            text = await resp.text()
                    except aiohttp.ClientError:
                        return None
                    return text if 'walletwatch_up{account="toy-acct"' in text else None

                async def up() -> str | None:
                    text = await scrape()
                    return (
                        text
                        if text and f'{UP}{{account="toy-acct",provider="toy"}} 1.0' in text
                        else None
                    )

                metrics = await until(up, "the toy account up on /metrics")
                families = {f.name: f for f in text_string_to_metric_families(metrics)}
                (balance,) = families["walletwatch_balance"].samples
                assert balance.labels == {
                    "account": "toy-acct",
                    "currency": "USD",
                    "provider": "toy",
                }
                assert balance.value == 100.0
                assert families["walletwatch_toy_level"].documentation == (
                    "How many currencies the toy account holds."
                )

                control = f"{sim_url}/_sim/toy/{KEY}/deposits"
                async with http.post(control, json="2.5") as resp:
                    assert resp.status == 200
                detected = await until(
                    _later(lambda: events(tmp_path / "events.jsonl", "deposit.detected")),
                    "deposit.detected in the events file",
                )
                async with http.post(f"{control}/1/done") as resp:
                    assert resp.status == 200
                await until(
                    _later(lambda: events(tmp_path / "events.jsonl", "deposit.confirmed")),
                    "deposit.confirmed in the events file",
                )
                async with http.get(base + "/") as resp:
                    page = await resp.text()
        finally:
            if not running.done():  # _serve set its handlers first thing; the daemon is up
                os.kill(os.getpid(), signal.SIGTERM)  # as systemd stops it
            try:
                assert await asyncio.wait_for(running, DEADLINE) == 0
            finally:
                for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                    loop.remove_signal_handler(sig)
        assert [(e["provider"], e["amount"], e["state"]) for e in detected] == [
            ("toy", "2.5", "pending")
        ]
        confirmed = events(tmp_path / "events.jsonl", "deposit.confirmed")
        assert [(e["transfer_id"], e["state"]) for e in confirmed] == [("1", "ok")]
        assert len(events(tmp_path / "events.jsonl", "deposit.detected")) == 1
        assert "<b>toy-acct</b><div class='muted'>toy</div>" in page
        assert "✔ up" in page
        assert "</code> USD" in page  # its balance


def _later(read: Any) -> Any:
    """An awaitable probe from a plain function."""

    async def probe() -> Any:
        return read()

    return probe
