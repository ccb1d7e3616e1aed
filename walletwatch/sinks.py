"""Where alert events go: stdout, the events file, webhooks, and the dispatcher that feeds them.

Events reach a sink only from the store's outbox, after the commit that produced them, and a
sink's cursor moves only past what it has delivered. A crash between delivering and moving
the cursor would repeat the tail of a batch; the events file drops those repeats by
event_id, so every fact is written to it once. A webhook receiver may see such a repeat
(at-least-once) and drops it by the same event_id.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import math
import os
from collections import deque
from collections.abc import Sequence
from enum import Enum
from pathlib import Path
from typing import TextIO

import aiohttp
import structlog

from walletwatch.config import WebhookConfig
from walletwatch.errors import WalletwatchError
from walletwatch.events import Event
from walletwatch.http import parse_retry_after
from walletwatch.scheduler import sleep_until_set
from walletwatch.store import AsyncStore, StoreError
from walletwatch.telemetry import Telemetry
from walletwatch.types import Clock, Sink

log = structlog.get_logger("walletwatch.sinks")

MAX_REST = 60.0
"""The longest a failing sink rests before the next attempt (and the cap on Retry-After)."""

PRUNE_EVERY = 3600.0
"""Seconds between prunings of delivered events from the outbox."""

SIGNATURE_HEADER = "X-Walletwatch-Signature"


class DeliveryError(WalletwatchError):
    """A sink delivered the first ``delivered`` events of a batch, then failed on the next.

    With ``park`` the receiver refused that event for good: it is set aside and delivery goes
    on. Otherwise the rest of the batch is retried after a rest of at least ``retry_after``.
    """

    def __init__(
        self,
        message: str,
        *,
        delivered: int,
        park: bool = False,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.delivered = delivered
        self.park = park
        self.retry_after = retry_after


TAIL_BYTES = 1024 * 1024
"""How much of an existing events file is read at start to remember its last event_ids."""


class StreamSink:
    """Writes events as JSON lines to a text stream (stdout, beside the logs)."""

    def __init__(self, stream: TextIO, name: str = "stdout") -> None:
        self.name = name
        self._stream = stream

    async def deliver(self, events: Sequence[Event]) -> None:
        """Write and flush the batch."""
        self._stream.write("".join(e.to_json() + "\n" for e in events))
        self._stream.flush()


class FileSink:
    """Appends events as JSON lines to a file, durably and without repeats."""

    name = "events_file"

    def __init__(self, path: Path, remember: int = 10_000) -> None:
        self.path = path
        self._recent: deque[str] = deque(maxlen=remember)
        self._seen: set[str] = set()
        ids, complete = _tail(path)
        for event_id in ids:
            self._remember(event_id)
        # A crash mid-write leaves a fragment; the next event must start on its own line.
        self._newline_first = not complete

    def _remember(self, event_id: str) -> None:
        if len(self._recent) == self._recent.maxlen:
            self._seen.discard(self._recent[0])
        self._recent.append(event_id)
        self._seen.add(event_id)

    async def deliver(self, events: Sequence[Event]) -> None:
        """Append the events not already in the file, then fsync."""
        fresh = [e for e in events if e.event_id not in self._seen]
        if not fresh:
            return
        text = "".join(e.to_json() + "\n" for e in fresh)
        if self._newline_first:
            text = "\n" + text
        await asyncio.to_thread(self._append, text)
        self._newline_first = False
        for e in fresh:
            self._remember(e.event_id)

    def _append(self, text: str) -> None:
        with self.path.open("a", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())


def _tail(path: Path) -> tuple[list[str], bool]:
    """event_ids of the last lines of an existing events file, and whether it ends a line."""
    try:
        with path.open("rb") as fh:
            size = fh.seek(0, os.SEEK_END)
            fh.seek(max(0, size - TAIL_BYTES))
            data = fh.read()
    except FileNotFoundError:
        return [], True
    ids = []
    for line in data.splitlines():
        try:
            body = json.loads(line)
        except ValueError:
            continue  # a line cut by the seek or by a crash mid-write
        if isinstance(body, dict) and isinstance(body.get("event_id"), str):
            ids.append(body["event_id"])
    return ids, not data or data.endswith(b"\n")


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


class WebhookSink:
    """POSTs each event as one JSON object to a URL, one request at a time, in outbox order."""

    def __init__(self, config: WebhookConfig, session: aiohttp.ClientSession, clock: Clock) -> None:
        self.name = config.name
        self._config = config
        self._session = session
        self._clock = clock
        self._timeout = aiohttp.ClientTimeout(total=config.timeout)

    def __repr__(self) -> str:
        return f"WebhookSink(name={self.name!r})"

    async def deliver(self, events: Sequence[Event]) -> None:
        """POST the events in order; DeliveryError says how far it got and what went wrong."""
        for index, event in enumerate(events):
            try:
                await self._post(event)
            except DeliveryError as err:
                err.delivered = index
                raise
            except (aiohttp.ClientError, TimeoutError) as err:
                raise DeliveryError(_transport_error(err), delivered=index) from err

    async def _post(self, event: Event) -> None:
        body = event.to_json().encode()
        headers = {name: value.reveal() for name, value in self._config.headers.items()}
        headers.update(
            {
                "Content-Type": "application/json",
                "X-Walletwatch-Event": event.event,
                "X-Walletwatch-Event-Id": event.event_id,
            }
        )
        if self._config.secret is not None:
            headers[SIGNATURE_HEADER] = signature(self._config.secret.reveal(), body)
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
            detail = (await response.content.read(200)).decode("utf-8", "replace")
            message = f"HTTP {response.status}" + (
                f": {' '.join(detail.split())}" if detail else ""
            )
            raise DeliveryError(
                message,
                delivered=0,
                park=outcome is Verdict.REFUSED,
                retry_after=parse_retry_after(
                    response.headers.get("Retry-After"), self._clock.time(), MAX_REST
                ),
            )


def _transport_error(err: Exception) -> str:
    """Describe a failed request without its URL, which may carry a token."""
    if isinstance(err, TimeoutError):
        return "timed out"
    if isinstance(err, aiohttp.ClientConnectorError):
        return f"cannot connect: {err.os_error.strerror or type(err.os_error).__name__}"
    return type(err).__name__


class Dispatcher:
    """Moves events from the outbox to every sink, retrying a failing sink with backoff.

    A sink that raises DeliveryError keeps what it delivered; an event it refused for good is
    parked (kept in the store, counted, logged) and skipped. With ``retention``, delivered
    events older than that are pruned from the outbox once an hour.
    """

    def __init__(
        self,
        store: AsyncStore,
        sinks: Sequence[Sink],
        clock: Clock,
        *,
        telemetry: Telemetry | None = None,
        retention: float | None = None,
    ) -> None:
        self._store = store
        self._sinks = tuple(sinks)
        self._clock = clock
        self._telemetry = telemetry or Telemetry()
        self._retention = retention
        self._prune_at = -math.inf
        self._wake = asyncio.Event()
        self._failures: dict[str, int] = {}
        self._retry_at: dict[str, float] = {}  # a failing sink rests until then, woken or not
        self._draining = asyncio.Lock()  # one drain at a time, or a batch goes out twice

    def wake(self) -> None:
        """New events are in the outbox."""
        self._wake.set()

    async def prepare(self) -> None:
        """Give every sink a cursor; a sink new to this state starts at the end."""
        for sink in self._sinks:
            await self._store.call(self._store.store.start_cursor, sink.name)
        await self._count_pending()

    async def run(self) -> None:
        """Deliver whenever woken, and retry failed sinks on their backoff."""
        while True:
            retry = await self.drain()
            if retry is None:
                await self._wake.wait()
            else:
                await sleep_until_set(self._clock, retry, self._wake)
            self._wake.clear()

    async def drain(self) -> float | None:
        """Deliver everything pending; return seconds until a failed sink should retry."""
        async with self._draining:
            retry = await self._drain_all()
            await self._count_pending()
            await self._prune()
            return retry

    async def _drain_all(self) -> float | None:
        retry: float | None = None
        for sink in self._sinks:
            now = self._clock.monotonic()
            rest = self._retry_at.get(sink.name, now) - now
            if rest > 0:
                retry = rest if retry is None else min(retry, rest)
                continue
            try:
                await self._drain_one(sink)
            except Exception as err:  # noqa: BLE001 - any sink failure: the outbox keeps the events
                failures = self._failures.get(sink.name, 0) + 1
                self._failures[sink.name] = failures
                self._telemetry.delivery_failures[sink.name] += 1
                wait = min(MAX_REST, 2.0 ** min(failures, 6))
                if isinstance(err, DeliveryError) and err.retry_after is not None:
                    wait = max(wait, err.retry_after)
                self._retry_at[sink.name] = self._clock.monotonic() + wait
                # Warn when a sink starts failing; the metric counts the repeats.
                emit = log.warning if failures == 1 else log.debug
                emit("sink.failed", sink=sink.name, error=str(err), retry_in=wait)
                retry = wait if retry is None else min(retry, wait)
            else:
                if self._failures.pop(sink.name, None):
                    log.info("sink.recovered", sink=sink.name)
                self._retry_at.pop(sink.name, None)
        return retry

    async def _drain_one(self, sink: Sink) -> None:
        store = self._store.store
        while batch := await self._store.call(store.pending, sink.name):
            try:
                await sink.deliver([event for _, event in batch])
            except DeliveryError as err:
                if err.delivered > 0:
                    await self._store.call(store.ack, sink.name, batch[err.delivered - 1][0])
                if not err.park:
                    raise
                seq, event = batch[err.delivered]
                reason = str(err)
            else:
                await self._store.call(store.ack, sink.name, batch[-1][0])
                continue
            await self._park(sink, seq, event, reason)

    async def _park(self, sink: Sink, seq: int, event: Event, reason: str) -> None:
        """Set aside an event the sink refused for good, and move its cursor past it."""
        store = self._store.store
        await self._store.call(store.park, sink.name, seq, event, reason, self._clock.time())
        self._telemetry.events_parked[sink.name] += 1
        log.error(
            "sink.event_parked",
            sink=sink.name,
            account=event.account,
            alert=event.event,  # "event" is the log line's own name
            event_id=event.event_id,
            reason=reason,
        )

    async def _count_pending(self) -> None:
        """Refresh walletwatch_outbox_pending for every sink."""
        store = self._store.store
        for sink in self._sinks:
            try:
                count = await self._store.call(store.pending_count, sink.name)
            except StoreError:
                continue  # the gauge keeps its last value; the failure shows elsewhere
            self._telemetry.outbox_pending[sink.name] = count

    async def _prune(self) -> None:
        """Drop delivered events older than the retention, at most once per PRUNE_EVERY."""
        now = self._clock.monotonic()
        if self._retention is None or now < self._prune_at:
            return
        self._prune_at = now + PRUNE_EVERY
        names = [sink.name for sink in self._sinks]
        before = self._clock.time() - self._retention
        try:
            count = await self._store.call(self._store.store.prune_outbox, before, names)
        except StoreError as err:
            log.warning("outbox.prune_failed", error=str(err))
            return
        if count:
            log.info("outbox.pruned", events=count)
