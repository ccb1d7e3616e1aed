"""A fake walletwatch operator API on loopback, the rows it answers, and how to run the command.

The rows are those walletwatch/operator.py writes (``account_row``, ``transfer_row``); the
fake answers them as /api/v1/accounts and /api/v1/transfers do, or fails as asked.
"""

from __future__ import annotations

import asyncio
import base64
import os
import re
import socket
import ssl
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web

from walletwatch.statuscmd import ENV_PASSWORD, ENV_USER

NOW = "2026-12-05T12:00:00Z"
USER, PASSWORD = "ops", "s3cret-Pässwörd"
CONTROL = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")
"""What a plain (uncoloured) view must never hold: every control character but the newline,
and the bidirectional overrides and isolates."""


def account_row(name: str, state: str = "up", **extra: Any) -> dict[str, Any]:
    """One account as /api/v1/accounts gives it (walletwatch/operator.py account_row)."""
    failing = state == "down"
    error = {"reason": "auth", "message": "HTTP 401: bad key", "at": "2026-12-05T11:50:00Z"}
    row: dict[str, Any] = {
        "provider": "toy",
        "account": name,
        "state": state,
        "up": state == "up",
        "down_since": "2026-12-05T11:50:00Z" if failing else None,
        "last_success": None if state == "waiting" else "2026-12-05T11:59:30Z",
        "endpoints": {
            "balances": {
                "last_success": "2026-12-05T11:59:30Z",
                "last_error": error if failing else None,
            }
        },
        "balances": [
            {
                "currency": "BTC",
                "available": "1.5",
                "pending": "0",
                "low_threshold": "0.5",
                "low": False,
            }
        ],
        "in_flight": 0,
        "stuck": 0,
    }
    row.update(extra)
    return row


def transfer_row(tid: str, *, stuck: bool = False, **extra: Any) -> dict[str, Any]:
    """One in-flight transfer as /api/v1/transfers gives it (operator.py transfer_row)."""
    row: dict[str, Any] = {
        "provider": "toy",
        "account": "hot",
        "id": tid,
        "direction": "withdrawal",
        "currency": "BTC",
        "amount": "0.25",
        "fee": "0.0001",
        "address": "bc1qaddress",
        "txid": f"{tid:0>64}",
        "status": "pending",
        "state": "pending",
        "created_at": "2026-12-05T09:00:00Z",
        "first_seen": "2026-12-05T09:00:05Z",
        "updated_at": "2026-12-05T09:00:05Z",
        "age_seconds": 10800.0,
        "stuck": stuck,
    }
    row.update(extra)
    return row


@dataclass
class FakeApi:
    """What the fake daemon answers, and the requests it was asked."""

    accounts: list[dict[str, Any]] = field(default_factory=lambda: [account_row("hot")])
    transfers: list[dict[str, Any]] = field(default_factory=list)
    truncated: bool = False
    users: dict[str, str] = field(default_factory=dict)
    answer: str = "api"  # api | hang | html | 503
    url: str = ""
    requests: list[tuple[str, str, str | None]] = field(default_factory=list)
    release: asyncio.Event = field(default_factory=asyncio.Event)

    def app(self) -> web.Application:
        """The aiohttp application answering /api/v1/accounts and /api/v1/transfers."""
        app = web.Application()
        app.router.add_get("/api/v1/accounts", self._handler(self._accounts))
        app.router.add_get("/api/v1/transfers", self._handler(self._transfers))
        return app

    def _handler(
        self, body: Callable[[web.Request], dict[str, Any]]
    ) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        async def handle(request: web.Request) -> web.StreamResponse:
            auth = request.headers.get("Authorization")
            self.requests.append((request.path, request.query_string, auth))
            if self.users and auth not in {basic(u, p) for u, p in self.users.items()}:
                return web.Response(
                    status=401, headers={"WWW-Authenticate": 'Basic realm="walletwatch"'}
                )
            if self.answer == "hang":
                await self.release.wait()
            if self.answer == "html":
                return web.Response(text="<html><body>It works!</body></html>")
            if self.answer == "503":
                error = {"error": "the state database cannot be read: disk I/O error"}
                return web.json_response(error, status=503)
            return web.json_response(body(request))

        return handle

    def _accounts(self, _: web.Request) -> dict[str, Any]:
        return {"accounts": self.accounts, "generated_at": NOW}

    def _transfers(self, request: web.Request) -> dict[str, Any]:
        """As the API: in_flight or its stuck subset, oldest first, at most ``limit``."""
        state, limit = request.query["state"], int(request.query["limit"])
        assert state in ("in_flight", "stuck")
        rows = [t for t in self.transfers if state == "in_flight" or t.get("stuck") is True]
        rows.sort(key=lambda t: -float(t.get("age_seconds") or 0))
        cut = self.truncated or len(rows) > limit
        return {"transfers": rows[:limit], "truncated": cut}


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


async def serve(api: FakeApi, tls: ssl.SSLContext | None = None) -> web.AppRunner:
    """Serve ``api`` on a free loopback port; sets ``api.url``."""
    runner = web.AppRunner(api.app())
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=tls)
    await site.start()
    port = runner.addresses[0][1]
    api.url = f"{'https' if tls else 'http'}://127.0.0.1:{port}"
    return runner


@dataclass(frozen=True)
class Result:
    """What a run of ``walletwatch status`` did."""

    code: int
    out: str
    err: str


Run = Callable[..., Awaitable[Result]]


def credentials(monkeypatch: pytest.MonkeyPatch, user: str = USER, pw: str = PASSWORD) -> None:
    """Set the credentials as an operator would, in the environment."""
    monkeypatch.setenv(ENV_USER, user)
    monkeypatch.setenv(ENV_PASSWORD, pw)


def free_port() -> int:
    """A loopback port nothing listens on (it was free a moment ago)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


COMMAND = (sys.executable, "-m", "walletwatch", "status")


def environment(**extra: str) -> dict[str, str]:
    """This process's environment without credentials or NO_COLOR, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if k not in (ENV_USER, ENV_PASSWORD, "NO_COLOR")}
    return env | extra
