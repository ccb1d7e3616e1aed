"""PotWallet: GET /balance, /transactions/receive, /transactions/send and /price.

See shared/providers/NOTES.md: headers ``Access-Public``/``Access-Hash``/``Access-Nonce``
(hyphens, not the doc's underscores); the hash is hex HMAC-SHA256 over ``full URL + nonce``,
keyed with the raw private key (the live client) or, with ``hash_key: sha1``, with the hex
sha1 of it (the doc's PHP sample). Every answer is ``{"success": "true"|"false", "message":
...}`` with ``success`` a string, so ``"false"`` must be read, not tested for truth. There is
no status, pagination or confirmation count: a listed receive is a settled deposit and a
listed send a completed withdrawal. One currency, POT.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import hmac
import re
from collections.abc import Collection, Mapping
from decimal import Decimal
from typing import Any
from urllib.parse import quote, urlencode

from yarl import URL

from walletwatch.configmodel import AccountConfig
from walletwatch.context import ProviderContext
from walletwatch.errors import AuthFailed, BadPayload, ProviderError, RateLimited, Rejected, redact
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
from walletwatch.providers.spec import ProviderSpec
from walletwatch.schema import Option, ProviderSchema, choice, nonempty_string
from walletwatch.types import Tracked

CURRENCY = "POT"
CATEGORIES: Mapping[Direction, str] = {Direction.DEPOSIT: "receive", Direction.WITHDRAWAL: "send"}
PATHS: Mapping[Direction, str] = {
    Direction.DEPOSIT: "/transactions/receive",
    Direction.WITHDRAWAL: "/transactions/send",
}
# Neither the doc nor NOTES.md shows PotWallet's refusals, which travel as HTTP 200 with
# success "false" and a message. Messages about keys, hashes, nonces or access are auth
# failures; the rest are refusals. Word stems, so "Invalid access hash", "Unauthorized",
# "Public key not found" and "Nonce already used" all count.
AUTH_MESSAGE = re.compile(
    r"auth|hash|signature|nonce|credential|forbidden|denied|permission|"
    r"\b(?:public|private|api|access)[ _-]?key|\binvalid key|\bkey\b",
    re.IGNORECASE,
)
RATE_MESSAGE = re.compile(r"too many|rate[ _-]?limit|slow down", re.IGNORECASE)
# Statuses whose JSON body may say more than the status (a refused key as HTTP 400).
READ_BODY_OF = (400,)


def signing_key(private_key: str, hash_key: str) -> bytes:
    """The HMAC key: the private key itself, or (``sha1``) its 40-char hex sha1 digest."""
    if hash_key == "raw":
        return private_key.encode()
    if hash_key == "sha1":
        # The doc's PHP sample: hash_hmac('sha256', $content, hash('sha1', $privateHash)).
        return hashlib.sha1(private_key.encode()).hexdigest().encode()  # noqa: S324
    raise ValueError(f"unknown hash_key {hash_key!r}")


def sign(private_key: str, url: str, nonce: str, *, hash_key: str = "raw") -> str:
    """Access-Hash: hex HMAC-SHA256 of ``url + nonce`` (URL first)."""
    message = f"{url}{nonce}".encode()
    return hmac.new(signing_key(private_key, hash_key), message, hashlib.sha256).hexdigest()


def auth_headers(
    public_key: str, private_key: str, url: str, nonce: str, *, hash_key: str = "raw"
) -> dict[str, str]:
    """The headers of a signed request for ``url``."""
    return {
        "Accept": "application/json",
        "Content-Type": "application/json",  # the doc asks for it on every request
        "Access-Public": public_key,
        "Access-Hash": sign(private_key, url, nonce, hash_key=hash_key),
        "Access-Nonce": nonce,
    }


def request_url(base_url: str, path: str, query: Mapping[str, str] | None = None) -> str:
    """The full URL as aiohttp will send it (yarl-normalized), which is what gets signed."""
    raw = base_url + path
    if query:
        raw += "?" + urlencode(query, quote_via=quote)
    return str(URL(raw))


def failure(message: Any, where: str, secrets: Collection[str] = ()) -> ProviderError:
    """The ProviderError a ``success: "false"`` answer with this message stands for."""
    text = message if isinstance(message, str) else ""
    shown = f"{where}: refused: {redact(text, secrets)[:80]!r}"
    if AUTH_MESSAGE.search(text):
        return AuthFailed(shown)
    if RATE_MESSAGE.search(text):
        return RateLimited(shown)
    return Rejected(shown)


def check_success(payload: Any, where: str, secrets: Collection[str] = ()) -> Any:
    """The ``message`` of a successful answer, or the ProviderError of a refused one.

    ``success`` is the string ``"true"`` or ``"false"``; JSON booleans are read the same
    way (the Java client's JSON mapper accepts both). Anything else is BadPayload.
    """
    body = parse.mapping(payload, where)
    success = body.get("success")
    if success is True or success == "true":
        if "message" not in body:
            raise BadPayload(f"{where}: no 'message' field")
        return body["message"]
    if success is False or success == "false":
        raise failure(body.get("message"), where, secrets)
    raise BadPayload(f'{where}: \'success\' is not "true" or "false"')


def parse_balance(payload: Any) -> tuple[Balance, ...]:
    """GET /balance: the message is the POT balance, as a numeric string."""
    message = check_success(payload, "balance")
    return (Balance(currency=CURRENCY, available=parse.amount(message, "balance.message")),)


def parse_transaction(item: Any, direction: Direction, where: str) -> Transfer:
    """One listed transaction; its ``category`` is the raw status."""
    tx = parse.mapping(item, where)
    category = parse.status(tx.get("category"), f"{where}.category")
    expected = CATEGORIES[direction]
    if category in CATEGORIES.values() and category != expected:
        raise BadPayload(f"{where}.category: {category!r} in the {expected} list")
    amount = parse.amount(tx.get("amount"), f"{where}.amount")
    if direction is Direction.DEPOSIT and amount < 0:
        raise BadPayload(f"{where}.amount: negative receive")
    fee = parse.optional_amount(tx.get("fee"), f"{where}.fee")  # not in the doc; wallets add it
    details = [
        (name, value)
        for name in ("blockhash", "label")
        if (value := parse.optional_text(tx.get(name), f"{where}.{name}")) is not None
    ]
    txid = parse.text(tx.get("txid"), f"{where}.txid")
    return Transfer(
        id=txid,
        direction=direction,
        currency=CURRENCY,
        amount=abs(amount),  # sends may be listed negative, as bitcoind lists them
        fee=None if fee is None else abs(fee),
        address=parse.optional_text(tx.get("address"), f"{where}.address"),
        txid=txid,
        # A listed receive/send has happened; any other category (immature...) is unknown.
        status=category,
        state=State.OK if category == expected else State.UNKNOWN,
        created_at=parse.utc_time(tx.get("date"), f"{where}.date"),
        details=tuple(details),
    )


def merge(parts: list[Transfer]) -> Transfer:
    """One transfer from the entries a wallet lists per output of one transaction."""
    first = parts[0]
    if len(parts) == 1:
        return first
    fees = [p.fee for p in parts if p.fee is not None]
    odd = [p for p in parts if p.state is not State.OK]
    return dataclasses.replace(
        first,
        amount=sum((p.amount for p in parts), Decimal(0)),
        fee=sum(fees, Decimal(0)) if fees else None,
        address=first.address if all(p.address == first.address for p in parts) else None,
        status=odd[0].status if odd else first.status,
        state=State.UNKNOWN if odd else first.state,
        details=(*first.details, ("outputs", str(len(parts)))),
    )


def parse_transactions(
    payload: Any, direction: Direction
) -> tuple[tuple[Transfer, ...], tuple[Malformed, ...]]:
    """GET /transactions/receive or /send: the message is the whole list (no paging).

    Returns the transfers and the entries set aside as malformed.
    """
    where = CATEGORIES[direction]
    items = parse.items(check_success(payload, where), f"{where}.message")

    def one(item: Any, here: str) -> Transfer:
        return parse_transaction(item, direction, here)

    parsed, malformed = parse.records(items, one, f"{where}.message", "txid")
    by_txid: dict[str, list[Transfer]] = {}
    for transfer in parsed:
        by_txid.setdefault(transfer.id, []).append(transfer)
    # An output of a transaction set aside would make the merged one wrong: leave it all out.
    bad = {m.transfer_id for m in malformed}
    return tuple(merge(parts) for txid, parts in by_txid.items() if txid not in bad), malformed


def parse_price(payload: Any, quote_currency: str) -> Gauge:
    """GET /price: the POT price in ``quote_currency``, refused if quoted in another one."""
    message = parse.mapping(check_success(payload, "price"), "price.message")
    price = parse.amount(message.get("price"), "price.message.price")
    quoted = parse.text(message.get("currency"), "price.message.currency")
    if quoted.casefold() != quote_currency.casefold():
        raise BadPayload(f"price.message.currency: asked for {quote_currency!r}, got {quoted!r}")
    if price < 0:
        raise BadPayload("price.message.price: negative")
    return Gauge("price", (("currency", CURRENCY), ("quote", quote_currency)), price)


class PotWallet:
    """Polls one PotWallet account.

    Nonces come from ``context.nonces`` keyed by the account's credential id: strictly
    increasing per public key (so unique even for two accounts sharing a key and polling at
    once) and never reused after a restart. The doc only asks for a string that makes each
    request unique; an increasing one also satisfies a server that wants increase.
    """

    endpoints = ("balances", "deposits", "withdrawals", "price")
    _directions: Mapping[str, Direction] = {
        "deposits": Direction.DEPOSIT,
        "withdrawals": Direction.WITHDRAWAL,
    }

    def __init__(self, account: AccountConfig, context: ProviderContext) -> None:
        self._base = account.base_url
        self._public_key = account.credentials["public_key"]
        self._private_key = account.credentials["private_key"]
        self._hash_key = str(account.options["hash_key"])
        self._quote = str(account.options["price_currency"])
        self._nonce_key = account.credential_id
        self._http = context.http
        self._nonces = context.nonces

    def __repr__(self) -> str:
        return f"PotWallet(base_url={self._base!r}, hash_key={self._hash_key!r})"

    async def poll(self, endpoint: str, tracked: Tracked) -> Observation:
        """Poll ``balances``, ``deposits``, ``withdrawals`` or ``price``.

        ``tracked`` is not needed: every listing is complete, so nothing is looked up.
        """
        del tracked
        if endpoint == "balances":
            payload = await self._call("/balance", endpoint)
            return Observation(endpoint, balances=parse_balance(payload))
        if endpoint == "price":
            payload = await self._call("/price", endpoint, {"currency": self._quote})
            return Observation(endpoint, gauges=(parse_price(payload, self._quote),))
        direction = self._directions[endpoint]
        payload = await self._call(PATHS[direction], endpoint)
        transfers, malformed = parse_transactions(payload, direction)
        return Observation(
            endpoint,
            transfers=transfers,
            directions=frozenset({direction}),
            malformed=malformed,
        )

    async def _call(self, path: str, endpoint: str, query: Mapping[str, str] | None = None) -> Any:
        """GET a signed URL; the parsed body, with a refused request's error raised."""
        url = request_url(self._base, path, query)
        nonce = str(await self._nonces.next(self._nonce_key))
        public_key, private_key = self._public_key.reveal(), self._private_key.reveal()
        headers = auth_headers(public_key, private_key, url, nonce, hash_key=self._hash_key)
        response = await self._http.request(
            "GET", url, endpoint=endpoint, headers=headers, accept=READ_BODY_OF
        )
        secrets = (
            public_key,
            private_key,
            signing_key(private_key, self._hash_key).decode(),
            headers["Access-Hash"],  # a server may repeat the request's headers in its refusal
        )
        if response.status in READ_BODY_OF:
            with contextlib.suppress(BadPayload):  # not the envelope: the status says it all
                check_success(response.json(), endpoint, secrets)
            raise Rejected(f"{endpoint}: HTTP {response.status}")
        payload = response.json()
        check_success(payload, endpoint, secrets)  # a refusal raises here, credentials redacted
        return payload


# The config contract. No published rate limit (NOTES.md): a conservative 1/s.
SCHEMA = ProviderSchema(
    name="potwallet",
    base_url="https://api.potwallet.com/v1",
    rate_limit=1.0,
    credentials=("public_key", "private_key"),
    identity="public_key",
    options={
        # The live service keys the HMAC with the raw key; the doc's PHP uses sha1(key).
        "hash_key": Option("raw", choice("raw", "sha1")),
        "price_currency": Option("USD", nonempty_string),
    },
)
PROVIDER = ProviderSpec(
    SCHEMA,
    PotWallet,
    gauges={"price": "price of the provider's currency in the quote currency (PotWallet)"},
    push_answer="*ok*",  # the merchant callback repeats until the answer is exactly this
)
