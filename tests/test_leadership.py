"""Leading on PostgreSQL: one replica at a time, a handover on release, requests gated."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import pytest

from tests.fakes import FakeClock
from tests.pgcluster import PASSWORD
from walletwatch.asyncstore import AsyncStore
from walletwatch.budget import TokenBucket
from walletwatch.clock import SystemClock
from walletwatch.errors import Unavailable
from walletwatch.http import Http
from walletwatch.leadership import RELEASE_GRACE, Leadership
from walletwatch.pgstore import PgStore
from walletwatch.store import Store
from walletwatch.telemetry import Telemetry

LEASE = 3.0


class Replica:
    """A writer store and its Leadership, recording when it leads and follows."""

    def __init__(self, url: str, holder: str) -> None:
        self.writer = PgStore(url, PASSWORD)
        self.turns: list[str] = []
        self.leading = asyncio.Event()
        self.leadership = Leadership(
            AsyncStore(PgStore(url, PASSWORD)),
            self.writer,
            SystemClock(),
            LEASE,
            on_lead=self._lead,
            on_follow=self._follow,
            holder=holder,
        )
        self.task = asyncio.create_task(self.leadership.run())

    async def _lead(self) -> None:
        self.turns.append("lead")
        self.leading.set()

    async def _follow(self) -> None:
        self.turns.append("follow")
        self.leading.clear()

    async def stop(self) -> None:
        """Release the lease, stop, close."""
        await self.leadership.release()
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)
        self.leadership.close()
        self.writer.close()


class TestLeadership:
    """One replica leads; a release hands over; the writer's epoch follows the lease."""

    async def test_one_leads_then_hands_over(self, pg_url: str) -> None:
        """The first replica leads, the second waits; after a release the second leads."""
        first = Replica(pg_url, "first")
        await asyncio.wait_for(first.leading.wait(), 5)
        second = Replica(pg_url, "second")
        await asyncio.sleep(LEASE / 2)
        assert (first.leadership.leading(), second.leadership.leading()) == (True, False)
        assert (first.writer.epoch, second.writer.epoch) == (1, None)
        await first.stop()
        loop = asyncio.get_running_loop()
        released = loop.time()
        await asyncio.wait_for(second.leading.wait(), 5)
        waited = loop.time() - released
        assert RELEASE_GRACE - 0.1 <= waited <= RELEASE_GRACE + 1.0
        assert second.writer.epoch == 2
        assert first.turns == ["lead"]
        await second.stop()

    async def test_renewal_keeps_the_lease_past_its_length(self, pg_url: str) -> None:
        """A leader that renews stays the leader well past one lease."""
        first = Replica(pg_url, "first")
        await asyncio.wait_for(first.leading.wait(), 5)
        second = Replica(pg_url, "second")
        await asyncio.sleep(LEASE * 1.5)
        assert first.leadership.leading()
        assert second.turns == []
        assert first.turns == ["lead"]
        await first.stop()
        await second.stop()

    def test_only_on_postgresql(self, tmp_path: Any) -> None:
        """A lease needs the shared database: a SQLite store is refused."""
        store = AsyncStore(Store(tmp_path / "state.db"))
        with pytest.raises(TypeError, match="PostgreSQL"):
            Leadership(
                store,
                PgStore.__new__(PgStore),
                FakeClock(),
                LEASE,
                on_lead=_nothing,
                on_follow=_nothing,
            )
        store.close()


async def _nothing() -> None:
    """A leadership callback that does nothing."""


class TestGate:
    """A request goes out only while the gate says this replica leads."""

    async def test_a_follower_sends_nothing(
        self, session: aiohttp.ClientSession, responses: Any
    ) -> None:
        """With the gate shut: Unavailable (reason store), and no request was made."""
        leading = [False]
        http = Http(
            session,
            provider="westwallet",
            # The real clock: the second request's token comes a millisecond later.
            buckets=[TokenBucket(1000.0, SystemClock())],
            telemetry=Telemetry(),
            clock=SystemClock(),
            timeout=aiohttp.ClientTimeout(total=30),
            max_backoff=60.0,
            gate=lambda: leading[0],
        )
        url = "https://api.example/wallet/balances"
        with pytest.raises(Unavailable, match="not sent: not the leader") as caught:
            await http.request("GET", url, endpoint="balances")
        assert caught.value.reason == "store"
        assert responses.requests == {}
        leading[0] = True
        responses.get(url, payload={})
        assert (await http.request("GET", url, endpoint="balances")).status == 200
