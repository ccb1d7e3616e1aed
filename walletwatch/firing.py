"""The alerts each Alertmanager sink holds firing, kept in the state database.

A part of either engine's store, like the outbox: the sink writes its firing alerts here as it posts
them, so a restart re-posts those still firing and resolves those settled meanwhile. They
live in the ``meta`` table under ``alert/<sink>/<key>`` (no schema change), one JSON body
each; the sink's cursor stays in ``cursors``. The sink's updates are idempotent, so a crash
between one of these writes and the cursor's repeats nothing but the same update.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from walletwatch.errors import StoreError
from walletwatch.outbox import SqlAccess

PREFIX = "alert/"
# The upsert SQLite and PostgreSQL both understand (INSERT OR REPLACE is SQLite's alone).
_PUT = (
    "INSERT INTO meta (key, value) VALUES (?, ?) "
    "ON CONFLICT (key) DO UPDATE SET value=excluded.value"
)


def _prefix(sink: str) -> str:
    return f"{PREFIX}{sink}/"


class Firing(SqlAccess):
    """The firing alerts' queries, on the store's connection (either engine's store is one)."""

    def firing(self, sink: str) -> dict[str, str]:
        """The sink's alerts by key, each the JSON body it saved."""
        prefix = _prefix(sink)
        try:
            rows = self._db.execute(
                "SELECT key, value FROM meta WHERE substr(key, 1, ?) = ?", (len(prefix), prefix)
            ).fetchall()
        except self._errors as err:
            raise StoreError(f"cannot read the alerts of sink {sink!r}: {err}") from err
        return {key[len(prefix) :]: value for key, value in rows}

    def save_firing(self, sink: str, put: Mapping[str, str], drop: Iterable[str]) -> None:
        """Write the alerts ``put`` and forget those ``drop``, in one transaction."""
        prefix = _prefix(sink)
        try:
            with self._transaction():
                # A replica that no longer leads must not bring back what the leader resolved.
                self._fence()
                self._db.executemany(_PUT, [(prefix + key, body) for key, body in put.items()])
                self._db.executemany(
                    "DELETE FROM meta WHERE key = ?", [(prefix + key,) for key in drop]
                )
        except self._errors as err:
            raise StoreError(f"cannot save the alerts of sink {sink!r}: {err}") from err
