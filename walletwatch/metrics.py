"""The /metrics collector: the whole exposition, rendered step by step from current state.

The collector writes the exposition itself, Prometheus text 0.0.4 or OpenMetrics 1.0, byte
for byte what prometheus_client's encoders write for the same families (walletwatch.families
defines them, walletwatch.exposition formats their values), with no ``_created`` series: at
10,000 accounts, building its Metric and Sample objects and encoding them took two seconds a
scrape. Decimal becomes float at this metric boundary, and only here.

What the lines are made of is kept from one render to the next (walletwatch.series for an
account's config and state, walletwatch.render for what polls change in place), so a render
remakes only what changed since the last.

Rendering is a generator that yields after each account and each slice of the longer
telemetry families, so web.py runs it on the event loop a few milliseconds at a time. State
is read on the loop, where nothing else runs meanwhile: no thread reads it, no copy or lock
is needed, and a watcher's series all come from one step.

A follower (a replica that does not hold the lease, ``leading`` False) serves the same
families with samples only for the process's own (build_info, walletwatch_leader 0, the
state file's and web server's health): whatever rule reads an account, a provider or a sink
reads it from the leader alone.

``collect()`` hands the same bytes to a prometheus_client registry (``get_sample_value``,
``generate_latest``) by parsing them, so the state is walked by one piece of code only.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterable, Iterator

import structlog
from prometheus_client.core import Metric
from prometheus_client.openmetrics.exposition import (
    UNDERSCORES,
    escape_label_name,
    escape_metric_name,
)
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector

from walletwatch.exposition import EXPOSITION_ERRORS, number
from walletwatch.families import (
    ACCOUNT_FAMILIES,
    CLOCK_OFFSET,
    HEALTH_FAMILIES,
    PUSH_FAMILIES,
    RELOAD_FAMILIES,
    TELEMETRY_FAMILIES,
    Family,
)
from walletwatch.pushmetrics import push_lines
from walletwatch.render import ReloadStatus, Render, SortedKeys, TelemetryKeys
from walletwatch.series import AccountSeries
from walletwatch.telemetry import Telemetry
from walletwatch.types import Clock
from walletwatch.watcher import AccountWatcher

log = structlog.get_logger("walletwatch.metrics")

KEEP_SLICE = 200
"""Accounts whose kept lines are brought up to date per step (a millisecond, or less)."""


class WalletwatchCollector(Collector):
    """Exports the state of every watched account and walletwatch's own telemetry."""

    def __init__(
        self,
        watchers: Callable[[], Iterable[AccountWatcher]],
        telemetry: Telemetry,
        clock: Clock,
        reload: ReloadStatus | None = None,
    ) -> None:
        self._watchers = watchers
        self._telemetry = telemetry
        self._clock = clock
        self._reload = reload
        # Kept from one render to the next: what each watcher's series are made of (for as
        # long as the watcher lives: a reload drops it), the telemetry's longest keys sorted.
        self._accounts: weakref.WeakKeyDictionary[AccountWatcher, AccountSeries]
        self._accounts = weakref.WeakKeyDictionary()
        self._keys = TelemetryKeys(SortedKeys(), SortedKeys(), SortedKeys())
        # Watchers whose series failed at the last render (logged once, until they render).
        self._failing: weakref.WeakSet[AccountWatcher] = weakref.WeakSet()
        # Whether this replica holds the lease and polls; its owner sets it (always so on
        # SQLite). A follower serves no series about accounts, providers or sinks.
        self.leading = True
        # The lease by this replica's own clock, when there is one: a leader whose renewal
        # hangs on a lost database shows 0 once its lease may have lapsed, before it has
        # stepped down, so a new leader and it never both show 1 (WalletwatchSplitBrain).
        self.lease: Callable[[], bool] | None = None

    def leads(self) -> bool:
        """Whether this replica leads now: it holds the lease, unexpired by its own clock."""
        return self.leading and (self.lease is None or self.lease())

    def _report(self, watcher: AccountWatcher, error: Exception) -> None:
        """Log a watcher whose series could not be made, once until they can be again."""
        if watcher in self._failing:
            return
        self._failing.add(watcher)
        log.error(
            "metrics.account_failed",
            provider=watcher.provider,
            account=watcher.name,
            error=f"{type(error).__name__}: {error}",
            exc_info=error,
        )

    def collect(self) -> Iterator[Metric]:
        """Every metric family, parsed from the text exposition (one walk of the state)."""
        return iter(text_string_to_metric_families(self.render().decode()))

    def render(self, openmetrics: bool = False, escaping: str = UNDERSCORES) -> bytes:
        """The whole exposition at once: text 0.0.4, or OpenMetrics 1.0."""
        steps = self.steps(openmetrics, escaping)
        return b"".join(part for part in steps if part is not None)

    def steps(
        self, openmetrics: bool = False, escaping: str = UNDERSCORES
    ) -> Iterator[bytes | None]:
        """Render step by step: each item is None or the next part of the body, in order.

        A step is an account, a slice of a long family or one family's lines joined, a few
        milliseconds at most at 10,000 accounts: a caller can let the event loop run between
        them. The families made from the watchers are done, and come, before the others.
        ``escaping`` is how names are escaped, as prometheus_client's encoders take it.
        """
        out = Render(self._clock.time(), self._accounts)
        leading = self.leads()  # one value for the whole render
        if not leading:  # nothing of the accounts is served: nothing is kept for them
            self._accounts.clear()
        watchers = list(self._watchers()) if leading else []
        failed: dict[AccountWatcher, Exception] = {}  # a watcher's values failed its series
        # What is kept from render to render is brought up to date first, on its own: made
        # amid the render's passing lines, it pinned twice its size of memory (RSS) after.
        for n, watcher in enumerate(watchers, 1):
            try:
                out.keep(watcher)
            except Exception as err:  # noqa: BLE001 - one account must never fail the scrape
                failed[watcher] = err
            if n % KEEP_SLICE == 0:
                yield None
        out.providers = {watcher.provider for watcher in watchers}
        for watcher in watchers:
            error = failed.get(watcher)
            if error is None:
                try:
                    out.account(watcher)
                except Exception as err:  # noqa: BLE001 - reported below, with its traceback
                    error = err
            if error is None:
                if self._failing:  # (usually empty: no weak reference made per account)
                    self._failing.discard(watcher)
            else:
                out.failed(watcher)
                self._report(watcher, error)
            yield None
        families = out.families(openmetrics, ACCOUNT_FAMILIES, gauges=True)
        yield from _parts(families, escaping)
        yield from _parts(out.families(openmetrics, HEALTH_FAMILIES), escaping)
        if leading:
            yield from out.telemetry(self._telemetry, self._keys)
        out.daemon(self._telemetry, leading)
        yield from _parts(out.families(openmetrics, TELEMETRY_FAMILIES), escaping)
        if self._reload is not None:
            out.reload(self._reload)
            yield from _parts(out.families(openmetrics, RELOAD_FAMILIES), escaping)
        out.lines[CLOCK_OFFSET] = [CLOCK_OFFSET.line("", number(self._telemetry.clock_offset))]
        yield from _parts(out.families(openmetrics, (CLOCK_OFFSET,)), escaping)
        if self._telemetry.push.enabled:
            out.lines.update(push_lines(self._telemetry.push, out.escaped, watchers))
            yield from _parts(out.families(openmetrics, PUSH_FAMILIES), escaping)
        if openmetrics:
            yield b"# EOF\n"


def _parts(families: Iterable[tuple[Family, list[str]]], escaping: str) -> Iterator[bytes]:
    """Each family's lines as one part of the body, its names escaped as asked."""
    for family, lines in families:
        part = "".join(lines).encode("utf-8", EXPOSITION_ERRORS)
        yield part if escaping == UNDERSCORES else _escape_names(part, family, escaping)


def _escape_names(part: bytes, family: Family, escaping: str) -> bytes:
    """One family's part with its metric and label names escaped as prometheus_client does.

    walletwatch's names are valid as they are, which leaves them unchanged under every
    escaping but dots (which doubles each underscore). A name stands after a newline or
    '# HELP ', '# TYPE '; a label name after '{' or ','; label values hold neither a raw
    newline nor an unescaped quote, so the replacements cannot reach into one.
    """
    for name in family.names:
        if (escaped := escape_metric_name(name, escaping)) != name:
            for before, after in (("\n", "{"), ("\n", " "), ("# HELP ", " "), ("# TYPE ", " ")):
                part = part.replace(
                    f"{before}{name}{after}".encode(), f"{before}{escaped}{after}".encode()
                )
    for label in family.labels.names:
        if (escaped := escape_label_name(label, escaping)) != label:
            for before in ("{", ","):
                part = part.replace(f'{before}{label}="'.encode(), f'{before}{escaped}="'.encode())
    return part
