"""Sila's two auth modes: ECDSA request signatures and a shared OAuth2 access-token cache.

ECDSA (shared/providers/NOTES.md): secp256k1 over keccak256 of the exact body bytes, no
Ethereum message prefix, deterministic (RFC 6979, which libsecp256k1 uses), sent as 65 bytes
r||s||v with v = 27 or 28, in hex without ``0x``. coincurve wraps libsecp256k1;
pycryptodome supplies keccak256 (the pre-standard padding Ethereum uses, not SHA3-256).

Token: ``POST /auth_token`` with HTTP Basic ``client_id:client_secret`` gives a token good
for 8 hours. Every account on one client id shares one ``TokenCache``, so concurrent polls
fetch it once; it is refreshed a margin before it expires, and once more after a 401. Sila's
pages say only that the token comes with "an expiration timestamp": ``expires_at`` reads Unix
seconds, Unix milliseconds (told apart by magnitude) and ISO 8601 text (UTC when unzoned),
and falls back to the documented 8 hours when it cannot read one.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from coincurve import PrivateKey
from Crypto.Hash import keccak

from walletwatch.types import Clock

REFRESH_MARGIN = 300.0
"""Seconds before its reported expiry that a token is replaced, so none expires in flight."""
TOKEN_TTL = 8 * 3600.0
"""The documented token lifetime, assumed when an answer gives no expiration."""
MAX_TOKEN_LIFE = 7 * 24 * 3600.0
"""An expiry further off than this is misread (microseconds, a year typo), not believed."""
MILLISECONDS_FROM = 10**11
"""Epochs from here up are milliseconds: 10**11 s is the year 5138, 10**11 ms is 1973."""


def keccak256(data: bytes) -> bytes:
    """Keccak-256 (Ethereum's hash) of ``data``."""
    return keccak.new(digest_bits=256, data=data).digest()


def load_private_key(text: str) -> PrivateKey:
    """A secp256k1 private key from 64 hex digits (``0x`` optional); ValueError otherwise."""
    digits = text.strip().removeprefix("0x").removeprefix("0X")
    if len(digits) != 64:
        raise ValueError("expected 64 hex digits")
    try:
        return PrivateKey.from_hex(digits)
    except ValueError as err:  # not hex, zero, or not below the curve order
        raise ValueError("not a secp256k1 private key") from err


def sign(key: PrivateKey, body: bytes) -> str:
    """The Sila signature of ``body``: hex r||s||v over keccak256(body), v = 27 or 28."""
    signature = key.sign_recoverable(keccak256(body), hasher=None)
    return (signature[:64] + bytes([27 + signature[64]])).hex()


def ecdsa_headers(app_key: PrivateKey, user_key: PrivateKey, body: bytes) -> dict[str, str]:
    """The headers of an ECDSA-signed request: the app's and the user's signature."""
    return {
        "Content-Type": "application/json",
        "authsignature": sign(app_key, body),
        "usersignature": sign(user_key, body),
    }


def basic_authorization(client_id: str, client_secret: str) -> str:
    """The ``Authorization`` value for POST /auth_token."""
    credentials = base64.b64encode(f"{client_id}:{client_secret}".encode()).decode("ascii")
    return f"Basic {credentials}"


@dataclass(frozen=True, slots=True)
class AccessToken:
    """A bearer token and the Unix time it expires; repr never shows the token."""

    value: str = field(repr=False)
    expires_at: float
    assumed: str | None = field(default=None, compare=False)
    """Why ``expires_at`` is the documented lifetime rather than the answer's, if it is."""


def _moment(value: Any) -> float:
    """Unix seconds from a JSON number or text: seconds or milliseconds, or ISO 8601."""
    if isinstance(value, str):
        text = value.strip()
        try:
            number = Decimal(text)
        except InvalidOperation:
            moment = datetime.fromisoformat(text)  # ValueError when not ISO 8601 either
            return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()
    elif isinstance(value, int | Decimal) and not isinstance(value, bool):
        number = Decimal(value)
    else:
        raise TypeError(type(value).__name__)
    if not number.is_finite():
        raise ValueError("not finite")
    return float(number / 1000 if number >= MILLISECONDS_FROM else number)


def _seconds(value: Any) -> float:
    """A duration in seconds from a JSON number or numeric text."""
    if isinstance(value, bool) or not isinstance(value, int | Decimal | str):
        raise TypeError(type(value).__name__)
    try:
        number = Decimal(value.strip() if isinstance(value, str) else value)
    except InvalidOperation as err:
        raise ValueError("not a number") from err
    if not number.is_finite():
        raise ValueError("not finite")
    return float(number)


def expires_at(
    now: float, *, expiration: Any = None, expires_in: Any = None
) -> tuple[float, str | None]:
    """When a token fetched at ``now`` expires, and why the 8 h default stands in, if it does.

    ``expiration`` is Sila's timestamp, ``expires_in`` OAuth2's seconds from now; a value
    that cannot be read, or that puts the expiry in the past or over a week ahead, is
    replaced by the documented lifetime rather than failing the poll.
    """
    if expiration is None and expires_in is None:
        return now + TOKEN_TTL, "no expiration"
    try:
        moment = _moment(expiration) if expires_in is None else now + _seconds(expires_in)
    except (TypeError, ValueError, OverflowError, OSError):
        return now + TOKEN_TTL, "unreadable expiration"
    if not now < moment <= now + MAX_TOKEN_LIFE:
        return now + TOKEN_TTL, "expiration out of range"
    return moment, None


class TokenCache:
    """The access token of one client id, shared by every account using it."""

    def __init__(self) -> None:
        self._lock = asyncio.Lock()
        self._token: AccessToken | None = None
        self._warned = False

    def __repr__(self) -> str:
        expires = None if self._token is None else self._token.expires_at
        return f"TokenCache(expires_at={expires!r})"

    def first_warning(self) -> bool:
        """True the first time it is asked: an assumed expiry is worth one warning per client."""
        first, self._warned = not self._warned, True
        return first

    async def get(
        self,
        fetch: Callable[[], Awaitable[AccessToken]],
        clock: Clock,
        *,
        refused: str | None = None,
    ) -> AccessToken:
        """A token valid for at least the margin, fetched under the lock when needed.

        ``refused`` is a token the provider just answered 401 to: it is replaced unless
        another account already replaced it while this one waited for the lock.
        """
        async with self._lock:
            token = self._token
            if (
                token is None
                or token.value == refused
                or clock.time() >= token.expires_at - REFRESH_MARGIN
            ):
                token = self._token = await fetch()
            return token
