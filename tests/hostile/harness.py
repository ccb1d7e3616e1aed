"""A hostile provider on loopback, and the five providers' endpoints with one good answer each.

``HostileServer`` answers every request from a table keyed by route (see ``route_key``), so a
test can serve the good answers, then replace them all with one malformed variant. Good answers
are JSON templates whose ``@AMOUNT@`` and ``@COUNT@`` mark an amount and a confirmation count
for the amount and count variants to replace.
"""

from __future__ import annotations

import asyncio
import json
import re
import threading
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

from walletwatch.app import Daemon
from walletwatch.clock import SystemClock
from walletwatch.config import Config, parse_config

SECRETISH = re.compile(r"^(?:Bearer |Basic )?[0-9a-fA-F]{40,}$|APIKEY|SECRET|PUBLIC|PRIVATE|TOKEN")
TXID_A = "a" * 64
TXID_B = "b" * 64
WHEN = "2023-11-14 22:13:20"
ISO_WHEN = "2023-11-14T22:13:20Z"
# Valid secp256k1 keys (the demo's): the hostile server does not check signatures.
SILA_APP_KEY = "51fef2c214841816e3d5051560a49505801457aa063a4e13c1756c221ff99f08"
SILA_USER_KEY = "04ef077b7bf44933e308cb30b7fb65932edb3119a5a146aaabcfabce17cf88ce"


@dataclass(frozen=True, slots=True)
class Answer:
    """One HTTP answer."""

    body: bytes
    status: int = 200
    content_type: str = "application/json"
    headers: Mapping[str, str] = field(default_factory=dict)
    delay: float = 0.0  # seconds before answering


@dataclass(frozen=True, slots=True)
class Good:
    """A good answer's template and the JSON text its ``@AMOUNT@`` stands for."""

    template: str
    amount: str = '"1.5"'
    count: str = "3"

    def render(self, amount: str | None = None, count: str | None = None) -> bytes:
        """The template with its placeholders filled (good values unless given)."""
        text = self.template.replace("@AMOUNT@", amount or self.amount)
        return text.replace("@COUNT@", count or self.count).encode()


@dataclass(frozen=True, slots=True)
class Provider:
    """How to configure an account of one provider against the server, and its answers."""

    name: str
    api: str  # base_url path
    credentials: Mapping[str, str]
    routes: Mapping[str, Good]  # route key -> good answer
    options: Mapping[str, Any] = field(default_factory=dict)

    def account(self, url: str, name: str = "acct", **extra: Any) -> dict[str, Any]:
        """The account entry of config.yaml for an account at ``url``."""
        return {
            "name": name,
            "provider": self.name,
            "base_url": url + self.api,
            "credentials": dict(self.credentials),
            **self.options,
            **extra,
        }


def route_key(method: str, path: str, body: bytes) -> str:
    """The table key of a request: its path, and for POSTs the kind of list asked for."""
    if method == "POST" and path.endswith(("/wallet/transactions", "/get_transactions")):
        text = body.decode(errors="replace")
        kind = next((k for k in ("receive", "send", "issue", "redeem") if f'"{k}"' in text), "")
        return f"{path}:{kind}"
    return path


WW_TX = (
    '{"error": "ok", "result": [{"id": @ID@, "created_at": "'
    + WHEN
    + '", "updated_at": "'
    + WHEN
    + '", "type": "@TYPE@", "amount": @AMOUNT@, "fee": "0.0001", "address": "addr1", '
    '"currency": "BTC", "status": "completed", "blockchain_confirmations": @COUNT@, '
    '"blockchain_hash": "hash1"}]}'
)
KREDS_TX = (
    '[{"txid": "@TXID@", "amount": @AMOUNT@, "confirmations": @COUNT@, "address": "k1", '
    '"address_to": "k2", "blocktime": "' + WHEN + '"}]'
)
POT_TX = (
    '{"success": "true", "message": [{"date": "' + WHEN + '", "amount": @AMOUNT@, '
    '"category": "@CAT@", "address": "p1", "blockhash": "bh", "txid": "@TXID@", "label": ""}]}'
)
SILA_TX = (
    '{"success": true, "transactions": [{"transaction_id": "@ID@", "transaction_type": '
    '"@TYPE@", "status": "success", "sila_amount": @AMOUNT@, "created_epoch": 1700000000}]}'
)
PAGE = '{"count": 1, "next": null, "previous": null, "results": [@ITEM@]}'
BX_DEPOSIT = (
    '{"id": 1, "ticker": "BTC", "amount": @AMOUNT@, "status": "5", "txid": "t1", '
    '"address": "a1", "actual_confirmations": @COUNT@, "created_at": "' + ISO_WHEN + '"}'
)
BX_WITHDRAWAL = (
    '{"id": 2, "ticker": "BTC", "amount": @AMOUNT@, "status": 30, "txid": "t2", '
    '"address": "a2", "created_at": "' + ISO_WHEN + '"}'
)

PROVIDERS: tuple[Provider, ...] = (
    Provider(
        "westwallet",
        "/ww",
        {"api_key": "WW-APIKEY-7f3c1d2e9b", "secret_key": "WW-SECRET-4b8e2a6c1f"},
        {
            "/ww/wallet/balances": Good('{"BTC": @AMOUNT@, "error": "ok"}'),
            "/ww/wallet/transactions:receive": Good(
                WW_TX.replace("@ID@", "1").replace("@TYPE@", "receive")
            ),
            "/ww/wallet/transactions:send": Good(
                WW_TX.replace("@ID@", "2").replace("@TYPE@", "send")
            ),
        },
    ),
    Provider(
        "kredswallet",
        "/kw/api",
        {"api_key": "KW-APIKEY-1a2b3c4d5e", "api_secret": "KW-SECRET-9z8y7x6w5v"},
        {
            "/kw/api/status": Good('{"apiEnabled": true}'),
            "/kw/api/user/balance": Good('{"balance": @AMOUNT@}'),
            "/kw/api/user/summary": Good('{"balance_pending": "0.25"}'),
            "/kw/api/user/deposits/1/100": Good(KREDS_TX.replace("@TXID@", TXID_A)),
            "/kw/api/user/withdraws/1/100": Good(KREDS_TX.replace("@TXID@", TXID_B), '"-1.5"'),
        },
    ),
    Provider(
        "potwallet",
        "/pw",
        {"public_key": "PW-PUBLIC-3c5e7a9b1d", "private_key": "PW-PRIVATE-8d6f4b2a0c"},
        {
            "/pw/balance": Good('{"success": "true", "message": @AMOUNT@}'),
            "/pw/transactions/receive": Good(
                POT_TX.replace("@CAT@", "receive").replace("@TXID@", "tr1")
            ),
            "/pw/transactions/send": Good(POT_TX.replace("@CAT@", "send").replace("@TXID@", "ts1")),
            "/pw/price": Good(
                '{"success": "true", "message": {"price": @AMOUNT@, "currency": "USD"}}'
            ),
        },
    ),
    Provider(
        "sila",
        "/sila",
        {
            "app_handle": "hostile.app",
            "user_handle": "hostile-user",
            "app_private_key": SILA_APP_KEY,
            "user_private_key": SILA_USER_KEY,
        },
        {
            "/sila/get_wallet": Good(
                '{"success": true, "wallet": {}, "is_whitelisted": true, '
                '"sila_available_balance": @AMOUNT@, "sila_pending_balance": 0}'
            ),
            "/sila/get_transactions:issue": Good(
                SILA_TX.replace("@ID@", "s1").replace("@TYPE@", "issue")
            ),
            "/sila/get_transactions:redeem": Good(
                SILA_TX.replace("@ID@", "s2").replace("@TYPE@", "redeem")
            ),
        },
    ),
    Provider(
        "bitexbit",
        "/api/gateway",
        {"api_key": "BX-APIKEY-6e4c2a0b8d", "secret_key": "BX-SECRET-2f4h6j8k0m"},
        {
            "/api/v2/private/balance": Good(
                '[{"symbol": "BTC", "available": @AMOUNT@, "reserved": "0"}]'
            ),
            "/api/gateway/wallet/history": Good(PAGE.replace("@ITEM@", BX_DEPOSIT)),
            "/api/gateway/withdraw/history": Good(PAGE.replace("@ITEM@", BX_WITHDRAWAL)),
            "/api/gateway/payment-methods": Good(
                '[{"ticker": "BTC", "network": "BTC", "is_deposit_enabled": true, '
                '"is_withdraw_enabled": true}]'
            ),
        },
        {"balances": "v2"},
    ),
)
BY_NAME: Mapping[str, Provider] = {p.name: p for p in PROVIDERS}


@dataclass
class Seen:
    """One request the server received."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes


class HostileServer:
    """Answers from ``answers`` by route key; ``fallback`` (when set) answers everything."""

    def __init__(self) -> None:
        self.answers: dict[str, Answer] = {}
        self.fallback: Answer | None = None
        self.echo: int | None = None  # answer with this status, echoing the request's headers
        self.seen: list[Seen] = []
        self.url = ""

    def serve_good(self, provider: Provider) -> None:
        """Answer the provider's routes with their good answers."""
        self.fallback = None
        self.answers = {key: Answer(good.render()) for key, good in provider.routes.items()}

    def app(self) -> web.Application:
        """The aiohttp app."""
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        return app

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        self.seen.append(Seen(request.method, request.path, dict(request.headers), body))
        if self.echo is not None:  # a provider that repeats the credentials in its errors
            # Credentials and signatures first, so a message cut short still carries them.
            values = sorted(request.headers.values(), key=lambda v: not SECRETISH.search(v))
            text = "refused: " + " ".join(values) + " " + body.decode()
            refused: object = False if request.path.startswith("/sila") else "false"
            echoed = {"error": text, "code": "401", "message": text, "success": refused}
            return web.json_response(echoed, status=self.echo)
        answer = self.fallback or self.answers.get(route_key(request.method, request.path, body))
        if answer is None:
            return web.json_response({"error": "not_found"}, status=404)
        if answer.delay:
            await asyncio.sleep(answer.delay)
        return web.Response(
            body=answer.body,
            status=answer.status,
            headers={"Content-Type": answer.content_type, **answer.headers},
        )


async def serve(app: web.Application) -> AsyncIterator[str]:
    """Serve ``app`` on a loopback port and yield its URL."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


def make_config(
    tmp_path: Path, accounts: list[dict[str, Any]], **providers: dict[str, Any]
) -> Config:
    """A daemon config for ``accounts`` with fast buckets and short timeouts."""
    settings = {"rate_limit": 1000, "timeout": "5s", "read_timeout": "3s", "max_backoff": "1s"}
    return parse_config(
        {
            "listen": "127.0.0.1:0",
            "state_path": str(tmp_path / "state.db"),
            "events_file": str(tmp_path / "events.jsonl"),
            "providers": {p.name: {**settings, **providers.get(p.name, {})} for p in PROVIDERS},
            "accounts": accounts,
        },
        base_dir=tmp_path,
        environ={},
    )


async def started(config: Config) -> Daemon:
    """A daemon with its store, session and watchers, not polling and not serving."""
    daemon = Daemon(config, clock=SystemClock())
    await daemon.start(serve=False)
    return daemon


def dumps(value: object) -> str:
    """Compact JSON text."""
    return json.dumps(value, separators=(",", ":"))


@contextmanager
def serve_in_thread(app: web.Application) -> Iterator[str]:
    """Serve ``app`` on loopback from its own thread and loop (for tests that run the CLI)."""
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    urls: list[str] = []
    stop = asyncio.Event()

    async def main() -> None:
        async for url in serve(app):
            urls.append(url)
            ready.set()
            await stop.wait()

    thread = threading.Thread(target=loop.run_until_complete, args=(main(),), daemon=True)
    thread.start()
    if not ready.wait(timeout=10):
        raise RuntimeError("the hostile server did not start")
    try:
        yield urls[0]
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(timeout=10)
        loop.close()
