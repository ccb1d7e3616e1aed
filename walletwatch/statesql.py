"""The state's SQL common to both engines: an account's state and its events in, and out.

``SqlState`` holds what SQLite (walletwatch.store) and PostgreSQL (walletwatch.pgstore) do
alike: loading every account's state, committing one poll's state and events in one
transaction, the small settings of ``meta``, the outbox's queries (walletwatch.outbox) and the
Alertmanager sinks' firing alerts (walletwatch.firing).
The SQL is written once, with ``?`` placeholders and the upsert both engines understand; an
engine supplies its connection, its transaction, its errors and the few queries it says
differently (the selection of accounts by name).
"""

from __future__ import annotations

import json
from abc import abstractmethod
from collections.abc import Callable, Sequence
from decimal import Decimal
from typing import Any, ClassVar, TypeVar

from walletwatch.errors import StateDamaged, StoreError
from walletwatch.events import Event
from walletwatch.firing import Firing
from walletwatch.model import Balance, Direction, Transfer
from walletwatch.outbox import Outbox
from walletwatch.rows import (
    changed,
    optional_decimal,
    optional_text,
    state_from_json,
    state_to_json,
    transfer_from_row,
    transfer_to_row,
)
from walletwatch.tracker import (
    AccountState,
    Settled,
    TrackedBalance,
    TrackedTransfer,
    compact,
    prune_floors,
)
from walletwatch.types import SqlConnection

TRANSFER_COLUMNS = (
    *("account", "direction", "id", "currency", "amount", "fee", "address", "txid", "status"),
    *("state", "confirmations", "created_at", "updated_at", "first_seen", "revision", "stuck"),
    *("settled", "details"),
)
BALANCE_COLUMNS = ("account", "currency", "available", "pending", "low", "changes", "low_crossings")


def upsert(table: str, columns: Sequence[str], key: Sequence[str]) -> str:
    """INSERT of a whole row that replaces the row with the same key (SQLite and PostgreSQL)."""
    updates = ", ".join(f"{c}=excluded.{c}" for c in columns if c not in key)
    return (
        f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))}) "  # noqa: S608 - names are constants
        f"ON CONFLICT ({', '.join(key)}) DO UPDATE SET {updates}"
    )


T = TypeVar("T")

_UPSERT_ACCOUNT = upsert("accounts", ("name", "provider", "state"), ("name",))
_UPSERT_TRANSFER = upsert("transfers", TRANSFER_COLUMNS, ("account", "direction", "id"))
_UPSERT_BALANCE = upsert("balances", BALANCE_COLUMNS, ("account", "currency"))
_UPSERT_META = upsert("meta", ("key", "value"), ("key",))


class SqlState(Outbox, Firing):
    """An account's state and its events, committed together, on either engine."""

    where: str
    """What names this state in messages: a path, or a URL without its password."""
    _noun: ClassVar[str]
    """What the state is called in messages: the state file, the state database."""

    _damage: ClassVar[tuple[type[Exception], ...]]
    """The engine's errors that mean the stored data itself is unreadable."""
    _select_transfers: ClassVar[str]
    _select_balances: ClassVar[str]
    _select_accounts: ClassVar[str]
    """SELECT * of each table, for the account names ``_names(names)`` binds (all: None)."""

    @abstractmethod
    def _names(self, names: Sequence[str] | None) -> tuple[Any, ...]:
        """The parameters of the ``_select_*`` queries for ``names`` (None: every account)."""

    @abstractmethod
    def close(self) -> None:
        """Close the database."""

    @abstractmethod
    def reader(self) -> SqlConnection | None:
        """A new connection for read-only queries beside the writes (walletwatch.storeread);
        None when only this store's own connection can see the state."""

    @property
    def connection(self) -> SqlConnection:
        """The store's own connection, for read-only queries made on the store's thread."""
        return self._db

    @abstractmethod
    def account_in(self, names: Sequence[str]) -> tuple[str, Any]:
        """A WHERE clause that holds for a row whose ``account`` is one of ``names``, and its
        one parameter (10,000 names would pass SQLite's limit on bound parameters)."""

    def read_on(self, db: SqlConnection, query: Callable[..., T], args: Sequence[Any]) -> T:
        """``query(db, *args)``; the engine's errors raised as a StoreError."""
        try:
            return query(db, *args)
        except self._errors as err:
            raise StoreError(f"{self.where}: cannot read the {self._noun}: {err}") from err

    def load(self, names: Sequence[str] | None = None) -> dict[str, AccountState]:
        """Every account's state as last committed, or only those of the accounts ``names``."""
        unreadable: tuple[type[Exception], ...] = (*self._damage, ValueError, KeyError, TypeError)
        try:
            return self._load(names)
        except unreadable as err:
            raise StateDamaged(f"{self.where}: the {self._noun} is unreadable: {err!r}") from err
        except self._errors as err:
            raise StoreError(f"{self.where}: cannot read the {self._noun}: {err}") from err

    def _load(self, names: Sequence[str] | None) -> dict[str, AccountState]:
        # A reload loads only the accounts it starts: reading all 10,000 would hold the GIL
        # against the event loop for seconds to build states it throws away.
        args = self._names(names)
        whole: dict[str, dict[tuple[Direction, str], TrackedTransfer]] = {}
        settled: dict[str, dict[Direction, dict[str, Settled]]] = {}
        shared: dict[object, Any] = {}
        for row in self._db.execute(self._select_transfers, args):
            tracked = transfer_from_row(row, shared)
            t = tracked.transfer
            if t.state.final:
                entry = compact(tracked)
                settled.setdefault(row[0], {}).setdefault(t.direction, {})[t.id] = entry
            else:
                whole.setdefault(row[0], {})[t.key] = tracked
        balances: dict[str, dict[str, TrackedBalance]] = {}
        for row in self._db.execute(self._select_balances, args):
            balances.setdefault(row[0], {})[row[1]] = TrackedBalance(
                balance=Balance(row[1], Decimal(row[2]), optional_decimal(row[3])),
                low=bool(row[4]),
                changes=row[5],
                low_crossings=row[6],
            )
        states = {}
        for name, _provider, body in self._db.execute(self._select_accounts, args):
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
        """Write what changed between old and new, and queue the events, atomically."""
        try:
            with self._transaction():
                self._fence()
                self._write(account, provider, old, new, events)
        except StoreError:
            raise
        except self._errors as err:
            raise StoreError(f"cannot commit state of account {account!r}: {err}") from err
        except Exception as err:  # a value the engine cannot take (a bug past parsing): same fate
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
        db.execute(_UPSERT_ACCOUNT, (account, provider, json.dumps(state_to_json(new))))
        if new.transfers is not old.transfers or new.settled is not old.settled:
            forgotten = [
                (account, str(d), i) for d, i in old.transfer_keys() if not new.known(d, i)
            ]
            if forgotten:
                db.executemany(
                    "DELETE FROM transfers WHERE account=? AND direction=? AND id=?", forgotten
                )
            rows = [transfer_to_row(account, t) for t in changed(old, new)]
            if rows:
                db.executemany(_UPSERT_TRANSFER, rows)
        if new.balances is not old.balances:
            gone = [(account, c) for c in old.balances if c not in new.balances]
            if gone:
                db.executemany("DELETE FROM balances WHERE account=? AND currency=?", gone)
            rows = [
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
            ]
            if rows:
                db.executemany(_UPSERT_BALANCE, rows)
        if events:
            db.executemany(
                "INSERT INTO outbox (event_id, account, body, ts) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (event_id) DO NOTHING",
                [(e.event_id, account, e.to_json(), e.ts) for e in events],
            )

    def load_meta(self, prefix: str) -> dict[str, str]:
        """Every small setting whose key starts with ``prefix`` (nonce leases and the like)."""
        try:
            rows = self._db.execute(
                "SELECT key, value FROM meta WHERE substr(key, 1, ?) = ?", (len(prefix), prefix)
            ).fetchall()
        except self._errors as err:
            raise StoreError(f"cannot read state settings {prefix!r}: {err}") from err
        return dict(rows)

    def save_meta(self, key: str, value: str) -> None:
        """Durably store one small setting."""
        try:
            with self._transaction():
                self._fence()
                self._db.execute(_UPSERT_META, (key, value))
        except StoreError:
            raise
        except self._errors as err:
            raise StoreError(f"cannot save state setting {key!r}: {err}") from err

    def transfers(
        self, account: str, keys: Sequence[tuple[Direction, str]]
    ) -> dict[tuple[Direction, str], Transfer]:
        """The stored records of ``account``'s transfers ``keys`` (those it has).

        For the few settled transfers whose money fields changed (``tracker.to_look_up``):
        their compact entries in memory do not keep the values an amendment reports.
        """
        found: dict[tuple[Direction, str], Transfer] = {}
        failed: tuple[type[Exception], ...] = (*self._errors, ValueError, KeyError, TypeError)
        try:
            for direction, transfer_id in keys:
                row = self._db.execute(
                    "SELECT * FROM transfers WHERE account=? AND direction=? AND id=?",
                    (account, str(direction), transfer_id),
                ).fetchone()
                if row is not None:
                    found[(direction, transfer_id)] = transfer_from_row(row, {}).transfer
        except failed as err:
            raise StoreError(f"cannot read transfers of account {account!r}: {err!r}") from err
        return found
