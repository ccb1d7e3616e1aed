"""SQLite state: accounts, transfers, balances and the event outbox, one transaction a poll.

The database runs in WAL mode with ``synchronous=FULL``: an event is in the outbox only if
the state that produced it is durable, and sinks read the outbox only after the commit, so a
crash can neither lose a fact nor announce one twice. All calls are synchronous; ``AsyncStore``
runs them on one worker thread so the event loop never waits on the disk.

The schema carries a version. A file of an older version is migrated in one transaction when
it is opened; a damaged, foreign or newer file is refused with a StoreError naming it, never
reset behind the operator's back (``set_aside`` is what ``walletwatch run --reset-state`` uses).

One state belongs to one process: a Store holds an exclusive ``flock`` on ``<path>.lock`` for
as long as it is open (the kernel drops it when the process dies, SIGKILL included), and a
second Store on the same path is refused with a StateLocked naming the holder. The lock file
is never deleted: unlinking a lock file another process may be about to lock would let two
processes each hold "the" lock. A Store also remembers which file it opened, and refuses to
commit once the path names another file or none (``check_file``): writes to a deleted file
are lost at the next start. Only a poll's commit is refused: the sinks go on delivering what
was committed before the loss (moving their cursors in the old file changes nothing a new
file would hold), and a nonce lease kept in the old file only lowers the floor of the next
start's nonces, which are taken from the clock anyway.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import os
import socket
import sqlite3
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar

import structlog

from walletwatch.errors import WalletwatchError
from walletwatch.events import Event
from walletwatch.migrations import MIGRATIONS, SCHEMA_VERSION
from walletwatch.model import Balance, Direction, State, Transfer
from walletwatch.tracker import (
    AccountState,
    Settled,
    Total,
    TrackedBalance,
    TrackedTransfer,
    compact,
    prune_floors,
    settled_set,
)

log = structlog.get_logger("walletwatch.store")


class StoreError(WalletwatchError):
    """The state database cannot be read or written."""


class StateLocked(StoreError):
    """Another running walletwatch holds the state file."""


class StateFileLost(StoreError):
    """The state file was removed or replaced under the running daemon."""


__all__ = [
    "SCHEMA_VERSION",
    "AsyncStore",
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


class StateLock:
    """An exclusive flock on ``<state_path>.lock``, holding who took it; released on close."""

    def __init__(self, path: Path) -> None:
        self.path = path.with_name(path.name + ".lock")
        try:
            # No O_TRUNC: a refused process must leave the holder's details as they are.
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as err:
            raise StoreError(
                f"{self.path}: cannot open the state's lock file: {err.strerror or err}; "
                "check that the state_path's directory exists and is writable"
            ) from err
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            holder = _holder(fd)
            os.close(fd)
            raise StateLocked(
                f"{path}: in use by another walletwatch ({holder}; lock {self.path}); "
                "stop it first, or give this config its own state_path"
            ) from err
        started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        holder_line = f"pid {os.getpid()} on {socket.gethostname()}, running since {started}\n"
        os.ftruncate(fd, 0)
        os.pwrite(fd, holder_line.encode(), 0)
        self._fd: int | None = fd

    def release(self) -> None:
        """Drop the lock (the file stays, see the module docstring)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def _holder(fd: int) -> str:
    """Who holds the lock, as its holder wrote it (read from the refused process's own fd)."""
    try:
        text = os.pread(fd, 200, 0).decode("utf-8", "replace").strip()
    except OSError:
        text = ""
    return text or "holder unknown: it is starting"


T = TypeVar("T")


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


class Store:
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
        except (sqlite3.Error, ValueError, KeyError, TypeError) as err:
            self._db.close()
            raise StoreError(f"{path}: cannot use the state file: {err}") from err
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
            raise StoreError(f"{self.path}: the state file is damaged: {'; '.join(problems)}")

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
            raise StoreError(f"{self.path}: not a walletwatch state file")
        if version > SCHEMA_VERSION:
            raise StoreError(
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
            raise StoreError(f"{self.path}: the state file is unreadable: {err!r}") from err

    def _load(self, names: Sequence[str] | None) -> dict[str, AccountState]:
        # A reload loads only the accounts it starts: reading all 10,000 would hold the GIL
        # against the event loop for seconds to build states it throws away.
        args = (None if names is None else json.dumps(list(names)),)  # NULL: every account
        whole: dict[str, dict[tuple[Direction, str], TrackedTransfer]] = {}
        settled: dict[str, dict[Direction, dict[str, Settled]]] = {}
        shared: dict[object, Any] = {}
        for row in self._db.execute(_SELECT_TRANSFERS, args):
            tracked = _transfer_from_row(row, shared)
            t = tracked.transfer
            if t.state.final:
                entry = compact(tracked)
                settled.setdefault(row[0], {}).setdefault(t.direction, {})[t.id] = entry
            else:
                whole.setdefault(row[0], {})[t.key] = tracked
        balances: dict[str, dict[str, TrackedBalance]] = {}
        for row in self._db.execute(_SELECT_BALANCES, args):
            balances.setdefault(row[0], {})[row[1]] = TrackedBalance(
                balance=Balance(row[1], Decimal(row[2]), _dec(row[3])),
                low=bool(row[4]),
                changes=row[5],
                low_crossings=row[6],
            )
        states = {}
        for name, _provider, body in self._db.execute(_SELECT_ACCOUNTS, args):
            state = _state_from_json(
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
            (account, provider, json.dumps(_state_to_json(new))),
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
                [_transfer_to_row(account, t) for t in _changed(old, new)],
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
                        _str(b.balance.pending),
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

    def pending(self, sink: str, limit: int = 500) -> list[tuple[int, Event]]:
        """Events the sink has not acknowledged yet, oldest first."""
        cursor = self._cursor(sink)
        rows = self._db.execute(
            "SELECT seq, body FROM outbox WHERE seq > ? ORDER BY seq LIMIT ?", (cursor, limit)
        ).fetchall()
        return [(seq, Event.from_json(body)) for seq, body in rows]

    def pending_count(self, sink: str) -> int:
        """How many events the sink has not acknowledged yet."""
        try:
            row = self._db.execute(
                "SELECT COUNT(*) FROM outbox WHERE seq > ?", (self._cursor(sink),)
            ).fetchone()
        except sqlite3.Error as err:
            raise StoreError(f"cannot count the outbox: {err}") from err
        return int(row[0])

    def pending_counts(self, sinks: Sequence[str]) -> dict[str, int]:
        """How many events each sink has not acknowledged yet, in one read."""
        try:
            return {
                sink: int(
                    self._db.execute(
                        "SELECT COUNT(*) FROM outbox WHERE seq > ?", (self._cursor(sink),)
                    ).fetchone()[0]
                )
                for sink in sinks
            }
        except sqlite3.Error as err:
            raise StoreError(f"cannot count the outbox: {err}") from err

    def ack(self, sink: str, seq: int) -> None:
        """The sink has delivered every event up to seq."""
        try:
            self._set_cursor(sink, seq)
        except sqlite3.Error as err:
            raise StoreError(f"cannot move the cursor of sink {sink!r}: {err}") from err

    def _set_cursor(self, sink: str, seq: int) -> None:
        self._db.execute(
            "INSERT INTO cursors VALUES (?, ?) ON CONFLICT(sink) DO UPDATE SET seq=excluded.seq",
            (sink, seq),
        )

    def park(self, sink: str, seq: int, event: Event, reason: str, now: float) -> None:
        """The sink refused the event at seq for good: keep it aside and move past it."""
        try:
            with self._transaction():
                self._db.execute(
                    "INSERT OR REPLACE INTO parked VALUES (?, ?, ?, ?, ?, ?)",
                    (sink, seq, event.event_id, reason, now, event.to_json()),
                )
                self._set_cursor(sink, seq)
        except sqlite3.Error as err:
            raise StoreError(f"cannot park an event of sink {sink!r}: {err}") from err

    def parked(self, sink: str) -> list[Parked]:
        """The events the sink refused, oldest first."""
        rows = self._db.execute(
            "SELECT seq, reason, parked_at, body FROM parked WHERE sink=? ORDER BY seq", (sink,)
        ).fetchall()
        return [Parked(seq, Event.from_json(body), reason, at) for seq, reason, at, body in rows]

    def prune_outbox(self, before: float, sinks: Sequence[str]) -> int:
        """Drop events older than ``before`` that every sink has passed; return how many."""
        if not sinks:
            return 0
        try:
            passed = min(self._cursor(sink) for sink in sinks)
            with self._transaction():
                gone = self._db.execute(
                    "DELETE FROM outbox WHERE seq <= ? AND ts < ?", (passed, before)
                ).rowcount
                self._db.execute("DELETE FROM parked WHERE parked_at < ?", (before,))
        except sqlite3.Error as err:
            raise StoreError(f"cannot prune the outbox: {err}") from err
        return int(gone)

    def start_cursor(self, sink: str) -> None:
        """A new sink starts at the end of the outbox instead of replaying history."""
        last = self._db.execute("SELECT COALESCE(MAX(seq), 0) FROM outbox").fetchone()[0]
        self._db.execute("INSERT OR IGNORE INTO cursors VALUES (?, ?)", (sink, last))

    def _cursor(self, sink: str) -> int:
        row = self._db.execute("SELECT seq FROM cursors WHERE sink=?", (sink,)).fetchone()
        return int(row[0]) if row else 0

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
                    found[(direction, transfer_id)] = _transfer_from_row(row, {}).transfer
        except (sqlite3.Error, ValueError, KeyError, TypeError) as err:
            raise StoreError(f"cannot read transfers of account {account!r}: {err!r}") from err
        return found


@dataclass(frozen=True, slots=True)
class Parked:
    """An event a sink refused for good, kept for the operator."""

    seq: int
    event: Event
    reason: str
    parked_at: float


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


class AsyncStore:
    """The Store on one worker thread, awaited from the event loop."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="store")

    async def call(self, fn: Callable[..., T], *args: Any) -> T:
        """Run a Store method on the worker; a cancelled caller does not cancel the write."""
        loop = asyncio.get_running_loop()
        return await asyncio.shield(loop.run_in_executor(self._executor, fn, *args))

    def close(self) -> None:
        """Finish queued writes and close the database."""
        self._executor.shutdown(wait=True)
        self.store.close()


def _changed(old: AccountState, new: AccountState) -> Iterator[TrackedTransfer]:
    """The whole record of every transfer new or changed between ``old`` and ``new``.

    A compact settled entry has no row data: its record comes from ``new.unsaved``, which
    holds one for every entry the step that made ``new`` wrote. An entry without one means
    ``new`` was not made from ``old`` by one tracker step; nothing incomplete is written.
    """
    for key, tracked in new.transfers.items():
        if old.transfers.get(key) is not tracked:
            yield tracked
    for direction, settled in new.settled.items():
        before = old.settled.get(direction, {})
        if settled is before:
            continue
        for transfer_id, entry in settled.items():
            if before.get(transfer_id) is entry:
                continue
            record = new.unsaved.get((direction, transfer_id))
            if record is None:
                raise StoreError(
                    f"no record of settled transfer {direction} {transfer_id!r} to write: "
                    "a state must be committed against the state it was made from"
                )
            yield record


def _identity(path: Path) -> tuple[int, int]:
    """The (device, inode) the path names now."""
    st = path.stat()
    return st.st_dev, st.st_ino


def _dec(text: str | None) -> Decimal | None:
    return None if text is None else Decimal(text)


def _str(value: Decimal | None) -> str | None:
    return None if value is None else str(value)


def _transfer_to_row(account: str, tracked: TrackedTransfer) -> tuple[Any, ...]:
    t = tracked.transfer
    return (
        account,
        str(t.direction),
        t.id,
        t.currency,
        str(t.amount),
        _str(t.fee),
        t.address,
        t.txid,
        t.status,
        str(t.state),
        t.confirmations,
        t.created_at,
        t.updated_at,
        tracked.first_seen,
        tracked.revision,
        int(tracked.stuck),
        ",".join(sorted(tracked.settled)),
        json.dumps(t.details),
    )


def _transfer_from_row(row: Sequence[Any], shared: dict[object, Any]) -> TrackedTransfer:
    """A transfers row as a whole record.

    SQLite gives a new string or float object per row: repeated values (currency, status,
    first sight) become one shared object through ``shared``.
    """
    transfer = Transfer(
        id=row[2],
        direction=Direction(row[1]),
        currency=shared.setdefault(row[3], row[3]),
        amount=Decimal(row[4]),
        fee=_dec(row[5]),
        address=row[6],
        txid=row[7],
        status=shared.setdefault(row[8], row[8]),
        state=State(row[9]),
        confirmations=row[10],
        created_at=row[11],
        updated_at=row[12],
        details=tuple((str(k), str(v)) for k, v in json.loads(row[17])),
    )
    return TrackedTransfer(
        transfer,
        first_seen=shared.setdefault(row[13], row[13]),
        revision=row[14],
        stuck=bool(row[15]),
        settled=settled_set(State(s) for s in row[16].split(",") if s),
    )


def _state_to_json(state: AccountState) -> dict[str, Any]:
    return {
        "baselined": sorted(state.baselined),
        "failures": dict(state.failures),
        "down": state.down,
        "downs": state.downs,
        "totals": [
            [c, str(d), str(s), t.count, str(t.amount), t.corrections, str(t.corrected)]
            for (c, d, s), t in state.totals.items()
        ],
        "pruned": {str(d): mark for d, mark in state.pruned.items()},
    }


def _total(fields: Sequence[Any]) -> Total:
    """A total as _state_to_json writes it; one written before corrections has none."""
    count, amount, corrections, corrected = (*fields, 0, "0")[:4]
    return Total(int(count), Decimal(amount), int(corrections), Decimal(corrected))


def _state_from_json(
    body: Mapping[str, Any],
    transfers: Mapping[tuple[Direction, str], TrackedTransfer],
    settled: Mapping[Direction, Mapping[str, Settled]],
    balances: Mapping[str, TrackedBalance],
) -> AccountState:
    return AccountState(
        transfers=transfers,
        settled=settled,
        balances=balances,
        baselined=frozenset(Direction(d) for d in body["baselined"]),
        totals={(c, Direction(d), State(s)): _total(rest) for c, d, s, *rest in body["totals"]},
        failures=dict(body["failures"]),
        down=bool(body["down"]),
        downs=int(body["downs"]),
        pruned={Direction(d): float(mark) for d, mark in body["pruned"].items()},
    )
