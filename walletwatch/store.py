"""SQLite state: accounts, transfers, balances and the event outbox, one transaction a poll.

The database runs in WAL mode with ``synchronous=FULL``: an event is in the outbox only if
the state that produced it is durable, and sinks read the outbox only after the commit, so a
crash can neither lose a fact nor announce one twice. All calls are synchronous; ``AsyncStore``
(walletwatch.asyncstore) runs them on one worker thread so the event loop never waits on the
disk.

The schema carries a version. A file of an older version is migrated in one transaction when
it is opened; a damaged, foreign or newer file is refused with a StoreError naming it, never
reset behind the operator's back (``set_aside`` is what ``walletwatch run --reset-state`` uses).

One state belongs to one process: a Store holds an exclusive ``flock`` on ``<path>.lock`` for
as long as it is open (walletwatch.statelock), and a second Store on the same path is refused
with a StateLocked naming the holder. A Store also remembers which file it opened, and refuses to
commit once the path names another file or none (``check_file``): writes to a deleted file
are lost at the next start. Only a poll's commit is refused: the sinks go on delivering what
was committed before the loss (moving their cursors in the old file changes nothing a new
file would hold), and a nonce lease kept in the old file only lowers the floor of the next
start's nonces, which are taken from the clock anyway.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from decimal import Decimal
from pathlib import Path
from typing import Any

import structlog

from walletwatch.errors import StateDamaged, StateFileLost, StateLocked, StoreError
from walletwatch.events import Event
from walletwatch.firing import Firing
from walletwatch.migrations import MIGRATIONS, SCHEMA_VERSION
from walletwatch.model import Balance, Direction, Transfer
from walletwatch.outbox import Outbox, Parked
from walletwatch.rows import (
    changed,
    optional_decimal,
    optional_text,
    state_from_json,
    state_to_json,
    transfer_from_row,
    transfer_to_row,
)
from walletwatch.statelock import StateLock
from walletwatch.tracker import (
    AccountState,
    Settled,
    TrackedBalance,
    TrackedTransfer,
    compact,
    prune_floors,
)

log = structlog.get_logger("walletwatch.store")


__all__ = [
    "SCHEMA_VERSION",
    "Parked",
    "StateFileLost",
    "StateLock",
    "StateLocked",
    "Store",
    "StoreError",
    "set_aside",
]

MEMORY = Path(":memory:")
"""The path of a throwaway in-memory state (``walletwatch once``): no file, no lock."""


# ?1 is NULL for every account, else the names wanted as one JSON array.
_SELECT_TRANSFERS = (
    "SELECT * FROM transfers WHERE ?1 IS NULL OR account IN (SELECT value FROM json_each(?1))"
)
_SELECT_BALANCES = (
    "SELECT * FROM balances WHERE ?1 IS NULL OR account IN (SELECT value FROM json_each(?1))"
)
_SELECT_ACCOUNTS = (
    "SELECT * FROM accounts WHERE ?1 IS NULL OR name IN (SELECT value FROM json_each(?1))"
)


class Store(Outbox, Firing):
    """Synchronous access to the state database (use from one thread)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = None if path == MEMORY else StateLock(path)
        try:
            self._open(path)
        except BaseException:
            if self._lock is not None:
                self._lock.release()
            raise

    def _open(self, path: Path) -> None:
        created = path != MEMORY and not path.exists()
        try:
            self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        except sqlite3.Error as err:
            raise StoreError(f"{path}: cannot open the state file: {err}") from err
        try:
            self._db.execute("PRAGMA busy_timeout=5000")
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._check_integrity()
            with self._transaction():
                old = self._migrate()
        except sqlite3.OperationalError as err:  # locked, read-only, I/O: the file may be fine
            self._db.close()
            raise StoreError(f"{path}: cannot use the state file: {err}") from err
        except (sqlite3.Error, ValueError, KeyError, TypeError) as err:
            self._db.close()
            raise StateDamaged(f"{path}: cannot use the state file: {err}") from err
        except StoreError:
            self._db.close()
            raise
        if 0 < old < SCHEMA_VERSION:
            log.info("store.migrated", path=str(path), old_version=old, version=SCHEMA_VERSION)
        self._identity = None if path == MEMORY else _identity(path)
        if created:
            log.warning(
                "store.created",
                path=str(path),
                note="a new, empty state: every account takes a silent baseline, so deposits, "
                "withdrawals and balance changes from before this start are not announced",
            )

    def check_file(self) -> None:
        """Raise StateFileLost unless the path still names the file this Store opened."""
        if self._identity is None:
            return
        try:
            now = _identity(self.path)
        except FileNotFoundError:
            raise StateFileLost(f"{self.path}: the state file was removed") from None
        except OSError as err:
            raise StateFileLost(f"{self.path}: cannot stat the state file: {err}") from err
        if now != self._identity:
            raise StateFileLost(f"{self.path}: the state file was replaced by another file")

    def _check_integrity(self) -> None:
        """Refuse a damaged file before anything is read from it or written to it."""
        problems = [row[0] for row in self._db.execute("PRAGMA quick_check(5)")]
        if problems != ["ok"]:
            raise StateDamaged(f"{self.path}: the state file is damaged: {'; '.join(problems)}")

    def _migrate(self) -> int:
        """Bring the schema to SCHEMA_VERSION and return the version the file had.

        A file that is not ours, or is newer, is refused.
        """
        tables = {row[0] for row in self._db.execute("SELECT name FROM sqlite_master")}
        if "meta" in tables:
            row = self._db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
            version = int(row[0]) if row is not None else None
        else:
            version = 0 if not tables else None
        if version is None:
            raise StateDamaged(f"{self.path}: not a walletwatch state file")
        if version > SCHEMA_VERSION:
            raise StateDamaged(
                f"{self.path}: state schema version {version} is newer than this "
                f"walletwatch understands ({SCHEMA_VERSION})"
            )
        for migrate in MIGRATIONS[version:]:
            migrate(self._db)
        if version < SCHEMA_VERSION:
            self._db.execute(
                "INSERT OR REPLACE INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),)
            )
        return version

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        """BEGIN IMMEDIATE ... COMMIT; on any failure, COMMIT included, nothing is kept."""
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield
            self._db.execute("COMMIT")
        except BaseException:
            # A failed COMMIT (a full disk) can leave the transaction open: end it, or every
            # later BEGIN would fail too.
            if self._db.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    self._db.execute("ROLLBACK")
            raise

    def reader(self) -> sqlite3.Connection | None:
        """A new read-only connection to the file (WAL lets it read beside the writes); None
        for an in-memory state, which only this Store's connection can see."""
        if self.path == MEMORY:
            return None
        try:
            db = sqlite3.connect(
                self.path.resolve().as_uri() + "?mode=ro", uri=True, check_same_thread=False
            )
            db.execute("PRAGMA busy_timeout=5000")
        except sqlite3.Error as err:
            raise StoreError(f"{self.path}: cannot open the state file to read: {err}") from err
        return db

    @property
    def connection(self) -> sqlite3.Connection:
        """The Store's own connection, for read-only queries made on the Store's thread."""
        return self._db

    def close(self) -> None:
        """Close the database and release its lock."""
        self._db.close()
        if self._lock is not None:
            self._lock.release()

    def load(self, names: Sequence[str] | None = None) -> dict[str, AccountState]:
        """Every account's state as last committed, or only those of the accounts ``names``."""
        try:
            return self._load(names)
        except (sqlite3.DatabaseError, ValueError, KeyError, TypeError) as err:
            raise StateDamaged(f"{self.path}: the state file is unreadable: {err!r}") from err

    def _load(self, names: Sequence[str] | None) -> dict[str, AccountState]:
        # A reload loads only the accounts it starts: reading all 10,000 would hold the GIL
        # against the event loop for seconds to build states it throws away.
        args = (None if names is None else json.dumps(list(names)),)  # NULL: every account
        whole: dict[str, dict[tuple[Direction, str], TrackedTransfer]] = {}
        settled: dict[str, dict[Direction, dict[str, Settled]]] = {}
        shared: dict[object, Any] = {}
        for row in self._db.execute(_SELECT_TRANSFERS, args):
            tracked = transfer_from_row(row, shared)
            t = tracked.transfer
            if t.state.final:
                entry = compact(tracked)
                settled.setdefault(row[0], {}).setdefault(t.direction, {})[t.id] = entry
            else:
                whole.setdefault(row[0], {})[t.key] = tracked
        balances: dict[str, dict[str, TrackedBalance]] = {}
        for row in self._db.execute(_SELECT_BALANCES, args):
            balances.setdefault(row[0], {})[row[1]] = TrackedBalance(
                balance=Balance(row[1], Decimal(row[2]), optional_decimal(row[3])),
                low=bool(row[4]),
                changes=row[5],
                low_crossings=row[6],
            )
        states = {}
        for name, _provider, body in self._db.execute(_SELECT_ACCOUNTS, args):
            state = state_from_json(
                json.loads(body), whole.get(name, {}), settled.get(name, {}), balances.get(name, {})
            )
            states[name] = prune_floors(state)
        return states

    def commit(
        self,
        account: str,
        provider: str,
        old: AccountState,
        new: AccountState,
        events: Sequence[Event],
    ) -> None:
        """Write what changed between old and new, and queue the events, atomically.

        Refused (StateFileLost) while the path does not name the file this Store opened.
        """
        self.check_file()
        try:
            with self._transaction():
                self._write(account, provider, old, new, events)
        except sqlite3.Error as err:
            raise StoreError(f"cannot commit state of account {account!r}: {err}") from err
        except Exception as err:  # a value SQLite cannot take (a bug past parsing): same fate
            raise StoreError(
                f"cannot commit state of account {account!r}: {type(err).__name__}: {err}"
            ) from err

    def _write(
        self,
        account: str,
        provider: str,
        old: AccountState,
        new: AccountState,
        events: Sequence[Event],
    ) -> None:
        db = self._db
        db.execute(
            "INSERT OR REPLACE INTO accounts VALUES (?, ?, ?)",
            (account, provider, json.dumps(state_to_json(new))),
        )
        if new.transfers is not old.transfers or new.settled is not old.settled:
            forgotten = [
                (account, str(d), i) for d, i in old.transfer_keys() if not new.known(d, i)
            ]
            db.executemany(
                "DELETE FROM transfers WHERE account=? AND direction=? AND id=?", forgotten
            )
            db.executemany(
                "INSERT OR REPLACE INTO transfers VALUES "
                "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [transfer_to_row(account, t) for t in changed(old, new)],
            )
        if new.balances is not old.balances:
            gone = [(account, c) for c in old.balances if c not in new.balances]
            db.executemany("DELETE FROM balances WHERE account=? AND currency=?", gone)
            db.executemany(
                "INSERT OR REPLACE INTO balances VALUES (?, ?, ?, ?, ?, ?, ?)",
                [
                    (
                        account,
                        c,
                        str(b.balance.available),
                        optional_text(b.balance.pending),
                        int(b.low),
                        b.changes,
                        b.low_crossings,
                    )
                    for c, b in new.balances.items()
                    if old.balances.get(c) is not b
                ],
            )
        db.executemany(
            "INSERT OR IGNORE INTO outbox (event_id, account, body, ts) VALUES (?, ?, ?, ?)",
            [(e.event_id, account, e.to_json(), e.ts) for e in events],
        )

    def load_meta(self, prefix: str) -> dict[str, str]:
        """Every small setting whose key starts with ``prefix`` (nonce leases and the like)."""
        rows = self._db.execute(
            "SELECT key, value FROM meta WHERE substr(key, 1, ?) = ?", (len(prefix), prefix)
        )
        return dict(rows.fetchall())

    def save_meta(self, key: str, value: str) -> None:
        """Durably store one small setting."""
        try:
            with self._transaction():
                self._db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, value))
        except sqlite3.Error as err:
            raise StoreError(f"cannot save state setting {key!r}: {err}") from err

    def transfers(
        self, account: str, keys: Sequence[tuple[Direction, str]]
    ) -> dict[tuple[Direction, str], Transfer]:
        """The stored records of ``account``'s transfers ``keys`` (those it has).

        For the few settled transfers whose money fields changed (``tracker.to_look_up``):
        their compact entries in memory do not keep the values an amendment reports.
        """
        found: dict[tuple[Direction, str], Transfer] = {}
        try:
            for direction, transfer_id in keys:
                row = self._db.execute(
                    "SELECT * FROM transfers WHERE account=? AND direction=? AND id=?",
                    (account, str(direction), transfer_id),
                ).fetchone()
                if row is not None:
                    found[(direction, transfer_id)] = transfer_from_row(row, {}).transfer
        except (sqlite3.Error, ValueError, KeyError, TypeError) as err:
            raise StoreError(f"cannot read transfers of account {account!r}: {err!r}") from err
        return found


def set_aside(path: Path, stamp: str) -> Path | None:
    """Move a state file (and its WAL files) to ``<path>.reset-<stamp>``; None if there is none.

    Nothing is deleted: the old file can still be inspected or put back.
    """
    target = path.with_name(f"{path.name}.reset-{stamp}")
    if not path.exists():
        return None
    if target.exists():
        raise StoreError(f"{target} exists already; not overwriting it")
    try:
        path.rename(target)
        for suffix in ("-wal", "-shm"):  # a stale WAL must not be replayed into a new file
            companion = path.with_name(path.name + suffix)
            if companion.exists():
                companion.rename(target.with_name(target.name + suffix))
    except OSError as err:
        raise StoreError(f"cannot move {path} aside: {err.strerror or err}") from err
    return target


def _identity(path: Path) -> tuple[int, int]:
    """The (device, inode) the path names now."""
    st = path.stat()
    return st.st_dev, st.st_ino
