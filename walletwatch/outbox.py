"""The event outbox: what each sink has yet to deliver, its cursor, and what it refused.

Events enter the outbox in the transaction that commits the state which produced them
(``Store.commit``); these are the queries the sinks make of it, a part of ``Store``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import ClassVar

from walletwatch.errors import StoreError
from walletwatch.events import Event
from walletwatch.types import SqlConnection


class SqlAccess(ABC):
    """What the store's query mixins (the outbox, walletwatch.firing) are given: the store's
    connection, its engine's errors, its write transaction and its fence."""

    _db: SqlConnection
    _errors: ClassVar[tuple[type[Exception], ...]]
    """The engine's errors: a statement or the connection failed."""

    @abstractmethod
    def _transaction(self) -> AbstractContextManager[None]:
        """One write transaction on ``_db`` (the Store's)."""

    @abstractmethod
    def _fence(self) -> None:
        """Inside a write's transaction: raise StoreError if this process may not write.

        A shared state (PostgreSQL) allows writes to the lease's holder only; a cursor moved
        by a replica that no longer leads could move back what the leader moved on.
        """


class Outbox(SqlAccess):
    """The outbox's queries, on the store's connection (either engine's store is one)."""

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
        except self._errors as err:
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
        except self._errors as err:
            raise StoreError(f"cannot count the outbox: {err}") from err

    def ack(self, sink: str, seq: int) -> None:
        """The sink has delivered every event up to seq."""
        try:
            with self._transaction():
                self._fence()
                self._set_cursor(sink, seq)
        except self._errors as err:
            raise StoreError(f"cannot move the cursor of sink {sink!r}: {err}") from err

    def _set_cursor(self, sink: str, seq: int) -> None:
        self._db.execute(
            "INSERT INTO cursors (sink, seq) VALUES (?, ?) "
            "ON CONFLICT (sink) DO UPDATE SET seq=excluded.seq",
            (sink, seq),
        )

    def park(self, sink: str, seq: int, event: Event, reason: str, now: float) -> None:
        """The sink refused the event at seq for good: keep it aside and move past it."""
        try:
            with self._transaction():
                self._fence()
                self._db.execute(
                    "INSERT INTO parked (sink, seq, event_id, reason, parked_at, body) "
                    "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (sink, seq) DO UPDATE SET "
                    "event_id=excluded.event_id, reason=excluded.reason, "
                    "parked_at=excluded.parked_at, body=excluded.body",
                    (sink, seq, event.event_id, reason, now, event.to_json()),
                )
                self._set_cursor(sink, seq)
        except self._errors as err:
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
                self._fence()
                gone = self._db.execute(
                    "DELETE FROM outbox WHERE seq <= ? AND ts < ?", (passed, before)
                ).rowcount
                self._db.execute("DELETE FROM parked WHERE parked_at < ?", (before,))
        except self._errors as err:
            raise StoreError(f"cannot prune the outbox: {err}") from err
        return int(gone)

    def start_cursor(self, sink: str) -> None:
        """A new sink starts at the end of the outbox instead of replaying history."""
        last = self._db.execute("SELECT COALESCE(MAX(seq), 0) FROM outbox").fetchone()[0]
        self._db.execute(
            "INSERT INTO cursors (sink, seq) VALUES (?, ?) ON CONFLICT (sink) DO NOTHING",
            (sink, last),
        )

    def _cursor(self, sink: str) -> int:
        row = self._db.execute("SELECT seq FROM cursors WHERE sink=?", (sink,)).fetchone()
        return int(row[0]) if row else 0


@dataclass(frozen=True, slots=True)
class Parked:
    """An event a sink refused for good, kept for the operator."""

    seq: int
    event: Event
    reason: str
    parked_at: float
