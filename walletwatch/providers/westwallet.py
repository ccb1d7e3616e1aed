"""WestWallet: balances from GET /wallet/balances, history from POST /wallet/transactions.

See shared/providers/NOTES.md: sign ``str(timestamp) + exact body``; GET with query params
is signed inconsistently by the official clients, so only parameterless GET and POST are
used. Only ``pending`` and ``completed`` statuses are attested; anything else is unknown.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Collection, Mapping
from typing import Any

from walletwatch.configmodel import AccountConfig
from walletwatch.context import ProviderContext
from walletwatch.errors import AuthFailed, BadPayload, RateLimited, Rejected, redact
from walletwatch.model import Balance, Direction, Malformed, Observation, State, Transfer
from walletwatch.providers import parse
from walletwatch.providers.paging import EMPTY, Page, page_back
from walletwatch.providers.spec import ProviderSpec
from walletwatch.schema import ProviderSchema
from walletwatch.types import InFlight, Tracked

PAGE_SIZE = 50  # the API's maximum
MAX_LOOKUPS = 10  # single-transaction refreshes per poll, oldest in-flight first

STATES: Mapping[str, State] = {"pending": State.PENDING, "completed": State.OK}
TYPES: Mapping[Direction, str] = {Direction.DEPOSIT: "receive", Direction.WITHDRAWAL: "send"}
AUTH_ERRORS = frozenset({"account_blocked", "wrong_credentials", "unauthorized", "ip_not_allowed"})


def sign(secret: str, timestamp: int, body: str) -> str:
    """X-ACCESS-SIGN: hex HMAC-SHA256 of ``str(timestamp) + body`` keyed with the secret."""
    message = f"{timestamp}{body}".encode()
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def auth_headers(api_key: str, secret: str, timestamp: int, body: str) -> dict[str, str]:
    """The headers of a signed request."""
    return {
        "Content-Type": "application/json",
        "X-API-KEY": api_key,
        "X-ACCESS-TIMESTAMP": str(timestamp),
        "X-ACCESS-SIGN": sign(secret, timestamp, body),
    }


def check_error(payload: Any, where: str, secrets: Collection[str] = ()) -> Mapping[str, Any]:
    """The payload as an object, or the ProviderError its ``error`` field names.

    ``secrets`` (the key, secret and signature sent) are masked in the message, for a server
    that repeats the request in its error.
    """
    body = parse.mapping(payload, where)
    error = body.get("error")
    if error == "ok":
        return body
    if not isinstance(error, str):
        raise BadPayload(f"{where}: no 'error' field")
    error = redact(error, secrets)
    message = f"{where}: error {error[:60]!r}"
    if error in AUTH_ERRORS:
        raise AuthFailed(message)
    if error in ("too_many_requests", "rate_limit"):
        raise RateLimited(message)
    raise Rejected(message)


def parse_balances(payload: Any) -> tuple[Balance, ...]:
    """GET /wallet/balances: every key but ``error`` is a currency."""
    body = check_error(payload, "balances")
    return tuple(
        Balance(currency=str(currency), available=parse.amount(value, f"balances.{currency}"))
        for currency, value in body.items()
        if currency != "error"
    )


def parse_transaction(item: Any, direction: Direction, where: str) -> Transfer:
    """One transaction object."""
    tx = parse.mapping(item, where)
    status = parse.status(tx.get("status"), f"{where}.status")
    confirmations = tx.get("blockchain_confirmations")
    return Transfer(
        id=parse.text(tx.get("id"), f"{where}.id"),
        direction=direction,
        currency=parse.text(tx.get("currency"), f"{where}.currency"),
        amount=parse.non_negative(tx.get("amount"), f"{where}.amount"),
        fee=parse.optional_non_negative(tx.get("fee"), f"{where}.fee"),
        address=parse.optional_text(tx.get("address"), f"{where}.address"),
        txid=parse.optional_text(tx.get("blockchain_hash"), f"{where}.blockchain_hash"),
        status=status,
        state=STATES.get(status, State.UNKNOWN),
        confirmations=(
            None
            if confirmations is None
            else parse.count(confirmations, f"{where}.blockchain_confirmations")
        ),
        created_at=parse.optional_utc_time(tx.get("created_at"), f"{where}.created_at"),
        updated_at=parse.optional_utc_time(tx.get("updated_at"), f"{where}.updated_at"),
    )


def parse_transactions(
    payload: Any, direction: Direction
) -> tuple[tuple[Transfer, ...], tuple[Malformed, ...], int]:
    """POST /wallet/transactions: the ``result`` list, newest first.

    Returns the transfers, the records set aside as malformed, and how many were listed.
    """
    body = check_error(payload, "transactions")
    result = parse.items(body.get("result"), "transactions.result")
    expected = TYPES[direction]

    def one(item: Any, where: str) -> Transfer:
        if isinstance(item, Mapping) and item.get("type", expected) != expected:
            raise BadPayload(f"{where}.type: expected {expected!r}")
        return parse_transaction(item, direction, where)

    transfers, malformed = parse.records(result, one, "transactions.result", "id")
    return transfers, malformed, len(result)


class WestWallet:
    """Polls one WestWallet account."""

    endpoints = ("balances", "deposits", "withdrawals")
    _directions: Mapping[str, Direction] = {
        "deposits": Direction.DEPOSIT,
        "withdrawals": Direction.WITHDRAWAL,
    }

    def __init__(self, account: AccountConfig, context: ProviderContext) -> None:
        self._base = account.base_url
        self._api_key = account.credentials["api_key"]
        self._secret = account.credentials["secret_key"]
        self._http = context.http
        self._clock = context.clock
        self._max_pages = context.settings.max_pages

    def __repr__(self) -> str:
        return f"WestWallet(base_url={self._base!r})"

    async def poll(self, endpoint: str, tracked: Tracked) -> Observation:
        """Poll ``balances``, ``deposits`` or ``withdrawals``."""
        if endpoint == "balances":
            payload = await self._call("GET", "/wallet/balances", None, endpoint)
            return Observation(endpoint, balances=parse_balances(payload))
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
            params = {
                "type": TYPES[direction],
                "limit": PAGE_SIZE,
                "offset": number * PAGE_SIZE,
                "order": "desc",
            }
            payload = await self._call("POST", "/wallet/transactions", params, endpoint)
            batch, bad, listed = parse_transactions(payload, direction)
            return Page(batch, bad, last=listed < PAGE_SIZE)

        async def look_up(item: InFlight) -> Page:
            if not item.transfer.id.isdigit():
                return EMPTY  # not a WestWallet id: nothing to ask for (its lookup slot is spent)
            params = {"id": int(item.transfer.id)}
            try:
                payload = check_error(
                    await self._call("POST", "/wallet/transaction", params, endpoint),
                    "transaction",
                )
            except Rejected:
                return EMPTY  # not_found (as a body or a 404): keep what we know, not guess
            try:
                return Page((parse_transaction(payload, direction, "transaction"),))
            except BadPayload as err:
                return Page((), (Malformed("transaction", str(err), item.transfer.id),))

        return await page_back(
            fetch, direction, tracked, self._max_pages, look_up=look_up, max_lookups=MAX_LOOKUPS
        )

    async def _call(
        self, method: str, path: str, params: Mapping[str, Any] | None, endpoint: str
    ) -> Any:
        body = "" if params is None else json.dumps(params, separators=(",", ":"))
        api_key, secret = self._api_key.reveal(), self._secret.reveal()
        headers = auth_headers(api_key, secret, int(self._clock.time()), body)
        response = await self._http.request(
            method,
            self._base + path,
            endpoint=endpoint,
            headers=headers,
            body=body.encode() if body else None,
        )
        payload = response.json()
        # A refusal raises here, with what was sent masked; parse_* then see an "ok" answer.
        check_error(payload, endpoint, (api_key, secret, headers["X-ACCESS-SIGN"]))
        return payload


# The config contract. No published rate limit (NOTES.md): a conservative 2/s.
SCHEMA = ProviderSchema(
    name="westwallet",
    base_url="https://api.westwallet.io",
    rate_limit=2.0,
    credentials=("api_key", "secret_key"),
    identity="api_key",
)
PROVIDER = ProviderSpec(SCHEMA, WestWallet, push_answer="ok")  # the IPN of an ipn_url
