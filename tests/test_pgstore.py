"""The PostgreSQL store's own behaviour: its password, its schema, reconnection, the lease."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from decimal import Decimal

import psycopg
import pytest
from structlog.testing import capture_logs

from tests.fakes import START, FakePolicy
from tests.pgcluster import PASSWORD, Cluster, wait_until_up
from tests.test_tracker import balances
from walletwatch.errors import StateDamaged, StoreError
from walletwatch.pgschema import SCHEMA_VERSION
from walletwatch.pgstore import PgStore, is_url, shown
from walletwatch.tracker import AccountState, observe

POLICY = FakePolicy(low_balance={"USDT": Decimal(100)})


Opener = Callable[[], PgStore]


@pytest.fixture(name="open_store")
def fixture_open_store(pg_url: str) -> Iterator[Opener]:
    """Opens stores on the test's database (replicas of one state), all closed afterwards."""
    opened: list[PgStore] = []

    def open_store() -> PgStore:
        opened.append(PgStore(pg_url, PASSWORD))
        return opened[-1]

    yield open_store
    for store in opened:
        store.close()


def commit_one(store: PgStore) -> None:
    """Commit one account's first balances."""
    state, events = observe(AccountState(), balances(USDT="1"), POLICY, START)
    store.commit("acct", "westwallet", AccountState(), state, events)


class TestPassword:
    """The password is given apart from the URL and shows nowhere."""

    def test_wrong_password_is_an_error_without_it(self, pg_url: str) -> None:
        """A refused password is a StoreError naming the database, not quoting the password."""
        with pytest.raises(StoreError) as caught:
            PgStore(pg_url, "not-" + PASSWORD)
        message = str(caught.value)
        assert message.startswith(f"{pg_url}: cannot connect to the state database")
        assert "password authentication failed" in message
        assert PASSWORD not in message
        assert caught.value.__cause__ is None  # the driver's exception is not carried along

    def test_password_in_no_repr_or_log(self, pg_url: str) -> None:
        """Neither the store's repr nor its logs carry the password."""
        with capture_logs() as logs:
            store = PgStore(pg_url, PASSWORD)
        store.close()
        assert repr(store) == f"PgStore({pg_url!r})"
        assert PASSWORD not in repr(store) + repr(store._db) + repr(logs)

    @pytest.mark.parametrize(
        ("url", "expected"),
        [
            ("postgresql://u:secret@db:5432/w", "postgresql://u:***@db:5432/w"),
            ("postgresql://u@db/w", "postgresql://u@db/w"),
            ("postgres://:secret@db/w", "postgres://:***@db/w"),
        ],
    )
    def test_shown_url_has_no_password(self, url: str, expected: str) -> None:
        """A URL shown in a message has its password replaced."""
        assert shown(url) == expected

    def test_is_url(self) -> None:
        """Both PostgreSQL schemes name a database; a path does not."""
        assert is_url("postgresql://db/w")
        assert is_url("postgres://db/w")
        assert not is_url("/var/lib/walletwatch/state.db")


class TestSchema:
    """A database that is not ours, or newer, is refused; ours opens without change."""

    def test_fresh_database_gets_the_schema(self, open_store: Opener) -> None:
        """A new database is created at the current version, and logs that it is new."""
        with capture_logs() as logs:
            open_store().close()
            store = open_store()
        assert [e["event"] for e in logs] == ["store.created"]
        version = store._db.execute("SELECT value FROM meta WHERE key='schema_version'")
        assert version.fetchone() == (str(SCHEMA_VERSION),)
        store.close()

    def test_foreign_database_is_refused(self, pg_url: str, open_store: Opener) -> None:
        """Tables that are not walletwatch's make it refuse the database, touching nothing."""
        with psycopg.connect(pg_url, password=PASSWORD, autocommit=True) as db:
            db.execute("CREATE TABLE photos (id int)")
        with pytest.raises(StateDamaged, match="not a walletwatch state database"):
            open_store()

    def test_newer_schema_is_refused(self, open_store: Opener) -> None:
        """A database from a newer walletwatch is refused, not overwritten."""
        store = open_store()
        newer = str(SCHEMA_VERSION + 1)
        store._db.execute("UPDATE meta SET value=? WHERE key='schema_version'", (newer,))
        store.close()
        with pytest.raises(StateDamaged, match="newer"):
            open_store()


class TestFencing:
    """A write needs the lease's epoch, unexpired, on the database's clock."""

    def test_follower_writes_nothing(self, open_store: Opener) -> None:
        """A store that never took the lease cannot commit or save a setting."""
        store = open_store()
        with pytest.raises(StoreError, match="not the leader"):
            commit_one(store)
        with pytest.raises(StoreError, match="not the leader"):
            store.save_meta("nonce:*", "1")
        with pytest.raises(StoreError, match="not the leader"):
            store.save_firing("am", {"key": "{}"}, ())
        assert store.load() == {}
        assert store.firing("am") == {}

    def test_one_leader_at_a_time(self, open_store: Opener) -> None:
        """A second replica cannot take a lease that has not expired; the first one writes."""
        first, second = open_store(), open_store()
        assert first.acquire("a", 30) == 1
        assert second.acquire("b", 30) is None
        commit_one(first)
        assert second.load().keys() == {"acct"}

    def test_old_leader_is_fenced_after_takeover(self, open_store: Opener) -> None:
        """Once its lease lapsed and another took it, the old leader's commit and renewal fail."""
        old, new = open_store(), open_store()
        assert old.acquire("a", 0.3) == 1
        assert new.acquire("b", 30) is None
        time.sleep(0.4)  # the database's clock decides: no fake clock reaches it
        assert new.acquire("b", 30) == 2
        with pytest.raises(StoreError, match=r"not the leader: the lease \(epoch 1\)"):
            commit_one(old)
        assert old.renew(30) is False
        assert old.epoch is None
        commit_one(new)

    def test_expired_lease_is_not_revived(self, open_store: Opener) -> None:
        """A lease that lapsed unrenewed is not its holder's any more, even if nobody took it."""
        store = open_store()
        assert store.acquire("a", 0.2) == 1
        time.sleep(0.3)
        with pytest.raises(StoreError, match="not the leader"):
            commit_one(store)
        assert store.renew(30) is False
        assert store.acquire("a", 30) == 2

    def test_release_lets_another_lead_at_once(self, open_store: Opener) -> None:
        """A released lease is free once its grace is over."""
        first, second = open_store(), open_store()
        assert first.acquire("a", 30) == 1
        first.release(0)
        assert first.epoch is None
        assert second.acquire("b", 30) == 2


class TestReconnect:
    """A restarted database costs the calls made while it was down, nothing more."""

    def test_calls_resume_after_a_restart(self, pg_cluster: Cluster, open_store: Opener) -> None:
        """The store connects again on its own after the server restarted."""
        store = open_store()
        assert store.acquire("a", 60) == 1
        pg_cluster.restart()
        wait_until_up(pg_cluster)
        with pytest.raises(StoreError):  # the connection the restart cut
            commit_one(store)
        commit_one(store)
        assert store.load().keys() == {"acct"}
        assert store.renew(60) is True
