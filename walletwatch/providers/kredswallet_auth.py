"""KredsWallet's request signing (shared/providers/NOTES.md).

X-WWT-PAYLOAD is base64 of the compact JSON ``{"nonce":"<ms>"}``; X-WWT-SIGNATURE is hex
HMAC-SHA512 of that base64 text keyed with the API secret.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json

PUBLIC_HEADERS = {"Accept": "application/json"}
"""The headers of every request, signed or not."""


def payload(nonce: int) -> str:
    """X-WWT-PAYLOAD: base64 of the compact JSON ``{"nonce":"<nonce>"}`` (the nonce a string)."""
    text = json.dumps({"nonce": str(nonce)}, separators=(",", ":"))
    return base64.b64encode(text.encode()).decode("ascii")


def sign(secret: str, payload_text: str) -> str:
    """X-WWT-SIGNATURE: hex HMAC-SHA512 of the base64 payload text, keyed with the secret."""
    return hmac.new(secret.encode(), payload_text.encode(), hashlib.sha512).hexdigest()


def auth_headers(api_key: str, secret: str, nonce: int) -> dict[str, str]:
    """The headers of a signed request."""
    text = payload(nonce)
    return {
        **PUBLIC_HEADERS,
        "X-WWT-APIKEY": api_key,
        "X-WWT-PAYLOAD": text,
        "X-WWT-SIGNATURE": sign(secret, text),
    }
