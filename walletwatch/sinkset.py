"""The sinks a config asks for, built: stdout, the events file, webhooks and Alertmanagers.

The Alertmanager sinks ask the daemon whether a transfer is still in flight (``InFlight``):
one that left the in-flight set without a final event is resolved all the same.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TextIO

import aiohttp

from walletwatch.asyncstore import AsyncStore
from walletwatch.config import Config, WebhookConfig
from walletwatch.events import Event
from walletwatch.model import Direction
from walletwatch.sinks import REPOST, AlertmanagerSink, FileSink, StreamSink, WebhookSink
from walletwatch.types import Clock, Sink
from walletwatch.watcher import AccountWatcher


class InFlight:
    """Whether the daemon has a transfer in flight, from its live watchers."""

    def __init__(
        self, watchers: Mapping[str, AccountWatcher], config: Callable[[], Config]
    ) -> None:
        self._watchers = watchers
        self._config = config  # the current one: a reload replaces it

    def __call__(self, account: str, direction: str, transfer_id: str) -> bool | None:
        """True or False; None while a reload (or a takeover) rebuilds the account."""
        watcher = self._watchers.get(account)
        if watcher is None:
            configured = any(a.name == account for a in self._config().accounts)
            return None if configured else False
        try:
            tracked = watcher.state.transfers.get((Direction(direction), transfer_id))
        except ValueError:  # no direction of ours: no transfer of ours either
            return False
        return tracked is not None and tracked.transfer.state.in_flight


def build_sinks(
    config: Config,
    *,
    stdout: TextIO | None,
    stdout_lines: Callable[[Event], str],
    session: aiohttp.ClientSession,
    clock: Clock,
    store: AsyncStore,
    in_flight: InFlight,
) -> list[Sink]:
    """Every sink of ``config``, in the order the dispatcher serves them."""
    sinks: list[Sink] = []
    if stdout is not None:
        sinks.append(StreamSink(stdout, render=stdout_lines))
    if config.events_file is not None:
        sinks.append(FileSink(config.events_file))
    # Checked every shortest interval: a transfer that leaves the in-flight set without
    # a final event is resolved within two polls, like one with its final event.
    every = min((a.interval for a in config.accounts), default=REPOST)
    for entry in config.sinks:
        if isinstance(entry, WebhookConfig):
            sinks.append(WebhookSink(entry, session, clock))
        else:
            sinks.append(
                AlertmanagerSink(entry, session, clock, store, in_flight, check_every=every)
            )
    return sinks
