"""The operator's read-only queries of the state database: settled transfers and recent events.

They run on a connection of their own (``AsyncStore.read``), so a long listing never waits for
a poll's commit, nor a commit for it. Each takes the connection first and returns plain rows.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from typing import Any

FINAL_STATES = ("ok", "failed", "canceled")

TRANSFER_COLUMNS = (
    "account, direction, id, currency, amount, fee, address, txid, status, state, "
    "created_at, updated_at, first_seen"
)
"""What a listing reads of a transfer row, in this order (see ``final_transfers``)."""


def final_transfers(
    db: sqlite3.Connection,
    accounts: Sequence[str],
    direction: str | None,
    limit: int,
) -> list[tuple[Any, ...]]:
    """Up to ``limit`` settled transfers of ``accounts``, oldest first (TRANSFER_COLUMNS).

    Oldest means by the provider's created_at, else first seen, then account, direction and
    id, the order the live in-flight ones are merged in. The names go in as one JSON array:
    10,000 of them would pass SQLite's limit on bound parameters.
    """
    clauses = [
        f"state IN ({', '.join('?' * len(FINAL_STATES))})",
        "account IN (SELECT value FROM json_each(?))",
    ]
    params: list[Any] = [*FINAL_STATES, json.dumps(list(accounts))]
    if direction is not None:
        clauses.append("direction = ?")
        params.append(direction)
    params.append(limit)
    return db.execute(
        f"SELECT {TRANSFER_COLUMNS} FROM transfers WHERE {' AND '.join(clauses)} "  # noqa: S608 - fixed text
        "ORDER BY COALESCE(created_at, first_seen), account, direction, id LIMIT ?",
        params,
    ).fetchall()


def recent_events(db: sqlite3.Connection, after: str | None, limit: int) -> list[str] | None:
    """The bodies of up to ``limit`` events in the outbox, oldest first.

    Without ``after``, the most recent ones; with it, those queued after that event (None
    when the outbox no longer holds it: pruned, or never there).
    """
    if after is None:
        rows = db.execute("SELECT body FROM outbox ORDER BY seq DESC LIMIT ?", (limit,)).fetchall()
        return [body for (body,) in reversed(rows)]
    found = db.execute("SELECT seq FROM outbox WHERE event_id = ?", (after,)).fetchone()
    if found is None:
        return None
    rows = db.execute(
        "SELECT body FROM outbox WHERE seq > ? ORDER BY seq LIMIT ?", (found[0], limit)
    ).fetchall()
    return [body for (body,) in rows]
