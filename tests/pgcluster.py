"""A throwaway PostgreSQL cluster for the tests: initdb, postgres on a free loopback port.

The binaries are Debian's (package postgresql), found as /usr/lib/postgresql/<version>/bin,
not on PATH; `make test` installs the package when they are missing, and a test that needs
them fails (never skips) when they are not there. PostgreSQL refuses to run as root: as root,
the cluster belongs to the unprivileged user ``nobody``, in a directory made for it. Durability
is off (fsync): a test cluster is thrown away, and the tests that restart it stop it cleanly.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

BINARIES = "/usr/lib/postgresql/*/bin"
VERSIONS = Path("/usr/lib/postgresql")
"""Where Debian's postgresql package puts initdb, pg_ctl and postgres (one dir a version)."""

SUPERUSER = "walletwatch"
PASSWORD = "pg-test-secret-7f3a"  # the superuser's password: the tests check it never shows
STARTUP = 30.0  # seconds the cluster gets to come up; generous for a loaded CI machine


def binaries() -> Path:
    """The newest installed PostgreSQL's bin directory; the test fails when there is none."""
    found = sorted(VERSIONS.glob("*/bin/initdb"), key=lambda p: int(p.parts[-3].split(".")[0]))
    if not found:
        pytest.fail(
            f"PostgreSQL is not installed (no {BINARIES}/initdb): `make test` installs it "
            "(make tools: Debian package postgresql)"
        )
    return found[-1].parent


def free_port() -> int:
    """A loopback port that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Cluster:
    """One running cluster: its superuser URL, fresh databases, a stop and a restart."""

    def __init__(self, root: Path, bindir: Path, *, fsync: bool = False) -> None:
        self.root = root
        self._fsync = fsync
        self.data = root / "data"
        self.port = free_port()
        self._bin = bindir
        self._count = 0
        self._user: dict[str, Any] = {}
        if os.geteuid() == 0:
            nobody = pwd.getpwnam("nobody")
            os.chown(root, nobody.pw_uid, nobody.pw_gid)
            self._user = {"user": nobody.pw_uid, "group": nobody.pw_gid, "extra_groups": []}
        pwfile = root / "pwfile"
        pwfile.write_text(PASSWORD + "\n")
        if self._user:
            os.chown(pwfile, self._user["user"], self._user["group"])
        self._run(
            "initdb",
            "-D",
            str(self.data),
            "-U",
            SUPERUSER,
            "--pwfile",
            str(pwfile),
            "--auth=scram-sha-256",
            "--encoding=UTF8",
            "--no-sync",
        )
        pwfile.unlink()

    def _run(self, tool: str, *args: str) -> None:
        subprocess.run(
            [str(self._bin / tool), *args],
            check=True,
            capture_output=True,
            timeout=120,
            **self._user,
        )

    def url(self, database: str = "postgres") -> str:
        """The URL of a database of this cluster, without the password."""
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/{database}"

    def start(self) -> None:
        """Start the server and wait until it accepts connections."""
        options = f"-h 127.0.0.1 -p {self.port} -k {self.root} -c max_connections=200"
        if not self._fsync:
            options += " -c fsync=off -c full_page_writes=off"
        self._run(
            "pg_ctl",
            "-D",
            str(self.data),
            "-l",
            str(self.root / "log"),
            "-o",
            options,
            "-w",
            "-t",
            str(int(STARTUP)),
            "start",
        )

    def stop(self, mode: str = "fast") -> None:
        """Stop the server (``immediate``: as a crash would)."""
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop")

    def restart(self) -> None:
        """Stop and start again on the same port: every connection is cut."""
        self.stop()
        self.start()

    def create(self) -> str:
        """A new empty database; its URL."""
        self._count += 1
        name = f"t{self._count}"
        with psycopg.connect(self.url(), password=PASSWORD, autocommit=True) as db:
            db.execute(f"CREATE DATABASE {name} STRATEGY FILE_COPY")  # a counter's name: no quoting
        return self.url(name)

    def drop(self, url: str) -> None:
        """Drop a database made by create(), cutting whoever is still connected."""
        name = url.rsplit("/", 1)[1]
        with psycopg.connect(self.url(), password=PASSWORD, autocommit=True) as db:
            db.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@contextlib.contextmanager
def running_cluster(*, fsync: bool = False) -> Iterator[Cluster]:
    """A started cluster in a directory of its own, stopped and removed afterwards.

    ``fsync``: durable as a real server is (for benchmarks); tests go without.
    """
    bindir = binaries()
    # Not under pytest's tmp dir: that one is private to root, and the server runs as nobody.
    root = Path(tempfile.mkdtemp(prefix="walletwatch-pg-"))
    try:
        cluster = Cluster(root, bindir, fsync=fsync)
        cluster.start()
        try:
            yield cluster
        finally:
            with contextlib.suppress(subprocess.SubprocessError):
                cluster.stop("immediate")
    finally:
        shutil.rmtree(root, ignore_errors=True)


def wait_until_up(cluster: Cluster) -> None:
    """Wait until the cluster answers a query (after a restart)."""
    end = time.monotonic() + STARTUP
    while True:
        try:
            with psycopg.connect(cluster.url(), password=PASSWORD, connect_timeout=2):
                return
        except psycopg.OperationalError:
            if time.monotonic() > end:
                raise
            time.sleep(0.1)
