"""What a reload changes: the settings that need a restart, the accounts to stop and start.

The accounts are compared a slice at a time with the event loop free between slices: at
10,000 accounts a reload done in one go stalled polls, scrapes and the watchdog for seconds.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Mapping, Sequence
from typing import TypeVar

from walletwatch.config import AccountConfig, Config

T = TypeVar("T")

RELOAD_SLICE = 250
"""Accounts a reload compares, stops or builds between two turns of the event loop.

Building a watcher takes about 0.1 ms, so a slice keeps the loop busy some 25 ms.
"""

RESTART_KEYS = (
    "listen",
    "state_path",
    "events_file",
    "log_format",
    "providers",
    "sinks",
    "web",
    "push",
    "store",
)
"""Top-level settings a reload leaves at their running values until a restart."""


def restart_needed(old: Config, new: Config) -> tuple[str, ...]:
    """The RESTART_KEYS whose value ``new`` changes."""
    return tuple(k for k in RESTART_KEYS if getattr(new, k) != getattr(old, k))


def slices(items: Sequence[T], size: int = RELOAD_SLICE) -> Iterator[Sequence[T]]:
    """``items`` in consecutive slices of at most ``size``."""
    for start in range(0, len(items), size):
        yield items[start : start + size]


async def yield_loop() -> None:
    """Let every other ready task and callback run before going on."""
    await asyncio.sleep(0)


async def changes(
    before: Mapping[str, AccountConfig], after: Mapping[str, AccountConfig]
) -> tuple[list[str], list[AccountConfig]]:
    """The accounts to stop (gone or changed) and to start (new or changed), by name."""
    gone: list[str] = []
    started: list[AccountConfig] = []
    for names in slices(list(before.keys() | after.keys())):
        for name in names:
            was, now = before.get(name), after.get(name)
            if was != now:
                gone.extend((name,) if was is not None else ())
                started.extend((now,) if now is not None else ())
        await yield_loop()
    return gone, started
