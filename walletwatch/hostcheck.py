"""What this host must offer a config before anything starts: directories walletwatch can write.

``check`` reports these problems with the config's, and ``run`` and ``demo`` refuse to start on
them before they create anything, each as one line naming the path and what to do.
"""

from __future__ import annotations

import os
from pathlib import Path

from walletwatch.store import MEMORY


def path_problems(state_path: Path, events_file: Path | None) -> list[str]:
    """``key: problem`` for each file this process could not create or write."""
    problems = []
    if state_path != MEMORY:
        # SQLite writes -wal, -shm and the lock beside the file: the directory must be writable.
        problems += _writable("state_path", state_path, directory_too=True)
    if events_file is not None:
        problems += _writable("events_file", events_file, directory_too=False)
    return problems


def _writable(key: str, path: Path, *, directory_too: bool) -> list[str]:
    parent = path.parent
    if not parent.is_dir():
        what = "is not a directory" if parent.exists() else "does not exist"
        return [
            (
                f"{key}: {parent} {what}: create it (walletwatch does not create directories), "
                f"or choose a {key} in an existing one"
            )
        ]
    if path.exists() and not os.access(path, os.R_OK | os.W_OK):
        return [f"{key}: {path} is not writable by this user: fix its owner or mode"]
    if (directory_too or not path.exists()) and not os.access(parent, os.W_OK | os.X_OK):
        return [
            (
                f"{key}: the directory {parent} is not writable by this user: fix its owner or "
                f"mode, or choose a {key} in a directory it may write"
            )
        ]
    return []
