"""Simulated PotWallet API: signed GET reads, per-key rate limit, writes refused and recorded.

Behaviour follows the provider notes (NOTES.md) where it overrides the published doc. The
Access-Hash is verified here from the documented algorithm, independently of the client, with
either HMAC key the two published clients use (the raw private key, or its hex sha1).

Refusals are HTTP 200 ``{"success": "false", "message": ...}`` like every other PotWallet
answer. Transactions carry a date and appear in listings and in the balance once the
simulation clock reaches it, so activity can be scheduled ahead.
"""

from __future__ import annotations

import hashlib
import hmac
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from aiohttp import web

from walletwatch.sim.base import ApiSim, Call, Caller, Endpoint, Refusal
from walletwatch.sim.common import (
    SimContext,
    as_amounts,
    as_str,
    as_time,
    json_response,
    read_fields,
    read_object,
    to_decimal,
)
from walletwatch.sim.potwallet_push import CALLBACK

PROVIDER = "potwallet"
HASH_KEYS = ("raw", "sha1")
CATEGORIES = ("receive", "send")
MAX_NONCE_LENGTH = 64
REMEMBERED_NONCES = 10_000  # per key: replays within this window are refused
# Documented endpoints that create or move something; any non-GET call counts as one too.
WRITE_PATHS = frozenset({"/send", "/address/new", "/merchant/receive"})

INVALID_PUBLIC_KEY = "Invalid public key"
INVALID_HASH = "Invalid access hash"
INVALID_NONCE = "Invalid nonce"
NONCE_USED = "Nonce already used"


def hmac_key(private_key: str, variant: str) -> bytes:
    """The HMAC key of a variant: ``raw`` (the live client) or ``sha1`` (the doc's PHP)."""
    if variant == "sha1":
        return hashlib.sha1(private_key.encode("utf-8")).hexdigest().encode("ascii")  # noqa: S324
    if variant == "raw":
        return private_key.encode("utf-8")
    raise ValueError(f"hash key variant must be one of {HASH_KEYS}, got {variant!r}")


def sign(private_key: str, url: str, nonce: str, variant: str = "raw") -> str:
    """The Access-Hash of a request: HMAC-SHA256 over the full URL then the nonce, hex."""
    mac = hmac.new(hmac_key(private_key, variant), digestmod=hashlib.sha256)
    mac.update(url.encode("utf-8"))
    mac.update(nonce.encode("utf-8"))
    return mac.hexdigest()


def verify(
    private_key: str, url: str, nonce: str, signature: str, variants: Iterable[str] = HASH_KEYS
) -> str | None:
    """The variant under which ``signature`` is this request's Access-Hash, or None."""
    given = signature.encode("utf-8", "replace")
    for variant in variants:
        if hmac.compare_digest(sign(private_key, url, nonce, variant).encode(), given):
            return variant
    return None


def wallet_date(ts: float) -> str:
    """A Unix time as PotWallet writes it: ``YYYY-MM-DD HH:MM:SS`` (UTC)."""
    return datetime.fromtimestamp(ts, tz=UTC).strftime("%Y-%m-%d %H:%M:%S")


@dataclass(frozen=True, slots=True)
class SimTransaction:
    """One simulated transaction (``receive`` = deposit, ``send`` = withdrawal)."""

    txid: str
    category: str
    amount: Decimal
    address: str
    date: float
    blockhash: str | None = None
    label: str | None = None

    @property
    def effect(self) -> Decimal:
        """What the transaction does to the balance once it has happened."""
        return self.amount if self.category == "receive" else -self.amount


def api_item(tx: SimTransaction) -> dict[str, object]:
    """The transaction as the API lists it: amount a positive JSON number."""
    return {
        "date": wallet_date(tx.date),
        "amount": tx.amount,
        "category": tx.category,
        "address": tx.address,
        "blockhash": tx.blockhash,
        "txid": tx.txid,
        "label": tx.label,
    }


def _as_hash_keys(value: object) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise TypeError(f"expected a list of hash key variants, got {value!r}")
    return tuple(as_str(item) for item in value)


# POST /_sim/potwallet/accounts: each body field and how to read it.
_ACCOUNT_FIELDS = {
    "public_key": as_str,
    "private_key": as_str,
    "balance": to_decimal,
    "hash_keys": _as_hash_keys,
}


@dataclass(slots=True)
class _Account:
    """Mutable state behind one public key (the simulation changes it in place)."""

    private_key: str
    hash_keys: tuple[str, ...]
    opening: Decimal  # the balance before every transaction in ``transactions``
    transactions: list[SimTransaction] = field(default_factory=list)
    nonces: set[str] = field(default_factory=set)
    nonce_order: deque[str] = field(default_factory=deque)

    def remember(self, nonce: str) -> None:
        """Record a used nonce, forgetting the oldest beyond the window."""
        self.nonces.add(nonce)
        self.nonce_order.append(nonce)
        if len(self.nonce_order) > REMEMBERED_NONCES:
            self.nonces.discard(self.nonce_order.popleft())


Read = Callable[[_Account, Mapping[str, str], str], object]


class PotWalletSim(ApiSim[_Account]):
    """In-memory PotWallet accounts and POT prices served over HTTP, with a Python API.

    ``/_sim/potwallet/prices`` is routed before ``/{public_key}``, so no account may be
    called "prices".
    """

    name = PROVIDER
    forbidden = "Forbidden in simulator"
    throttled = "Too many requests"
    account_fields = _ACCOUNT_FIELDS
    snapshot_keys = ("public_key",)
    push_kind = CALLBACK  # a receive's merchant callback, to the URL set per public key

    def __init__(self, ctx: SimContext) -> None:
        super().__init__(ctx)
        self._accounts: dict[str, _Account] = {}
        self._prices: dict[str, Decimal] = {}
        self._serial = 0
        self.accepted: list[tuple[str, str]] = []  # (public key, hash-key variant) per read
        self._reads: dict[str, Read] = {
            "/balance": self._balance,
            "/transactions": self._listing(CATEGORIES),
            "/transactions/receive": self._listing(("receive",)),
            "/transactions/send": self._listing(("send",)),
            "/address": self._address,
            "/addresses": self._addresses,
            "/price": self._price,
        }

    # -- Python API ---------------------------------------------------------------------------

    def add_account(
        self,
        public_key: str,
        private_key: str,
        balance: Decimal = Decimal(0),
        hash_keys: Iterable[str] = HASH_KEYS,
    ) -> None:
        """Create an account accepting the given HMAC key variants; ValueError if it exists."""
        variants = tuple(hash_keys)
        if public_key in self._accounts:
            raise ValueError(f"account {public_key!r} exists")
        if not variants or any(v not in HASH_KEYS for v in variants):
            raise ValueError(f"hash_keys must be a non-empty subset of {HASH_KEYS}")
        self._accounts[public_key] = _Account(private_key, variants, balance)

    def set_balance(self, public_key: str, amount: Decimal) -> None:
        """Set the balance as of now (later transactions still move it)."""
        account = self._accounts[public_key]
        account.opening += amount - self.balance(public_key)

    def add_transaction(
        self,
        public_key: str,
        *,
        category: str,
        amount: Decimal,
        address: str = "PSimAddress",
        txid: str | None = None,
        blockhash: str | None = None,
        label: str | None = None,
        date: float | None = None,
    ) -> str:
        """Add a transaction dated ``date`` (default now) and return its txid.

        It moves the balance, and shows in listings, once the clock reaches its date.
        """
        account = self._accounts[public_key]
        if category not in CATEGORIES:
            raise ValueError(f"category must be one of {CATEGORIES}, got {category!r}")
        if not amount.is_finite() or amount <= 0:
            raise ValueError("amount must be finite and positive")
        self._serial += 1
        tx = SimTransaction(
            txid=txid or hashlib.sha256(f"{PROVIDER}/{self._serial}".encode()).hexdigest(),
            category=category,
            amount=amount,
            address=address,
            date=self._ctx.clock() if date is None else date,
            blockhash=blockhash,
            label=label,
        )
        account.transactions.append(tx)
        self.pushed(api_item(tx), public_key)
        return tx.txid

    def set_price(self, currency: str, price: Decimal) -> None:
        """Set the price of one POT in ``currency``."""
        if not price.is_finite() or price < 0:
            raise ValueError("price must be finite and not negative")
        self._prices[currency] = price

    def price(self, currency: str) -> Decimal:
        """The current price of one POT in ``currency``."""
        return self._prices[currency]

    def balance(self, public_key: str) -> Decimal:
        """The balance now: the opening balance moved by every transaction that has happened."""
        return self._balance_of(self._accounts[public_key])

    def transactions(self, public_key: str) -> list[SimTransaction]:
        """Every transaction of an account, scheduled ones included, oldest first."""
        return sorted(self._accounts[public_key].transactions, key=lambda tx: tx.date)

    def snapshot(self, public_key: str) -> dict[str, Any]:
        """Ground truth for an account: balance now and every transaction, amounts as strings."""
        return {
            "public_key": public_key,
            "balance": format(self.balance(public_key), "f"),
            "transactions": [
                {**api_item(tx), "amount": format(tx.amount, "f")}
                for tx in self.transactions(public_key)
            ],
        }

    def prices(self) -> dict[str, str]:
        """Every price, as strings."""
        return {currency: format(price, "f") for currency, price in sorted(self._prices.items())}

    def _balance_of(self, account: _Account) -> Decimal:
        return account.opening + sum((tx.effect for tx in self._visible(account)), Decimal(0))

    def _visible(self, account: _Account) -> list[SimTransaction]:
        now = self._ctx.clock()
        return sorted((tx for tx in account.transactions if tx.date <= now), key=lambda t: t.date)

    # -- HTTP API -----------------------------------------------------------------------------

    def is_write(self, method: str, path: str) -> bool:
        """The documented write paths, and any call that is not a GET."""
        return path in WRITE_PATHS or method not in ("GET", "HEAD")

    def route(self, method: str, path: str) -> Endpoint[_Account]:  # noqa: ARG002 - GET only
        """The read at path, answered ``{"success": "true", "message": ...}``."""
        read = self._reads.get(path)
        if read is None:
            raise Refusal(404, "Not found")

        def answer(account: _Account, call: Call) -> object:
            query = call.request.query
            return {"success": "true", "message": read(account, query, call.request.query_string)}

        return Endpoint(answer)

    def error_body(self, status: int, message: str) -> object:  # noqa: ARG002 - status-free shape
        """``{"success": "false", "message": ...}`` (refusals are HTTP 200, like every answer)."""
        return {"success": "false", "message": message}

    def authenticate(self, call: Call) -> Caller[_Account]:
        """The account whose key signed this request; Refusal otherwise (nonce then burnt)."""
        request = call.request
        public_key = request.headers.get("Access-Public", "")
        account = self._accounts.get(public_key)
        if account is None:
            raise _refused(INVALID_PUBLIC_KEY)
        nonce = request.headers.get("Access-Nonce", "")
        if not nonce or len(nonce) > MAX_NONCE_LENGTH or not nonce.isprintable():
            raise _refused(INVALID_NONCE)
        # The full URL as the client addressed it: scheme, Host header, raw path and query.
        url = f"{request.scheme}://{request.host}{request.raw_path}"
        signature = request.headers.get("Access-Hash", "")
        variant = verify(account.private_key, url, nonce, signature, account.hash_keys)
        if variant is None:
            raise _refused(INVALID_HASH)
        if nonce in account.nonces:
            raise _refused(NONCE_USED)
        account.remember(nonce)
        self.accepted.append((public_key, variant))
        return Caller(account, public_key)

    def _balance(self, account: _Account, _query: Mapping[str, str], _raw: str) -> object:
        return format(self._balance_of(account), "f")

    def _listing(self, categories: tuple[str, ...]) -> Read:
        def listing(account: _Account, _query: Mapping[str, str], _raw: str) -> object:
            return [api_item(tx) for tx in self._visible(account) if tx.category in categories]

        return listing

    def _addresses(self, account: _Account, _query: Mapping[str, str], _raw: str) -> object:
        return _receiving(account)

    def _address(self, account: _Account, _query: Mapping[str, str], _raw: str) -> object:
        return (_receiving(account) or ["PSimAddress"])[-1]

    def _price(self, _account: _Account, query: Mapping[str, str], raw: str) -> object:
        # NOTES.md: ?currency=CAD; the doc's example writes the bare ?CAD. Both are read.
        currency = query.get("currency") or (raw if raw and "=" not in raw else "USD")
        price = self._prices.get(currency.upper())
        if price is None:
            raise _refused("Unsupported currency")
        return {"price": format(price, "f"), "currency": currency.upper()}

    # -- control endpoints ----------------------------------------------------------------------

    def control_routes(self, router: web.UrlDispatcher) -> None:
        """Read and set prices, set a balance, add transactions."""
        router.add_get("/prices", self._c_prices)
        router.add_put("/prices", self._c_set_prices)
        router.add_put("/{public_key}/balance", self._c_set_balance)
        router.add_post("/{public_key}/transactions", self._c_add_transaction)

    async def _c_prices(self, _request: web.Request) -> web.Response:
        return json_response(self.prices())

    async def _c_set_prices(self, request: web.Request) -> web.Response:
        prices = as_amounts(await read_object(request))
        if any(not p.is_finite() or p < 0 for p in prices.values()):  # refuse before any change
            raise ValueError("prices must not be negative")
        for currency, price in prices.items():
            self.set_price(currency, price)
        return json_response(self.prices())

    async def _c_set_balance(self, request: web.Request) -> web.Response:
        public_key = request.match_info["public_key"]
        fields = read_fields(await read_object(request), {"balance": to_decimal})
        self.set_balance(public_key, fields["balance"])
        return json_response(self.snapshot(public_key))

    async def _c_add_transaction(self, request: web.Request) -> web.Response:
        fields = read_fields(await read_object(request), _TRANSACTION_FIELDS)
        txid = self.add_transaction(request.match_info["public_key"], **fields)
        return json_response({"txid": txid}, status=201)


def _receiving(account: _Account) -> list[str]:
    """The account's receiving addresses, sorted."""
    return sorted({tx.address for tx in account.transactions if tx.category == "receive"})


def _refused(message: str) -> Refusal:
    """A refusal as PotWallet answers one: HTTP 200 with ``success`` false."""
    return Refusal(200, message)


# Control-endpoint bodies: each field and how to read it (missing required ones answer 400).
_TRANSACTION_FIELDS = {
    "category": as_str,
    "amount": to_decimal,
    "address": as_str,
    "txid": as_str,
    "blockhash": as_str,
    "label": as_str,
    "date": as_time,
}
