"""The watcher commits what a poll changed, and nothing when a poll changed nothing."""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

from tests.fakes import FakeClock, ScriptedProvider
from tests.test_scheduler import SETTINGS, InlineStore, account_config
from walletwatch.errors import Unavailable
from walletwatch.model import Balance, Direction, Observation, State, Transfer
from walletwatch.store import Store
from walletwatch.telemetry import Telemetry
from walletwatch.tracker import AccountState
from walletwatch.watcher import AccountWatcher


class CountingStore(InlineStore):
    """An InlineStore that counts the state commits made through it."""

    def __init__(self, store: Store) -> None:
        super().__init__(store)
        self.commits = 0

    async def call(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Count commits, then run the call here and now."""
        if fn == self.store.commit:
            self.commits += 1
        return await super().call(fn, *args)


def page(*ids: str, balance: str = "1.5") -> Observation:
    """A deposits page of settled deposits, with the account's balance."""
    transfers = tuple(
        Transfer(
            id=i,
            direction=Direction.DEPOSIT,
            currency="BTC",
            amount=Decimal("0.1"),
            status="ok",
            state=State.OK,
        )
        for i in ids
    )
    return Observation(
        "deposits",
        balances=(Balance("BTC", Decimal(balance)),),
        transfers=transfers,
        directions=frozenset({Direction.DEPOSIT}),
    )


def make_watcher(
    clock: FakeClock, provider: ScriptedProvider
) -> tuple[AccountWatcher, CountingStore]:
    """A watcher on an in-memory store that counts commits."""
    store = CountingStore(Store(Path(":memory:")))
    watcher = AccountWatcher(
        account_config(),
        SETTINGS,
        provider,
        AccountState(),
        store=store,
        telemetry=Telemetry(),
        clock=clock,
    )
    return watcher, store


class TestCommits:
    """A commit per change, none for a poll that saw what the last one saw."""

    async def test_an_unchanged_page_is_not_committed_again(self, clock: FakeClock) -> None:
        """The same page twice: the second poll succeeds without a state write."""
        provider = ScriptedProvider(("deposits",))
        provider.answers["deposits"] += [page("a", "b"), page("a", "b")]
        watcher, store = make_watcher(clock, provider)
        assert (await watcher.poll("deposits")).ok
        assert store.commits == 1
        await clock.advance(60)
        assert (await watcher.poll("deposits")).ok
        assert store.commits == 1
        assert watcher.health["deposits"].last_success == clock.time()

    async def test_news_is_committed(self, clock: FakeClock) -> None:
        """A new deposit or a new balance is written, with its events."""
        provider = ScriptedProvider(("deposits",))
        provider.answers["deposits"] += [page("a"), page("a", "b"), page("a", "b", balance="2")]
        watcher, store = make_watcher(clock, provider)
        for expected in (1, 2, 3):
            assert (await watcher.poll("deposits")).ok
            assert store.commits == expected
        events = store.store.pending("stdout")
        assert [e.event for _, e in events] == [
            "deposit.detected",
            "deposit.confirmed",
            "balance.changed",
        ]

    async def test_a_recovery_is_committed(self, clock: FakeClock) -> None:
        """After a failure the same page as before is still written: the failure count resets."""
        provider = ScriptedProvider(("deposits",))
        provider.answers["deposits"] += [page("a"), Unavailable("down"), page("a")]
        watcher, store = make_watcher(clock, provider)
        for _ in range(3):
            await watcher.poll("deposits")
        assert store.commits == 3
        assert watcher.state.failures == {"deposits": 0}


class TestHealth:
    """An endpoint's health: kept in one object, updated by every poll."""

    async def test_failure_keeps_the_last_success_and_recovery_clears_the_error(
        self, clock: FakeClock
    ) -> None:
        """A failure records its reason and keeps when the endpoint last worked; the next
        success clears the reason and the error."""
        provider = ScriptedProvider(("deposits",))
        provider.answers["deposits"] += [page("a"), Unavailable("down"), page("a")]
        watcher, _ = make_watcher(clock, provider)
        await watcher.poll("deposits")
        worked = clock.time()
        health = watcher.health["deposits"]
        await clock.advance(60)
        await watcher.poll("deposits")
        assert watcher.health["deposits"] is health  # in place: no object per poll
        assert (health.ok, health.last_success, health.reason) == (False, worked, "connection")
        assert health.error == "down"
        await clock.advance(60)
        await watcher.poll("deposits")
        again = watcher.health["deposits"]
        assert again is health
        assert (again.ok, again.last_success, again.reason, again.error) == (
            True,
            clock.time(),
            None,
            None,
        )
