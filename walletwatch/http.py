"""One HTTP exchange with a provider: rate-limit slot, timeouts, size cap, error mapping.

Every way a request can fail is mapped to one ProviderError in ``_classify``, so provider
modules only sign requests and parse bodies.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from decimal import Decimal
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from walletwatch.arbiter import Ticket, acquire
from walletwatch.budget import TokenBucket, rate_limited, relieved
from walletwatch.errors import (
    AuthFailed,
    BadPayload,
    ProviderError,
    RateLimited,
    Rejected,
    Unavailable,
)
from walletwatch.escape import cleaned, escaped, may_hold_unsafe
from walletwatch.telemetry import Telemetry
from walletwatch.types import Clock

MAX_BODY_BYTES = 8 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class Response:
    """A provider's answer: status, headers and the raw body."""

    status: int
    headers: Mapping[str, str]
    body: bytes

    def json(self) -> Any:
        """The body as JSON with exact decimals; anything else is BadPayload."""
        return parse_json(self.body)


def parse_json(body: bytes) -> Any:
    """Decode JSON with floats as Decimal, refusing NaN, Infinity and absurd documents.

    Every answer of every provider is decoded here, so this is where text that could not be
    stored, served or logged as given (a lone surrogate, a control character) is escaped:
    the raw bytes say whether any string may hold one, and almost never does one.
    """
    try:
        doc = json.loads(body.decode("utf-8"), parse_float=Decimal, parse_constant=_reject)
    except (ValueError, RecursionError, UnicodeDecodeError) as err:
        raise BadPayload(f"response is not valid JSON: {str(err)[:120]}") from err
    return cleaned(doc) if may_hold_unsafe(body) else doc


def _headers(headers: Mapping[str, str]) -> dict[str, str]:
    """A response's headers; aiohttp decodes bytes that are not UTF-8 as lone surrogates."""
    return {escaped(name): escaped(value) for name, value in headers.items()}


def _reject(name: str) -> Any:
    raise ValueError(f"{name} is not a number")


def parse_retry_after(value: str | None, now: float, cap: float) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or HTTP-date), capped."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            seconds = parsedate_to_datetime(value).timestamp() - now
        except (TypeError, ValueError, IndexError):
            return None
    if math.isnan(seconds):
        return None
    return min(max(seconds, 0.0), cap)


class Http:
    """Makes requests for one account: waits for its rate-limit slots, maps failures.

    ``buckets`` are the account's credential bucket first, then shared ones (the host's).
    A request is sent once, never retried here: retrying is the scheduler's job.
    """

    def __init__(
        self,
        session: aiohttp.ClientSession,
        *,
        provider: str,
        buckets: Sequence[TokenBucket],
        telemetry: Telemetry,
        clock: Clock,
        timeout: aiohttp.ClientTimeout,
        max_backoff: float,
        max_bytes: int = MAX_BODY_BYTES,
        credential_names: Sequence[str] = (),
        gate: Callable[[], bool] | None = None,
    ) -> None:
        self._session = session
        self._gate = gate  # False: this replica may not spend the key's budget now
        self._provider = provider
        self._buckets = tuple(buckets)
        self._telemetry = telemetry
        self._clock = clock
        self._timeout = timeout
        self._max_backoff = max_backoff
        self._max_bytes = max_bytes
        self._credential_names = tuple(credential_names)  # names only: for the 401 advice
        self._polls: dict[str, Ticket] = {}  # endpoint -> the poll of it under way
        # endpoint -> "METHOD URL" (no query) of its last request, for the poll's error text.
        self.last_request: dict[str, str] = {}

    @contextmanager
    def polling(self, endpoint: str, ticket: Ticket | None) -> Iterator[None]:
        """Requests for ``endpoint`` work for the poll ``ticket`` until the block ends.

        The scheduler hands each poll its ticket (deadline, claimed buckets); the watcher
        passes it here, and every request names its endpoint, so each request gives the
        arbiter the ticket of the poll it belongs to. An endpoint is polled by one loop, so
        it has at most one poll under way.
        """
        if ticket is None:
            yield
            return
        self._polls[endpoint] = ticket
        try:
            yield
        finally:
            self._polls.pop(endpoint, None)

    async def request(
        self,
        method: str,
        url: str,
        *,
        endpoint: str,
        headers: Mapping[str, str] | None = None,
        body: bytes | None = None,
        accept: Collection[int] = (),
    ) -> Response:
        """Send one request and return a 2xx response; raise a ProviderError otherwise.

        Statuses in ``accept`` are returned as they are, for providers whose error bodies
        say more than the status does.
        """
        # A slot in every bucket at once; first come, first served per credential, so signed
        # nonces reach the provider in the order they were taken.
        await acquire(self._buckets, self._polls.get(endpoint))
        if self._gate is not None and not self._gate():
            # Checked last, right before sending: a replica that stopped leading while it
            # waited for its slot (or was paused) sends nothing.
            raise Unavailable(f"{_where(method, url)}: not sent: not the leader", reason="store")
        self.last_request[endpoint] = _where(method, url)
        started = self._clock.monotonic()
        code = "error"
        try:
            async with self._session.request(
                method,
                url,
                headers=headers,
                data=body,
                timeout=self._timeout,
                allow_redirects=False,
            ) as resp:
                code = str(resp.status)
                payload = await self._read(resp)
                response = Response(resp.status, _headers(resp.headers), payload)
        except ProviderError:
            raise
        except TimeoutError as err:
            limit = self._timeout.total
            within = f" within {limit:g} s" if limit else ""
            raise Unavailable(
                f"{_where(method, url)}: no answer{within}", reason="timeout"
            ) from err
        except aiohttp.ClientError as err:
            raise Unavailable(f"{_where(method, url)}: {_in_words(err)}") from err
        finally:
            self._telemetry.request(
                self._provider, endpoint, code, self._clock.monotonic() - started
            )
        if response.status != 429:
            relieved(self._buckets)
        if response.status not in accept:
            self._classify(response, _where(method, url))
        return response

    async def _read(self, resp: aiohttp.ClientResponse) -> bytes:
        chunks, size = [], 0
        async for chunk in resp.content.iter_chunked(64 * 1024):
            size += len(chunk)
            if size > self._max_bytes:
                raise BadPayload(f"response larger than {self._max_bytes} bytes")
            chunks.append(chunk)
        return b"".join(chunks)

    def _classify(self, response: Response, where: str) -> None:
        """Raise the error a non-2xx status means, saying what to check."""
        status = response.status
        if 200 <= status < 300:
            return
        what = f"{where}: HTTP {status}"
        if status == 429:
            retry_after = parse_retry_after(
                response.headers.get("Retry-After"), self._clock.time(), self._max_backoff
            )
            # Pauses (and after repeats slows) the whole bucket; the scheduler retries the poll.
            rate_limited(self._buckets, retry_after)
            after = f", retry after {retry_after:g} s" if retry_after is not None else ""
            raise RateLimited(f"{what}: rate limited{after}", retry_after=retry_after)
        if status in (401, 403):
            names = ", ".join(self._credential_names) or "credentials"
            raise AuthFailed(f"{what}: check the account's {names} and that the key may read")
        if status >= 500:
            raise Unavailable(f"{what}: the provider failed; polled again later", reason="http_5xx")
        if 300 <= status < 400:
            raise Rejected(f"{what}: a redirect, not followed: check base_url")
        if status == 404:
            raise Rejected(f"{what}: check base_url")
        raise Rejected(what)


def _where(method: str, url: str) -> str:
    """``METHOD scheme://host:port/path``: the query (which may sign or identify) left out."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    host = f"[{host}]" if ":" in host else host
    port = f":{parts.port}" if parts.port is not None else ""
    return f"{method} {parts.scheme}://{host}{port}{parts.path}"


def _in_words(err: aiohttp.ClientError) -> str:
    """What a failed exchange means, in words a person acts on."""
    if isinstance(err, aiohttp.ClientConnectorCertificateError):
        cause = err.certificate_error
        return f"certificate not trusted: {getattr(cause, 'verify_message', None) or cause}"
    if isinstance(err, aiohttp.ClientConnectorDNSError):
        return f"cannot resolve {err.host}: check base_url and the host's DNS"
    if isinstance(err, aiohttp.ClientConnectorSSLError):
        return f"TLS handshake with {err.host}:{err.port} failed: {err.os_error}"
    if isinstance(err, aiohttp.ClientConnectorError):
        where = f"{err.host}:{err.port}"
        if isinstance(err.os_error, ConnectionRefusedError):
            return f"connection refused by {where}"
        reason = err.os_error.strerror or type(err.os_error).__name__
        return f"cannot connect to {where}: {reason.lower()}"
    if isinstance(err, aiohttp.ServerDisconnectedError):
        return "the server closed the connection without answering"
    if isinstance(err, aiohttp.ClientPayloadError):
        return "the answer was cut off"
    if isinstance(err, aiohttp.ClientOSError):
        return f"connection failed: {(err.strerror or type(err).__name__).lower()}"
    return type(err).__name__
