"""Read-only by construction: every request a provider client makes is a read endpoint.

Each client is driven through every path that sends a request (balances, histories with
paging, single-transfer lookups of in-flight transfers that dropped off the list, Sila's token
fetch), and every request the server saw is checked against the provider's read endpoints.
The allow-lists are closed: anything else (withdraw, send, create, generate, admin...) fails.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Mapping
from pathlib import Path

import pytest

from tests.hostile.harness import (
    BY_NAME,
    PROVIDERS,
    Answer,
    Good,
    HostileServer,
    Provider,
    make_config,
    serve,
    started,
)

# The read endpoints of shared/providers/NOTES.md, as (method, path under the server).
READS: Mapping[str, tuple[tuple[str, str], ...]] = {
    "westwallet": (
        ("GET", r"/ww/wallet/balances"),
        ("POST", r"/ww/wallet/transactions"),
        ("POST", r"/ww/wallet/transaction"),
    ),
    "kredswallet": (
        ("GET", r"/kw/api/status"),
        ("GET", r"/kw/api/user/balance"),
        ("GET", r"/kw/api/user/summary"),
        ("GET", r"/kw/api/user/deposits/\d+/\d+"),
        ("GET", r"/kw/api/user/withdraws/\d+/\d+"),
        ("GET", r"/kw/api/user/transaction/[0-9a-f]{64}"),
    ),
    "potwallet": (
        ("GET", r"/pw/balance"),
        ("GET", r"/pw/transactions/receive"),
        ("GET", r"/pw/transactions/send"),
        ("GET", r"/pw/price"),
    ),
    "sila": (
        ("POST", r"/sila/get_wallet"),
        ("POST", r"/sila/get_transactions"),
        ("POST", r"/sila/auth_token"),
    ),
    "bitexbit": (
        ("GET", r"/api/gateway/wallet/history"),
        ("GET", r"/api/gateway/withdraw/history"),
        ("GET", r"/api/gateway/payment-methods"),
        ("GET", r"/api/v2/private/balance"),
    ),
}
# Requests that must have been seen, so the test cannot pass by exercising too little.
MUST_SEE: Mapping[str, tuple[str, ...]] = {
    "westwallet": (r"/ww/wallet/transaction",),
    "kredswallet": (r"/kw/api/user/transaction/[0-9a-f]{64}",),
    "potwallet": (r"/pw/price",),
    "sila": (r"/sila/auth_token",),
    "bitexbit": (r"/api/v2/private/balance",),
}
# Write endpoints of the docs (NOTES.md) and the simulators: none may be on an allow-list.
WRITES: tuple[tuple[str, str], ...] = (
    ("POST", "/ww/wallet/create_withdrawal"),
    ("POST", "/ww/address/generate"),
    ("POST", "/kw/api/user/withdraw"),
    ("POST", "/kw/api/user/send"),
    ("POST", "/kw/api/admin/credit"),
    ("POST", "/kw/api/admin/debit"),
    ("POST", "/kw/api/admin/reset"),
    ("GET", "/pw/send"),
    ("POST", "/pw/send"),
    ("GET", "/pw/address/new"),
    ("POST", "/pw/merchant/receive"),
    ("POST", "/sila/issue_sila"),
    ("POST", "/sila/redeem_sila"),
    ("POST", "/sila/transfer_sila"),
    ("POST", "/api/gateway/wallet/create"),
    ("POST", "/api/gateway/withdraw/create"),
)

# In-flight transfers first (so they are tracked), then lists without them (so they are
# looked up), and bitexbit pages that point to a next page.
PENDING: Mapping[str, Mapping[str, str]] = {
    "westwallet": {'"status": "completed"': '"status": "pending"'},
    "kredswallet": {},  # 3 confirmations of the default 6: pending
    "sila": {'"status": "success"': '"status": "pending"'},
    "bitexbit": {'"status": "5"': '"status": "1"', '"status": 30': '"status": 10'},
    "potwallet": {},
}
EMPTY: Mapping[str, str] = {
    "/ww/wallet/transactions:receive": '{"error": "ok", "result": []}',
    "/ww/wallet/transactions:send": '{"error": "ok", "result": []}',
    "/kw/api/user/deposits/1/100": "[]",
    "/kw/api/user/withdraws/1/100": "[]",
    "/sila/get_transactions:issue": '{"success": true, "transactions": []}',
    "/sila/get_transactions:redeem": '{"success": true, "transactions": []}',
}


def pending(provider: Provider, good: Good) -> bytes:
    """The good answer with its transfers in flight."""
    text = good.render().decode()
    for old, new in PENDING[provider.name].items():
        text = text.replace(old, new)
    return text.encode()


@pytest.fixture(name="server")
def fixture_server() -> HostileServer:
    """A hostile server."""
    return HostileServer()


@pytest.fixture(name="url")
async def fixture_url(server: HostileServer) -> AsyncIterator[str]:
    """The server on a loopback port."""
    async for url in serve(server.app()):
        yield url


def accounts(provider: Provider, url: str) -> list[dict[str, object]]:
    """The provider's account, plus a Sila account with token auth."""
    if provider.name != "sila":
        return [provider.account(url)]
    token = {
        **{k: v for k, v in provider.credentials.items() if k.endswith("handle")},
        "client_id": "SILA-CLIENT-ID-5t6y7u",
        "client_secret": "SILA-CLIENT-SECRET-1q2w3e",
    }
    return [
        provider.account(url),
        {**provider.account(url, name="acct-token"), "auth": "token", "credentials": token},
    ]


@pytest.mark.parametrize("provider", PROVIDERS, ids=lambda p: p.name)
async def test_every_request_is_a_read(
    provider: Provider, server: HostileServer, url: str, tmp_path: Path
) -> None:
    """Whatever a client sends, it is one of its provider's read endpoints."""
    server.answers = {key: Answer(pending(provider, good)) for key, good in provider.routes.items()}
    server.answers["/sila/auth_token"] = Answer(
        b'{"success": true, "access_token": {"token": "SILA-TOKEN-0o9i8u", "expiration": null}}'
    )
    if provider.name == "bitexbit":
        for path in ("/api/gateway/wallet/history", "/api/gateway/withdraw/history"):
            page = server.answers[path].body.replace(
                b'"next": null', f'"next": " {url}{path}?page=2&limit=50"'.encode()
            )
            server.answers[path] = Answer(page)
    daemon = await started(make_config(tmp_path, accounts(provider, url)))
    try:
        for _ in range(2):
            for watcher in daemon.watchers.values():
                for endpoint in watcher.endpoints:
                    await watcher.poll(endpoint)
            for key, body in EMPTY.items():  # the in-flight transfers drop off the lists
                server.answers[key] = Answer(body.encode())
    finally:
        await daemon.close()
    reads = [(method, re.compile(path)) for method, path in READS[provider.name]]
    seen = {(s.method, s.path) for s in server.seen}
    assert seen
    for method, path in sorted(seen):
        assert any(m == method and p.fullmatch(path) for m, p in reads), (method, path)
    for pattern in MUST_SEE[provider.name]:
        assert any(re.fullmatch(pattern, path) for _, path in seen), pattern


@pytest.mark.parametrize(("method", "path"), WRITES)
def test_no_write_endpoint_is_allowed(method: str, path: str) -> None:
    """The allow-lists refuse every known write endpoint (so they are not too loose)."""
    for reads in READS.values():
        assert not any(m == method and re.fullmatch(p, path) for m, p in reads)
    assert set(READS) == set(BY_NAME)
