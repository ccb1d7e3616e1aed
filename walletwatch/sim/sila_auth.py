"""How the simulated Sila server checks callers: recovered ECDSA signers and issued tokens.

Written from the documented algorithm alone (shared/providers/NOTES.md), never from the
client's code: keccak256 of the raw body, a 65-byte r||s||v signature with v = 27 or 28, the
signer's public key recovered from it and turned into an Ethereum address. Tokens are
answered in whichever shape and expiration format the test asks for (``token_answer``), as
Sila's documents leave both open.
"""

from __future__ import annotations

import base64
import binascii
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime

from coincurve import PrivateKey, PublicKey
from Crypto.Hash import keccak

from walletwatch.sim.common import Clock

TOKEN_TTL = 8 * 3600.0
TOKEN_REUSE = 30 * 60.0  # a token with more than this left is handed out again, as Sila does
SHAPES = ("sila", "oauth2")  # access_token.{token,expiration}, or access_token + expires_in
EXPIRATIONS = ("seconds", "milliseconds", "iso", "iso_unzoned", "missing", "unreadable")


def keccak256(data: bytes) -> bytes:
    """Keccak-256 as Ethereum (and so Sila) uses it."""
    return keccak.new(digest_bits=256, data=data).digest()


def checksum_address(raw: bytes) -> str:
    """A 20-byte Ethereum address in EIP-55 mixed-case form."""
    digits = raw.hex()
    mask = keccak256(digits.encode()).hex()
    return "0x" + "".join(
        c.upper() if int(m, 16) >= 8 else c
        for c, m in zip(digits, mask[: len(digits)], strict=True)
    )


def _address(public: PublicKey) -> str:
    return checksum_address(keccak256(public.format(compressed=False)[1:])[-20:])


def address_of_key(private_key: str) -> str:
    """The address of a hex private key, for registering simulated apps and users."""
    return _address(PrivateKey.from_hex(private_key.removeprefix("0x")).public_key)


def recover_address(body: bytes, signature: str) -> str | None:
    """The address that signed keccak256(body) as hex r||s||v (v 27/28); None if malformed."""
    try:
        raw = bytes.fromhex(signature)
    except ValueError:
        return None
    if len(raw) != 65 or raw[64] not in (27, 28):
        return None
    try:
        recoverable = raw[:64] + bytes([raw[64] - 27])
        return _address(PublicKey.from_signature_and_message(recoverable, keccak256(body), None))
    except ValueError:
        return None


def basic_credentials(authorization: str) -> tuple[str, str] | None:
    """(client_id, client_secret) from an ``Authorization: Basic`` value; None otherwise."""
    scheme, _, encoded = authorization.partition(" ")
    if scheme != "Basic":
        return None
    try:
        client_id, colon, secret = base64.b64decode(encoded, validate=True).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return None
    return (client_id, secret) if colon else None


@dataclass(frozen=True, slots=True)
class Token:
    """An access token the simulated server issued to an app."""

    value: str
    app_handle: str
    expires_at: float


def token_answer(
    value: str, expires_at: float, now: float, shape: str, expiration: str
) -> dict[str, object]:
    """The /auth_token answer's token fields in ``shape``, the expiry in ``expiration`` form.

    The OAuth2 shape gives ``expires_in`` seconds from now whatever the form, save
    ``missing`` and ``unreadable``.
    """
    moment = datetime.fromtimestamp(expires_at, tz=UTC)
    forms: dict[str, object] = {
        "seconds": int(expires_at),
        "milliseconds": int(expires_at * 1000),
        "iso": moment.isoformat(timespec="seconds").replace("+00:00", "Z"),
        "iso_unzoned": moment.replace(tzinfo=None).isoformat(timespec="seconds"),
        "unreadable": "in eight hours",
    }
    if shape == "oauth2":
        answer: dict[str, object] = {"access_token": value, "token_type": "Bearer"}
        if expiration != "missing":
            left = int(expires_at - now)
            answer["expires_in"] = forms["unreadable"] if expiration == "unreadable" else left
        return answer
    access: dict[str, object] = {"token": value}
    if expiration != "missing":
        access["expiration"] = forms[expiration]
    return {"access_token": access}


class TokenIssuer:
    """Issues access tokens per app on the sim clock and says which are still valid."""

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._tokens: dict[str, Token] = {}
        self.issued = 0

    def issue(self, app_handle: str) -> Token:
        """The app's token: the current one while over 30 minutes remain, else a new one."""
        now = self._clock()
        token = next((t for t in self._tokens.values() if t.app_handle == app_handle), None)
        if token is None or token.expires_at - now <= TOKEN_REUSE:
            if token is not None:
                del self._tokens[token.value]
            token = Token(secrets.token_urlsafe(32), app_handle, now + TOKEN_TTL)
            self._tokens[token.value] = token
            self.issued += 1
        return token

    def valid(self, value: str, app_handle: str) -> bool:
        """Whether ``value`` is an unexpired token of ``app_handle``."""
        token = self._tokens.get(value)
        return (
            token is not None
            and token.app_handle == app_handle
            and self._clock() < token.expires_at
        )

    def revoke_all(self) -> None:
        """Forget every token, as if the provider had revoked them."""
        self._tokens.clear()
