"""migrate-state: a SQLite state copied into PostgreSQL whole, resumably, never over another."""

from __future__ import annotations

import io
from decimal import Decimal
from pathlib import Path

import pytest

from tests.fakes import START, FakePolicy
from tests.pgcluster import PASSWORD
from tests.test_tracker import balances, history, tx
from walletwatch import migrate
from walletwatch.cli import main
from walletwatch.errors import StoreError
from walletwatch.model import Direction, State
from walletwatch.pgstore import PgStore
from walletwatch.store import Store
from walletwatch.tracker import AccountState, observe

POLICY = FakePolicy(low_balance={"USDT": Decimal(100)})


def make_state(path: Path, accounts: int = 3) -> dict[str, AccountState]:
    """A SQLite state: accounts with transfers, balances, events, a cursor and a nonce lease."""
    store = Store(path)
    for n in range(accounts):
        name = f"acct-{n}"
        state = AccountState()
        for i, obs in enumerate(
            [
                history(Direction.DEPOSIT),
                history(Direction.DEPOSIT, tx(f"{n}-1"), tx(f"{n}-2", State.OK)),
                balances(USDT=str(50 + n), BTC="0.00000001"),
            ]
        ):
            new, events = observe(state, obs, POLICY, START + i)
            store.commit(name, "westwallet", state, new, events)
            state = new
    seq = store.pending("events_file")[1][0]
    store.ack("events_file", seq)
    store.save_meta("nonce:*", "1767225600000")
    loaded = store.load()
    store.close()
    return loaded


def run(source: Path, target: str) -> str:
    """Run the migration; what it printed."""
    out = io.StringIO()
    migrate.migrate(source, target, PASSWORD, out)
    return out.getvalue()


class TestMigrate:
    """The copy is whole and verified, a rerun finishes it, another state is refused."""

    def test_copy_is_whole(self, tmp_path: Path, pg_url: str) -> None:
        """Every table arrives; the PostgreSQL store loads the same state, outbox and cursors."""
        source = tmp_path / "walletwatch.db"
        states = make_state(source)
        printed = run(source, pg_url)
        assert "verified: every table's row count and checksum match" in printed
        assert "DIFFERENT" not in printed
        assert printed.count(" ok") == len(migrate.TABLES)
        sqlite, pg = Store(source), PgStore(pg_url, PASSWORD)
        try:
            assert pg.load() == states
            assert pg.load_meta("nonce:") == {"nonce:*": "1767225600000"}
            assert pg.pending("events_file") == sqlite.pending("events_file")
            copied = pg.pending("other")
            assert copied == sqlite.pending("other")
            # The next event gets the next seq, after the copied ones.
            assert pg.acquire("test", 60) == 2
            state = pg.load()["acct-0"]
            new, events = observe(state, balances(USDT="500"), POLICY, START + 9)
            pg.commit("acct-0", "westwallet", state, new, events)
            seqs = [seq for seq, _ in pg.pending("other")]
            assert seqs == sorted(seqs)
            assert len(seqs) == len(set(seqs)) > len(copied)
        finally:
            sqlite.close()
            pg.close()

    def test_rerun_finishes_an_interrupted_copy(
        self, tmp_path: Path, pg_url: str, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A copy cut after its first batches is finished, verified, by running it again."""
        source = tmp_path / "walletwatch.db"
        states = make_state(source, accounts=6)
        monkeypatch.setattr(migrate, "BATCH", 2)
        insert, calls = migrate._insert, []

        def cut(pg: PgStore, table: str, batch: list[object]) -> None:
            calls.append(table)
            if len(calls) == 5:
                raise StoreError("connection lost (simulated)")
            insert(pg, table, batch)  # type: ignore[arg-type]

        monkeypatch.setattr(migrate, "_insert", cut)
        with pytest.raises(StoreError, match="simulated"):
            run(source, pg_url)
        monkeypatch.setattr(migrate, "_insert", insert)
        assert "verified" in run(source, pg_url)
        assert "verified" in run(source, pg_url)  # a third run only verifies again
        pg = PgStore(pg_url, PASSWORD)
        assert pg.load() == states
        pg.close()

    def test_another_state_is_refused(self, tmp_path: Path, pg_url: str) -> None:
        """A database that received one state refuses another, and a used one refuses any."""
        first, second = tmp_path / "a.db", tmp_path / "b.db"
        make_state(first, accounts=1)
        make_state(second, accounts=2)
        run(first, pg_url)
        with pytest.raises(StoreError, match="copy of another state"):
            run(second, pg_url)

    def test_a_used_database_is_refused(self, tmp_path: Path, pg_url: str) -> None:
        """A database a daemon already wrote to is not overwritten."""
        source = tmp_path / "a.db"
        make_state(source, accounts=1)
        pg = PgStore(pg_url, PASSWORD)
        pg.acquire("daemon", 60)
        pg.save_meta("nonce:*", "5")
        pg.release(0)  # it stopped
        pg.close()
        with pytest.raises(StoreError, match="already holds a walletwatch state"):
            run(source, pg_url)

    def test_refused_while_a_daemon_leads(self, tmp_path: Path, pg_url: str) -> None:
        """While a walletwatch holds the lease, nothing is copied."""
        source = tmp_path / "a.db"
        make_state(source, accounts=1)
        pg = PgStore(pg_url, PASSWORD)
        pg.acquire("host-a pid 7", 60)
        with pytest.raises(StoreError, match=r"a walletwatch leads on this database \(host-a"):
            run(source, pg_url)
        assert pg.load() == {}
        pg.close()

    def test_command_line(
        self, tmp_path: Path, pg_url: str, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """The CLI reads the password from a file and says what went wrong without it."""
        source = tmp_path / "a.db"
        make_state(source, accounts=1)
        secret = tmp_path / "pw"
        secret.write_text(PASSWORD + "\n")
        args = ["migrate-state", "--from", str(source), "--to", pg_url]
        assert main([*args, "--password-file", str(secret)]) == 0
        assert "verified" in capsys.readouterr().out
        secret.write_text("wrong\n")
        assert main([*args, "--password-file", str(secret)]) == 1
        err = capsys.readouterr().err
        assert "password authentication failed" in err
        assert "wrong" not in err.replace("went wrong", "")
        assert main(["migrate-state", "--from", str(source), "--to", "postgresql://u:pw@h/d"]) == 2
