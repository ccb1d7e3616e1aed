"""Both state engines behind one face, for the store's contract tests: SQLite and PostgreSQL."""

from __future__ import annotations

import itertools
from pathlib import Path

from tests.pgcluster import PASSWORD, Cluster
from walletwatch.pgstore import PgStore
from walletwatch.statesql import SqlState
from walletwatch.store import Store

ENGINES = ("sqlite", "postgresql")

LEASE = 3600.0  # seconds: a contract test's store leads for its whole run


class Engine:
    """Opens stores of one engine: at a new place (a file, a database), or again at one."""

    def __init__(self, name: str, tmp: Path, cluster: Cluster | None) -> None:
        self.name = name
        self._tmp = tmp
        self._cluster = cluster
        self._count = itertools.count()
        self._opened: list[SqlState] = []

    def place(self) -> str:
        """A new, empty place for a state: a file path or a database URL."""
        if self._cluster is not None:
            return self._cluster.create()
        return str(self._tmp / f"state-{next(self._count)}.db")

    def open(self, place: str) -> SqlState:
        """A store on ``place``; a PostgreSQL one takes the lease, as a leader's does."""
        # Only the last store opened on a place writes to it, as only one process runs.
        store: SqlState
        if self._cluster is not None:
            pg = PgStore(place, PASSWORD)
            # A store opened again at a place follows a stopped one: its lease has lapsed.
            pg._db.execute("UPDATE lease SET expires='-infinity'")
            assert pg.acquire("test", LEASE) is not None
            store = pg
        else:
            store = Store(Path(place))
        self._opened.append(store)
        return store

    def close(self) -> None:
        """Close every store opened (a test may have closed some already)."""
        for store in self._opened:
            store.close()
