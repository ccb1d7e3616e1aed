"""Where alert events go: stdout, the events file, and the dispatcher that feeds them.

Events reach a sink only from the store's outbox, after the commit that produced them, and a
sink's cursor moves only after it has delivered a batch. A crash between delivering and
moving the cursor would repeat the tail of a batch; the events file drops those repeats by
event_id, so every fact is written to it once.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections import deque
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

import structlog

from walletwatch.events import Event
from walletwatch.scheduler import sleep_until_set
from walletwatch.store import AsyncStore
from walletwatch.types import Clock, Sink

log = structlog.get_logger("walletwatch.sinks")

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


class Dispatcher:
    """Moves events from the outbox to every sink, retrying a failing sink with backoff."""

    def __init__(self, store: AsyncStore, sinks: Sequence[Sink], clock: Clock) -> None:
        self._store = store
        self._sinks = tuple(sinks)
        self._clock = clock
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
            return await self._drain_all()

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
                wait = min(60.0, 2.0 ** min(failures, 6))
                self._retry_at[sink.name] = self._clock.monotonic() + wait
                log.warning("sink.failed", sink=sink.name, error=str(err), retry_in=wait)
                retry = wait if retry is None else min(retry, wait)
            else:
                self._failures.pop(sink.name, None)
                self._retry_at.pop(sink.name, None)
        return retry

    async def _drain_one(self, sink: Sink) -> None:
        store = self._store.store
        while batch := await self._store.call(store.pending, sink.name):
            await sink.deliver([event for _, event in batch])
            await self._store.call(store.ack, sink.name, batch[-1][0])
