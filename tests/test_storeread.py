"""The operator's reads and the Alertmanager sinks' firing alerts, on SQLite and PostgreSQL.

The queries are written once for both engines; these run each on both (the ``engine``
fixture, tests/engines.py), through ``AsyncStore`` as the daemon makes them.
"""

from __future__ import annotations

import json
from decimal import Decimal

import pytest

from tests.engines import Engine
from tests.fakes import START, FakePolicy
from tests.test_tracker import balances, history, tx
from walletwatch.asyncstore import AsyncStore
from walletwatch.errors import StoreError
from walletwatch.model import Direction, State
from walletwatch.statesql import SqlState
from walletwatch.storeread import final_transfers, recent_events
from walletwatch.tracker import AccountState, observe

POLICY = FakePolicy(low_balance={"USDT": Decimal(100)})


def settle(store: SqlState, account: str, *ids: str) -> None:
    """Commit ``ids`` as deposits in flight, then as settled, with their events."""
    state = AccountState()
    for status in (State.PENDING, State.OK):
        seen = history(Direction.DEPOSIT, *(tx(i, status) for i in ids))
        new, events = observe(state, seen, POLICY, START)
        store.commit(account, "westwallet", state, new, events)
        state = new
    new, events = observe(state, balances(USDT="1"), POLICY, START + 1)
    store.commit(account, "westwallet", state, new, events)


class TestOperatorReads:
    """The API's settled transfers and recent events, read beside the writes."""

    async def test_final_transfers_of_the_chosen_accounts(self, engine: Engine) -> None:
        """Only settled transfers, only of the accounts asked for, oldest first, limited."""
        store = AsyncStore(engine.open(engine.place()))
        try:
            await store.call(settle, store.store, "a", "1", "2")
            await store.call(settle, store.store, "b", "3")
            chosen = store.store.account_in(["a"])
            rows = await store.read(final_transfers, chosen, None, 10)
            assert [(r[0], r[2], r[9]) for r in rows] == [("a", "1", "ok"), ("a", "2", "ok")]
            assert len(await store.read(final_transfers, chosen, None, 1)) == 1
            both = store.store.account_in(["a", "b"])
            assert len(await store.read(final_transfers, both, "withdrawal", 10)) == 0
            assert len(await store.read(final_transfers, both, "deposit", 10)) == 3
        finally:
            store.close()

    async def test_recent_events_and_after(self, engine: Engine) -> None:
        """The latest events oldest first; after one, those queued after it; None for a stranger."""
        store = AsyncStore(engine.open(engine.place()))
        try:
            await store.call(settle, store.store, "a", "1")
            bodies = await store.read(recent_events, None, 100)
            assert bodies, "settling a deposit queues events"
            latest = await store.read(recent_events, None, 1)
            assert latest == bodies[-1:]
            first = _event_id(bodies[0])
            assert await store.read(recent_events, first, 100) == bodies[1:]
            assert await store.read(recent_events, "no-such-event", 100) is None
        finally:
            store.close()

    async def test_a_failed_read_is_a_store_error(self, engine: Engine) -> None:
        """A query the engine refuses surfaces as a StoreError naming the state, not its own."""
        store = AsyncStore(engine.open(engine.place()))
        try:
            with pytest.raises(StoreError, match="cannot read the state"):
                await store.read(lambda db: db.execute("SELECT nothing FROM nowhere").fetchall())
        finally:
            store.close()


def _event_id(body: str) -> str:
    return str(json.loads(body)["event_id"])


class TestFiring:
    """Each sink's firing alerts: saved, dropped, kept across a restart, apart per sink."""

    def test_put_drop_and_reopen(self, engine: Engine) -> None:
        """What is put is read back; what is dropped is gone; another sink's stay untouched."""
        place = engine.place()
        store = engine.open(place)
        store.save_firing("am", {"k1": '{"a": 1}', "k2": '{"a": 2}'}, ())
        store.save_firing("other", {"k1": "{}"}, ())
        store.save_firing("am", {"k2": '{"a": 3}'}, ["k1"])
        assert store.firing("am") == {"k2": '{"a": 3}'}
        store.close()
        again = engine.open(place)
        assert again.firing("am") == {"k2": '{"a": 3}'}
        assert again.firing("other") == {"k1": "{}"}
        assert again.firing("none") == {}

    def test_a_sink_name_is_not_a_pattern(self, engine: Engine) -> None:
        """A sink called ``a%`` or ``a_`` reads its own alerts, not those of ``ab``."""
        store = engine.open(engine.place())
        store.save_firing("ab", {"k": "{}"}, ())
        assert store.firing("a%") == {}
        assert store.firing("a_") == {}
        assert store.firing("ab") == {"k": "{}"}
