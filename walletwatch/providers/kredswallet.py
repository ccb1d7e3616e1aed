"""KredsWallet ("WebWallet API"): a self-hostable web wallet holding one currency.

Endpoints, and why they are grouped this way:

- ``status``: GET /status (public, unsigned) becomes the ``api_enabled`` gauge. It is an
  endpoint of its own because gauges are kept only from successful polls: bundled with the
  signed calls, the gauge would go stale exactly when those fail. Separate, a wrong secret
  shows ``api_enabled 1`` beside ``reason="auth"`` errors, and an API switched off shows 0.
- ``balances``: GET /user/balance (available) and GET /user/summary (``balance_pending``),
  one Balance in the account's ``currency`` option (default KREDS).
- ``deposits`` and ``withdrawals``: GET /user/deposits/{page}/{pagesize} and
  /user/withdraws/{page}/{pagesize}, newest first, paging back until a page holds a known
  transfer (at most ``max_pages``). In-flight transfers missing from those pages are then
  refreshed one by one with GET /user/transaction/{txid}.

What shared/providers/NOTES.md says, and what this module makes of it:

- Auth: X-WWT-PAYLOAD is base64 of the compact JSON ``{"nonce":"<ms>"}``; X-WWT-SIGNATURE is
  hex HMAC-SHA512 of that base64 text keyed with the API secret. Nonces come from
  ``ProviderContext.nonces`` (strictly increasing per API key, across accounts and restarts).
  One lock per API key covers taking a nonce and the request. The wallet therefore receives
  nonces in the order they were issued, even when many accounts share a key.
- No status field: a transfer is ``pending`` until ``confirmations`` reaches the account's
  ``confirmations_required`` (default 6), then ``ok``. The raw status is ``unconfirmed`` (0
  confirmations), ``confirming`` (1 to required - 1) or ``confirmed``. Negative
  confirmations mean the wallet saw a conflicting transaction (a double spend). They become
  ``conflicted`` and the state ``failed``. The status is coarse on purpose: a withdrawal
  emits at most one ``withdrawal.status_changed`` (unconfirmed -> confirming), not one per
  block. The exact count is in ``confirmations``, and events carry ``confirmations_required``.
- Withdraw amounts arrive negative, and ``total`` includes the fee. The amount is reported
  positive and the fee as ``|total| - |amount|``.
- Ids are txids. A transaction paying several of the account's addresses is listed once per
  output, so the outputs of one txid are merged (amounts summed, the fee taken once).
- ``blocktime`` (UTC) is ``created_at``. An unconfirmed transfer has none, so it is measured
  from when walletwatch first saw it.
- Errors: HTTP 400/401/500 with ``{error, code, message}``, mapped in ``classify``. A nonce
  refusal is not an auth failure: the key is fine, but something else signs with it.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import replace
from decimal import Decimal
from typing import Any

from walletwatch.configmodel import AccountConfig
from walletwatch.context import ProviderContext
from walletwatch.errors import (
    AuthFailed,
    BadPayload,
    ProviderError,
    Rejected,
    Unavailable,
    redact,
)
from walletwatch.http import Response
from walletwatch.model import (
    Balance,
    Direction,
    Gauge,
    Malformed,
    Observation,
    State,
    Transfer,
)
from walletwatch.providers import parse
from walletwatch.providers.kredswallet_auth import PUBLIC_HEADERS, auth_headers
from walletwatch.providers.paging import EMPTY, Page, page_back
from walletwatch.providers.spec import ProviderSpec
from walletwatch.schema import Option, ProviderSchema, integer_at_least, nonempty_string
from walletwatch.types import InFlight, Tracked

PAGE_SIZE = 100  # the documented default page size
MAX_LOOKUPS = 10  # single-transaction refreshes per poll, oldest in-flight first
ERROR_STATUSES = (400, 401, 404, 500)  # answers whose body says more than the status
TXID = re.compile(r"[0-9a-fA-F]{64}")

LISTS: Mapping[Direction, str] = {
    Direction.DEPOSIT: "/user/deposits",
    Direction.WITHDRAWAL: "/user/withdraws",
}
ADDRESS_FIELD: Mapping[Direction, str] = {
    Direction.DEPOSIT: "address",
    Direction.WITHDRAWAL: "address_to",
}

NONCE_HINT = (
    " (the wallet refused the nonce, not the key: another client is signing with this API key"
    " using larger nonces, or walletwatch's state was lost while the clock is behind; give"
    " walletwatch its own API key)"
)
BASE_URL_HINT = " (check base_url: it is the API root, e.g. https://kredswallet.com/api)"
AUTH_CODES = frozenset({"401", "403"})
AUTH_WORDS = (
    "auth",  # also unauthorized, authentication
    "signature",
    "apikey",
    "api key",
    "api_key",
    "credential",
    "secret",
    "permission",
    "forbidden",
    "denied",
)


# Errors -------------------------------------------------------------------------------------


class NonceRefused(Rejected):
    """The wallet refused the nonce: the key is fine, its nonce sequence is not (http_4xx)."""


MIN_HIDDEN = 8  # real keys are far longer; masking shorter strings would garble plain words


def _shown(value: Any, hide: Collection[str]) -> str:
    text = "" if value is None else str(value)
    return redact(text, (secret for secret in hide if len(secret) >= MIN_HIDDEN))[:120]


def error_fields(body: Any, hide: Collection[str] = ()) -> dict[str, str]:
    """The ``error``, ``code`` and ``message`` of an error body, as short text (may be empty)."""
    if not isinstance(body, Mapping):
        return {}
    return {
        key: _shown(body[key], hide)
        for key in ("error", "code", "message")
        if body.get(key) not in (None, "") and not isinstance(body[key], bool)  # error: true
    }


Fields = Mapping[str, str]


def _server_side(status: int | None, _fields: Fields, _text: str) -> bool:
    return status is not None and status >= 500


def _nonce(_status: int | None, _fields: Fields, text: str) -> bool:
    return "nonce" in text


def _auth(status: int | None, fields: Fields, text: str) -> bool:
    return status == 401 or fields.get("code") in AUTH_CODES or any(w in text for w in AUTH_WORDS)


def _not_found(status: int | None, _fields: Fields, _text: str) -> bool:
    return status == 404


def _anything(_status: int | None, _fields: Fields, _text: str) -> bool:
    return True


# First match wins: a test of (status, error fields, their lowercased text) -> what to raise.
ERROR_TABLE: tuple[
    tuple[Callable[[int | None, Fields, str], bool], Callable[[str], ProviderError]], ...
] = (
    (_server_side, lambda message: Unavailable(message, reason="http_5xx")),
    (_nonce, lambda message: NonceRefused(message + NONCE_HINT)),
    (_auth, AuthFailed),
    (_not_found, lambda message: Rejected(message + BASE_URL_HINT)),
    (_anything, Rejected),
)


def classify(
    status: int | None, body: Any, where: str, hide: Collection[str] = ()
) -> ProviderError:
    """The ProviderError an error answer stands for (``status`` None: an error in a 200 body).

    5xx is Unavailable. A nonce refusal is NonceRefused (http_4xx, with a hint), whatever the
    status, because rotating the key would not help. 401 or an auth-ish code or message is
    AuthFailed. The rest is Rejected. ``hide`` lists credentials never to repeat from a body.
    """
    fields = error_fields(body, hide)
    text = " ".join(fields.values()).lower()
    detail = ", ".join(f"{key} {value!r}" for key, value in fields.items())
    message = f"{where}: " + (f"HTTP {status}" if status is not None else "error")
    message += f" ({detail})" if detail else ""
    for test, build in ERROR_TABLE:
        if test(status, fields, text):
            return build(message)
    raise AssertionError("the last rule matches everything")  # pragma: no cover


def _is_error_body(body: Any) -> bool:
    """A 200 answer that is an error object all the same."""
    return isinstance(body, Mapping) and body.get("error") not in (None, False, "", 0)


def read_response(
    response: Response, nonce: int | None, where: str, hide: Collection[str] = ()
) -> Any:
    """The JSON of a successful answer; raise what an error answer stands for.

    A reply whose X-WWT-NONCE echo names another nonce answers some other request (a cache or
    a reordered reply) and is BadPayload. A missing echo is accepted: proxies may drop it.
    """
    if response.status in ERROR_STATUSES:
        try:
            body = response.json()
        except BadPayload:
            body = None  # an HTML error page from a proxy: the status says it all
        raise classify(response.status, body, where, hide)
    if nonce is not None:
        echo = next((v for k, v in response.headers.items() if k.lower() == "x-wwt-nonce"), None)
        if echo is not None and echo.strip() != str(nonce):
            raise BadPayload(f"{where}: reply is for nonce {echo[:24]!r}, not this request's")
    body = response.json()
    if _is_error_body(body):
        raise classify(None, body, where, hide)
    return body


# Parsing ------------------------------------------------------------------------------------


def parse_status(body: Any) -> Gauge:
    """GET /status: ``{"apiEnabled": true}`` as the api_enabled gauge (1 or 0)."""
    enabled = parse.mapping(body, "status").get("apiEnabled")
    if not isinstance(enabled, bool):
        raise BadPayload(f"status.apiEnabled: expected true or false, got {enabled!r:.40}")
    return Gauge(name="api_enabled", labels=(), value=Decimal(int(enabled)))


def parse_balance(balance: Any, summary: Any, currency: str) -> Balance:
    """GET /user/balance and GET /user/summary as one Balance (pending from the summary)."""
    available = parse.amount(parse.mapping(balance, "balance").get("balance"), "balance.balance")
    pending = parse.optional_amount(
        parse.mapping(summary, "summary").get("balance_pending"), "summary.balance_pending"
    )
    return Balance(currency=currency, available=available, pending=pending)


def transfer_state(confirmations: int, required: int) -> tuple[str, State]:
    """The raw status and state of a transfer with ``confirmations`` of ``required``."""
    if confirmations < 0:
        return "conflicted", State.FAILED
    if confirmations >= required:
        return "confirmed", State.OK
    if confirmations == 0:
        return "unconfirmed", State.PENDING
    return "confirming", State.PENDING


def confirmations_of(value: Any, where: str) -> int:
    """A confirmation count; negative ones (a conflicted transaction) are allowed."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise BadPayload(f"{where}: expected an integer, got {type(value).__name__}")
    if abs(value) > parse.MAX_CONFIRMATIONS:
        raise BadPayload(f"{where}: integer out of range: {value}")
    return value


def block_time(value: Any, where: str) -> float | None:
    """``blocktime``: the documented UTC text, Unix seconds, or none while unconfirmed."""
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return float(value)
    return None if value in (None, "", 0) else parse.utc_time(value, where)


def with_confirmations(transfer: Transfer, confirmations: int, required: int) -> Transfer:
    """The transfer at a new confirmation count, its status and state following."""
    status, state = transfer_state(confirmations, required)
    return replace(transfer, confirmations=confirmations, status=status, state=state)


def parse_transfer(
    item: Any, direction: Direction, currency: str, required: int, where: str
) -> Transfer:
    """One entry of a deposits or withdraws listing."""
    tx = parse.mapping(item, where)
    txid = parse.text(tx.get("txid"), f"{where}.txid")
    raw = parse.amount(tx.get("amount"), f"{where}.amount")
    fee = None
    if direction is Direction.DEPOSIT:
        if raw < 0:
            raise BadPayload(f"{where}.amount: a deposit with a negative amount")
    else:
        if raw > 0:
            raise BadPayload(f"{where}.amount: a withdraw with a positive amount")
        total = parse.optional_amount(tx.get("total"), f"{where}.total")
        if total is not None:
            fee = raw - total  # both negative; total = amount + fee
            if fee < 0:
                raise BadPayload(f"{where}.total: smaller in size than the amount")
    confirmations = confirmations_of(tx.get("confirmations"), f"{where}.confirmations")
    status, state = transfer_state(confirmations, required)
    field = ADDRESS_FIELD[direction]
    return Transfer(
        id=txid,
        direction=direction,
        currency=currency,
        amount=abs(raw),
        status=status,
        state=state,
        fee=fee,
        address=parse.optional_text(tx.get(field), f"{where}.{field}"),
        txid=txid,
        confirmations=confirmations,
        created_at=block_time(tx.get("blocktime"), f"{where}.blocktime"),
        details=(("confirmations_required", str(required)),),
    )


def parse_transfers(
    body: Any, direction: Direction, currency: str, required: int
) -> tuple[tuple[Transfer, ...], tuple[Malformed, ...], int]:
    """A deposits or withdraws listing, one Transfer per entry, newest first.

    Returns the transfers, the entries set aside as malformed, and how many were listed.
    """
    where = LISTS[direction].removeprefix("/user/")
    raw = parse.items(body, where)

    def one(item: Any, here: str) -> Transfer:
        return parse_transfer(item, direction, currency, required, here)

    transfers, malformed = parse.records(raw, one, where, "txid")
    return transfers, malformed, len(raw)


def merge_outputs(transfers: Iterable[Transfer]) -> tuple[Transfer, ...]:
    """One Transfer per txid: outputs of one transaction summed, the fee counted once."""
    merged: dict[str, Transfer] = {}
    for t in transfers:
        prev = merged.get(t.id)
        if prev is None:
            merged[t.id] = t
            continue
        merged[t.id] = replace(
            prev,
            amount=prev.amount + t.amount,
            fee=prev.fee if prev.fee is not None else t.fee,
            address=prev.address if prev.address == t.address else None,
        )
    return tuple(merged.values())


def parse_lookup(body: Any) -> tuple[int, float | None]:
    """GET /user/transaction/{txid}: its confirmations and block time."""
    tx = parse.mapping(body, "transaction")
    confirmations = confirmations_of(tx.get("confirmations"), "transaction.confirmations")
    return confirmations, block_time(tx.get("blocktime"), "transaction.blocktime")


# The client ---------------------------------------------------------------------------------


class KredsWallet:
    """Polls one KredsWallet account (any instance: ``base_url`` may carry a path prefix)."""

    endpoints = ("status", "balances", "deposits", "withdrawals")
    _directions: Mapping[str, Direction] = {
        "deposits": Direction.DEPOSIT,
        "withdrawals": Direction.WITHDRAWAL,
    }

    def __init__(self, account: AccountConfig, context: ProviderContext) -> None:
        currency = account.options["currency"]
        required = account.options["confirmations_required"]
        if not isinstance(currency, str) or not isinstance(required, int):
            raise TypeError("kredswallet options: SCHEMA validates currency and confirmations")
        self._currency = currency
        self._required = required
        self._base = account.base_url
        self._api_key = account.credentials["api_key"]
        self._secret = account.credentials["api_secret"]
        self._credential = account.credential_id
        self._http = context.http
        self._nonces = context.nonces
        self._max_pages = context.settings.max_pages
        # Shared by every account on this API key: nonce order is arrival order.
        self._lock = context.shared.get(f"request-lock:{self._credential}", asyncio.Lock)

    def __repr__(self) -> str:
        return f"KredsWallet(base_url={self._base!r})"

    async def poll(self, endpoint: str, tracked: Tracked) -> Observation:
        """Poll ``status``, ``balances``, ``deposits`` or ``withdrawals``."""
        if endpoint == "status":
            body = await self._get("/status", endpoint, signed=False)
            return Observation(endpoint, gauges=(parse_status(body),))
        if endpoint == "balances":
            balance = await self._get("/user/balance", endpoint)
            summary = await self._get("/user/summary", endpoint)
            return Observation(
                endpoint, balances=(parse_balance(balance, summary, self._currency),)
            )
        direction = self._directions[endpoint]
        transfers, malformed = await self._history(direction, tracked, endpoint)
        return Observation(
            endpoint,
            transfers=transfers,
            directions=frozenset({direction}),
            malformed=malformed,
        )

    async def _history(
        self, direction: Direction, tracked: Tracked, endpoint: str
    ) -> tuple[tuple[Transfer, ...], tuple[Malformed, ...]]:
        """Newest first, paging back until a known transfer, then refresh stale in-flight ones."""

        async def fetch(number: int) -> Page:
            body = await self._get(f"{LISTS[direction]}/{number + 1}/{PAGE_SIZE}", endpoint)
            batch, bad, count = parse_transfers(body, direction, self._currency, self._required)
            return Page(batch, bad, last=count < PAGE_SIZE)

        async def look_up(item: InFlight) -> Page:
            try:
                body = await self._get(f"/user/transaction/{item.transfer.id}", endpoint)
            except NonceRefused:
                raise
            except Rejected:
                return EMPTY  # unknown to the wallet now: keep what we know rather than guess
            # Only the confirmations are taken from a lookup: its amount is the transaction's
            # net effect, which for a payment to oneself differs from the listed entries.
            confirmations, mined = parse_lookup(body)
            fresh = with_confirmations(item.transfer, confirmations, self._required)
            if mined is not None:
                fresh = replace(fresh, created_at=mined)
            return Page((fresh,))

        return await page_back(
            fetch,
            direction,
            tracked,
            self._max_pages,
            look_up=look_up,
            max_lookups=MAX_LOOKUPS,
            lookable=lambda transfer: TXID.fullmatch(transfer.id) is not None,
            merge=merge_outputs,
        )

    async def _get(self, path: str, endpoint: str, *, signed: bool = True) -> Any:
        """GET ``path`` under base_url; signed requests take the next nonce of the API key."""
        url = self._base + path
        where = f"GET {path}"
        api_key, secret = self._api_key.reveal(), self._secret.reveal()
        if not signed:
            response = await self._http.request(
                "GET", url, endpoint=endpoint, headers=PUBLIC_HEADERS, accept=ERROR_STATUSES
            )
            return read_response(response, None, where, (api_key, secret))
        async with self._lock:
            nonce = await self._nonces.next(self._credential)
            headers = auth_headers(api_key, secret, nonce)
            response = await self._http.request(
                "GET", url, endpoint=endpoint, headers=headers, accept=ERROR_STATUSES
            )
        # The signature too: a server may repeat the request's headers in its error.
        hide = (api_key, secret, headers["X-WWT-SIGNATURE"])
        return read_response(response, nonce, where, hide)


# The config contract. No published rate limit (NOTES.md): a conservative 2/s.
SCHEMA = ProviderSchema(
    name="kredswallet",
    base_url="https://kredswallet.com/api",
    rate_limit=2.0,
    credentials=("api_key", "api_secret"),
    identity="api_key",
    options={
        # KredsWallet has no transfer status: a transfer is done at N confirmations.
        "confirmations_required": Option(6, integer_at_least(1)),
        # One currency per (possibly self-hosted) instance.
        "currency": Option("KREDS", nonempty_string),
    },
)
PROVIDER = ProviderSpec(
    SCHEMA,
    KredsWallet,
    gauges={"api_enabled": "1 if the provider reports its API enabled (KredsWallet)"},
)
