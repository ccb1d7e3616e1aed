"""PostgreSQL state: the SQLite store's contract on a database that replicas share.

The same tables and the same SQL (walletwatch.statesql), one transaction a poll. Replicas
run the same config against one database; the lease row (walletwatch.lease) says which of
them leads, and every write checks in its own transaction that this process still holds the
lease's epoch (fencing), so a paused or cut-off leader commits nothing once another leads.

Driver: psycopg 3, used synchronously: the store's calls already run on AsyncStore's one
worker thread, so its sync API keeps that contract; its binary wheel needs no libpq on the
host. A connection lost (a database restart) is made again by the next call.

The password comes from the config's secret reference and is given to libpq apart from the
URL; every message this module makes has it removed, and the URL it shows has none.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
import structlog

from walletwatch.errors import StateDamaged, StoreError, redact
from walletwatch.pgschema import MIGRATIONS, SCHEMA_VERSION
from walletwatch.statesql import SqlState
from walletwatch.types import SqlCursor

log = structlog.get_logger("walletwatch.pgstore")

CONNECT_TIMEOUT = 5
"""Seconds a connection attempt may take: a database that does not answer is an error."""

STATEMENT_TIMEOUT_MS = 10_000
"""A statement that takes longer fails, rather than hold the store's one worker forever."""

_SCHEMA_LOCK = 0x77616C6C  # one migration at a time, whichever replica starts first


def is_url(text: str) -> bool:
    """True if ``text`` names a PostgreSQL database rather than a SQLite file."""
    return text.startswith(("postgresql://", "postgres://"))


def shown(url: str) -> str:
    """The URL with any password taken out: what messages may show."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rpartition("@")[2]
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))


@functools.cache
def _placeholders(sql: str) -> str:
    """The shared SQL's ``?`` placeholders as psycopg's ``%s``."""
    return sql.replace("%", "%%").replace("?", "%s")


class Connection:
    """A psycopg connection taking the shared SQL's ``?`` placeholders, made on demand."""

    def __init__(self, url: str, password: str | None) -> None:
        self.url = url
        self.where = shown(url)
        self._password = password
        self._conn: psycopg.Connection[Any] | None = None

    def _secrets(self) -> list[str]:
        return [self._password] if self._password else []

    def connected(self) -> psycopg.Connection[Any]:
        """The open connection, connecting first if there is none or it broke."""
        if self._conn is not None and not self._conn.closed and not self._conn.broken:
            return self._conn
        self.close()
        settings: dict[str, Any] = {
            "connect_timeout": CONNECT_TIMEOUT,
            "application_name": "walletwatch",
            # A peer gone without a word (a partition) is noticed in about 11 s, not hours.
            "keepalives": 1,
            "keepalives_idle": 5,
            "keepalives_interval": 2,
            "keepalives_count": 3,
        }
        if self._password:
            settings["password"] = self._password
        try:
            self._conn = psycopg.connect(self.url, autocommit=True, **settings)
            # A SET, not libpq's options: those of the URL (a search_path) stay as they are.
            self._conn.execute(f"SET statement_timeout = {STATEMENT_TIMEOUT_MS}")
        except psycopg.Error as err:
            self.close()
            # Not chained: the driver's own exception may quote the connection string.
            raise StoreError(
                f"{self.where}: cannot connect to the state database: "
                f"{redact(str(err).strip(), self._secrets())}"
            ) from None
        return self._conn

    def execute(self, sql: str, parameters: Any = (), /) -> SqlCursor:
        """Run one statement."""
        return self.connected().execute(_placeholders(sql), parameters or None)

    def executemany(self, sql: str, parameters: Iterable[Any], /) -> object:
        """Run one statement for each set of parameters."""
        with self.connected().cursor() as cursor:
            cursor.executemany(_placeholders(sql), parameters)
        return None

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """BEGIN ... COMMIT; on any failure nothing is kept."""
        with self.connected().transaction():
            yield

    def close(self) -> None:
        """Close the connection, if one is open."""
        if self._conn is not None:
            with contextlib.suppress(psycopg.Error):
                self._conn.close()
            self._conn = None

    def __repr__(self) -> str:
        return f"Connection({self.where!r})"


class PgStore(SqlState):
    """Synchronous access to the PostgreSQL state (use from one thread).

    ``epoch`` is the lease epoch this process holds (walletwatch.lease sets it), or None
    while it follows: a write is refused unless the database's lease still has that epoch
    and has not expired.
    """

    _noun = "state database"
    _errors = (psycopg.Error,)
    _damage = (psycopg.DataError,)
    _select_transfers = "SELECT * FROM transfers WHERE ?::text[] IS NULL OR account = ANY(?)"
    _select_balances = "SELECT * FROM balances WHERE ?::text[] IS NULL OR account = ANY(?)"
    _select_accounts = "SELECT * FROM accounts WHERE ?::text[] IS NULL OR name = ANY(?)"

    def __init__(self, url: str, password: str | None = None) -> None:
        self._db = self._pg = Connection(url, password)
        self.url = url
        self._password = password
        self.where = self._pg.where
        self.epoch: int | None = None
        try:
            with self._transaction():
                old = self._migrate()
        except StoreError:
            self._pg.close()
            raise
        except psycopg.Error as err:
            self._pg.close()
            raise StoreError(f"{self.where}: cannot use the state database: {err}") from err
        if old == 0:
            log.warning(
                "store.created",
                url=self.where,
                note="a new, empty state: every account takes a silent baseline, so deposits, "
                "withdrawals and balance changes from before this start are not announced",
            )
        elif old < SCHEMA_VERSION:
            log.info("store.migrated", url=self.where, old_version=old, version=SCHEMA_VERSION)

    def __repr__(self) -> str:
        return f"PgStore({self.where!r})"

    def _migrate(self) -> int:
        """Bring the schema to SCHEMA_VERSION and return the version the database had."""
        db = self._db
        db.execute("SELECT pg_advisory_xact_lock(?)", (_SCHEMA_LOCK,))
        tables = {
            row[0]
            for row in db.execute(
                "SELECT table_name FROM information_schema.tables "
                "WHERE table_schema = current_schema()"
            )
        }
        if "meta" in tables:
            row = db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
            version = int(row[0]) if row is not None else None
        else:
            version = 0 if not tables else None
        if version is None:
            raise StateDamaged(f"{self.where}: not a walletwatch state database")
        if version > SCHEMA_VERSION:
            raise StateDamaged(
                f"{self.where}: state schema version {version} is newer than this "
                f"walletwatch understands ({SCHEMA_VERSION})"
            )
        for migrate in MIGRATIONS[version:]:
            migrate(db)
        if version < SCHEMA_VERSION:
            db.execute(
                "INSERT INTO meta (key, value) VALUES ('schema_version', ?) "
                "ON CONFLICT (key) DO UPDATE SET value=excluded.value",
                (str(SCHEMA_VERSION),),
            )
        return version

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        with self._pg.transaction():
            yield

    def _names(self, names: Sequence[str] | None) -> tuple[Any, ...]:
        wanted = None if names is None else list(names)
        return (wanted, wanted)

    def _fence(self) -> None:
        """Refuse the write unless this process holds the lease, unexpired, on the database."""
        row = self._db.execute(
            "SELECT epoch FROM lease WHERE id=1 AND epoch=? AND expires > clock_timestamp() "
            "FOR SHARE",
            (self.epoch if self.epoch is not None else -1,),
        ).fetchone()
        if row is None:
            raise StoreError(
                f"{self.where}: not the leader: the lease (epoch {self.epoch}) is expired or "
                "held by another replica; nothing is written"
            )

    def acquire(self, holder: str, seconds: float) -> int | None:
        """Take the lease for ``seconds`` if it has expired on the database's clock.

        Returns the new epoch (and leads with it), or None while another holds the lease.
        """
        try:
            with self._transaction():
                row = self._db.execute(
                    "UPDATE lease SET epoch=epoch + 1, holder=?, "
                    "expires=clock_timestamp() + make_interval(secs => ?) "
                    "WHERE id=1 AND expires <= clock_timestamp() RETURNING epoch",
                    (holder, seconds),
                ).fetchone()
        except psycopg.Error as err:
            raise StoreError(f"{self.where}: cannot take the lease: {err}") from err
        self.epoch = None if row is None else int(row[0])
        return self.epoch

    def left(self) -> float:
        """Seconds until the lease expires, on the database's clock (negative: expired)."""
        try:
            row = self._db.execute(
                "SELECT EXTRACT(EPOCH FROM expires) - EXTRACT(EPOCH FROM clock_timestamp()) "
                "FROM lease WHERE id=1"
            ).fetchone()
        except psycopg.Error as err:
            raise StoreError(f"{self.where}: cannot read the lease: {err}") from err
        return float(row[0]) if row is not None and row[0] is not None else 0.0

    def renew(self, seconds: float) -> bool:
        """Extend the lease held to ``seconds`` from now; False (and follow) if it is lost.

        An expired lease is never revived, even when nobody took it: the lease that lapsed
        may have let another replica start, and this one must not assume otherwise.
        """
        if self.epoch is None:
            return False
        try:
            with self._transaction():
                row = self._db.execute(
                    "UPDATE lease SET expires=clock_timestamp() + make_interval(secs => ?) "
                    "WHERE id=1 AND epoch=? AND expires > clock_timestamp() RETURNING epoch",
                    (seconds, self.epoch),
                ).fetchone()
        except psycopg.Error as err:
            raise StoreError(f"{self.where}: cannot renew the lease: {err}") from err
        if row is None:
            self.epoch = None
            return False
        return True

    def release(self, seconds: float) -> None:
        """Let the lease held expire ``seconds`` from now at the latest, and follow."""
        epoch, self.epoch = self.epoch, None
        if epoch is None:
            return
        try:
            with self._transaction():
                self._db.execute(
                    "UPDATE lease SET expires=LEAST(expires, "
                    "clock_timestamp() + make_interval(secs => ?)) WHERE id=1 AND epoch=?",
                    (seconds, epoch),
                )
        except psycopg.Error as err:
            raise StoreError(f"{self.where}: cannot release the lease: {err}") from err

    def reader(self) -> Connection:
        """A connection of its own, made on first use (autocommit: each read sees the latest)."""
        return Connection(self.url, self._password)

    def account_in(self, names: Sequence[str]) -> tuple[str, Any]:
        """The names as one text array."""
        return "account = ANY(?)", list(names)

    def close(self) -> None:
        """Close the connection."""
        self._pg.close()
