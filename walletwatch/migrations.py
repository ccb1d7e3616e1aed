"""The state file's schema, version by version: each migration takes it one version up.

A new file is created as version 1 and migrated like any old one, so there is one way a
schema comes to be. Store opens a file, reads its version, and runs the migrations it lacks
in the same transaction that records the new version.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable

from walletwatch.events import Event

# Version 1: the first release. Frozen: a fresh file is created as version 1 and migrated.
_V1_SCHEMA = """
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


def _to_v1(db: sqlite3.Connection) -> None:
    """The first schema."""
    for statement in _V1_SCHEMA.split(";"):
        if statement.strip():
            db.execute(statement)


def _to_v2(db: sqlite3.Connection) -> None:
    """Event times in the outbox (to prune it), parked events, the accounts' prune marks."""
    db.execute("ALTER TABLE outbox ADD COLUMN ts REAL NOT NULL DEFAULT 0")
    db.executemany(
        "UPDATE outbox SET ts=? WHERE seq=?",
        [
            (Event.from_json(body).ts, seq)
            for seq, body in db.execute("SELECT seq, body FROM outbox")
        ],
    )
    db.execute(
        """CREATE TABLE parked (
            sink TEXT NOT NULL,
            seq INTEGER NOT NULL,
            event_id TEXT NOT NULL,
            reason TEXT NOT NULL,
            parked_at REAL NOT NULL,
            body TEXT NOT NULL,
            PRIMARY KEY (sink, seq)
        )"""
    )
    rows = db.execute("SELECT name, state FROM accounts").fetchall()
    for name, body in rows:
        state = json.loads(body)
        state.setdefault("pruned", {})
        db.execute("UPDATE accounts SET state=? WHERE name=?", (json.dumps(state), name))


MIGRATIONS: tuple[Callable[[sqlite3.Connection], None], ...] = (_to_v1, _to_v2)
"""MIGRATIONS[n] takes a database from version n to n + 1; append, never edit."""

SCHEMA_VERSION = len(MIGRATIONS)
