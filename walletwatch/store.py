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
from pathlib import Path
from typing import Any

import structlog

from walletwatch.errors import StateDamaged, StateFileLost, StateLocked, StoreError
from walletwatch.events import Event
from walletwatch.migrations import MIGRATIONS, SCHEMA_VERSION
from walletwatch.outbox import Parked
from walletwatch.statelock import StateLock
from walletwatch.statesql import SqlState
from walletwatch.tracker import AccountState

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


class Store(SqlState):
    """Synchronous access to the SQLite state file (use from one thread)."""

    _db: sqlite3.Connection
    _noun = "state file"
    _errors = (sqlite3.Error,)
    _damage = (sqlite3.DatabaseError,)
    _select_transfers = _SELECT_TRANSFERS
    _select_balances = _SELECT_BALANCES
    _select_accounts = _SELECT_ACCOUNTS

    def __init__(self, path: Path) -> None:
        self.path = path
        self.where = str(path)
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

    def account_in(self, names: Sequence[str]) -> tuple[str, Any]:
        """The names as one JSON array, unpacked by SQLite's json_each."""
        return "account IN (SELECT value FROM json_each(?))", json.dumps(list(names))

    def close(self) -> None:
        """Close the database and release its lock."""
        self._db.close()
        if self._lock is not None:
            self._lock.release()

    def _fence(self) -> None:
        """Nothing to check: the file's lock (statelock) already keeps every other process out."""

    def _names(self, names: Sequence[str] | None) -> tuple[Any, ...]:
        return (None if names is None else json.dumps(list(names)),)  # NULL: every account

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
        super().commit(account, provider, old, new, events)


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
