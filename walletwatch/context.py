"""What a provider client receives besides its account: services app.py builds once.

``nonces`` hands out strictly increasing nonces per credential that survive restarts;
``shared`` holds objects every account on one credential shares (an access-token cache).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar, cast

from walletwatch.asyncstore import AsyncStore
from walletwatch.configmodel import ProviderSettings
from walletwatch.http import Http
from walletwatch.types import Clock

T = TypeVar("T")

NONCE_LEASE_MS = 60_000
"""Nonces are leased a minute ahead: one state write a minute for every key together."""


class Nonces:
    """Strictly increasing millisecond nonces per credential, never reused after a restart.

    A nonce is the wall clock in milliseconds, or one more than the key's last one when two
    requests fall in the same millisecond (or the clock stepped back). One lease covers every
    key: before a nonce beyond it is handed out, a lease a minute further is committed, so a
    restart (even after a crash) starts every key above every nonce ever issued. A lease per
    key would cost a commit per key a minute, and every key is clock-based anyway.
    """

    PREFIX = "nonce:"
    LEASE = PREFIX + "*"

    def __init__(self, clock: Clock, store: AsyncStore, lease: int) -> None:
        self._clock = clock
        self._store = store
        self._floor = lease  # every nonce of an earlier run is at most this
        self._leased = lease
        self._last: dict[str, int] = {}
        self._lock = asyncio.Lock()

    @classmethod
    async def load(cls, clock: Clock, store: AsyncStore) -> Nonces:
        """Nonces resuming above every lease in the state (per-key ones of older versions too)."""
        rows = await store.call(store.store.load_meta, cls.PREFIX)
        return cls(clock, store, max((int(v) for v in rows.values()), default=0))

    async def next(self, key: str) -> int:
        """The next nonce for the credential ``key``, once a committed lease covers it."""
        nonce = max(int(self._clock.time() * 1000), self._last.get(key, self._floor) + 1)
        self._last[key] = nonce  # taken before any await: no concurrent caller gets it too
        if nonce > self._leased:
            async with self._lock:
                if nonce > self._leased:  # not covered by a lease committed while we waited
                    lease = nonce + NONCE_LEASE_MS
                    await self._store.call(self._store.store.save_meta, self.LEASE, str(lease))
                    self._leased = lease
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
