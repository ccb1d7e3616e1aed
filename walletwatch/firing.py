"""The alerts each Alertmanager sink holds firing, kept in the state database.

A part of ``Store``, like the outbox: the sink writes its firing alerts here as it posts
them, so a restart re-posts those still firing and resolves those settled meanwhile. They
live in the ``meta`` table under ``alert/<sink>/<key>`` (no schema change), one JSON body
each; the sink's cursor stays in ``cursors``. The sink's updates are idempotent, so a crash
between one of these writes and the cursor's repeats nothing but the same update.
"""

from __future__ import annotations

import sqlite3
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping
from contextlib import AbstractContextManager

from walletwatch.errors import StoreError

PREFIX = "alert/"


def _prefix(sink: str) -> str:
    return f"{PREFIX}{sink}/"


class Firing(ABC):
    """The firing alerts' queries, on the Store's connection (``Store`` is one)."""

    _db: sqlite3.Connection

    @abstractmethod
    def _transaction(self) -> AbstractContextManager[None]:
        """One write transaction on ``_db`` (the Store's)."""

    def firing(self, sink: str) -> dict[str, str]:
        """The sink's alerts by key, each the JSON body it saved."""
        prefix = _prefix(sink)
        try:
            rows = self._db.execute(
                "SELECT key, value FROM meta WHERE substr(key, 1, ?) = ?", (len(prefix), prefix)
            ).fetchall()
        except sqlite3.Error as err:
            raise StoreError(f"cannot read the alerts of sink {sink!r}: {err}") from err
        return {key[len(prefix) :]: value for key, value in rows}

    def save_firing(self, sink: str, put: Mapping[str, str], drop: Iterable[str]) -> None:
        """Write the alerts ``put`` and forget those ``drop``, in one transaction."""
        prefix = _prefix(sink)
        try:
            with self._transaction():
                self._db.executemany(
                    "INSERT OR REPLACE INTO meta VALUES (?, ?)",
                    [(prefix + key, body) for key, body in put.items()],
                )
                self._db.executemany(
                    "DELETE FROM meta WHERE key = ?", [(prefix + key,) for key in drop]
                )
        except sqlite3.Error as err:
            raise StoreError(f"cannot save the alerts of sink {sink!r}: {err}") from err
