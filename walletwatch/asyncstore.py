"""The state store on worker threads, so the event loop never waits on the database."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from walletwatch.statesql import SqlState
from walletwatch.types import SqlConnection

T = TypeVar("T")


class AsyncStore:
    """A store (SQLite or PostgreSQL) on one worker thread, awaited from the event loop.

    Writes go to the store's one thread in order. The operator's read-only queries (``read``)
    run on a thread and a connection of their own, so a long listing never holds up a commit.
    """

    def __init__(self, store: SqlState) -> None:
        self.store = store
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="store")
        self._reads = ThreadPoolExecutor(max_workers=1, thread_name_prefix="store-read")
        self._reader: SqlConnection | None = None
        self._shared = False  # True once the store said only its own connection can read
        self._reader_lock = threading.Lock()

    async def call(self, fn: Callable[..., T], *args: Any) -> T:
        """Run a store method on the worker; a cancelled caller does not cancel the write."""
        loop = asyncio.get_running_loop()
        return await asyncio.shield(loop.run_in_executor(self._executor, fn, *args))

    async def read(self, query: Callable[..., T], *args: Any) -> T:
        """``query(connection, *args)`` on the read thread; any database error a StoreError.

        A state only the store's own connection can see (SQLite in memory) queues its reads
        with the writes instead.
        """
        loop = asyncio.get_running_loop()
        if self._shared:
            return await loop.run_in_executor(
                self._executor, self.store.read_on, self.store.connection, query, args
            )
        return await loop.run_in_executor(self._reads, self._read, query, args)

    def _read(self, query: Callable[..., T], args: tuple[Any, ...]) -> T:
        with self._reader_lock:
            reader = self._reader
            if reader is None:
                reader = self._reader = self.store.reader()
            if reader is None:
                self._shared = True
        if reader is None:
            # Once only: from now on ``read`` queues on the writer's thread directly.
            return self._executor.submit(
                self.store.read_on, self.store.connection, query, args
            ).result()
        return self.store.read_on(reader, query, args)

    def close(self) -> None:
        """Finish queued writes and close the database."""
        self._reads.shutdown(wait=True)
        with self._reader_lock:
            if self._reader is not None:
                self._reader.close()
                self._reader = None
        self._executor.shutdown(wait=True)
        self.store.close()
