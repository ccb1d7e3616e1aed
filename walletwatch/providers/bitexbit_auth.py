"""bitexbit request signing: the three schemes an account chooses with ``auth_scheme``.

See shared/providers/NOTES.md (bitexbit), which overrides the gateway doc:

- ``gateway`` (default, the latest published docs): ``X-Key``, ``X-Timeout``, ``X-Sign``;
  ``X-Timeout`` is an expiry, now in ms + 500; ``X-Sign`` = hex HMAC-SHA256(secret,
  key + path + timeout + body), path without its query string.
- ``v2`` (the doc's prose, and the v2 API's balance): ``X-API-Key``, ``X-Nonce``,
  ``X-Signature`` = hex HMAC-SHA256(secret, path + nonce + body).
- ``v1`` (the doc's Python sample): the same headers, ``X-Signature`` = hex
  HMAC-SHA256(secret, key + the request's parameters urlencoded, sorted by name). walletwatch
  only sends GETs, so the parameters are the query string's.

Bodies are always ``""``: walletwatch sends no request body.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

SCHEMES = ("gateway", "v2", "v1")
TIMEOUT_AHEAD_MS = 500  # NOTES.md: X-Timeout = now in ms + 500


def _hmac(secret: str, message: str) -> str:
    return hmac.new(secret.encode(), message.encode(), hashlib.sha256).hexdigest()


def sign_gateway(key: str, secret: str, path: str, timeout_ms: int, body: str = "") -> str:
    """X-Sign: hex HMAC-SHA256 of key + path + timeout + body."""
    return _hmac(secret, f"{key}{path}{timeout_ms}{body}")


def sign_v2(secret: str, path: str, nonce: int, body: str = "") -> str:
    """X-Signature of the v2 scheme: hex HMAC-SHA256 of path + nonce + body."""
    return _hmac(secret, f"{path}{nonce}{body}")


def sign_v1(key: str, secret: str, params: Iterable[tuple[str, str]]) -> str:
    """X-Signature of the doc's code sample: HMAC of key + params urlencoded, sorted by name."""
    return _hmac(secret, key + urlencode(sorted(params, key=lambda item: item[0])))


def auth_headers(
    scheme: str, key: str, secret: str, url: str, *, now: float, nonce: int | None
) -> dict[str, str]:
    """The auth headers of a GET of ``url`` under ``scheme``; ``now`` is wall time in seconds."""
    parts = urlsplit(url)
    if scheme == "gateway":
        timeout = int(now * 1000) + TIMEOUT_AHEAD_MS
        return {
            "X-Key": key,
            "X-Timeout": str(timeout),
            "X-Sign": sign_gateway(key, secret, parts.path, timeout),
        }
    if nonce is None:
        raise ValueError(f"the {scheme} scheme needs a nonce")
    if scheme == "v2":
        signature = sign_v2(secret, parts.path, nonce)
    elif scheme == "v1":
        signature = sign_v1(key, secret, parse_qsl(parts.query, keep_blank_values=True))
    else:
        raise ValueError(f"unknown auth scheme {scheme!r}")
    return {"X-API-Key": key, "X-Nonce": str(nonce), "X-Signature": signature}


class SignedAtSend(Mapping[str, str]):
    """Request headers built the first time they are read, then fixed.

    ``Http.request`` waits for the rate-limit slots before it hands the headers to aiohttp,
    and ``X-Timeout`` expires 500 ms after it is taken: built any earlier, a request that
    queued behind others on its key (0.53 s apart at 2/s) would leave already expired.
    """

    __slots__ = ("_build", "_headers")

    def __init__(self, build: Callable[[], Mapping[str, str]]) -> None:
        self._build = build
        self._headers: dict[str, str] | None = None

    def _get(self) -> dict[str, str]:
        if self._headers is None:
            self._headers = dict(self._build())
        return self._headers

    def __getitem__(self, name: str) -> str:
        return self._get()[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._get())

    def __len__(self) -> int:
        return len(self._get())

    def __deepcopy__(self, memo: dict[int, Any]) -> dict[str, str]:
        """A copy (aioresponses records one) is the headers as sent, not a second build."""
        return dict(self._get())

    def __repr__(self) -> str:
        names = "unbuilt" if self._headers is None else ", ".join(self._headers)
        return f"SignedAtSend({names})"
