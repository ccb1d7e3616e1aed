"""The push receiver's series on /metrics: hints by result, and its listener's connections."""

from __future__ import annotations

from collections.abc import Iterable

from walletwatch.exposition import Escapes, count
from walletwatch.families import (
    PUSH_ACCEPT_ERRORS,
    PUSH_CLOSE_REASONS,
    PUSH_CONNECTIONS,
    PUSH_CONNECTIONS_CLOSED,
    PUSH_CONNECTIONS_LIMIT,
    PUSH_HINTS,
    Family,
)
from walletwatch.telemetry import PushStats
from walletwatch.watcher import AccountWatcher

REFUSED_UNKNOWN = ("", "", "refused")
"""Pushes to no push account: served from the start, at 0, for the alert's increase()."""
RESULTS = ("accepted", "coalesced", "refused")


def push_lines(
    stats: PushStats, escaped: Escapes, watchers: Iterable[AccountWatcher]
) -> dict[Family, list[str]]:
    """Each push family's sample lines, sorted by labels; every result of each watched push
    account is served from the start, at 0, as increase() needs."""
    zeros = {(w.provider, w.name, result) for w in watchers if w.config.push for result in RESULTS}
    hints = []
    for provider, account, result in sorted({REFUSED_UNKNOWN, *zeros, *stats.hints}):
        labels = PUSH_HINTS.labels.template % (escaped[account], escaped[provider], escaped[result])
        hints.append(PUSH_HINTS.line(labels, count(stats.hints[(provider, account, result)])))
    conns = stats.connections
    closed = []
    for reason in sorted({*PUSH_CLOSE_REASONS, *conns.dropped}):
        labels = PUSH_CONNECTIONS_CLOSED.labels.template % escaped[reason]
        closed.append(PUSH_CONNECTIONS_CLOSED.line(labels, count(conns.dropped[reason])))
    return {
        PUSH_HINTS: hints,
        PUSH_CONNECTIONS: [PUSH_CONNECTIONS.line("", count(conns.open))],
        PUSH_CONNECTIONS_LIMIT: [PUSH_CONNECTIONS_LIMIT.line("", count(conns.limit))],
        PUSH_CONNECTIONS_CLOSED: closed,
        PUSH_ACCEPT_ERRORS: [PUSH_ACCEPT_ERRORS.line("", count(conns.accept_errors))],
    }
