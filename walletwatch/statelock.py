"""One state, one process: an exclusive flock on ``<state_path>.lock``, naming its holder.

The kernel drops the lock when the process dies, SIGKILL included. The lock file is never
deleted: unlinking a lock file another process may be about to lock would let two processes
each hold "the" lock.
"""

from __future__ import annotations

import fcntl
import os
import socket
import time
from pathlib import Path

from walletwatch.errors import StateLocked, StoreError


class StateLock:
    """An exclusive flock on ``<state_path>.lock``, holding who took it; released on close."""

    def __init__(self, path: Path) -> None:
        self.path = path.with_name(path.name + ".lock")
        try:
            # No O_TRUNC: a refused process must leave the holder's details as they are.
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as err:
            raise StoreError(
                f"{self.path}: cannot open the state's lock file: {err.strerror or err}; "
                "check that the state_path's directory exists and is writable"
            ) from err
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            holder = _holder(fd)
            os.close(fd)
            raise StateLocked(
                f"{path}: in use by another walletwatch ({holder}; lock {self.path}); "
                "stop it first, or give this config its own state_path"
            ) from err
        started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        holder_line = f"pid {os.getpid()} on {socket.gethostname()}, running since {started}\n"
        os.ftruncate(fd, 0)
        os.pwrite(fd, holder_line.encode(), 0)
        self._fd: int | None = fd

    def release(self) -> None:
        """Drop the lock (the file stays, see the module docstring)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def _holder(fd: int) -> str:
    """Who holds the lock, as its holder wrote it (read from the refused process's own fd)."""
    try:
        text = os.pread(fd, 200, 0).decode("utf-8", "replace").strip()
    except OSError:
        text = ""
    return text or "holder unknown: it is starting"
