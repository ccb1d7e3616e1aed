"""The state store on worker threads, so the event loop never waits on the disk."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from walletwatch.errors import StoreError
from walletwatch.store import MEMORY, Store

T = TypeVar("T")


class AsyncStore:
    """The Store on one worker thread, awaited from the event loop; reads on another.

    Writes go to the Store's one thread in order. The operator's read-only queries (``read``)
    run on a thread and a connection of their own, so a long listing never holds up a commit.
    """

    def __init__(self, store: Store) -> None:
        self.store = store
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="store")
        self._reads = ThreadPoolExecutor(max_workers=1, thread_name_prefix="store-read")
        self._reader: sqlite3.Connection | None = None
        self._reader_lock = threading.Lock()

    async def call(self, fn: Callable[..., T], *args: Any) -> T:
        """Run a Store method on the worker; a cancelled caller does not cancel the write."""
        loop = asyncio.get_running_loop()
        return await asyncio.shield(loop.run_in_executor(self._executor, fn, *args))

    async def read(self, query: Callable[..., T], *args: Any) -> T:
        """``query(connection, *args)`` on the read thread; any database error a StoreError.

        An in-memory state has one connection: its reads queue with the writes instead.
        """
        loop = asyncio.get_running_loop()
        if self.store.path == MEMORY:
            return await loop.run_in_executor(
                self._executor, _guarded, query, self.store.connection, args
            )
        return await loop.run_in_executor(self._reads, self._read, query, args)

    def _read(self, query: Callable[..., T], args: tuple[Any, ...]) -> T:
        with self._reader_lock:
            reader = self._reader
            if reader is None:
                reader = self._reader = self.store.reader() or self.store.connection
            return _guarded(query, reader, args)

    def close(self) -> None:
        """Finish queued writes and close the database."""
        self._reads.shutdown(wait=True)
        with self._reader_lock:
            if self._reader is not None:
                self._reader.close()
                self._reader = None
        self._executor.shutdown(wait=True)
        self.store.close()


def _guarded(query: Callable[..., T], db: sqlite3.Connection, args: tuple[Any, ...]) -> T:
    """``query(db, *args)``, a database error raised as a StoreError."""
    try:
        return query(db, *args)
    except sqlite3.Error as err:
        raise StoreError(f"cannot read the state: {err}") from err
