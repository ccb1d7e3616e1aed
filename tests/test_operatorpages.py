"""OperatorView's listings for the status page: moving transfers, a set of accounts, an offset."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest

from tests.fakes import FakeClock, ScriptedProvider
from walletwatch.asyncstore import AsyncStore
from walletwatch.config import AccountConfig, ProviderSettings
from walletwatch.model import Direction, State, Transfer
from walletwatch.operator import MOVING, OperatorView, TransferQuery
from walletwatch.store import Store
from walletwatch.telemetry import Telemetry
from walletwatch.tracker import AccountState, TrackedTransfer
from walletwatch.watcher import AccountWatcher

SETTINGS = ProviderSettings(
    rate_limit=1.0,
    host_rate_limit=None,
    connect_timeout=5.0,
    read_timeout=10.0,
    timeout=30.0,
    max_backoff=300.0,
    max_pages=10,
)
STUCK_AFTER = 3600.0


def watcher(name: str, ages: list[float], store: AsyncStore, clock: FakeClock) -> AccountWatcher:
    """An account with one withdrawal in flight for each of ``ages`` (seconds before now)."""
    config = AccountConfig(
        name=name,
        provider="westwallet",
        base_url="https://api.example.test",
        credentials={},
        interval=30.0,
        currencies=None,
        low_balance={},
        withdrawal_stuck_after=STUCK_AFTER,
        deposit_stuck_after=6 * 3600.0,
        down_after=3,
        options={},
    )
    transfers = {}
    for n, age in enumerate(ages):
        t = Transfer(
            id=f"{name}-{n}",
            direction=Direction.WITHDRAWAL,
            currency="BTC",
            amount=Decimal("0.5"),
            status="pending",
            state=State.PENDING,
            txid=f"tx-{name}-{n}",
            created_at=clock.time() - age,
        )
        transfers[t.key] = TrackedTransfer(t, first_seen=clock.time() - age)
    return AccountWatcher(
        config,
        SETTINGS,
        ScriptedProvider(("balances",)),
        AccountState(transfers=transfers),
        store=store,
        telemetry=Telemetry(),
        clock=clock,
    )


@pytest.fixture(name="store")
def fixture_store(tmp_path: Path) -> Iterator[AsyncStore]:
    """A real state database on tmp_path."""
    store = AsyncStore(Store(tmp_path / "state.db"))
    yield store
    store.close()


def view_of(watchers: list[AccountWatcher], store: AsyncStore, clock: FakeClock) -> OperatorView:
    """The view over ``watchers``."""
    return OperatorView(lambda: watchers, lambda: store, clock)


def ids(rows: list[dict[str, object]]) -> list[object]:
    """The rows' transfer ids, in order."""
    return [row["id"] for row in rows]


class TestPageListings:
    async def test_moving_is_in_flight_without_the_stuck(self, store: AsyncStore) -> None:
        """MOVING lists the in-flight transfers not stuck, oldest first; stuck, the others."""
        clock = FakeClock()
        view = view_of([watcher("a", [7200, 60, 9000, 600], store, clock)], store, clock)
        moving, more = await view.transfers(TransferQuery(MOVING))
        assert (ids(moving), more) == (["a-3", "a-1"], False)
        assert all(row["stuck"] is False for row in moving)
        stuck, _ = await view.transfers(TransferQuery("stuck"))
        assert ids(stuck) == ["a-2", "a-0"]

    async def test_accounts_keeps_the_named_ones(self, store: AsyncStore) -> None:
        """A set of account names keeps their transfers only."""
        clock = FakeClock()
        watchers = [watcher(name, [60.0], store, clock) for name in ("a", "b", "c")]
        rows, _ = await view_of(watchers, store, clock).transfers(
            TransferQuery(accounts=frozenset({"a", "c"}))
        )
        assert ids(rows) == ["a-0", "c-0"]

    async def test_offset_passes_over_the_oldest(self, store: AsyncStore) -> None:
        """An offset leaves out that many of the oldest; more than the limit still says so."""
        clock = FakeClock()
        view = view_of([watcher("a", [50.0 - n for n in range(10)], store, clock)], store, clock)
        rows, more = await view.transfers(TransferQuery(offset=4, limit=3))
        assert (ids(rows), more) == (["a-4", "a-5", "a-6"], True)
        rows, more = await view.transfers(TransferQuery(offset=7, limit=3))
        assert (ids(rows), more) == (["a-7", "a-8", "a-9"], False)
        rows, more = await view.transfers(TransferQuery(offset=10, limit=3))
        assert (rows, more) == ([], False)

    async def test_many_runs_merge_oldest_first(self, store: AsyncStore) -> None:
        """Transfers sorted a run at a time, each cut to what the query wants, come out in one
        order, oldest first, across runs."""
        clock = FakeClock()
        watchers = [
            watcher(
                f"w{i:02d}", [float((n * 37 + i * 11) % 5000) for n in range(250)], store, clock
            )
            for i in range(20)
        ]
        view = view_of(watchers, store, clock)
        rows, more = await view.transfers(TransferQuery(limit=5000))
        ages = [row["age_seconds"] for row in rows]
        assert (len(rows), more) == (5000, False)
        assert ages == sorted(ages, reverse=True)
        window, _ = await view.transfers(TransferQuery(offset=2500, limit=100))
        assert window == rows[2500:2600]
        oldest, more = await view.transfers(TransferQuery(limit=10))  # each run cut to 11
        assert (oldest, more) == (rows[:10], True)


class TestAccountRows:
    async def test_briefs_are_the_whole_rows_fields_the_page_filters_on(
        self, store: AsyncStore
    ) -> None:
        """A brief holds provider, account, state, counts and each balance's low, as the
        whole row says them; whole rows can be asked for by name, in config order."""
        clock = FakeClock()
        watchers = [watcher(name, [7200.0, 60.0], store, clock) for name in ("a", "b", "c")]
        view = view_of(watchers, store, clock)
        whole = await view.accounts()
        briefs = await view.briefs()
        assert briefs == [
            {key: row[key] for key in ("provider", "account", "state", "in_flight", "stuck")}
            | {"balances": [{"low": b["low"]} for b in row["balances"]]}
            for row in whole
        ]
        assert briefs[0] | {"balances": []} == {
            "provider": "westwallet",
            "account": "a",
            "state": "waiting",
            "in_flight": 2,
            "stuck": 1,
            "balances": [],
        }
        assert [row["account"] for row in await view.accounts({"c", "a", "zz"})] == ["a", "c"]
