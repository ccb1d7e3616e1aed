"""The operator's read-only queries of the state database: settled transfers and recent events.

They run on a connection of their own (``AsyncStore.read``), so a long listing never waits for
a poll's commit, nor a commit for it. Each takes the connection first and returns plain rows.
"""

from __future__ import annotations

from typing import Any

from walletwatch.types import SqlConnection

FINAL_STATES = ("ok", "failed", "canceled")

TRANSFER_COLUMNS = (
    "account, direction, id, currency, amount, fee, address, txid, status, state, "
    "created_at, updated_at, first_seen"
)
"""What a listing reads of a transfer row, in this order (see ``final_transfers``)."""


def final_transfers(
    db: SqlConnection,
    accounts: tuple[str, Any],
    direction: str | None,
    limit: int,
) -> list[tuple[Any, ...]]:
    """Up to ``limit`` settled transfers of some accounts, oldest first (TRANSFER_COLUMNS).

    ``accounts`` is the engine's clause and parameter choosing them (``SqlState.account_in``).
    Oldest means by the provider's created_at, else first seen, then account, direction and
    id, the order the live in-flight ones are merged in.
    """
    clauses = [f"state IN ({', '.join('?' * len(FINAL_STATES))})", accounts[0]]
    params: list[Any] = [*FINAL_STATES, accounts[1]]
    if direction is not None:
        clauses.append("direction = ?")
        params.append(direction)
    params.append(limit)
    return db.execute(
        f"SELECT {TRANSFER_COLUMNS} FROM transfers WHERE {' AND '.join(clauses)} "  # noqa: S608 - fixed text
        "ORDER BY COALESCE(created_at, first_seen), account, direction, id LIMIT ?",
        params,
    ).fetchall()


def recent_events(db: SqlConnection, after: str | None, limit: int) -> list[str] | None:
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
