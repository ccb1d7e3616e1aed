"""``walletwatch migrate-state``: a SQLite state copied into PostgreSQL, resumable and verified.

The copy goes table by table in batches, each its own transaction, every row inserted only
if absent: a run that was interrupted (a crash, a cut connection, Ctrl-C) is finished by
running the same command again. The target remembers which state it receives (the source's
checksum, in ``meta``): a database that holds another state, or a partial copy of another,
is refused, never merged into. The copy holds the lease like a leader, so it cannot run
while a walletwatch leads on the target, and no walletwatch leads while it runs.

At the end every table's row count and an order-free checksum of its rows (SHA-256 of each
row as JSON, summed) are printed for both sides, and a difference fails the command.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from walletwatch.configstore import database_url
from walletwatch.errors import ConfigError, StoreError
from walletwatch.pgstore import PgStore
from walletwatch.schema import Invalid
from walletwatch.store import Store
from walletwatch.types import SqlConnection

TABLES = ("meta", "accounts", "transfers", "balances", "outbox", "cursors", "parked")
"""Every table of the state, in the order they are copied."""

BATCH = 2000
"""Rows per transaction: a few hundred kilobytes, a few milliseconds each."""

LEASE = 60.0
"""Seconds the copy holds the lease between renewals (it renews after every batch)."""

HOLDER = "walletwatch migrate-state"

_SOURCE_KEY = "migration:source"  # the checksum of the state the target receives
_DONE_KEY = "migration:done"
_OWN_META = ("schema_version", _SOURCE_KEY, _DONE_KEY)  # each side's own, never copied


@dataclass(frozen=True, slots=True)
class Tally:
    """One table's row count and order-free checksum."""

    rows: int
    checksum: int

    def __str__(self) -> str:
        return f"{self.rows:>9} rows  checksum {self.checksum:064x}"[:52]


def tally(rows: Iterable[Sequence[Any]]) -> Tally:
    """Count ``rows`` and sum the SHA-256 of each as JSON (the order does not matter)."""
    count = total = 0
    for row in rows:
        digest = hashlib.sha256(json.dumps(list(row)).encode()).digest()
        total = (total + int.from_bytes(digest, "big")) % (1 << 256)
        count += 1
    return Tally(count, total)


def _rows(db: SqlConnection, table: str) -> Iterable[Sequence[Any]]:
    rows = db.execute(f"SELECT * FROM {table}")  # noqa: S608 - a name from TABLES
    if table == "meta":
        return (row for row in rows if row[0] not in _OWN_META)
    return rows


def tallies(db: SqlConnection) -> dict[str, Tally]:
    """Every table's tally."""
    return {table: tally(_rows(db, table)) for table in TABLES}


def fingerprint(counts: dict[str, Tally]) -> str:
    """One text naming the whole state: the tallies' checksums together."""
    whole = "".join(f"{t}:{counts[t].rows}:{counts[t].checksum:x};" for t in TABLES)
    return hashlib.sha256(whole.encode()).hexdigest()


def migrate(source: Path, target: str, password: str | None, out: TextIO) -> None:
    """Copy the SQLite state at ``source`` into the PostgreSQL database ``target``."""
    sqlite = Store(source)  # its lock: no daemon may change the source meanwhile
    try:
        pg = PgStore(target, password)
        try:
            _migrate(sqlite, pg, out)
        finally:
            pg.close()
    finally:
        sqlite.close()


def _migrate(sqlite: Store, pg: PgStore, out: TextIO) -> None:
    before = tallies(sqlite._db)
    origin = fingerprint(before)
    _take_lease(pg)
    try:
        _claim(pg, origin)
        print(f"walletwatch migrate-state: {sqlite.where} -> {pg.where}", file=out)
        for table in TABLES:
            _copy(sqlite, pg, table)
        if pg._db.execute("SELECT 1 FROM outbox LIMIT 1").fetchone() is not None:
            # The next event gets the next seq: sink cursors stay meaningful.
            pg._db.execute(
                "SELECT setval(pg_get_serial_sequence('outbox', 'seq'), MAX(seq)) FROM outbox"
            )
        after = tallies(pg._db)
        for table in TABLES:
            same = "ok" if before[table] == after[table] else "DIFFERENT"
            print(f"  {table:<10} source {before[table]}", file=out)
            print(f"  {'':<10} target {after[table]}  {same}", file=out)
        if before != after:
            raise StoreError(
                f"{pg.where}: the copy differs from {sqlite.where} (see above); "
                "nothing was deleted: run the command again, or drop the database and start over"
            )
        with pg._transaction():
            pg._fence()
            pg._db.execute(
                "INSERT INTO meta (key, value) VALUES (?, '1') "
                "ON CONFLICT (key) DO UPDATE SET value=excluded.value",
                (_DONE_KEY,),
            )
        print("verified: every table's row count and checksum match", file=out)
    finally:
        pg.release(0.0)


def _take_lease(pg: PgStore) -> None:
    """Hold the lease; wait out one left by an interrupted copy, refuse a daemon's."""
    while pg.acquire(HOLDER, LEASE) is None:
        row = pg._db.execute("SELECT holder FROM lease WHERE id=1").fetchone()
        if row is None or row[0] != HOLDER:
            raise StoreError(
                f"{pg.where}: a walletwatch leads on this database ({row[0] if row else '?'}); "
                "stop every replica before migrating a state into it"
            )
        time.sleep(min(max(pg.left(), 0.1), 5.0))


def _claim(pg: PgStore, origin: str) -> None:
    """Mark the target as receiving ``origin``; refuse one holding anything else."""
    marks = pg.load_meta("migration:")
    if marks.get(_SOURCE_KEY) == origin:
        return  # a rerun: resume (or verify again)
    if _SOURCE_KEY in marks:
        raise StoreError(
            f"{pg.where}: holds (part of) a copy of another state than this source "
            "(the source changed since, or it is another file); not overwriting it"
        )
    if any(tally(_rows(pg._db, table)).rows for table in TABLES):
        raise StoreError(f"{pg.where}: already holds a walletwatch state; not overwriting it")
    pg.save_meta(_SOURCE_KEY, origin)


def _copy(sqlite: Store, pg: PgStore, table: str) -> None:
    """Insert every row of ``table`` the target lacks, BATCH rows per transaction."""
    rows = _rows(sqlite._db, table)
    batch: list[Sequence[Any]] = []
    for row in rows:
        batch.append(row)
        if len(batch) == BATCH:
            _insert(pg, table, batch)
            batch = []
    if batch:
        _insert(pg, table, batch)


def _insert(pg: PgStore, table: str, batch: list[Sequence[Any]]) -> None:
    marks = ", ".join("?" * len(batch[0]))
    with pg._transaction():
        pg._fence()
        pg._db.executemany(
            f"INSERT INTO {table} VALUES ({marks}) ON CONFLICT DO NOTHING",  # noqa: S608
            batch,
        )
    if not pg.renew(LEASE):
        raise StoreError(f"{pg.where}: lost the lease during the copy; run the command again")


def add_command(sub: Any) -> None:
    """The ``migrate-state`` subcommand of the ``walletwatch`` parser ``sub``."""
    parser = sub.add_parser("migrate-state", help="copy a SQLite state into PostgreSQL")
    parser.add_argument("--from", dest="source", type=Path, required=True, help="state file")
    parser.add_argument("--to", dest="target", required=True, help="postgresql:// URL")
    parser.add_argument(
        "--password-file",
        type=Path,
        default=None,
        help="file holding the database password (else libpq's PGPASSWORD or ~/.pgpass)",
    )
    parser.set_defaults(func=command)


def command(args: argparse.Namespace) -> int:
    """Run ``migrate-state``; a StoreError makes main() print it and exit 1."""
    try:
        target = database_url(args.target)
    except Invalid as err:
        raise ConfigError([f"--to: {message}" for _, message in err.problems]) from None
    if not args.source.is_file():
        raise StoreError(f"{args.source}: no such state file")
    password = None
    if args.password_file is not None:
        try:
            password = args.password_file.read_text().rstrip("\n")
        except OSError as err:
            raise StoreError(f"{args.password_file}: {err.strerror or err}") from err
    migrate(args.source, target, password, sys.stdout)
    return 0
