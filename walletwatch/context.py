"""What a provider client receives besides its account: services app.py builds once.

``nonces`` hands out strictly increasing nonces per credential that survive restarts;
``shared`` holds objects every account on one credential shares (an access-token cache).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar, cast

from walletwatch.config import ProviderSettings
from walletwatch.http import Http
from walletwatch.store import AsyncStore
from walletwatch.types import Clock

T = TypeVar("T")

NONCE_LEASE_MS = 60_000
"""Nonces are leased a minute ahead: one state write a minute per key, not one per request."""


class Nonces:
    """Strictly increasing millisecond nonces per credential, never reused after a restart.

    A nonce is the wall clock in milliseconds, or one more than the last one when two
    requests fall in the same millisecond (or the clock stepped back). Before a nonce beyond
    the persisted lease is handed out, a new lease is committed, so a restart (even after a
    crash) starts above every nonce ever issued.
    """

    PREFIX = "nonce:"

    def __init__(self, clock: Clock, store: AsyncStore, leases: Mapping[str, int]) -> None:
        self._clock = clock
        self._store = store
        self._last = dict(leases)
        self._leased = dict(leases)
        self._lock = asyncio.Lock()

    @classmethod
    async def load(cls, clock: Clock, store: AsyncStore) -> Nonces:
        """Nonces resuming above every lease in the state."""
        rows = await store.call(store.store.load_meta, cls.PREFIX)
        return cls(clock, store, {k.removeprefix(cls.PREFIX): int(v) for k, v in rows.items()})

    async def next(self, key: str) -> int:
        """The next nonce for the credential ``key``."""
        async with self._lock:
            nonce = max(int(self._clock.time() * 1000), self._last.get(key, 0) + 1)
            if nonce > self._leased.get(key, 0):
                lease = nonce + NONCE_LEASE_MS
                await self._store.call(self._store.store.save_meta, self.PREFIX + key, str(lease))
                self._leased[key] = lease
            self._last[key] = nonce
            return nonce


class Shared:
    """One object per key, made on first use: what accounts on one credential share."""

    def __init__(self) -> None:
        self._items: dict[str, Any] = {}

    def get(self, key: str, factory: Callable[[], T]) -> T:
        """The object for ``key``, made by ``factory`` the first time."""
        if key not in self._items:
            self._items[key] = factory()
        return cast(T, self._items[key])


@dataclass(frozen=True, slots=True)
class ProviderContext:
    """Everything a provider client is given besides its account."""

    settings: ProviderSettings
    http: Http
    clock: Clock
    nonces: Nonces
    shared: Shared
