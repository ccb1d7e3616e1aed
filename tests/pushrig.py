"""What the push tests share: an account at each provider that calls back, in a served
simulator, with how to make a deposit there, and a daemon config that receives their pushes."""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp

from walletwatch.app import Daemon
from walletwatch.config import Config, parse_config
from walletwatch.sim import Simulator, start
from walletwatch.sim.sila_auth import address_of_key

TOKEN = "push-token-for-tests-0123456789abcdef"
SILA_APP = "push-app"
APP_KEY = hashlib.sha256(b"walletwatch push sila app").hexdigest()
USER_KEY = hashlib.sha256(b"walletwatch push sila user").hexdigest()
WAIT = 10.0  # real seconds to wait for loopback work that takes milliseconds
Deposit = Callable[[Simulator, Decimal], object]


@dataclass(frozen=True, slots=True)
class PushAccount:
    """One simulated account of a push provider and how walletwatch watches it."""

    name: str
    provider: str
    keys: tuple[str, ...]  # its simulator keys, as its push control route names them
    options: Mapping[str, Any]  # its config entry but for name and base_url
    path: str  # the provider API's path under the simulator's URL
    deposit: Deposit  # add a deposit of an amount at the simulator; its id

    def entry(self, sim_url: str, *, push: bool = True) -> dict[str, Any]:
        """Its config entry for the simulator at ``sim_url``."""
        return {
            "name": self.name,
            "base_url": f"{sim_url}{self.path}",
            "push": push,
            **self.options,
        }

    def control(self, sim_url: str) -> str:
        """Its push control route at the simulator."""
        return f"{sim_url}/_sim/{self.provider}/{'/'.join(self.keys)}/push"


def westwallet(sim: Simulator, name: str) -> PushAccount:
    """A WestWallet account with no history yet."""
    key, secret = f"{name}-key", f"{name}-secret"
    sim.westwallet.add_account(key, secret)
    return PushAccount(
        name,
        "westwallet",
        (key,),
        {"provider": "westwallet", "credentials": {"api_key": key, "secret_key": secret}},
        "/westwallet",
        lambda s, amount: s.westwallet.add_transaction(
            key, type="receive", currency="BTC", amount=amount, status="completed"
        ),
    )


def potwallet(sim: Simulator, name: str) -> PushAccount:
    """A PotWallet account with no history yet."""
    public, private = f"{name}-public", f"{name}-private"
    sim.potwallet.add_account(public, private)
    sim.potwallet.set_price("USD", Decimal("0.00142"))  # else its price poll fails
    return PushAccount(
        name,
        "potwallet",
        (public,),
        {
            "provider": "potwallet",
            "credentials": {"public_key": public, "private_key": private},
            "hash_key": "raw",
        },
        "/potwallet",
        lambda s, amount: s.potwallet.add_transaction(public, category="receive", amount=amount),
    )


def bitexbit(sim: Simulator, name: str) -> PushAccount:
    """A bitexbit gateway account with no history yet."""
    key, secret = f"{name}-key", f"{name}-secret"
    sim.bitexbit.add_account(key, secret)
    return PushAccount(
        name,
        "bitexbit",
        (key,),
        {
            "provider": "bitexbit",
            "credentials": {"api_key": key, "secret_key": secret},
            "auth_scheme": "gateway",
            "balances": "v2",
        },
        "/bitexbit/api/gateway",
        lambda s, amount: s.bitexbit.add_deposit(key, ticker="USDT", network="tron", amount=amount),
    )


def sila(sim: Simulator, name: str) -> PushAccount:
    """A Sila wallet (ECDSA auth) with no history yet; the app is made once."""
    user = f"{name}-wallet"
    with contextlib.suppress(ValueError):  # the app of an earlier wallet
        sim.sila.add_app(SILA_APP, address=address_of_key(APP_KEY))
    sim.sila.add_user(SILA_APP, user, address=address_of_key(USER_KEY))
    return PushAccount(
        name,
        "sila",
        (SILA_APP, user),
        {
            "provider": "sila",
            "credentials": {
                "app_handle": SILA_APP,
                "user_handle": user,
                "app_private_key": APP_KEY,
                "user_private_key": USER_KEY,
            },
        },
        "/sila",
        lambda s, amount: s.sila.add_transaction(SILA_APP, user, type="issue", amount=amount),
    )


MAKERS: Mapping[str, Callable[[Simulator, str], PushAccount]] = {
    "westwallet": westwallet,
    "potwallet": potwallet,
    "bitexbit": bitexbit,
    "sila": sila,
}
"""The providers that call back, and how to make an account at each."""


def push_config(
    sim_url: str,
    workdir: Path,
    accounts: Iterable[PushAccount],
    *,
    interval: str = "60s",
    push: bool = True,
    rate_limit: float = 1000.0,
    push_section: Mapping[str, object] | None = None,
) -> Config:
    """A daemon config watching ``accounts`` every ``interval``, receiving their pushes
    (``push`` False: each account with ``push: false``) on ``push_section``."""
    accounts = list(accounts)
    return parse_config(
        {
            "listen": "127.0.0.1:0",
            "state_path": "state.db",
            "events_file": "events.jsonl",
            "push": push_section or {"listen": "127.0.0.1:0", "token": TOKEN},
            "defaults": {"interval": interval},
            "providers": {a.provider: {"rate_limit": rate_limit} for a in accounts},
            "accounts": [a.entry(sim_url, push=push) for a in accounts],
        },
        base_dir=workdir,
        environ={},
    )


@asynccontextmanager
async def served(sim: Simulator) -> AsyncIterator[str]:
    """The simulator (and its push sender) on a free loopback port; its URL."""
    runner, port = await start(sim, "127.0.0.1", 0)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


def push_base(daemon: Daemon) -> str:
    """The base URL of the daemon's push listener."""
    if daemon.push is None:
        raise AssertionError("the daemon has no push section")
    return daemon.push.url


async def subscribe(
    http: aiohttp.ClientSession, sim_url: str, daemon: Daemon, account: PushAccount
) -> None:
    """Point the account's pushes at the daemon's push listener."""
    url = f"{push_base(daemon)}/push/{account.name}/{TOKEN}"
    async with http.post(account.control(sim_url), json={"url": url}) as resp:
        resp.raise_for_status()


def events(config: Config) -> list[dict[str, Any]]:
    """The events the daemon has written to its events file."""
    path = config.events_file
    if path is None or not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines()]
