"""Reading a config file for a running daemon without holding its event loop.

At 10,000 accounts the file is about 1.8 MB and reading it takes a second or two of CPU.
In a worker thread of the daemon that still stalled the loop: libyaml composes the whole
document without letting go of the GIL, the collector's full passes over what the parser
and the validation make run in that thread, and pure Python in a thread takes half of the
GIL's turns from a busy loop. So a child process reads and validates the file, exactly as
``walletwatch check`` would, and hands the Config back pickled, its accounts in slices the
daemon unpickles with the loop free between them.
"""

from __future__ import annotations

import asyncio
import contextlib
import copyreg
import dataclasses
import os
import pickle
import sys
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any

import structlog

from walletwatch.config import AccountConfig, Config, load_config
from walletwatch.errors import ConfigError
from walletwatch.shard import Shard, parse_shard

log = structlog.get_logger("walletwatch.loader")

_CHILD = "import sys; from walletwatch.loader import child; child(sys.argv[1], sys.argv[2])"
_SLICE = 250
"""Accounts unpickled between two turns of the event loop (a few milliseconds' worth)."""
_NICE = 19
"""The child's niceness: on a busy host its second of CPU goes to the daemon's loop last."""


async def load_config_apart(path: Path, *, shard: Shard | None = None) -> Config:
    """load_config for a running daemon: read and validated in a child process.

    ``shard`` overrides the file's ``shard:``. Should the child fail to run, the file is
    read in a worker thread instead (harder on the loop, but the reload still happens).
    """
    try:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            _CHILD,
            str(path),
            "" if shard is None else str(shard),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
    except OSError as err:
        log.warning("config.read_in_thread", path=str(path), reason=str(err))
        return await asyncio.to_thread(load_config, path, shard=shard)
    try:
        out, err_text = await proc.communicate()
    finally:
        if proc.returncode is None:  # cancelled: the daemon is stopping
            proc.kill()
            await proc.wait()
    if proc.returncode != 0:
        last = err_text.decode(errors="replace").strip().splitlines()[-1:] or [""]
        log.warning(
            "config.read_in_thread",
            path=str(path),
            reason=f"the reading process exited with {proc.returncode}: {last[0]}",
        )
        return await asyncio.to_thread(load_config, path, shard=shard)
    # Our own child's answer over a pipe. Unpickled whole, 10,000 accounts held the GIL for
    # 100 ms or more in one C call; a slice of accounts at a time, the loop runs between.
    kind, *value = pickle.loads(out)  # noqa: S301 - our own child, over a pipe
    if kind == "problems":
        raise ConfigError(value[0])
    head_bytes, slices = value
    head: Config = pickle.loads(head_bytes)  # noqa: S301 - likewise
    accounts: list[AccountConfig] = []
    for part in slices:
        accounts.extend(pickle.loads(part))  # noqa: S301 - likewise
        await asyncio.sleep(0)
    return dataclasses.replace(head, accounts=tuple(accounts))


def child(path: str, shard: str) -> None:
    """The child's side: load the config at ``path``, write the outcome pickled to stdout."""
    with contextlib.suppress(OSError):  # the unit's seccomp filter refuses setpriority
        os.nice(_NICE)
    # Config's read-only mappings are pickled as the dicts they wrap, and rebuilt by _proxy.
    copyreg.pickle(MappingProxyType, _reduce_proxy)
    answer = sys.stdout.buffer
    sys.stdout = sys.stderr  # whatever loading prints must not corrupt the answer
    try:
        config = load_config(Path(path), shard=parse_shard(shard) if shard else None)
    except ConfigError as err:
        outcome: tuple[object, ...] = ("problems", list(err.problems))
    else:
        head = pickle.dumps(dataclasses.replace(config, accounts=()))
        slices = [
            pickle.dumps(config.accounts[start : start + _SLICE])
            for start in range(0, len(config.accounts), _SLICE)
        ]
        outcome = ("config", head, slices)
    answer.write(pickle.dumps(outcome, protocol=pickle.HIGHEST_PROTOCOL))
    answer.flush()


def _reduce_proxy(proxy: MappingProxyType[Any, Any]) -> tuple[Any, tuple[dict[Any, Any]]]:
    return _proxy, (dict(proxy),)


def _proxy(items: Mapping[Any, Any]) -> MappingProxyType[Any, Any]:
    """A read-only view of ``items`` (what unpickling a Config's mappings calls)."""
    return MappingProxyType(dict(items))
