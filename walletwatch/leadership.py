"""Which replica leads: the lease in the PostgreSQL state, taken, renewed and given up.

One task per replica. A follower tries to take the lease as soon as it expires (it reads
when that is, on the database's clock); the one that takes it leads with the lease's new
epoch, which every write of its store checks (fencing, walletwatch.pgstore). The leader
renews the lease every third of its length, on a connection and worker thread of its own
so that renewals never wait behind commits.

A leader that cannot renew in time steps down on its own clock: ``leading()`` turns False
``MARGIN`` before the lease can have expired on the database, counted from the moment the
last successful renewal was sent, and requests check it just before they go out
(walletwatch.http). A leader that was paused past its lease (SIGSTOP, a frozen VM) finds it
False when it resumes, before any request is sent, and its commits are refused anyway.
"""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Awaitable, Callable

import structlog

from walletwatch.asyncstore import AsyncStore
from walletwatch.configmodel import StoreConfig
from walletwatch.errors import StoreError
from walletwatch.pgstore import PgStore
from walletwatch.types import Clock

log = structlog.get_logger("walletwatch.leadership")

MARGIN = 1.0
"""Seconds before the lease's end at which a leader that could not renew stops requesting."""

RELEASE_GRACE = 1.0
"""Seconds a released lease still holds: a provider's per-second window sees the old
leader's last requests out before a new leader's first."""


def holder_name() -> str:
    """Who holds the lease, as the lease row shows it: host and process."""
    return f"{socket.gethostname()} pid {os.getpid()}"


class Leadership:
    """Takes and keeps the lease for this replica; calls ``on_lead`` and ``on_follow``."""

    def __init__(
        self,
        lease_store: AsyncStore,
        writer: PgStore,
        clock: Clock,
        lease: float,
        *,
        on_lead: Callable[[], Awaitable[None]],
        on_follow: Callable[[], Awaitable[None]],
        holder: str | None = None,
    ) -> None:
        store = lease_store.store
        if not isinstance(store, PgStore):
            raise TypeError("the lease lives in a PostgreSQL store")
        self._async = lease_store
        self._lease = store
        self._writer = writer
        self._clock = clock
        self._seconds = lease
        self._on_lead = on_lead
        self._on_follow = on_follow
        self.holder = holder or holder_name()
        self._until = float("-inf")  # monotonic: requests stop here unless renewed
        self.epoch: int | None = None
        self._unavailable = False  # the database refused the last lease call (logged once)

    @classmethod
    def open(
        cls,
        config: StoreConfig,
        writer: PgStore,
        clock: Clock,
        *,
        on_lead: Callable[[], Awaitable[None]],
        on_follow: Callable[[], Awaitable[None]],
    ) -> Leadership:
        """Leadership over ``writer``'s database, on a connection of its own."""
        password = None if config.password is None else config.password.reveal()
        lease_store = AsyncStore(PgStore(config.url, password))
        return cls(lease_store, writer, clock, config.lease, on_lead=on_lead, on_follow=on_follow)

    def close(self) -> None:
        """Close the lease's connection."""
        self._async.close()

    def leading(self) -> bool:
        """True while this replica holds the lease with time to spare (read before requests)."""
        return self.epoch is not None and self._clock.monotonic() < self._until

    async def run(self) -> None:
        """Follow, lead, step down, follow again, until cancelled."""
        try:
            while True:
                if self.epoch is None:
                    await self._clock.sleep(await self._try_to_lead())
                else:
                    await self._clock.sleep(await self._renew())
        finally:
            if self.epoch is not None:
                await self._step_down("stopped")

    async def release(self) -> None:
        """Give the lease up (clean shutdown): another may lead RELEASE_GRACE from now."""
        self.epoch = self._writer.epoch = None
        try:
            await self._async.call(self._lease.release, RELEASE_GRACE)
        except StoreError as err:  # it lapses on its own
            log.warning("lease.release_failed", error=str(err))

    async def _try_to_lead(self) -> float:
        """Take the lease if it is free; seconds until the next try."""
        sent = self._clock.monotonic()
        try:
            epoch = await self._async.call(self._lease.acquire, self.holder, self._seconds)
            left = None if epoch is not None else await self._async.call(self._lease.left)
        except StoreError as err:
            self._failed(err)
            return self._seconds / 3
        self._recovered()
        if epoch is None:
            # Right after it expires, not a full period later: a takeover within the lease
            # and a moment, however the periods fall.
            return min(max(left or 0.0, 0.0) + 0.02, self._seconds / 3)
        self._until = sent + self._seconds - MARGIN
        self.epoch = self._writer.epoch = epoch
        log.info("lease.taken", epoch=epoch, holder=self.holder)
        try:
            await self._on_lead()
        except StoreError as err:
            log.error("lease.lead_failed", epoch=epoch, error=str(err))  # noqa: TRY400
            await self._step_down("start failed")
            return self._seconds / 3
        return self._seconds / 3

    async def _renew(self) -> float:
        """Renew the lease held; step down when it is lost or cannot be renewed in time."""
        sent = self._clock.monotonic()
        budget = self._until - sent
        try:
            kept = await asyncio.wait_for(
                self._async.call(self._lease.renew, self._seconds), timeout=max(budget, 0.0)
            )
        except TimeoutError:
            await self._step_down("renewal timed out")
            return 0.0
        except StoreError as err:
            self._failed(err)
            if self._clock.monotonic() >= self._until:
                await self._step_down("could not renew")
                return 0.0
            return min(1.0, self._seconds / 6)
        self._recovered()
        if not kept or self._clock.monotonic() >= self._until:
            await self._step_down("lease lost")
            return 0.0
        self._until = sent + self._seconds - MARGIN
        return self._seconds / 3

    async def _step_down(self, why: str) -> None:
        log.warning("lease.lost", epoch=self.epoch, reason=why)
        self.epoch = self._writer.epoch = None
        self._lease.epoch = None
        self._until = float("-inf")
        await self._on_follow()

    def _failed(self, err: StoreError) -> None:
        if not self._unavailable:
            log.error("lease.unavailable", error=str(err))
        self._unavailable = True

    def _recovered(self) -> None:
        if self._unavailable:
            log.info("lease.available")
        self._unavailable = False
