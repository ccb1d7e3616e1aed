"""The local sinks: JSON lines on stdout, and the events file, whole lines exactly once."""

from __future__ import annotations

import asyncio
import json
import os
from collections import deque
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TextIO

import structlog

from walletwatch.events import Event

log = structlog.get_logger("walletwatch.sinks")

BATCH = 500
"""Events handed to a local sink in one call: one write and one fsync for all of them."""

TAIL_BYTES = 1024 * 1024
"""How much of an existing events file is read at start to remember its last event_ids."""


def stdout_json(event: Event) -> str:
    """An event as a JSON line for stdout, where ``"kind": "event"`` tells it from the logs."""
    return event.to_json(kind="event")


class StreamSink:
    """Writes events a line each to a text stream (stdout, beside the logs).

    ``render`` makes the line: JSON (``stdout_json``) by default, or ``console.event_line``
    for a person at a terminal.
    """

    batch_size = BATCH

    def __init__(
        self,
        stream: TextIO,
        name: str = "stdout",
        render: Callable[[Event], str] = stdout_json,
    ) -> None:
        self.name = name
        self._stream = stream
        self._render = render

    async def deliver(self, events: Sequence[Event]) -> None:
        """Write and flush the batch."""
        self._stream.write("".join(self._render(e) + "\n" for e in events))
        self._stream.flush()


class FileSink:
    """Appends events as JSON lines to a file, durably, whole and without repeats.

    A write that fails (a full disk, a file size limit) is undone: the file is cut back to
    the size it had before, so the retry starts on a line boundary and nothing in the file is
    partial or written twice. If even the cut fails, it is retried before the next write.
    """

    name = "events_file"
    batch_size = BATCH

    def __init__(self, path: Path, remember: int = 10_000) -> None:
        self.path = path
        self._recent: deque[str] = deque(maxlen=remember)
        self._seen: set[str] = set()
        ids, end = _tail(path)
        for event_id in ids:
            self._remember(event_id)
        # A crash mid-write leaves a fragment of a line nobody acknowledged: it is cut off
        # before the next write, and the event it held is written again whole. A fragment
        # longer than the tail read is no event of ours: it is kept, and ended with a newline.
        self._cut_to = end if end != -1 else None
        self._newline_first = end == -1

    def _remember(self, event_id: str) -> None:
        if len(self._recent) == self._recent.maxlen:
            self._seen.discard(self._recent[0])
        self._recent.append(event_id)
        self._seen.add(event_id)

    async def deliver(self, events: Sequence[Event]) -> None:
        """Append the events not already in the file, then fsync; undo a failed write."""
        fresh = [e for e in events if e.event_id not in self._seen]
        if not fresh:
            return
        text = "".join(e.to_json() + "\n" for e in fresh)
        await asyncio.to_thread(
            self._append, ("\n" + text if self._newline_first else text).encode()
        )
        self._newline_first = False
        for e in fresh:
            self._remember(e.event_id)

    def _append(self, data: bytes) -> None:
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            if self._cut_to is not None:
                self._cut(fd, self._cut_to)
            start = os.lseek(fd, 0, os.SEEK_END)
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
                os.fsync(fd)
            except OSError:
                # Whatever part reached the file is taken back; the whole batch is retried.
                self._cut_to = start
                try:
                    self._cut(fd, start)
                except OSError as cut:  # retried before the next write
                    log.error(  # noqa: TRY400 - the write's own error is raised and logged
                        "events_file.cut_failed", path=str(self.path), error=str(cut)
                    )
                raise
        finally:
            os.close(fd)

    def _cut(self, fd: int, size: int) -> None:
        """Truncate the file to ``size`` (a line boundary) and make that durable."""
        dropped = os.fstat(fd).st_size - size
        if dropped > 0:
            os.ftruncate(fd, size)
            os.fsync(fd)
            log.warning("events_file.repaired", path=str(self.path), bytes_dropped=dropped)
        self._cut_to = None


def _tail(path: Path) -> tuple[list[str], int | None]:
    """event_ids of the last lines of an existing events file, and where a fragment starts.

    The second value is None when the file is missing, empty or ends with a whole line, and
    -1 when its last line is longer than the tail read.
    """
    try:
        with path.open("rb") as fh:
            size = fh.seek(0, os.SEEK_END)
            start = max(0, size - TAIL_BYTES)
            fh.seek(start)
            data = fh.read()
    except FileNotFoundError:
        return [], None
    ids = []
    for line in data.splitlines():
        try:
            body = json.loads(line)
        except ValueError:
            continue  # a line cut by the seek or by a crash mid-write
        if isinstance(body, dict) and isinstance(body.get("event_id"), str):
            ids.append(body["event_id"])
    if not data or data.endswith(b"\n"):
        return ids, None
    newline = data.rfind(b"\n")
    if newline < 0 and start > 0:
        return ids, -1
    return ids, start + newline + 1
