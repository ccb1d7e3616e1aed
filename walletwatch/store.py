"""SQLite state: accounts, transfers, balances and the event outbox, one transaction a poll.

The database runs in WAL mode with ``synchronous=FULL``: an event is in the outbox only if
the state that produced it is durable, and sinks read the outbox only after the commit, so a
crash can neither lose a fact nor announce one twice. All calls are synchronous; ``AsyncStore``
runs them on one worker thread so the event loop never waits on the disk.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar

from walletwatch.errors import WalletwatchError
from walletwatch.events import Event
from walletwatch.model import Balance, Direction, State, Transfer
from walletwatch.tracker import AccountState, Total, TrackedBalance, TrackedTransfer

SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS accounts (
    name TEXT PRIMARY KEY,
    provider TEXT NOT NULL,
    state TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS transfers (
    account TEXT NOT NULL,
    direction TEXT NOT NULL,
    id TEXT NOT NULL,
    currency TEXT NOT NULL,
    amount TEXT NOT NULL,
    fee TEXT,
    address TEXT,
    txid TEXT,
    status TEXT NOT NULL,
    state TEXT NOT NULL,
    confirmations INTEGER,
    created_at REAL,
    updated_at REAL,
    first_seen REAL NOT NULL,
    revision INTEGER NOT NULL,
    stuck INTEGER NOT NULL,
    settled TEXT NOT NULL,
    details TEXT NOT NULL,
    PRIMARY KEY (account, direction, id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS balances (
    account TEXT NOT NULL,
    currency TEXT NOT NULL,
    available TEXT NOT NULL,
    pending TEXT,
    low INTEGER NOT NULL,
    changes INTEGER NOT NULL,
    low_crossings INTEGER NOT NULL,
    PRIMARY KEY (account, currency)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS outbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id TEXT NOT NULL UNIQUE,
    account TEXT NOT NULL,
    body TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS cursors (sink TEXT PRIMARY KEY, seq INTEGER NOT NULL);
"""


class StoreError(WalletwatchError):
    """The state database cannot be read or written."""


T = TypeVar("T")


class Store:
    """Synchronous access to the state database (use from one thread)."""

    def __init__(self, path: Path) -> None:
        try:
            self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute("PRAGMA busy_timeout=5000")
            with self._transaction():
                for statement in _SCHEMA.split(";"):
                    if statement.strip():
                        self._db.execute(statement)
                version = self._db.execute(
                    "SELECT value FROM meta WHERE key='schema_version'"
                ).fetchone()
                if version is None:
                    self._db.execute(
                        "INSERT INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),)
                    )
                elif int(version[0]) > SCHEMA_VERSION:
                    raise StoreError(
                        f"{path}: state schema version {version[0]} is newer than this "
                        f"walletwatch understands ({SCHEMA_VERSION})"
                    )
        except sqlite3.DatabaseError as err:
            raise StoreError(f"{path}: cannot open state database: {err}") from err

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def close(self) -> None:
        """Close the database."""
        self._db.close()

    def load(self) -> dict[str, AccountState]:
        """Every account's state as last committed."""
        try:
            return self._load()
        except (sqlite3.DatabaseError, ValueError, KeyError) as err:
            raise StoreError(f"state database is unreadable: {err}") from err

    def _load(self) -> dict[str, AccountState]:
        transfers: dict[str, dict[tuple[Direction, str], TrackedTransfer]] = {}
        for row in self._db.execute("SELECT * FROM transfers"):
            tracked = _transfer_from_row(row)
            transfers.setdefault(row[0], {})[tracked.transfer.key] = tracked
        balances: dict[str, dict[str, TrackedBalance]] = {}
        for row in self._db.execute("SELECT * FROM balances"):
            balances.setdefault(row[0], {})[row[1]] = TrackedBalance(
                balance=Balance(row[1], Decimal(row[2]), _dec(row[3])),
                low=bool(row[4]),
                changes=row[5],
                low_crossings=row[6],
            )
        states = {}
        for name, _provider, body in self._db.execute("SELECT * FROM accounts"):
            states[name] = _state_from_json(
                json.loads(body), transfers.get(name, {}), balances.get(name, {})
            )
        return states

    def commit(
        self,
        account: str,
        provider: str,
        old: AccountState,
        new: AccountState,
        events: Sequence[Event],
    ) -> None:
        """Write what changed between old and new, and queue the events, atomically."""
        try:
            with self._transaction():
                self._write(account, provider, old, new, events)
        except sqlite3.Error as err:
            raise StoreError(f"cannot commit state of account {account!r}: {err}") from err

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
        if new.transfers is not old.transfers:
            rows = [
                _transfer_to_row(account, t)
                for key, t in new.transfers.items()
                if old.transfers.get(key) is not t
            ]
            db.executemany(
                "INSERT OR REPLACE INTO transfers VALUES "
                "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                rows,
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
            "INSERT OR IGNORE INTO outbox (event_id, account, body) VALUES (?, ?, ?)",
            [(e.event_id, account, e.to_json()) for e in events],
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

    def ack(self, sink: str, seq: int) -> None:
        """The sink has delivered every event up to seq."""
        self._db.execute(
            "INSERT INTO cursors VALUES (?, ?) ON CONFLICT(sink) DO UPDATE SET seq=excluded.seq",
            (sink, seq),
        )

    def start_cursor(self, sink: str) -> None:
        """A new sink starts at the end of the outbox instead of replaying history."""
        last = self._db.execute("SELECT COALESCE(MAX(seq), 0) FROM outbox").fetchone()[0]
        self._db.execute("INSERT OR IGNORE INTO cursors VALUES (?, ?)", (sink, last))

    def _cursor(self, sink: str) -> int:
        row = self._db.execute("SELECT seq FROM cursors WHERE sink=?", (sink,)).fetchone()
        return int(row[0]) if row else 0


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


def _transfer_from_row(row: Sequence[Any]) -> TrackedTransfer:
    transfer = Transfer(
        id=row[2],
        direction=Direction(row[1]),
        currency=row[3],
        amount=Decimal(row[4]),
        fee=_dec(row[5]),
        address=row[6],
        txid=row[7],
        status=row[8],
        state=State(row[9]),
        confirmations=row[10],
        created_at=row[11],
        updated_at=row[12],
        details=tuple((str(k), str(v)) for k, v in json.loads(row[17])),
    )
    return TrackedTransfer(
        transfer,
        first_seen=row[13],
        revision=row[14],
        stuck=bool(row[15]),
        settled=frozenset(State(s) for s in row[16].split(",") if s),
    )


def _state_to_json(state: AccountState) -> dict[str, Any]:
    return {
        "baselined": sorted(state.baselined),
        "failures": dict(state.failures),
        "down": state.down,
        "downs": state.downs,
        "totals": [
            [c, str(d), str(s), t.count, str(t.amount)] for (c, d, s), t in state.totals.items()
        ],
    }


def _state_from_json(
    body: Mapping[str, Any],
    transfers: Mapping[tuple[Direction, str], TrackedTransfer],
    balances: Mapping[str, TrackedBalance],
) -> AccountState:
    return AccountState(
        transfers=transfers,
        balances=balances,
        baselined=frozenset(Direction(d) for d in body["baselined"]),
        totals={
            (c, Direction(d), State(s)): Total(count, Decimal(amount))
            for c, d, s, count, amount in body["totals"]
        },
        failures=dict(body["failures"]),
        down=bool(body["down"]),
        downs=int(body["downs"]),
    )
