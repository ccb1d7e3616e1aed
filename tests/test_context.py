"""Services handed to provider clients: nonces that never repeat, shared objects per key."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.fakes import FakeClock
from walletwatch.asyncstore import AsyncStore
from walletwatch.context import NONCE_LEASE_MS, Nonces, Shared
from walletwatch.store import Store


@pytest.fixture(name="store")
async def fixture_store(tmp_path: Path) -> AsyncIterator[AsyncStore]:
    """A state store on disk."""
    store = AsyncStore(Store(tmp_path / "state.db"))
    yield store
    store.close()


class TestNonces:
    """Nonces strictly increase per credential, within a run and across restarts."""

    async def test_same_millisecond(self, clock: FakeClock, store: AsyncStore) -> None:
        """Requests in one millisecond get consecutive nonces starting at the clock."""
        nonces = await Nonces.load(clock, store)
        got = [await nonces.next("k") for _ in range(3)]
        now_ms = int(clock.time() * 1000)
        assert got == [now_ms, now_ms + 1, now_ms + 2]

    async def test_clock_stepping_back(self, clock: FakeClock, store: AsyncStore) -> None:
        """A wall clock set back does not make a nonce go down."""
        nonces = await Nonces.load(clock, store)
        first = await nonces.next("k")
        clock.wall -= 3600
        assert await nonces.next("k") == first + 1

    async def test_keys_are_independent(self, clock: FakeClock, store: AsyncStore) -> None:
        """Each credential has its own sequence."""
        nonces = await Nonces.load(clock, store)
        a, b = await nonces.next("a"), await nonces.next("b")
        assert a == b

    async def test_concurrent_callers_never_share(
        self, clock: FakeClock, store: AsyncStore
    ) -> None:
        """Many concurrent requests on one key all get different nonces."""
        nonces = await Nonces.load(clock, store)
        got = await asyncio.gather(*(nonces.next("k") for _ in range(50)))
        assert len(set(got)) == 50

    async def test_restart_after_a_crash_starts_above_every_nonce(
        self, clock: FakeClock, tmp_path: Path
    ) -> None:
        """Even with the clock set back, a restarted process never reuses an old nonce."""
        path = tmp_path / "state.db"
        first = AsyncStore(Store(path))
        nonces = await Nonces.load(clock, first)
        issued = [await nonces.next("k") for _ in range(5)]
        first.close()  # no clean shutdown step exists: the lease is all that was written
        clock.wall -= 86400
        second = AsyncStore(Store(path))
        resumed = await Nonces.load(clock, second)
        assert await resumed.next("k") > max(issued)
        second.close()

    async def test_leases_are_written_once_a_minute(
        self, clock: FakeClock, store: AsyncStore
    ) -> None:
        """Within a lease no state write happens; past it one does."""
        nonces = await Nonces.load(clock, store)
        await nonces.next("k")
        lease = await store.call(store.store.load_meta, Nonces.PREFIX)
        for _ in range(100):
            clock.wall += 0.1
            await nonces.next("k")
        assert await store.call(store.store.load_meta, Nonces.PREFIX) == lease
        clock.wall += NONCE_LEASE_MS / 1000
        await nonces.next("k")
        assert await store.call(store.store.load_meta, Nonces.PREFIX) != lease

    async def test_one_lease_covers_every_key(self, clock: FakeClock, store: AsyncStore) -> None:
        """A thousand keys polled within a minute cost one lease write, not one each."""
        writes: list[str] = []
        save = store.store.save_meta

        def counted(key: str, value: str) -> None:
            writes.append(key)
            save(key, value)

        store.store.save_meta = counted  # type: ignore[method-assign]
        nonces = await Nonces.load(clock, store)
        for i in range(1000):
            clock.wall += 0.05
            await nonces.next(f"key-{i}")
        assert writes == [Nonces.LEASE]

    async def test_resumes_above_per_key_leases_of_older_versions(
        self, clock: FakeClock, store: AsyncStore
    ) -> None:
        """A state file with one lease row per key (older versions) still bounds every key."""
        old = int(clock.time() * 1000) + 3_600_000
        await store.call(store.store.save_meta, Nonces.PREFIX + "other", str(old))
        nonces = await Nonces.load(clock, store)
        assert await nonces.next("k") == old + 1


class TestShared:
    """Objects per key are made once."""

    def test_made_once_per_key(self) -> None:
        """The factory runs once per key; other keys get their own object."""
        shared = Shared()
        made: list[str] = []

        def factory() -> list[str]:
            made.append("x")
            return []

        assert shared.get("a", factory) is shared.get("a", factory)
        assert shared.get("b", factory) is not shared.get("a", factory)
        assert made == ["x", "x"]
