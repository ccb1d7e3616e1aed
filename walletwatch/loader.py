"""Reading a config file for a running daemon without holding its event loop.

At 10,000 accounts the file is about 1.8 MB. Parsed in a worker thread of the daemon, YAML
still stalled the loop for hundreds of milliseconds at a time: libyaml composes the whole
document without letting go of the GIL, and the pure-Python parser makes so many objects
that the collector's full passes, run in that thread, hold it as long. So the YAML is
parsed in a child process, which hands the plain data back pickled, and only validation
(pure Python, letting go of the GIL every few milliseconds) runs in a worker thread here.
"""

from __future__ import annotations

import asyncio
import pickle
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import structlog

from walletwatch.config import Config, read_yaml, validate_config
from walletwatch.errors import ConfigError
from walletwatch.shard import Shard

log = structlog.get_logger("walletwatch.loader")

_CHILD = "import sys; from walletwatch.loader import child; child(sys.argv[1])"


async def load_config_apart(path: Path, *, shard: Shard | None = None) -> Config:
    """load_config for a running daemon: YAML parsed in a child process, validated in a thread.

    ``shard`` overrides the file's ``shard:``. Should the child fail to run, the file is
    parsed in a worker thread instead (slower for the loop, but a reload still happens).
    """
    data = await _read_apart(path)
    return await asyncio.to_thread(validate_config, path, data, shard=shard)


def child(path: str) -> None:
    """The child's side: parse the file at ``path``, write the outcome pickled to stdout."""
    try:
        outcome: tuple[str, object] = ("data", read_yaml(Path(path)))
    except ConfigError as err:
        outcome = ("problems", list(err.problems))
    sys.stdout.buffer.write(pickle.dumps(outcome, protocol=pickle.HIGHEST_PROTOCOL))


async def _read_apart(path: Path) -> Mapping[Any, object]:
    try:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            _CHILD,
            str(path),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
    except OSError as err:
        log.warning("config.parse_in_thread", path=str(path), reason=str(err))
        return await asyncio.to_thread(read_yaml, path)
    try:
        out, err_text = await proc.communicate()
    finally:
        if proc.returncode is None:  # cancelled: the daemon is stopping
            proc.kill()
            await proc.wait()
    if proc.returncode != 0:
        last = err_text.decode(errors="replace").strip().splitlines()[-1:] or [""]
        log.warning(
            "config.parse_in_thread",
            path=str(path),
            reason=f"the parsing process exited with {proc.returncode}: {last[0]}",
        )
        return await asyncio.to_thread(read_yaml, path)
    # Our own child's answer over a pipe; unpickled in a thread (about 20 ms at 1.8 MB).
    kind, value = await asyncio.to_thread(pickle.loads, out)
    if kind == "problems":
        raise ConfigError(value)
    data: Mapping[Any, object] = value
    return data
