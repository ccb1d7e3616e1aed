"""Simulated bitexbit: the API Gateway's reads and the v2 balance, under three signing schemes.

Behaviour follows the provider notes (NOTES.md) where it overrides the gateway doc.
Signatures are verified here from the documented algorithms, independently of the client:
``X-Sign`` (gateway; ``X-Timeout`` must not be in the past by the sim clock), and
``X-Signature`` under v2 (path + nonce + body) or v1 (key + sorted urlencoded params), whose
``X-Nonce`` must grow per key. Gateway reads accept all three; the v2 balance only v2.
Histories page like the real service (``{count, next, previous, results}``, ``next`` with a
leading space); withdrawals climb 10 -> 20 -> 23 -> 25 -> 26 -> 30 one ``advance`` at a time,
except a held one, which stays in moderation (25).
"""

from __future__ import annotations

import hashlib
import hmac
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any
from urllib.parse import urlencode

from aiohttp import web
from yarl import URL

from walletwatch.sim.base import ApiSim, Call, Caller, Endpoint, Refusal
from walletwatch.sim.bitexbit_push import CALLBACK
from walletwatch.sim.common import (
    SimContext,
    as_bool,
    as_int,
    as_str,
    as_time,
    json_response,
    read_fields,
    read_object,
    to_decimal,
)

PROVIDER = "bitexbit"
GATEWAY = "/api/gateway"
V2_BALANCE = "/api/v2/private/balance"
LADDER = (10, 20, 23, 25, 26, 30)
MODERATION = 25
REFUNDED = frozenset({40, 50})  # refused, cancelled: the amount goes back to available
DEFAULT_LIMIT, MAX_LIMIT = 20, 100
FILTERS = ("ticker", "network", "status", "txid", "address")
WRITE_PATHS = frozenset({GATEWAY + "/wallet/create", GATEWAY + "/withdraw/create"})
ALL_SCHEMES = ("gateway", "v2", "v1")


def _mac(secret: str, message: bytes) -> str:
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def gateway_signature(key: str, secret: str, path: str, timeout: str, body: bytes) -> str:
    """The X-Sign a request must carry: HMAC-SHA256 of key, path, X-Timeout text, raw body."""
    return _mac(secret, key.encode() + path.encode() + timeout.encode() + body)


def v2_signature(secret: str, path: str, nonce: str, body: bytes) -> str:
    """The v2 X-Signature: HMAC-SHA256 of path, X-Nonce text and raw body."""
    return _mac(secret, path.encode() + nonce.encode() + body)


def v1_signature(key: str, secret: str, params: Iterable[tuple[str, str]]) -> str:
    """The v1 X-Signature: HMAC-SHA256 of key + ``name=value&...`` sorted by name."""
    return _mac(secret, (key + urlencode(sorted(params, key=lambda kv: kv[0]))).encode())


def _same(expected: str, given: str) -> bool:
    return hmac.compare_digest(expected.encode(), given.encode("utf-8", "replace"))


def iso(ts: float) -> str:
    """A Unix time as the service writes it: ``2021-05-20T14:56:10.196967Z``."""
    return datetime.fromtimestamp(ts, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _hash(*parts: object) -> str:
    return hashlib.sha256(":".join(map(str, parts)).encode()).hexdigest()


def deposit_effect(item: Mapping[str, Any]) -> tuple[Decimal, Decimal]:
    """(available, reserved) a deposit adds in its status: its amount once confirmed."""
    return (Decimal(item["amount"]) if item["status"] == "5" else Decimal(0), Decimal(0))


def withdrawal_effect(item: Mapping[str, Any]) -> tuple[Decimal, Decimal]:
    """(available, reserved) a withdrawal adds: reserved while in progress, gone when done."""
    amount, status = Decimal(item["amount"]), item["status"]
    if status in REFUNDED:
        return (Decimal(0), Decimal(0))
    return (-amount, Decimal(0) if status == LADDER[-1] else amount)


def _positive(text: str) -> int:
    return int(text) if text.isascii() and text.isdigit() else 0


def paginate(
    items: Sequence[dict[str, object]],
    order_ids: Sequence[int],
    url: URL,
    query: Mapping[str, str],
) -> dict[str, object]:
    """One page of ``items`` as the service pages them, ``next`` with its leading space."""
    rows = [
        (i, item)
        for i, item in zip(order_ids, items, strict=True)
        if all(str(item.get(f)) == query[f] for f in FILTERS if f in query)
    ]
    rows.sort(key=lambda r: r[0], reverse=query.get("ordering", "-id") != "id")
    limit = min(_positive(query.get("limit", "")), MAX_LIMIT) or DEFAULT_LIMIT
    page = _positive(query.get("page", "1"))
    pages = max(1, -(-len(rows) // limit))
    if not 1 <= page <= pages:
        raise Refusal(404, "Invalid page.")
    return {
        "count": len(rows),
        "next": " " + str(url.update_query(page=page + 1)) if page < pages else None,
        "previous": str(url.update_query(page=page - 1)) if page > 1 else None,
        "results": [item for _, item in rows[(page - 1) * limit : page * limit]],
    }


Item = dict[str, Any]
_ACCOUNT_FIELDS = {"api_key": as_str, "secret_key": as_str}  # POST /_sim/bitexbit/accounts


@dataclass(slots=True)
class _Account:
    """Mutable state behind one API key; transfers are kept as the API lists them, by id."""

    secret_key: str
    available: dict[str, Decimal] = field(default_factory=dict)
    reserved: dict[str, Decimal] = field(default_factory=dict)
    deposits: dict[int, Item] = field(default_factory=dict)
    withdrawals: dict[int, Item] = field(default_factory=dict)
    held: set[int] = field(default_factory=set)
    last_nonce: int = 0

    def move(self, ticker: str, new: tuple[Decimal, Decimal], old: tuple[Decimal, ...]) -> None:
        """Apply the change from effect ``old`` to effect ``new`` to the balances."""
        for book, after, before in zip((self.available, self.reserved), new, old, strict=True):
            if after != before:
                book[ticker] = book.get(ticker, Decimal(0)) + after - before


# Documented withdrawal fields the simulation has no use for, with the values it lists.
_WITHDRAWAL_EXTRAS = {
    **dict.fromkeys(("payment_id", "memo", "destination_tag", "callback_url", "auto_buy")),
    **dict.fromkeys(("aml_success", "aml_risk", "aml_url")),
    "comment": "",
    "fee_payer": 1,
}
_METHOD_LIMITS = {"min_deposit": "0.001", "min_withdraw": "0.001", "max_withdraw": "100000"}
DEFAULT_METHODS = (("BTC", "bitcoin"), ("USDT", "tron"))
_NONE = (Decimal(0), Decimal(0))


class BitexbitSim(ApiSim[_Account]):
    """In-memory bitexbit accounts served over HTTP, with a Python API to drive them."""

    name = PROVIDER
    forbidden = "forbidden in simulator"
    throttled = "Request was throttled."
    account_fields = _ACCOUNT_FIELDS
    push_kind = CALLBACK  # deposits and withdrawals, to the URL set per API key

    def __init__(self, ctx: SimContext) -> None:
        super().__init__(ctx)
        self._accounts: dict[str, _Account] = {}
        self._next_id = 1
        self.methods = dict.fromkeys(DEFAULT_METHODS, (True, True))
        """(ticker, network) -> (deposit enabled, withdrawal enabled), service-wide."""
        self.calls: deque[tuple[str, str, str]] = deque(maxlen=10_000)
        """(api_key, path, scheme) of every authenticated API request, for tests."""
        self._reads: dict[str, tuple[tuple[str, ...], Callable[[_Account, Call], object]]] = {
            GATEWAY + "/wallet/history": (ALL_SCHEMES, lambda a, c: _page(a.deposits, c)),
            GATEWAY + "/withdraw/history": (ALL_SCHEMES, lambda a, c: _page(a.withdrawals, c)),
            GATEWAY + "/payment-methods": (ALL_SCHEMES, lambda _a, _c: self.method_list()),
            V2_BALANCE: (("v2",), lambda account, _c: balance_list(account)),
        }

    # -- Python API ---------------------------------------------------------------------------

    def add_account(self, api_key: str, secret_key: str) -> None:
        """Create an account for an API key; ValueError if the key exists."""
        if api_key in self._accounts:
            raise ValueError(f"account {api_key!r} exists")
        self._accounts[api_key] = _Account(secret_key)

    def set_balance(
        self, api_key: str, symbol: str, available: Decimal, reserved: Decimal = Decimal(0)
    ) -> None:
        """Set one currency's available and reserved amounts outright."""
        account = self._accounts[api_key]
        account.available[symbol], account.reserved[symbol] = available, reserved

    def balance(self, api_key: str, symbol: str) -> tuple[Decimal, Decimal]:
        """(available, reserved) of one currency."""
        account = self._accounts[api_key]
        return account.available.get(symbol, Decimal(0)), account.reserved.get(symbol, Decimal(0))

    def set_payment_method(
        self, ticker: str, network: str, *, deposit: bool, withdraw: bool
    ) -> None:
        """Add or change a payment method."""
        self.methods[(ticker, network)] = (deposit, withdraw)

    def add_deposit(
        self,
        api_key: str,
        *,
        ticker: str,
        network: str,
        amount: Decimal,
        status: str = "1",
        confirmations: int | None = 0,
        required_confirmations: int = 3,
        address: str | None = None,
        txid: str | None = None,
        aml_success: bool | None = None,
        aml_risk: Decimal | None = None,
        created_at: float | None = None,
    ) -> int:
        """Add a deposit and return its id (which the API does not list)."""
        account, new_id = self._accounts[api_key], self._new_id(amount)
        created = iso(self._ctx.clock() if created_at is None else created_at)
        address = address or f"sim-{network}-{_hash(api_key, ticker)[:16]}"
        account.deposits[new_id] = item = {
            "address": address,
            "wallet_slug": _hash("slug", address)[:36],
            "date": created,
            "amount": format(amount, "f"),
            "fee": "0.00000000",
            "ticker": ticker,
            "network": network,
            "status": status,
            "txid": txid or _hash("deposit", api_key, new_id),
            "actual_confirmations": confirmations,
            "required_confirmations": required_confirmations,
            "aml_success": aml_success,
            "aml_risk": aml_risk,
            "aml_url": None,
            "created_at": created,
        }
        account.move(ticker, deposit_effect(item), _NONE)
        self.pushed(item, api_key)
        return new_id

    def update_deposit(
        self,
        api_key: str,
        deposit_id: int,
        *,
        confirmations: int | None = None,
        status: str | None = None,
    ) -> Item:
        """Set confirmations (pending turns confirmed at the required count) or the status."""
        item = self._accounts[api_key].deposits[deposit_id]
        count = item["actual_confirmations"] if confirmations is None else confirmations
        done = item["status"] == "1" and (count or 0) >= item["required_confirmations"]
        status = status or ("5" if done else item["status"])
        return self._update(
            api_key, "deposit", deposit_id, actual_confirmations=count, status=status
        )

    def deposit(self, api_key: str, deposit_id: int) -> Item:
        """One deposit as the API lists it."""
        return dict(self._accounts[api_key].deposits[deposit_id])

    def add_withdrawal(
        self,
        api_key: str,
        *,
        ticker: str,
        network: str,
        amount: Decimal,
        status: int = LADDER[0],
        hold: bool = False,
        address: str | None = None,
        created_at: float | None = None,
    ) -> int:
        """Add a withdrawal (reserving its amount) and return its id; ``hold`` keeps it in 25."""
        account, new_id = self._accounts[api_key], self._new_id(amount)
        account.withdrawals[new_id] = item = {
            "id": new_id,
            "ticker": ticker,
            "network": network,
            "address": address or f"sim-{network}-{_hash('to', api_key)[:16]}",
            "amount": amount,
            "client_order_id": f"order_{new_id}",
            "status": status,
            "txid": _hash("withdrawal", api_key, new_id) if status == LADDER[-1] else None,
            **_WITHDRAWAL_EXTRAS,
            "created_at": iso(self._ctx.clock() if created_at is None else created_at),
        }
        if hold:
            account.held.add(new_id)
        account.move(ticker, withdrawal_effect(item), _NONE)
        self.pushed(item, api_key)
        return new_id

    def advance_withdrawal(self, api_key: str, withdrawal_id: int) -> int:
        """Move a withdrawal one rung up the ladder (a held one stays in moderation)."""
        account = self._accounts[api_key]
        status = account.withdrawals[withdrawal_id]["status"]
        held = withdrawal_id in account.held and status == MODERATION
        if status not in LADDER[:-1] or held:
            return int(status)
        return self.set_withdrawal_status(api_key, withdrawal_id, LADDER[LADDER.index(status) + 1])

    def set_withdrawal_status(self, api_key: str, withdrawal_id: int, status: int) -> int:
        """Put a withdrawal in any status (a done one gets its txid); return the status."""
        done = status == LADDER[-1]
        txid = _hash("withdrawal", api_key, withdrawal_id) if done else None
        self._update(api_key, "withdrawal", withdrawal_id, status=status, txid=txid)
        return status

    def withdrawal(self, api_key: str, withdrawal_id: int) -> Item:
        """One withdrawal as the API lists it."""
        return dict(self._accounts[api_key].withdrawals[withdrawal_id])

    def snapshot(self, api_key: str) -> dict[str, Any]:
        """Ground truth for an account: balances, and transfers with their ids, by id."""
        account = self._accounts[api_key]
        return {
            "api_key": api_key,
            "balances": balance_list(account),
            "deposits": [{"id": i, **d} for i, d in sorted(account.deposits.items())],
            "withdrawals": [w for _, w in sorted(account.withdrawals.items())],
        }

    def _new_id(self, amount: Decimal) -> int:
        if not amount.is_finite() or amount <= 0:
            raise ValueError(f"amount must be finite and positive, got {amount}")
        self._next_id += 1
        return self._next_id - 1

    def _update(self, api_key: str, kind: str, transfer_id: int, **changes: Any) -> Item:
        """Change a deposit or withdrawal and move the balances to match."""
        account = self._accounts[api_key]
        book = account.deposits if kind == "deposit" else account.withdrawals
        effect = deposit_effect if kind == "deposit" else withdrawal_effect
        old = book[transfer_id]
        book[transfer_id] = new = {**old, **changes}
        account.move(new["ticker"], effect(new), effect(old))
        self.pushed(new, api_key)
        return dict(new)

    # -- HTTP API -----------------------------------------------------------------------------

    def is_write(self, method: str, path: str) -> bool:
        """The documented write paths, and any call that is not a GET."""
        return method not in ("GET", "HEAD") or path in WRITE_PATHS

    def route(self, method: str, path: str) -> Endpoint[_Account]:
        """The read at path, by GET only."""
        route = self._reads.get(path)
        if route is None:
            raise Refusal(404, "Not found.")
        if method != "GET":
            raise Refusal(405, "Method not allowed.")
        return Endpoint(route[1])

    def error_body(self, status: int, message: str) -> object:  # noqa: ARG002 - status-free shape
        """DRF's ``{"detail": ...}``."""
        return {"detail": message}

    def authenticate(self, call: Call) -> Caller[_Account]:
        """Key and account of a request correctly signed under a scheme its path accepts."""
        key, account, scheme = self._signed(call.request, call.body, self._reads[call.path][0])
        self.calls.append((key, call.path, scheme))
        return Caller(account, key)

    def _signed(
        self, request: web.Request, body: bytes, schemes: tuple[str, ...]
    ) -> tuple[str, _Account, str]:
        """Key, account and scheme of a correctly signed request; Refusal 401 otherwise."""
        h = request.headers
        path = request.raw_path.partition("?")[0]
        if "X-Sign" in h and "gateway" in schemes:
            key, timeout, given = h.get("X-Key", ""), h.get("X-Timeout", ""), h["X-Sign"]
            account = self._accounts.get(key)
            if account is None or not (timeout.isascii() and timeout.isdigit()):
                raise Refusal(401, "Invalid credentials.")
            if int(timeout) < self._ctx.clock() * 1000:
                raise Refusal(401, "Request expired.")
            if not _same(gateway_signature(key, account.secret_key, path, timeout, body), given):
                raise Refusal(401, "Invalid signature.")
            return key, account, "gateway"
        key, nonce, given = (h.get(n, "") for n in ("X-API-Key", "X-Nonce", "X-Signature"))
        account = self._accounts.get(key)
        if account is None or not (nonce.isascii() and nonce.isdigit()):
            raise Refusal(401, "Invalid credentials.")
        secret, params = account.secret_key, request.query.items()
        expected = {
            "v2": v2_signature(secret, path, nonce, body) if "v2" in schemes else "",
            "v1": v1_signature(key, secret, params) if "v1" in schemes else "",
        }
        scheme = next((s for s, sig in expected.items() if sig and _same(sig, given)), None)
        if scheme is None:
            raise Refusal(401, "Invalid signature.")
        if int(nonce) <= account.last_nonce:
            raise Refusal(401, "Invalid nonce.")
        account.last_nonce = int(nonce)
        return key, account, scheme

    def method_list(self) -> list[dict[str, object]]:
        """``GET /payment-methods``: every payment method with the doc's fields."""
        return [
            {
                "ticker": ticker,
                "network": network,
                **_METHOD_LIMITS,
                "withdraw_fee_amount": "0",
                "withdraw_fee_rate": "0",
                "withdraw_fee_currency": ticker,
                "is_deposit_enabled": deposit,
                "is_withdraw_enabled": withdraw,
            }
            for (ticker, network), (deposit, withdraw) in self.methods.items()
        ]

    # -- control endpoints ----------------------------------------------------------------------

    def control_routes(self, router: web.UrlDispatcher) -> None:
        """Add deposits and withdrawals; move them on (balances and methods: Python API only).

        ``POST .../deposits/{id}`` takes ``confirmations`` or ``status``; ``POST
        .../withdrawals/{id}`` takes ``status``, or nothing to climb one rung of the ladder.
        """
        router.add_post("/{api_key}/{kind:deposits|withdrawals}", self._c_add)
        router.add_post("/{api_key}/{kind:deposits|withdrawals}/{id:[0-9]+}", self._c_update)

    async def _c_add(self, request: web.Request) -> web.Response:
        api_key, kind = request.match_info["api_key"], request.match_info["kind"]
        data = await read_object(request)
        if kind == "deposits":
            new_id = self.add_deposit(api_key, **read_fields(data, _DEPOSIT_FIELDS))
        else:
            new_id = self.add_withdrawal(api_key, **read_fields(data, _WITHDRAWAL_FIELDS))
        return json_response({"id": new_id}, status=201)

    async def _c_update(self, request: web.Request) -> web.Response:
        api_key, kind = request.match_info["api_key"], request.match_info["kind"]
        transfer_id = int(request.match_info["id"])
        data = await read_object(request)
        if kind == "withdrawals":
            fields = read_fields(data, {"status": as_int})
            if "status" in fields:
                self.set_withdrawal_status(api_key, transfer_id, fields["status"])
            else:
                self.advance_withdrawal(api_key, transfer_id)
            return json_response(self.withdrawal(api_key, transfer_id))
        fields = read_fields(data, {"status": as_str, "confirmations": as_int})
        item = self.update_deposit(api_key, transfer_id, **fields)
        return json_response({"id": transfer_id, **item})


def _page(rows: Mapping[int, Item], call: Call) -> object:
    return paginate(list(rows.values()), list(rows), call.request.url, call.request.query)


def balance_list(account: _Account) -> list[dict[str, str]]:
    """The v2 balance answer: ``[{symbol, available, reserved}]`` as strings."""
    return [
        {
            "symbol": symbol,
            "available": format(account.available.get(symbol, Decimal(0)), "f"),
            "reserved": format(account.reserved.get(symbol, Decimal(0)), "f"),
        }
        for symbol in sorted(set(account.available) | set(account.reserved))
    ]


_COMMON_FIELDS: Mapping[str, Callable[[object], object]] = {
    "ticker": as_str,
    "network": as_str,
    "amount": to_decimal,
    "address": as_str,
    "created_at": as_time,
}
_DEPOSIT_FIELDS = {
    **_COMMON_FIELDS,
    "status": as_str,
    "confirmations": as_int,
    "required_confirmations": as_int,
    "txid": as_str,
    "aml_success": as_bool,
    "aml_risk": to_decimal,
}
_WITHDRAWAL_FIELDS = {**_COMMON_FIELDS, "status": as_int, "hold": as_bool}
