"""Simulated WestWallet API: signed reads, per-key rate limit, writes refused and recorded.

Behaviour follows the provider notes (NOTES.md) where it overrides the published doc. The
signature is verified here from the documented algorithm, independently of the client.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from aiohttp import web

from walletwatch.sim.base import ApiSim, Call, Caller, Endpoint, Refusal
from walletwatch.sim.common import (
    SimContext,
    as_amounts,
    as_int,
    as_str,
    as_time,
    json_response,
    load_json,
    read_fields,
    read_object,
    to_decimal,
)
from walletwatch.sim.westwallet_push import IPN

PROVIDER = "westwallet"
MAX_CLOCK_SKEW = 60.0  # seconds X-ACCESS-TIMESTAMP may differ from the server clock
MAX_LIMIT = 50
DEFAULT_LIMIT = 10
TYPES = ("receive", "send")
# Documented endpoints that create or move something, refused whatever the method.
WRITE_PATHS = frozenset({"/wallet/create_withdrawal", "/address/generate"})
# Any other non-GET call in these namespaces is taken for a write too (batch withdrawals...).
WRITE_NAMESPACES = ("/wallet/", "/address/")
# A send in one of these statuses gives its amount and fee back to the balance.
REFUNDED_STATUSES = frozenset({"failed", "canceled", "cancelled", "rejected"})


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """X-ACCESS-SIGN: hex HMAC-SHA256 keyed by the secret over timestamp text + raw body."""
    return hmac.new(secret.encode(), timestamp.encode() + body, hashlib.sha256).hexdigest()


def verify(secret: str, timestamp: str, body: bytes, signature: str) -> bool:
    """Whether ``signature`` is the X-ACCESS-SIGN of this timestamp and raw body."""
    expected = sign(secret, timestamp, body).encode()
    return hmac.compare_digest(expected, signature.encode("utf-8", "replace"))


def wallet_time(ts: float) -> str:
    """A Unix time as WestWallet writes it: ``YYYY-MM-DD HH:MM:SS`` in UTC."""
    return datetime.fromtimestamp(ts, tz=UTC).strftime("%Y-%m-%d %H:%M:%S")


@dataclass(frozen=True, slots=True)
class SimTransaction:
    """One simulated WestWallet transaction (``receive`` = deposit, ``send`` = withdrawal)."""

    id: int
    type: str
    currency: str
    amount: Decimal
    fee: Decimal
    address: str
    status: str
    confirmations: int
    txid: str
    created_at: float
    updated_at: float


def balance_effect(tx: SimTransaction) -> Decimal:
    """What a transaction in its current status does to its currency's balance."""
    if tx.type == "receive":
        return tx.amount if tx.status == "completed" else Decimal(0)
    return Decimal(0) if tx.status in REFUNDED_STATUSES else -(tx.amount + tx.fee)


def api_item(tx: SimTransaction) -> dict[str, object]:
    """The transaction as the API lists it: amount a JSON number, fee a string."""
    return {
        "id": tx.id,
        "created_at": wallet_time(tx.created_at),
        "updated_at": wallet_time(tx.updated_at),
        "type": tx.type,
        "amount": tx.amount,
        "fee": format(tx.fee, "f"),
        "address": tx.address,
        "dest_tag": "",
        "label": "",
        "currency": tx.currency,
        "status": tx.status,
        "description": "",
        "blockchain_confirmations": tx.confirmations,
        "blockchain_hash": tx.txid,
    }


def snapshot_item(tx: SimTransaction) -> dict[str, object]:
    """The transaction as snapshots show it: the API item with the amount as a string."""
    return {**api_item(tx), "amount": format(tx.amount, "f")}


def select(
    transactions: Iterable[SimTransaction], params: Mapping[str, object]
) -> list[SimTransaction]:
    """The page ``POST /wallet/transactions`` asks for, ordered by id; Refusal on a bad param."""
    kind = params.get("type")
    currency = params.get("currency")
    limit = params.get("limit", DEFAULT_LIMIT)
    offset = params.get("offset", 0)
    order = params.get("order", "desc")
    if kind is not None and kind not in TYPES:
        raise Refusal(400, "bad_type")
    if currency is not None and not isinstance(currency, str):
        raise Refusal(400, "bad_currency")
    if isinstance(limit, bool) or not isinstance(limit, int) or not 0 <= limit <= MAX_LIMIT:
        raise Refusal(400, "bad_limit")
    if isinstance(offset, bool) or not isinstance(offset, int) or offset < 0:
        raise Refusal(400, "bad_offset")
    if order not in ("desc", "asc"):
        raise Refusal(400, "bad_order")
    matching = sorted(
        (tx for tx in transactions if kind in (None, tx.type) and currency in (None, tx.currency)),
        key=lambda tx: tx.id,
        reverse=order == "desc",
    )
    return matching[offset : offset + limit]


# POST /_sim/westwallet/accounts: each body field and how to read it.
_ACCOUNT_FIELDS = {"api_key": as_str, "secret_key": as_str, "balances": as_amounts}


@dataclass(slots=True)
class _Account:
    """Mutable state behind one API key (not frozen: the simulation changes it in place)."""

    secret_key: str
    balances: dict[str, Decimal]
    transactions: dict[int, SimTransaction]


Read = Callable[[_Account, Mapping[str, object]], dict[str, object]]


class WestWalletSim(ApiSim[_Account]):
    """In-memory WestWallet accounts served over HTTP, with a Python API to drive them."""

    name = PROVIDER
    forbidden = "forbidden_in_simulator"
    throttled = "too_many_requests"
    account_fields = _ACCOUNT_FIELDS
    push_kind = IPN  # a deposit's IPN, to the URL set per API key

    def __init__(self, ctx: SimContext) -> None:
        super().__init__(ctx)
        self._accounts: dict[str, _Account] = {}
        self._next_id = 1
        self._reads: dict[str, tuple[str, Read]] = {
            "/wallet/balances": ("GET", self._balances),
            "/wallet/transactions": ("POST", self._transactions),
            "/wallet/transaction": ("POST", self._transaction),
        }

    # -- Python API ---------------------------------------------------------------------------

    def add_account(
        self, api_key: str, secret_key: str, balances: Mapping[str, Decimal] | None = None
    ) -> None:
        """Create an account for an API key; ValueError if the key exists."""
        if api_key in self._accounts:
            raise ValueError(f"account {api_key!r} exists")
        self._accounts[api_key] = _Account(secret_key, dict(balances or {}), {})

    def set_balance(self, api_key: str, currency: str, amount: Decimal) -> None:
        """Set one currency's balance outright."""
        self._accounts[api_key].balances[currency] = amount

    def add_transaction(
        self,
        api_key: str,
        *,
        type: str,  # noqa: A002 - named after the API field the caller is simulating
        currency: str,
        amount: Decimal,
        status: str = "pending",
        fee: Decimal = Decimal(0),
        address: str = "sim-address",
        confirmations: int = 0,
        txid: str | None = None,
        created_at: float | None = None,
    ) -> int:
        """Add a transaction, move the balance as it implies, and return its new id."""
        account = self._accounts[api_key]
        if type not in TYPES:
            raise ValueError(f"type must be one of {TYPES}, got {type!r}")
        if not amount.is_finite() or amount < 0 or not fee.is_finite() or fee < 0:
            raise ValueError("amount and fee must be finite and not negative")
        created = self._ctx.clock() if created_at is None else created_at
        tx = SimTransaction(
            id=self._next_id,
            type=type,
            currency=currency,
            amount=amount,
            fee=fee,
            address=address,
            status=status,
            confirmations=confirmations,
            txid=txid or "",
            created_at=created,
            updated_at=created,
        )
        self._next_id += 1
        account.transactions[tx.id] = tx
        self._move(account, currency, balance_effect(tx))
        self.pushed(api_item(tx), api_key)
        return tx.id

    def set_status(
        self,
        api_key: str,
        tx_id: int,
        status: str,
        *,
        confirmations: int | None = None,
        txid: str | None = None,
    ) -> None:
        """Change a transaction's status (and optionally confirmations/hash); bumps updated_at."""
        account = self._accounts[api_key]
        old = account.transactions[tx_id]
        new = dataclasses.replace(
            old,
            status=status,
            confirmations=old.confirmations if confirmations is None else confirmations,
            txid=old.txid if txid is None else txid,
            updated_at=max(old.updated_at, self._ctx.clock()),
        )
        account.transactions[tx_id] = new
        self._move(account, new.currency, balance_effect(new) - balance_effect(old))
        self.pushed(api_item(new), api_key)

    def snapshot(self, api_key: str) -> dict[str, Any]:
        """Ground truth for an account: balances and every transaction, amounts as strings."""
        account = self._accounts[api_key]
        return {
            "api_key": api_key,
            "balances": {cur: format(amt, "f") for cur, amt in account.balances.items()},
            "transactions": [snapshot_item(tx) for _, tx in sorted(account.transactions.items())],
        }

    def transaction(self, api_key: str, tx_id: int) -> SimTransaction:
        """One transaction as the simulation holds it."""
        return self._accounts[api_key].transactions[tx_id]

    def balance(self, api_key: str, currency: str) -> Decimal:
        """One currency's balance (0 when the account never held it)."""
        return self._accounts[api_key].balances.get(currency, Decimal(0))

    @staticmethod
    def _move(account: _Account, currency: str, delta: Decimal) -> None:
        if delta:
            account.balances[currency] = account.balances.get(currency, Decimal(0)) + delta

    # -- HTTP API -----------------------------------------------------------------------------

    def is_write(self, method: str, path: str) -> bool:
        """The documented write paths, and any non-GET call in their namespaces."""
        if path in self._reads:
            return False
        return path in WRITE_PATHS or (
            method not in ("GET", "HEAD") and path.startswith(WRITE_NAMESPACES)
        )

    def route(self, method: str, path: str) -> Endpoint[_Account]:
        """The read at path, called with its one method and a JSON object body (or none)."""
        read = self._reads.get(path)
        if read is None:
            raise Refusal(404, "not_found")
        wanted, answer = read
        if method != wanted:
            raise Refusal(405, "method_not_allowed")
        return Endpoint(lambda account, call: answer(account, _params(call.body)))

    def error_body(self, status: int, message: str) -> object:  # noqa: ARG002 - status-free shape
        """``{"error": code}``, whatever the status."""
        return {"error": message}

    def authenticate(self, call: Call) -> Caller[_Account]:
        """The account whose secret signed timestamp + body, within the allowed clock skew."""
        request, body = call.request, call.body
        key = request.headers.get("X-API-KEY", "")
        timestamp = request.headers.get("X-ACCESS-TIMESTAMP", "")
        signature = request.headers.get("X-ACCESS-SIGN", "")
        account = self._accounts.get(key)
        if (
            account is None
            or not timestamp.isascii()
            or not timestamp.isdigit()
            or abs(self._ctx.clock() - int(timestamp)) > MAX_CLOCK_SKEW
            or not verify(account.secret_key, timestamp, body, signature)
        ):
            raise Refusal(401, "wrong_credentials")
        return Caller(account, key)

    @staticmethod
    def _balances(account: _Account, _params: Mapping[str, object]) -> dict[str, object]:
        return {**account.balances, "error": "ok"}

    @staticmethod
    def _transactions(account: _Account, params: Mapping[str, object]) -> dict[str, object]:
        page = select(account.transactions.values(), params)
        return {"error": "ok", "result": [api_item(tx) for tx in page]}

    @staticmethod
    def _transaction(account: _Account, params: Mapping[str, object]) -> dict[str, object]:
        tx_id = params.get("id")
        if isinstance(tx_id, bool) or not isinstance(tx_id, int):
            raise Refusal(400, "bad_id")
        tx = account.transactions.get(tx_id)
        if tx is None:
            return {"error": "not_found"}  # WestWallet answers HTTP 200 with a body error
        return {**api_item(tx), "error": "ok"}

    # -- control endpoints ----------------------------------------------------------------------

    def control_routes(self, router: web.UrlDispatcher) -> None:
        """Set balances, add transactions, change a transaction's status."""
        router.add_put("/{api_key}/balances", self._c_set_balances)
        router.add_post("/{api_key}/transactions", self._c_add_transaction)
        router.add_post("/{api_key}/transactions/{tx_id:[0-9]+}", self._c_set_status)

    async def _c_set_balances(self, request: web.Request) -> web.Response:
        api_key = request.match_info["api_key"]
        amounts = as_amounts(await read_object(request))
        if api_key not in self._accounts:  # 404 before any change
            raise KeyError(api_key)
        for currency, amount in amounts.items():
            self.set_balance(api_key, currency, amount)
        return json_response(self.snapshot(api_key))

    async def _c_add_transaction(self, request: web.Request) -> web.Response:
        fields = read_fields(await read_object(request), _TRANSACTION_FIELDS)
        tx_id = self.add_transaction(request.match_info["api_key"], **fields)
        return json_response({"id": tx_id}, status=201)

    async def _c_set_status(self, request: web.Request) -> web.Response:
        api_key = request.match_info["api_key"]
        tx_id = int(request.match_info["tx_id"])
        self.set_status(api_key, tx_id, **read_fields(await read_object(request), _STATUS_FIELDS))
        return json_response(snapshot_item(self.transaction(api_key, tx_id)))


# Control-endpoint bodies: each field and how to read it (missing required ones answer 400).
_STATUS_FIELDS = {"status": as_str, "confirmations": as_int, "txid": as_str}
_TRANSACTION_FIELDS = {
    "type": as_str,
    "currency": as_str,
    "amount": to_decimal,
    "fee": to_decimal,
    "address": as_str,
    "created_at": as_time,
    **_STATUS_FIELDS,
}


def _params(body: bytes) -> Mapping[str, object]:
    """The JSON object a read call carries (``{}`` without a body); Refusal when unreadable."""
    if not body.strip():
        return {}
    try:
        data = load_json(body)
    except ValueError as err:
        raise Refusal(400, "bad_json") from err
    if not isinstance(data, dict):
        raise Refusal(400, "bad_json")
    return data
