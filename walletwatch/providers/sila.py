"""Sila: balance from POST /get_wallet, issues and redeems from POST /get_transactions.

See shared/providers/NOTES.md, which corrects the /get_wallet doc: balances are in SILA
tokens; the balance comes as ``available_balance``/``pending_balance`` (the doc) or
``sila_available_balance``/``sila_pending_balance``/``sila_balance`` (the SDKs), so both are
read; ``{"success": false}`` is an error whatever the HTTP status; every request carries a
fresh ``reference``. Auth (ECDSA signatures or an access token) lives in sila_auth.py.

The token answer comes in Sila's shape (``access_token.token`` with
``access_token.expiration``, as its Postman collection reads it) or the standard OAuth2 one
(the token string in ``access_token``, ``expires_in`` seconds from now): both are read.
A history page asked for one ``transaction_types`` may still list other types (the filter
ignored upstream, a type added later): those are skipped, logged at debug and counted, and
the rest of the page is read.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import structlog
from coincurve import PrivateKey

from walletwatch.configmodel import AccountConfig
from walletwatch.context import ProviderContext
from walletwatch.errors import AuthFailed, BadPayload, ConfigError, Rejected, redact
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
from walletwatch.providers.paging import EMPTY, Page, page_back
from walletwatch.providers.sila_auth import (
    TOKEN_TTL,
    AccessToken,
    TokenCache,
    basic_authorization,
    ecdsa_headers,
    expires_at,
    load_private_key,
)
from walletwatch.providers.spec import ProviderSpec
from walletwatch.schema import Option, ProviderSchema, choice
from walletwatch.types import InFlight, Tracked

log = structlog.get_logger("walletwatch.providers.sila")

VERSION = "0.2"
CURRENCY = "SILA"  # 1 SILA = 0.01 USD
PAGE_SIZE = 100  # search_filters.per_page maximum
MAX_LOOKUPS = 10  # single-transaction refreshes per poll, oldest in-flight first
MAX_EPOCH = 10**11  # a larger "epoch" would be milliseconds, not the seconds Sila sends

STATES: Mapping[str, State] = {
    "queued": State.PENDING,
    "pending": State.PENDING,
    "review": State.PENDING,
    "success": State.OK,
    "failed": State.FAILED,
    "rollback": State.FAILED,
}
TYPES: Mapping[Direction, str] = {Direction.DEPOSIT: "issue", Direction.WITHDRAWAL: "redeem"}
AVAILABLE_FIELDS = ("available_balance", "sila_available_balance", "sila_balance")
PENDING_FIELDS = ("pending_balance", "sila_pending_balance")
DETAIL_FIELDS = ("usd_status", "token_status", "processing_type", "bank_account_name")
# A {"success": false} message with one of these words refuses the credentials.
AUTH_WORDS = ("signature", "authenticat", "authoriz", "token", "credential", "forbidden")


def request_body(
    app_handle: str,
    user_handle: str | None,
    created: int,
    reference: str,
    fields: Mapping[str, Any] | None = None,
) -> bytes:
    """The exact JSON bytes of a request: the Sila header, then ``fields``."""
    header: dict[str, object] = {"created": created, "app_handle": app_handle}
    if user_handle is not None:
        header["user_handle"] = user_handle
    header |= {"version": VERSION, "reference": reference}
    return json.dumps({"header": header, **(fields or {})}).encode()


def check_success(
    payload: Any, where: str, *, secrets: Iterable[str] = (), auth: bool = False
) -> Mapping[str, Any]:
    """The payload as an object when ``success`` is true, else the ProviderError it means.

    With ``auth`` (the token request) every refusal is AuthFailed.
    """
    body = parse.mapping(payload, where)
    success = body.get("success")
    if success is True:
        return body
    if success is not False:
        raise BadPayload(f"{where}: no boolean 'success' field")
    message = body.get("message")
    text = message if isinstance(message, str) else ""
    error = f"{where}: success false: {redact(text, secrets)[:120]!r}"  # mask, then cut
    if auth or any(word in text.lower() for word in AUTH_WORDS):
        raise AuthFailed(error)
    raise Rejected(error)


def _first(body: Mapping[str, Any], keys: Iterable[str]) -> tuple[str, Any] | None:
    return next(((key, body[key]) for key in keys if body.get(key) is not None), None)


def parse_wallet(payload: Any) -> tuple[Balance, tuple[Gauge, ...]]:
    """POST /get_wallet: the SILA balance, and whether the wallet is whitelisted."""
    body = check_success(payload, "get_wallet")
    available = _first(body, AVAILABLE_FIELDS)
    if available is None:
        raise BadPayload(f"get_wallet: none of {', '.join(AVAILABLE_FIELDS)}")
    pending = _first(body, PENDING_FIELDS)
    balance = Balance(
        CURRENCY,
        available=parse.amount(available[1], f"get_wallet.{available[0]}"),
        pending=None if pending is None else parse.amount(pending[1], f"get_wallet.{pending[0]}"),
    )
    whitelisted = body.get("is_whitelisted")
    if whitelisted is None:
        return balance, ()
    if not isinstance(whitelisted, bool):
        raise BadPayload("get_wallet.is_whitelisted: expected a boolean")
    return balance, (Gauge("wallet_whitelisted", (), Decimal(int(whitelisted))),)


def parse_token(payload: Any, now: float, secrets: Iterable[str] = ()) -> AccessToken:
    """POST /auth_token in Sila's shape or OAuth2's; an unreadable expiry is 8 h, noted."""
    body = parse.mapping(payload, "auth_token")
    access = body.get("access_token")
    # A standard OAuth2 answer has no ``success``; any answer that has one is checked.
    if "success" in body or not isinstance(access, str):
        check_success(body, "auth_token", secrets=secrets, auth=True)
    token: Any
    if isinstance(access, str):
        token, where = access, "auth_token.access_token"
        expiry, assumed = expires_at(now, expires_in=body.get("expires_in"))
    else:
        sila = parse.mapping(access, "auth_token.access_token")
        token, where = sila.get("token"), "auth_token.access_token.token"
        expiry, assumed = expires_at(now, expiration=sila.get("expiration"))
    if not isinstance(token, str) or not token or len(token) > 8192:
        raise BadPayload(f"{where}: expected a token")
    return AccessToken(token, expiry, assumed)


def _epoch(value: Any, where: str) -> float | None:
    """Unix seconds from a JSON number, or None for null."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | Decimal):
        raise BadPayload(f"{where}: expected Unix seconds, got {type(value).__name__}")
    if not Decimal(value).is_finite() or not 0 <= value < MAX_EPOCH:
        raise BadPayload(f"{where}: Unix seconds out of range")
    return float(value)


def _time(tx: Mapping[str, Any], epoch_key: str, iso_key: str, where: str) -> float | None:
    """A transaction time: its ``*_epoch`` seconds, else its ISO 8601 text (UTC if unzoned)."""
    epoch = _epoch(tx.get(epoch_key), f"{where}.{epoch_key}")
    if epoch is not None:
        return epoch
    text = tx.get(iso_key)
    if text is None or text == "":
        return None
    if not isinstance(text, str):
        raise BadPayload(f"{where}.{iso_key}: expected a time, got {type(text).__name__}")
    try:
        moment = datetime.fromisoformat(text)
    except ValueError as err:
        raise BadPayload(f"{where}.{iso_key}: not an ISO 8601 time: {text[:40]!r}") from err
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()


def parse_transaction(item: Any, direction: Direction, where: str) -> Transfer:
    """One /get_transactions item of the type ``direction`` asks for."""
    tx = parse.mapping(item, where)
    if tx.get("transaction_type") != TYPES[direction]:
        raise BadPayload(f"{where}.transaction_type: expected {TYPES[direction]!r}")
    status = parse.status(tx.get("status"), f"{where}.status")
    details = tuple(
        (key, value)
        for key in DETAIL_FIELDS
        if (value := parse.optional_text(tx.get(key), f"{where}.{key}")) is not None
    )
    return Transfer(
        id=parse.text(tx.get("transaction_id"), f"{where}.transaction_id"),
        direction=direction,
        currency=CURRENCY,
        amount=parse.non_negative(tx.get("sila_amount"), f"{where}.sila_amount"),
        status=status,
        state=STATES.get(status, State.UNKNOWN),
        txid=parse.optional_text(tx.get("transaction_hash"), f"{where}.transaction_hash"),
        created_at=_time(tx, "created_epoch", "created", where),
        updated_at=_time(tx, "last_update_epoch", "last_update", where),
        details=details,
    )


Skipped = tuple[str | None, str]
"""A listed transaction of a type not asked for: its id (if usable) and its type."""


def parse_transactions(
    payload: Any, direction: Direction
) -> tuple[tuple[Transfer, ...], tuple[Malformed, ...], int, tuple[Skipped, ...]]:
    """POST /get_transactions: the ``transactions`` list in the order given (newest first).

    Returns the transfers, the items set aside as malformed, how many were listed, and the
    items of another ``transaction_type`` than the one asked for, which are skipped.
    """
    body = check_success(payload, "get_transactions")
    where = "get_transactions.transactions"
    items = parse.items(body.get("transactions"), where)
    asked = TYPES[direction]
    transfers: list[Transfer] = []
    malformed: list[Malformed] = []
    skipped: list[Skipped] = []
    for i, item in enumerate(items):
        kind = item.get("transaction_type") if isinstance(item, Mapping) else None
        if isinstance(kind, str) and kind != asked:  # a missing type is malformed, not skipped
            skipped.append((parse.record_id(item, "transaction_id"), kind[:40]))
            continue
        try:
            transfers.append(parse_transaction(item, direction, f"{where}[{i}]"))
        except BadPayload as err:  # one bad record must not hold back the others
            bad_id = parse.record_id(item, "transaction_id")
            malformed.append(Malformed(f"{where}[{i}]", str(err), bad_id))
    return tuple(transfers), tuple(malformed), len(items), tuple(skipped)


def _private_key(account: AccountConfig, name: str) -> PrivateKey:
    try:
        return load_private_key(account.credentials[name].reveal())
    except ValueError as err:
        problem = f"account {account.name!r}: credentials.{name}: {err}"
        raise ConfigError([problem]) from None


class Sila:
    """Polls one Sila wallet (one user handle of one app) with ECDSA or token auth."""

    endpoints = ("balances", "deposits", "withdrawals")
    _directions: Mapping[str, Direction] = {
        "deposits": Direction.DEPOSIT,
        "withdrawals": Direction.WITHDRAWAL,
    }

    def __init__(self, account: AccountConfig, context: ProviderContext) -> None:
        credentials = account.credentials
        self._base = account.base_url
        self._auth = str(account.options.get("auth", "ecdsa"))
        self._app_handle = credentials["app_handle"].reveal()
        self._user_handle = credentials["user_handle"].reveal()
        self._name = account.name
        self._secrets = tuple(secret.reveal() for secret in credentials.values())
        self._http = context.http
        self._clock = context.clock
        self._max_pages = context.settings.max_pages
        self._keys: tuple[PrivateKey, PrivateKey] | None = None
        self._tokens: TokenCache | None = None
        self._basic = ""
        if self._auth == "token":
            client_id = credentials["client_id"].reveal()
            self._basic = basic_authorization(client_id, credentials["client_secret"].reveal())
            # One cache per client id and API host: concurrent polls fetch one token.
            key = hashlib.sha256(f"{self._base}\n{client_id}".encode()).hexdigest()[:16]
            self._tokens = context.shared.get(f"sila-token:{key}", TokenCache)
        else:
            self._keys = (
                _private_key(account, "app_private_key"),
                _private_key(account, "user_private_key"),
            )

    def __repr__(self) -> str:
        return f"Sila(base_url={self._base!r}, auth={self._auth!r})"

    async def poll(self, endpoint: str, tracked: Tracked) -> Observation:
        """Poll ``balances``, ``deposits`` or ``withdrawals``."""
        if endpoint == "balances":
            balance, gauges = parse_wallet(await self._call("/get_wallet", {}, endpoint))
            return Observation(endpoint, balances=(balance,), gauges=gauges)
        direction = self._directions[endpoint]
        transfers, malformed, skipped = await self._history(direction, tracked, endpoint)
        return Observation(
            endpoint,
            transfers=transfers,
            directions=frozenset({direction}),
            malformed=malformed,
            skipped=skipped,
        )

    async def _history(
        self, direction: Direction, tracked: Tracked, endpoint: str
    ) -> tuple[tuple[Transfer, ...], tuple[Malformed, ...], int]:
        """Newest first, paging back until a known transfer, then refresh stale in-flight ones.

        Returns the transfers, the records set aside, and how many listed records were skipped.
        """
        kind = [TYPES[direction]]
        skipped = 0

        def skip(records: tuple[Skipped, ...]) -> None:
            nonlocal skipped
            skipped += len(records)
            for tx_id, other in records:
                log.debug(
                    "poll.record_skipped",
                    provider=SCHEMA.name,
                    account=self._name,
                    endpoint=endpoint,
                    transaction_id=tx_id,
                    transaction_type=other,
                    asked=kind[0],
                )

        async def fetch(number: int) -> Page:
            filters = {
                "transaction_types": kind,
                "page": number + 1,
                "per_page": PAGE_SIZE,
                "sort_ascending": False,
            }
            payload = await self._call("/get_transactions", {"search_filters": filters}, endpoint)
            batch, bad, listed, others = parse_transactions(payload, direction)
            skip(others)
            return Page(batch, bad, last=listed < PAGE_SIZE)

        async def look_up(item: InFlight) -> Page:
            filters = {"transaction_id": item.transfer.id, "transaction_types": kind}
            try:
                payload = await self._call(
                    "/get_transactions", {"search_filters": filters}, endpoint
                )
            except Rejected:
                return EMPTY  # unknown id: keep what we know rather than guess
            fresh, bad, _, others = parse_transactions(payload, direction)
            skip(others)
            return Page(fresh, bad)

        transfers, malformed = await page_back(
            fetch, direction, tracked, self._max_pages, look_up=look_up, max_lookups=MAX_LOOKUPS
        )
        return transfers, malformed, skipped

    async def _call(self, path: str, fields: Mapping[str, Any], endpoint: str) -> Any:
        """POST a read with a fresh header; the body once ``success`` is checked."""
        if self._tokens is not None:
            token = await self._tokens.get(self._fetch_token, self._clock)
            response, sent = await self._send(path, fields, endpoint, token, accept=(401,))
            if response.status == 401:  # expired or revoked early: one retry, fresh token
                token = await self._tokens.get(self._fetch_token, self._clock, refused=token.value)
                response, sent = await self._send(path, fields, endpoint, token)
            sent = (*sent, token.value)
        else:
            response, sent = await self._send(path, fields, endpoint, None)
        # What was sent is masked too: a server may repeat the request's headers in its refusal.
        secrets = (*self._secrets, *sent)
        return check_success(response.json(), path.lstrip("/"), secrets=secrets)

    async def _send(
        self,
        path: str,
        fields: Mapping[str, Any],
        endpoint: str,
        token: AccessToken | None,
        accept: tuple[int, ...] = (),
    ) -> tuple[Response, tuple[str, ...]]:
        """POST ``fields``: the response and the auth header values that were sent."""
        body = self._body(self._user_handle, fields)
        if token is not None:
            headers = {"Content-Type": "application/json", "Authorization": f"Bearer {token.value}"}
        elif self._keys is not None:
            headers = ecdsa_headers(*self._keys, body)
        else:  # pragma: no cover - the constructor sets keys or tokens
            raise AuthFailed("no Sila credentials for this auth mode")
        response = await self._http.request(
            "POST", self._base + path, endpoint=endpoint, headers=headers, body=body, accept=accept
        )
        return response, tuple(v for k, v in headers.items() if k != "Content-Type")

    async def _fetch_token(self) -> AccessToken:
        """POST /auth_token with HTTP Basic client credentials."""
        headers = {"Content-Type": "application/json", "Authorization": self._basic}
        response = await self._http.request(
            "POST",
            self._base + "/auth_token",
            endpoint="auth_token",
            headers=headers,
            body=self._body(None, {}),
        )
        secrets = (*self._secrets, self._basic, self._basic.removeprefix("Basic "))
        token = parse_token(response.json(), self._clock.time(), secrets)
        if token.assumed is not None and self._tokens is not None and self._tokens.first_warning():
            log.warning(  # once per client id: every later token is read the same way
                "sila.token_expiry_assumed",
                provider=SCHEMA.name,
                account=self._name,
                problem=token.assumed,
                assumed_seconds=TOKEN_TTL,
            )
        return token

    def _body(self, user_handle: str | None, fields: Mapping[str, Any]) -> bytes:
        reference = str(uuid.uuid4())  # a fresh, non-null reference per request
        created = int(self._clock.time())
        return request_body(self._app_handle, user_handle, created, reference, fields)


# The config contract. No published rate limit (NOTES.md): a conservative 2/s.
SCHEMA = ProviderSchema(
    name="sila",
    base_url="https://sandbox.silamoney.com/0.2",
    rate_limit=2.0,
    credentials=("app_handle", "user_handle"),
    identity="app_handle",
    options={"auth": Option("ecdsa", choice("ecdsa", "token"))},
    credential_option="auth",
    credential_variants={
        "ecdsa": ("app_private_key", "user_private_key"),
        "token": ("client_id", "client_secret"),
    },
    # The handles name the app and the wallet: public, unlike the keys.
    public_credentials=("app_handle", "user_handle"),
)
# Webhooks take any 2xx; Sila disables a webhook after 15 failed deliveries in a row.
PROVIDER = ProviderSpec(
    SCHEMA,
    Sila,
    gauges={"wallet_whitelisted": "1 if the wallet is whitelisted (Sila)"},
    push_answer="ok",
)
