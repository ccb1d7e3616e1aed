"""The webhook sink: each event POSTed as one JSON object, signed, its secrets never shown."""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Iterator, Mapping, Sequence
from enum import Enum
from urllib.parse import parse_qsl

import aiohttp
from yarl import URL

from walletwatch.config import Secret, WebhookConfig
from walletwatch.errors import redact
from walletwatch.events import Event
from walletwatch.http import parse_retry_after
from walletwatch.sinks.dispatcher import MAX_REST, DeliveryError
from walletwatch.types import Clock

SIGNATURE_HEADER = "X-Walletwatch-Signature"

MIN_HIDDEN = 8
"""Parts of a secret (a path segment, a query value, a word of a header) this long or longer
are masked on their own; shorter ones would garble plain words. Whole values always are."""

ERROR_READ = 4096
"""Bytes of an error answer read and masked; only the first ERROR_SHOWN characters are kept.
Reading far past what is kept means a secret echoed near the cut is masked before the cut, not
left half visible after it."""

ERROR_SHOWN = 200


class Verdict(Enum):
    """What an HTTP status means for the event that got it."""

    DELIVERED = "delivered"
    RETRY = "retry"  # the receiver is down, busy or misrouted: try again later
    REFUSED = "refused"  # the receiver will never take this event: park it


def verdict(status: int) -> Verdict:
    """2xx delivered; a 4xx other than 408 (timeout) and 429 (busy) refused; else retry."""
    if 200 <= status < 300:
        return Verdict.DELIVERED
    if 400 <= status < 500 and status not in (408, 429):
        return Verdict.REFUSED
    return Verdict.RETRY


def signature(secret: str, body: bytes) -> str:
    """The X-Walletwatch-Signature value: ``sha256=`` and the hex HMAC-SHA256 of the body."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def webhook_secrets(config: WebhookConfig) -> tuple[str, ...]:
    """Every string of a webhook's config that an echo of its request could show.

    Those of its URL and headers (``request_secrets``), and the HMAC key.
    """
    hidden = set(request_secrets(config.url.reveal(), config.headers))
    if config.secret is not None:
        hidden.add(config.secret.reveal())
    return tuple(sorted(hidden))


def request_secrets(url: str, headers: Mapping[str, Secret]) -> tuple[str, ...]:
    """Every string of a request's URL and header values that an echo of it could show.

    The URL whole and as sent on the request line (path and query, raw and decoded), its
    query, its password and the Basic credentials aiohttp makes of it, each long path segment
    and query value; each header value whole and its long words.
    """
    hidden = set(_url_secrets(url))
    for value in headers.values():
        text = value.reveal()
        hidden.add(text)
        hidden.update(word for word in text.split() if len(word) >= MIN_HIDDEN)
    return tuple(sorted(hidden))


def _url_secrets(raw: str) -> Iterator[str]:
    yield raw
    try:
        url = URL(raw)
    except ValueError:
        return  # config validation lets no such URL through; the whole of it is masked
    yield from (url.raw_path_qs, url.path_qs, url.raw_query_string, url.query_string)
    if url.raw_path != "/":
        yield from (url.raw_path, url.path)
    for segment in (*url.raw_path.split("/"), *url.path.split("/")):
        if len(segment) >= MIN_HIDDEN:
            yield segment
    for key, value in parse_qsl(url.raw_query_string, keep_blank_values=True):
        yield f"{key}={value}"
        if len(value) >= MIN_HIDDEN:
            yield value
    if url.password:
        yield from (url.password, url.raw_password or "")
        user = f"{url.user or ''}:{url.password}"
        yield base64.b64encode(user.encode()).decode()


class WebhookSink:
    """POSTs each event as one JSON object to a URL, one request at a time, in outbox order.

    Every message it makes (a refusal's body, a transport error) has the URL, header values,
    HMAC key and the signature of the request masked, so a receiver echoing the request in
    its error reaches no log, no parked reason and no exception with them.
    """

    batch_size = 1  # each event is acknowledged as soon as its POST succeeds

    def __init__(self, config: WebhookConfig, session: aiohttp.ClientSession, clock: Clock) -> None:
        self.name = config.name
        self._config = config
        self._session = session
        self._clock = clock
        self._timeout = aiohttp.ClientTimeout(total=config.timeout)
        self._hidden = webhook_secrets(config)

    def __repr__(self) -> str:
        return f"WebhookSink(name={self.name!r})"

    async def deliver(self, events: Sequence[Event]) -> None:
        """POST the events in order; DeliveryError says how far it got and what went wrong."""
        for index, event in enumerate(events):
            body = event.to_json().encode()
            signed = None
            if self._config.secret is not None:
                signed = signature(self._config.secret.reveal(), body)
            hidden = (*self._hidden, signed, signed[7:]) if signed else self._hidden
            try:
                await self._post(event, body, signed, hidden)
            except DeliveryError as err:
                err.delivered = index
                raise
            except Exception as err:  # noqa: BLE001 - any failure of the request keeps the event
                # Not chained: aiohttp's errors carry the URL in their text and request_info.
                message = redact(transport_error(err), hidden)
                raise DeliveryError(message, delivered=index) from None

    async def _post(
        self, event: Event, body: bytes, signed: str | None, hidden: Sequence[str]
    ) -> None:
        headers = {name: value.reveal() for name, value in self._config.headers.items()}
        headers.update(
            {
                "Content-Type": "application/json",
                "X-Walletwatch-Event": event.event,
                "X-Walletwatch-Event-Id": event.event_id,
            }
        )
        if signed is not None:
            headers[SIGNATURE_HEADER] = signed
        async with self._session.post(
            self._config.url.reveal(),
            data=body,
            headers=headers,
            timeout=self._timeout,
            allow_redirects=False,
        ) as response:
            outcome = verdict(response.status)
            if outcome is Verdict.DELIVERED:
                return
            read = await response.content.read(ERROR_READ)
            detail = " ".join(redact(read.decode("utf-8", "replace"), hidden).split())
            message = f"HTTP {response.status}" + (f": {detail[:ERROR_SHOWN]}" if detail else "")
            raise DeliveryError(
                message,
                delivered=0,
                park=outcome is Verdict.REFUSED,
                retry_after=parse_retry_after(
                    response.headers.get("Retry-After"), self._clock.time(), MAX_REST
                ),
            )


def transport_error(err: Exception) -> str:
    """Describe a failed request without its URL, which may carry a token."""
    if isinstance(err, TimeoutError):
        return "timed out"
    if isinstance(err, aiohttp.ClientConnectorError):
        return f"cannot connect: {err.os_error.strerror or type(err.os_error).__name__}"
    return type(err).__name__
