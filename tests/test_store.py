"""The SQLite store: state survives restarts exactly, events queue in the outbox once."""

from __future__ import annotations

import sqlite3
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.fakes import START, FakePolicy
from tests.test_tracker import ACTION, balances, history, replay, tx
from walletwatch.events import Event
from walletwatch.model import Direction, State
from walletwatch.store import SCHEMA_VERSION, Store, StoreError
from walletwatch.tracker import AccountState, fail, observe

POLICY = FakePolicy(low_balance={"USDT": Decimal(100)})


@pytest.fixture(name="store")
def fixture_store(tmp_path: Path) -> Store:
    """A fresh store on disk."""
    return Store(tmp_path / "state.db")


def step(
    store: Store, state: AccountState, new: AccountState, events: list[Event], account: str = "acct"
) -> AccountState:
    """Commit one tracker step."""
    store.commit(account, "westwallet", state, new, events)
    return new


class TestRoundTrip:
    """What is committed is what is loaded."""

    def test_state_round_trips(self, store: Store, tmp_path: Path) -> None:
        """Transfers, balances, totals, baselines and health come back equal."""
        state = AccountState()
        for i, obs in enumerate(
            [
                history(Direction.DEPOSIT),
                history(
                    Direction.DEPOSIT,
                    tx("1"),
                    tx("2", State.OK, created_at=None, details=(("aml_risk", "0.1"),)),
                ),
                history(Direction.DEPOSIT, tx("1", State.OK, confirmations=6)),
                balances(USDT="50", BTC="0.00000001"),
            ]
        ):
            new, events = observe(state, obs, POLICY, START + i)
            state = step(store, state, new, events)
        new, events = fail(state, "balances", "timeout", POLICY, START + 9)
        state = step(store, state, new, events)
        store.close()
        loaded = Store(tmp_path / "state.db").load()
        assert loaded == {"acct": state}

    def test_only_changed_rows_are_written(self, store: Store) -> None:
        """An unchanged transfer is not rewritten (its row keeps its old values)."""
        state, _ = observe(AccountState(), history(Direction.DEPOSIT, tx("1")), POLICY, START)
        store.commit("acct", "westwallet", AccountState(), state, [])
        # Tamper with the row: a later commit that does not touch the transfer leaves it.
        store._db.execute("UPDATE transfers SET status='tampered'")
        new, _ = observe(state, balances(BTC="1"), POLICY, START + 1)
        store.commit("acct", "westwallet", state, new, [])
        assert store.load()["acct"].transfers[(Direction.DEPOSIT, "1")].transfer.status == (
            "tampered"
        )


class TestOutbox:
    """Events are queued in commit order, once per event_id, and read per sink."""

    def test_events_queue_once(self, store: Store) -> None:
        """Committing the same event twice queues it once."""
        state, events = observe(AccountState(), balances(USDT="1"), POLICY, START)
        assert [e.event for e in events] == ["balance.low"]
        store.commit("acct", "westwallet", AccountState(), state, events)
        store.commit("acct", "westwallet", AccountState(), state, events)
        assert [e.event_id for _, e in store.pending("sink")] == [events[0].event_id]

    def test_cursor_per_sink(self, store: Store) -> None:
        """Acknowledging for one sink leaves another sink's queue as it was."""
        state, events = observe(AccountState(), balances(USDT="1"), POLICY, START)
        store.commit("acct", "westwallet", AccountState(), state, events)
        seq = store.pending("a")[-1][0]
        store.ack("a", seq)
        assert store.pending("a") == []
        assert len(store.pending("b")) == 1

    def test_event_json_round_trips(self, store: Store) -> None:
        """An event read from the outbox serializes exactly as it was written."""
        state, events = observe(AccountState(), balances(USDT="1.10"), POLICY, START)
        store.commit("acct", "westwallet", AccountState(), state, events)
        ((_, loaded),) = store.pending("a")
        assert loaded.to_json() == events[0].to_json()
        assert loaded.to_dict()["amount"] == "1.10"

    def test_failed_commit_writes_nothing(self, store: Store) -> None:
        """A commit that fails midway leaves neither state nor events behind."""
        state, events = observe(AccountState(), balances(USDT="1"), POLICY, START)
        store._db.execute("DROP TABLE outbox")
        with pytest.raises(StoreError):
            store.commit("acct", "westwallet", AccountState(), state, events)
        assert store._db.execute("SELECT COUNT(*) FROM accounts").fetchone()[0] == 0


class TestOpen:
    """Opening a state file that is not ours fails clearly."""

    def test_not_a_database(self, tmp_path: Path) -> None:
        """A file that is not SQLite is a StoreError naming the path."""
        path = tmp_path / "state.db"
        path.write_bytes(b"this is not a database" * 100)
        with pytest.raises(StoreError, match=r"state\.db"):
            Store(path)

    def test_newer_schema_is_refused(self, tmp_path: Path) -> None:
        """A state file from a newer walletwatch is refused, not overwritten."""
        path = tmp_path / "state.db"
        Store(path).close()
        db = sqlite3.connect(path)
        db.execute("UPDATE meta SET value=? WHERE key='schema_version'", (SCHEMA_VERSION + 1,))
        db.commit()
        db.close()
        with pytest.raises(StoreError, match="newer"):
            Store(path)


class TestRestart:
    """A restart at any point resumes without re-emitting or losing a fact."""

    @settings(
        max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
    )
    @given(actions=st.lists(ACTION, max_size=20), cut=st.integers(min_value=0, max_value=50))
    def test_restart_anywhere(
        self,
        tmp_path_factory: pytest.TempPathFactory,
        actions: list[tuple[Direction, int, State, str, str]],
        cut: int,
    ) -> None:
        """Stopping after any poll and reloading yields the same events as running through."""
        observations = replay(actions)
        cut = min(cut, len(observations))
        straight, straight_events = AccountState(), list[Event]()
        for i, obs in enumerate(observations):
            straight, emitted = observe(straight, obs, POLICY, START + i)
            straight_events.extend(emitted)

        path = tmp_path_factory.mktemp("restart") / "state.db"
        store = Store(path)
        state = AccountState()
        for i, obs in enumerate(observations[:cut]):
            new, events = observe(state, obs, POLICY, START + i)
            state = step(store, state, new, events)
        store.close()
        store = Store(path)
        state = store.load().get("acct", AccountState())
        for i, obs in enumerate(observations[cut:], start=cut):
            new, events = observe(state, obs, POLICY, START + i)
            state = step(store, state, new, events)
        queued = [e.event_id for _, e in store.pending("sink", limit=10_000)]
        assert queued == [e.event_id for e in straight_events]
        assert state == straight
