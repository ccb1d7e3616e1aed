"""The state store on one worker thread, so the event loop never waits on the disk."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from walletwatch.statesql import SqlState

T = TypeVar("T")


class AsyncStore:
    """A store (SQLite or PostgreSQL) on one worker thread, awaited from the event loop."""

    def __init__(self, store: SqlState) -> None:
        self.store = store
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="store")

    async def call(self, fn: Callable[..., T], *args: Any) -> T:
        """Run a Store method on the worker; a cancelled caller does not cancel the write."""
        loop = asyncio.get_running_loop()
        return await asyncio.shield(loop.run_in_executor(self._executor, fn, *args))

    def close(self) -> None:
        """Finish queued writes and close the database."""
        self._executor.shutdown(wait=True)
        self.store.close()
