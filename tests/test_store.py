"""The store, on SQLite and PostgreSQL: state survives restarts exactly, events queue once.

The engine-neutral tests run on both engines (the ``engine`` fixture, tests/engines.py); those
about a file (its lock, its damage, its WAL) on SQLite alone.
"""

from __future__ import annotations

import dataclasses
import gc
import json
import sqlite3
from collections.abc import Iterator, MutableMapping
from contextlib import contextmanager
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import structlog
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from structlog.testing import capture_logs

from tests.engines import Engine
from tests.fakes import START, FakeClock, FakePolicy, ScriptedProvider
from tests.test_tracker import ACTION, balances, history, replay, tx
from tests.test_web import SETTINGS, account_config
from walletwatch.asyncstore import AsyncStore
from walletwatch.events import Event
from walletwatch.model import Direction, Observation, State
from walletwatch.statesql import SqlState
from walletwatch.store import SCHEMA_VERSION, Parked, Store, StoreError, set_aside
from walletwatch.telemetry import Telemetry
from walletwatch.tracker import AccountState, fail, observe
from walletwatch.watcher import AccountWatcher

POLICY = FakePolicy(low_balance={"USDT": Decimal(100)})
ACCOUNT = dataclasses.replace(account_config("acct"), low_balance={"USDT": Decimal(100)})


@contextmanager
def captured_logs() -> Iterator[list[MutableMapping[str, Any]]]:
    """Every log entry of the block, whatever level an earlier in-process CLI test set."""
    structlog.reset_defaults()
    with capture_logs() as logs:
        yield logs


@pytest.fixture(name="store")
def fixture_store(engine: Engine) -> SqlState:
    """A fresh store of each engine in turn."""
    return engine.open(engine.place())


@pytest.fixture(name="sqlite_store")
def fixture_sqlite_store(tmp_path: Path) -> Store:
    """A fresh SQLite store on disk."""
    return Store(tmp_path / "state.db")


def step(
    store: SqlState,
    state: AccountState,
    new: AccountState,
    events: list[Event],
    account: str = "acct",
) -> AccountState:
    """Commit one tracker step."""
    store.commit(account, "westwallet", state, new, events)
    return new


class TestRoundTrip:
    """What is committed is what is loaded."""

    def test_state_round_trips(self, engine: Engine) -> None:
        """Transfers, balances, totals, baselines and health come back equal."""
        place = engine.place()
        store = engine.open(place)
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
        loaded = engine.open(place).load()
        assert loaded == {"acct": state}

    def test_only_changed_rows_are_written(self, store: SqlState) -> None:
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


class TestCompact:
    """Settled transfers load compact, and compaction never writes a row without its data."""

    def run(
        self, store: SqlState, state: AccountState, *steps: Observation, at: float = START
    ) -> AccountState:
        """Observe and commit each step a second apart, keeping what a watcher keeps."""
        for i, obs in enumerate(steps):
            new, events = observe(state, obs, POLICY, at + i)
            state = step(store, state, new, events).saved()
        return state

    def test_a_settled_row_is_written_whole_then_left_alone(self, store: SqlState) -> None:
        """The row of a transfer that settles is complete; later steps never rewrite it."""
        page = history(Direction.DEPOSIT, tx("1", State.OK, details=(("aml_risk", "low"),)))
        state = self.run(
            store,
            AccountState(),
            history(Direction.DEPOSIT),
            history(Direction.DEPOSIT, tx("1", details=(("aml_risk", "low"),))),
            page,
        )
        rows = store._db.execute("SELECT status, state, amount, details FROM transfers")
        assert rows.fetchall() == [("ok", "ok", "1.5", '[["aml_risk", "low"]]')]
        store._db.execute("UPDATE transfers SET amount='tampered'")
        self.run(store, state, page, balances(USDT="5"), page, balances(USDT="6"), at=START + 9)
        rows = store._db.execute("SELECT status, amount FROM transfers")
        assert rows.fetchall() == [("ok", "tampered")]

    def test_loaded_settled_transfers_are_compact(self, store: SqlState) -> None:
        """A loaded state keeps only transfers in flight whole; the same page changes nothing."""
        page = history(Direction.DEPOSIT, tx("1"), tx("2", State.OK))
        self.run(store, AccountState(), page)
        loaded = store.load()["acct"]
        assert list(loaded.transfers) == [(Direction.DEPOSIT, "1")]
        assert loaded.state_of(Direction.DEPOSIT, "2") is State.OK
        entry = loaded.settled[Direction.DEPOSIT]["2"]
        gc.collect()
        assert not gc.is_tracked(entry)  # the cyclic GC never walks settled transfers
        new, events = observe(loaded, page, POLICY, START + 60)
        assert (new is loaded, events) == (True, [])

    def test_a_state_is_committed_against_its_parent(self, store: SqlState) -> None:
        """A state two steps from the one given as old is refused whole, not half written."""
        state, _ = observe(AccountState(), history(Direction.DEPOSIT), POLICY, START)
        child, _ = observe(state, history(Direction.DEPOSIT, tx("1", State.OK)), POLICY, START + 1)
        grandchild, events = observe(child.saved(), balances(USDT="5"), POLICY, START + 2)
        with pytest.raises(StoreError, match="no record of settled transfer deposit '1'"):
            store.commit("acct", "westwallet", state, grandchild, events)
        assert store.load() == {}
        assert store.pending("sink") == []


class TestOutbox:
    """Events are queued in commit order, once per event_id, and read per sink."""

    def test_events_queue_once(self, store: SqlState) -> None:
        """Committing the same event twice queues it once."""
        state, events = observe(AccountState(), balances(USDT="1"), POLICY, START)
        assert [e.event for e in events] == ["balance.low"]
        store.commit("acct", "westwallet", AccountState(), state, events)
        store.commit("acct", "westwallet", AccountState(), state, events)
        assert [e.event_id for _, e in store.pending("sink")] == [events[0].event_id]

    def test_cursor_per_sink(self, store: SqlState) -> None:
        """Acknowledging for one sink leaves another sink's queue as it was."""
        state, events = observe(AccountState(), balances(USDT="1"), POLICY, START)
        store.commit("acct", "westwallet", AccountState(), state, events)
        seq = store.pending("a")[-1][0]
        store.ack("a", seq)
        assert store.pending("a") == []
        assert len(store.pending("b")) == 1

    def test_event_json_round_trips(self, store: SqlState) -> None:
        """An event read from the outbox serializes exactly as it was written."""
        state, events = observe(AccountState(), balances(USDT="1.10"), POLICY, START)
        store.commit("acct", "westwallet", AccountState(), state, events)
        ((_, loaded),) = store.pending("a")
        assert loaded.to_json() == events[0].to_json()
        assert loaded.to_dict()["amount"] == "1.10"

    def test_failed_commit_writes_nothing(self, store: SqlState) -> None:
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
        engine: Engine,
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

        place = engine.place()
        store = engine.open(place)
        state = AccountState()
        for i, obs in enumerate(observations[:cut]):
            new, events = observe(state, obs, POLICY, START + i)
            state = step(store, state, new, events)
        store.close()
        store = engine.open(place)
        state = store.load().get("acct", AccountState())
        for i, obs in enumerate(observations[cut:], start=cut):
            new, events = observe(state, obs, POLICY, START + i)
            state = step(store, state, new, events)
        queued = [e.event_id for _, e in store.pending("sink", limit=10_000)]
        assert queued == [e.event_id for e in straight_events]
        assert state == straight


# The schema of version 1 exactly as walletwatch 0.1 wrote it, for the migration tests.
V1_DDL = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE accounts (name TEXT PRIMARY KEY, provider TEXT NOT NULL, state TEXT NOT NULL);
CREATE TABLE transfers (
    account TEXT NOT NULL, direction TEXT NOT NULL, id TEXT NOT NULL, currency TEXT NOT NULL,
    amount TEXT NOT NULL, fee TEXT, address TEXT, txid TEXT, status TEXT NOT NULL,
    state TEXT NOT NULL, confirmations INTEGER, created_at REAL, updated_at REAL,
    first_seen REAL NOT NULL, revision INTEGER NOT NULL, stuck INTEGER NOT NULL,
    settled TEXT NOT NULL, details TEXT NOT NULL, PRIMARY KEY (account, direction, id)
) WITHOUT ROWID;
CREATE TABLE balances (
    account TEXT NOT NULL, currency TEXT NOT NULL, available TEXT NOT NULL, pending TEXT,
    low INTEGER NOT NULL, changes INTEGER NOT NULL, low_crossings INTEGER NOT NULL,
    PRIMARY KEY (account, currency)
) WITHOUT ROWID;
CREATE TABLE outbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, event_id TEXT NOT NULL UNIQUE,
    account TEXT NOT NULL, body TEXT NOT NULL
);
CREATE TABLE cursors (sink TEXT PRIMARY KEY, seq INTEGER NOT NULL);
"""


def write_v1(path: Path) -> list[Event]:
    """A version-1 state file: one account, a settled deposit, a low balance, two events."""
    state, _ = observe(AccountState(), history(Direction.DEPOSIT), POLICY, START)
    state, events = observe(state, history(Direction.DEPOSIT, tx("7", State.OK)), POLICY, START + 1)
    low, more = observe(state, balances(USDT="5"), POLICY, START + 2)
    events += more
    db = sqlite3.connect(path)
    db.executescript(V1_DDL)
    db.execute("INSERT INTO meta VALUES ('schema_version', '1')")
    db.execute("INSERT INTO meta VALUES ('nonce:k', '42')")
    body = {
        "baselined": ["deposit"],
        "failures": {"deposits": 0, "balances": 0},
        "down": False,
        "downs": 0,
        "totals": [["BTC", "deposit", "ok", 1, "1.5"]],
    }
    db.execute("INSERT INTO accounts VALUES ('acct', 'westwallet', ?)", (json.dumps(body),))
    db.execute(
        "INSERT INTO transfers VALUES "
        "('acct','deposit','7','BTC','1.5',NULL,NULL,NULL,'ok','ok',0,?,NULL,?,0,0,'ok','[]')",
        (START, START + 1),
    )
    db.execute("INSERT INTO balances VALUES ('acct','USDT','5',NULL,1,0,1)")
    db.executemany(
        "INSERT INTO outbox (event_id, account, body) VALUES (?, 'acct', ?)",
        [(e.event_id, e.to_json()) for e in events],
    )
    db.execute("INSERT INTO cursors VALUES ('events_file', 1)")
    db.commit()
    db.close()
    assert low.balances["USDT"].low
    return events


def columns(db: sqlite3.Connection) -> dict[str, list[tuple[object, ...]]]:
    """Every table's columns as PRAGMA table_info gives them."""
    tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")]
    return {t: db.execute(f"PRAGMA table_info({t})").fetchall() for t in sorted(tables)}


class TestMigration:
    """A state file of an older schema is migrated in place, keeping everything it holds."""

    def test_v1_file_is_migrated(self, tmp_path: Path) -> None:
        """A version-1 file opens as the current version with state, outbox and cursors kept."""
        path = tmp_path / "state.db"
        events = write_v1(path)
        with captured_logs() as logs:
            store = Store(path)
        assert {"event": "store.migrated", "old_version": 1, "version": SCHEMA_VERSION}.items() <= (
            logs[0].items()
        )
        loaded = store.load()["acct"]
        assert loaded.state_of(Direction.DEPOSIT, "7") is State.OK
        assert loaded.balances["USDT"].low
        assert loaded.pruned == {}
        assert store.load_meta("nonce:") == {"nonce:k": "42"}
        assert [e.event_id for _, e in store.pending("events_file")] == [
            e.event_id for e in events[1:]
        ]
        assert [e.event_id for _, e in store.pending("new")] == [e.event_id for e in events]
        times = [r[0] for r in store._db.execute("SELECT ts FROM outbox ORDER BY seq")]
        assert times == pytest.approx([e.ts for e in events])
        store.close()
        assert Store(path).load()["acct"] == loaded  # and opens again without migrating

    def test_fresh_and_migrated_files_have_one_schema(self, tmp_path: Path) -> None:
        """A new file and a migrated version-1 file end with the same tables and columns."""
        write_v1(tmp_path / "old.db")
        Store(tmp_path / "old.db").close()
        Store(tmp_path / "new.db").close()
        old, new = sqlite3.connect(tmp_path / "old.db"), sqlite3.connect(tmp_path / "new.db")
        assert columns(old) == columns(new)
        version = "SELECT value FROM meta WHERE key='schema_version'"
        assert old.execute(version).fetchone() == new.execute(version).fetchone()
        assert new.execute(version).fetchone() == (str(SCHEMA_VERSION),)


class TestRefusal:
    """A state file walletwatch cannot trust stops it with a message naming the file."""

    def test_damaged_file(self, tmp_path: Path) -> None:
        """A file whose pages were overwritten is refused as damaged, never reset."""
        path = tmp_path / "state.db"
        store = Store(path)
        state = AccountState()
        for i in range(40):
            new, events = observe(
                state, history(Direction.DEPOSIT, *(tx(str(n)) for n in range(i))), POLICY, START
            )
            state = step(store, state, new, events)
        store._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        store.close()
        data = bytearray(path.read_bytes())
        data[4096 + 100 : 4096 * 3] = b"\xa5" * (4096 * 2 - 100)  # pages 2-3, header intact
        path.write_bytes(bytes(data))
        with pytest.raises(StoreError, match=r"state\.db.*(damaged|malformed)"):
            Store(path).load()
        assert path.read_bytes() == bytes(data)

    def test_foreign_database(self, tmp_path: Path) -> None:
        """An SQLite file of some other program is not taken over."""
        path = tmp_path / "state.db"
        db = sqlite3.connect(path)
        db.execute("CREATE TABLE photos (id INTEGER)")
        db.commit()
        db.close()
        with pytest.raises(StoreError, match="not a walletwatch state file"):
            Store(path)
        assert sqlite3.connect(path).execute("SELECT name FROM sqlite_master").fetchall() == [
            ("photos",)
        ]

    def test_unreadable_account_state(self, store: SqlState) -> None:
        """An account row that does not parse makes load() a StoreError naming the file."""
        state, events = observe(AccountState(), balances(USDT="1"), POLICY, START)
        step(store, AccountState(), state, events)
        store._db.execute("UPDATE accounts SET state='{\"baselined\": 7}'")
        with pytest.raises(StoreError, match=r"(\.db|/t\d+): the state (file|database) is unr"):
            store.load()

    def test_unopenable_path(self, tmp_path: Path) -> None:
        """A path that cannot hold a database (a directory) is a StoreError, not a traceback."""
        with pytest.raises(StoreError, match="cannot"):
            Store(tmp_path)


class TestFullDisk:
    """A commit that runs out of space fails whole, loudly, and leaves the store usable."""

    def test_full_disk_commit_leaves_nothing(self, sqlite_store: Store) -> None:
        """SQLITE_FULL mid-commit: StoreError, nothing of the step kept, next commit works."""
        store = sqlite_store
        state, events = observe(AccountState(), balances(USDT="500"), POLICY, START)
        state = step(store, AccountState(), state, events)
        before = store.load()
        new, events = observe(
            state,
            history(
                Direction.DEPOSIT, *(tx(str(n), details=(("memo", "x" * 900),)) for n in range(60))
            ),
            POLICY,
            START + 1,
        )
        new, more = observe(new, balances(USDT="5"), POLICY, START + 2)
        pages = store._db.execute("PRAGMA page_count").fetchone()[0]
        store._db.execute(f"PRAGMA max_page_count={pages}")  # what a full disk looks like
        with pytest.raises(StoreError, match="full"):
            store.commit("acct", "westwallet", state, new, [*events, *more])
        assert store.load() == before
        assert store.pending("sink") == []
        store._db.execute("PRAGMA max_page_count=1073741823")
        store.commit("acct", "westwallet", state, new, [*events, *more])
        assert store.load() == {"acct": new}
        assert [e.event for _, e in store.pending("sink")] == ["balance.changed", "balance.low"]

    async def test_full_disk_fails_the_poll(self, tmp_path: Path, clock: FakeClock) -> None:
        """A failed commit is a failed poll (reason store, up 0), logged once; no fact is lost.

        The failure count is a smaller write than the deposits and fits in the pages left:
        it is committed, as it would be toward account.down.
        """
        store = AsyncStore(Store(tmp_path / "state.db"))
        provider = ScriptedProvider(("deposits",))
        telemetry = Telemetry()
        watcher = AccountWatcher(
            ACCOUNT,
            SETTINGS,
            provider,
            AccountState(),
            store=store,
            telemetry=telemetry,
            clock=clock,
        )
        memo = (("memo", "x" * 900),)  # large rows: the step needs pages the disk lacks
        arrived = history(Direction.DEPOSIT, *(tx(str(n), details=memo) for n in range(60)))
        provider.answers["deposits"] += [history(Direction.DEPOSIT), arrived, arrived, arrived]
        assert (await watcher.poll("deposits")).ok
        baseline = watcher.state
        db = store.store._db
        db.execute(f"PRAGMA max_page_count={db.execute('PRAGMA page_count').fetchone()[0]}")
        with captured_logs() as logs:
            assert not (await watcher.poll("deposits")).ok
            assert [watcher.up] == [False]  # mypy would keep `up` False from here on
            assert not (await watcher.poll("deposits")).ok
        assert watcher.state.transfers is baseline.transfers
        assert watcher.state.failures == {"deposits": 2}
        assert telemetry.store_errors["westwallet"] == 2
        assert telemetry.poll_errors[("westwallet", "acct", "deposits", "store")] == 2
        assert [(e["event"], e["log_level"]) for e in logs] == [
            ("store.commit_failed", "error"),
            ("poll.failed", "warning"),
            ("store.commit_failed", "debug"),
            ("poll.failed", "debug"),
        ]
        assert "full" in logs[0]["error"]
        assert await store.call(store.store.load) == {"acct": watcher.state}
        db.execute("PRAGMA max_page_count=1073741823")
        with captured_logs() as logs:
            assert (await watcher.poll("deposits")).ok
        assert watcher.up
        assert [e["event"] for e in logs] == ["store.commit_recovered", "poll.recovered"]
        pending = await store.call(store.store.pending, "sink")
        assert [e.event for _, e in pending] == ["deposit.detected"] * 60
        store.close()


class TestHousekeeping:
    """Pruned transfers leave the file; delivered old events leave the outbox; parking."""

    def test_pruned_transfers_are_deleted(self, engine: Engine) -> None:
        """A transfer the tracker pruned is gone from the state, and so is its row."""
        place = engine.place()
        store = engine.open(place)
        state = AccountState()
        old = [tx(str(n), State.OK, created_at=START - 200 * 86400) for n in range(150)]
        new, events = observe(state, history(Direction.DEPOSIT, *old), POLICY, START)
        state = step(store, state, new, events)
        later = START + 91 * 86400
        new, events = observe(state, history(Direction.DEPOSIT, *old[:3]), POLICY, later)
        state = step(store, state, new, events)
        assert len(list(state.transfer_keys())) == 100
        count = store._db.execute("SELECT COUNT(*) FROM transfers").fetchone()[0]
        assert count == 100
        store.close()
        assert engine.open(place).load()["acct"] == state

    def test_prune_outbox_keeps_what_a_sink_still_needs(self, store: SqlState) -> None:
        """Only events older than the cut that every named sink has passed are dropped."""
        events = [
            Event("balance.low", f"id-{n}", START + n, "westwallet", "acct", {"currency": "X"})
            for n in range(6)
        ]
        store.commit("acct", "westwallet", AccountState(), AccountState(), events)
        seqs = [seq for seq, _ in store.pending("a")]
        store.ack("a", seqs[4])
        store.ack("b", seqs[2])
        assert store.prune_outbox(START + 10, ["a", "b"]) == 3
        assert [e.event_id for _, e in store.pending("b")] == ["id-3", "id-4", "id-5"]
        assert store.prune_outbox(START + 4, ["a"]) == 1  # id-3 only: id-4 is too recent
        assert [e.event_id for _, e in store.pending("b")] == ["id-4", "id-5"]
        assert store.pending_count("a") == 1
        assert store.prune_outbox(START + 10, []) == 0

    def test_park_moves_the_cursor_and_keeps_the_event(self, store: SqlState) -> None:
        """A parked event is kept with its reason and the sink's cursor moves past it."""
        state, events = observe(AccountState(), balances(USDT="1"), POLICY, START)
        step(store, AccountState(), state, events)
        ((seq, event),) = store.pending("hook")
        store.park("hook", seq, event, "HTTP 400: bad", START + 5)
        assert store.pending("hook") == []
        assert store.parked("hook") == [Parked(seq, event, "HTTP 400: bad", START + 5)]
        assert store.parked("other") == []

    def test_set_aside_moves_the_file_and_its_wal(self, tmp_path: Path) -> None:
        """--reset-state's move: the file and its WAL go aside together; nothing is deleted."""
        path = tmp_path / "state.db"
        store = Store(path)
        state, events = observe(AccountState(), balances(USDT="1"), POLICY, START)
        step(store, AccountState(), state, events)
        assert (tmp_path / "state.db-wal").exists()
        moved = set_aside(path, "20260101T000000Z")
        store.close()
        assert moved == tmp_path / "state.db.reset-20260101T000000Z"
        assert not path.exists()
        assert not (tmp_path / "state.db-wal").exists()
        assert Store(moved).load() == {"acct": state}  # the WAL went along with it
        assert Store(path).load() == {}
        assert set_aside(tmp_path / "absent.db", "x") is None
