"""/metrics protection: TLS and HTTP basic auth as Prometheus exporter-toolkit does them.

Passwords are checked against bcrypt hashes (``basic_auth_users``). bcrypt is slow on purpose,
so a check runs on a worker thread (the event loop, and the watchdog pings it sends, never
wait for one) and a successful one is remembered, keyed by a SHA-256 of the user, the hash and
the password: never the password itself. An unknown user costs a bcrypt check against a
dummy hash too, so timing does not tell which users exist.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import ssl
from collections.abc import Awaitable, Callable, Mapping

import bcrypt
from aiohttp import web
from aiohttp.typedefs import Middleware

from walletwatch.config import WebConfig

CACHE_SIZE = 256
"""Successful checks remembered; beyond it the cache starts afresh (only a cost, never wrong)."""

UNAUTHENTICATED = frozenset({"/healthz"})
"""Paths served without credentials: liveness probes carry no data."""

_DUMMY = bcrypt.hashpw(b"walletwatch", bcrypt.gensalt(rounds=10))

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def server_context(config: WebConfig) -> ssl.SSLContext | None:
    """The TLS context serving ``config``'s certificate, or None for plain HTTP."""
    if config.cert_file is None or config.key_file is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2  # exporter-toolkit's default min_version
    context.load_cert_chain(config.cert_file, config.key_file)
    return context


def parse_basic(header: str) -> tuple[str, str] | None:
    """``(user, password)`` from an Authorization header, or None if it is not Basic."""
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(token.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    user, sep, password = decoded.partition(":")
    return (user, password) if sep else None


class BasicAuth:
    """Checks Basic credentials against bcrypt hashes, remembering the ones that passed."""

    def __init__(self, users: Mapping[str, str]) -> None:
        self._users = {user: hashed.encode() for user, hashed in users.items()}
        self._passed: set[bytes] = set()

    def __repr__(self) -> str:
        return f"BasicAuth(users={len(self._users)})"

    def _key(self, user: str, hashed: bytes, password: str) -> bytes:
        return hashlib.sha256(b"\0".join((user.encode(), hashed, password.encode()))).digest()

    async def check(self, header: str | None) -> bool:
        """True if ``header`` (Authorization) names a user with the right password."""
        parsed = parse_basic(header) if header else None
        if parsed is None:
            return False
        user, password = parsed
        known = user in self._users
        hashed = self._users.get(user, _DUMMY)
        key = self._key(user, hashed, password)
        if known and any(hmac.compare_digest(key, seen) for seen in self._passed):
            return True
        ok = await asyncio.to_thread(bcrypt.checkpw, password.encode(), hashed)
        if not (ok and known):
            return False
        if len(self._passed) >= CACHE_SIZE:
            self._passed.clear()
        self._passed.add(key)
        return True


def middleware(auth: BasicAuth) -> Middleware:
    """aiohttp middleware asking for credentials on every path but UNAUTHENTICATED."""

    @web.middleware
    async def require_auth(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path in UNAUTHENTICATED or await auth.check(
            request.headers.get("Authorization")
        ):
            return await handler(request)
        return web.Response(
            status=401,
            text="unauthorized\n",
            headers={"WWW-Authenticate": 'Basic realm="walletwatch"'},
        )

    return require_auth
