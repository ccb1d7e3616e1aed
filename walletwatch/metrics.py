"""The /metrics exposition: every series is read from current state at scrape time.

Every family walletwatch serves is defined once below: its name, type, help text and labels.
The collector writes the exposition itself, Prometheus text 0.0.4 or OpenMetrics 1.0, byte
for byte what prometheus_client's encoders write for the same families, with no ``_created``
series: at 10,000 accounts, building its Metric and Sample objects and encoding them took two
seconds a scrape. Decimal becomes float here, at the metric boundary, and only here.

A watcher's lines made from its config, and those made from its state (balances, totals),
are kept from one render to the next, and remade only when the config or state object is
replaced (neither is ever changed in place; most polls leave the state as it was): about as
many bytes as the account's share of the exposition, for half the CPU of a render.

The lines made from what polls change in place or count up (health, provider gauges, poll
counters, rate-limit buckets) are kept line by line, each with the value it shows, and remade
only where that value changed. Not account by account: the scheduler spreads an account's
endpoints over its interval, so most accounts saw a poll since the last scrape, while most of
their values did not change. The stuck counts, which depend on the clock, are counted at each
render, only where transfers are in flight.

Rendering is a generator that yields after each account and each slice of the longer
telemetry families, so web.py runs it on the event loop a few milliseconds at a time. State
is read on the loop, where nothing else runs meanwhile: no thread reads it, no copy or lock
is needed, and a watcher's series all come from one step.

``collect()`` hands the same bytes to a prometheus_client registry (``get_sample_value``,
``generate_latest``) by parsing them, so the state is walked by one piece of code only.
"""

from __future__ import annotations

import codecs
import itertools
import math
import operator
import re
import weakref
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Generic, Literal, TypeVar

import structlog
from prometheus_client.core import Metric
from prometheus_client.openmetrics.exposition import (
    UNDERSCORES,
    escape_label_name,
    escape_metric_name,
)
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from walletwatch import __version__
from walletwatch.config import AccountConfig
from walletwatch.escape import escaped as escaped_text
from walletwatch.events import EVENT_NAMES
from walletwatch.model import Direction, Gauge
from walletwatch.providers import gauge_help
from walletwatch.telemetry import Histogram, Telemetry
from walletwatch.tracker import AccountState, TrackedTransfer, is_stuck
from walletwatch.types import Clock
from walletwatch.watcher import AccountWatcher

if TYPE_CHECKING:
    from _typeshed import SupportsRichComparison

log = structlog.get_logger("walletwatch.metrics")

P = "walletwatch_"
Kind = Literal["gauge", "counter", "histogram"]
PollKey = TypeVar("PollKey", tuple[str, str, str], tuple[str, str, str, str])
"""A poll counter's key in Telemetry: (provider, account, endpoint[, reason])."""


class Labels:
    """The label names of a family, sorted: the order the exposition writes them in."""

    __slots__ = ("names", "template")

    def __init__(self, *names: str) -> None:
        if list(names) != sorted(names):
            raise ValueError(f"labels {names}: list them sorted, the order they are served in")
        self.names = names
        # ``template % escaped_values`` is the text between a sample's braces.
        self.template = ",".join(f'{name}="%s"' for name in names)


class Family:
    """One metric family as served: name, type, help text and labels, defined once."""

    __slots__ = ("_headers", "labels", "name", "names", "sample", "template")

    def __init__(self, name: str, kind: Kind, doc: str, labels: Labels | None = None) -> None:
        self.name = P + name
        self.labels = labels or Labels()
        self.sample = self.name + "_total" if kind == "counter" else self.name
        # One whole sample as a %-template: the escaped label values in order, the value.
        self.template = self.line(self.labels.template, "%s")
        # Every metric name in its lines (a histogram's samples have their own suffixes).
        suffixes = ("_bucket", "_count", "_sum") if kind == "histogram" else ("",)
        self.names = (self.name, *(self.sample + suffix for suffix in suffixes))
        text_doc = doc.replace("\\", r"\\").replace("\n", r"\n")
        om_doc = text_doc.replace('"', r"\"")
        # Text 0.0.4 names a counter by its sample (x_total), OpenMetrics by its family (x).
        self._headers = (
            f"# HELP {self.sample} {text_doc}\n# TYPE {self.sample} {kind}\n",
            f"# HELP {self.name} {om_doc}\n# TYPE {self.name} {kind}\n",
        )

    def header(self, openmetrics: bool) -> str:
        """The HELP and TYPE lines of the family in the chosen format."""
        return self._headers[openmetrics]

    def line(self, labels: str, value: str) -> str:
        """One sample: ``labels`` is ``self.labels.template`` filled in, ``value`` formatted."""
        return f"{self.sample}{{{labels}}} {value}\n" if labels else f"{self.sample} {value}\n"


ACCOUNT = Labels("account", "provider")
CURRENCY = Labels("account", "currency", "provider")
FLOW = Labels("account", "currency", "direction", "provider")
SETTLED_FLOW = Labels("account", "currency", "direction", "provider", "state")
ENDPOINT = Labels("account", "endpoint", "provider")
PROVIDER = Labels("provider")
SINK = Labels("sink")
BUCKET = Labels("bucket")

BALANCE = Family("balance", "gauge", "Available balance from the last successful poll.", CURRENCY)
PENDING = Family(
    "balance_pending", "gauge", "Pending balance, where the provider reports one.", CURRENCY
)
LOW = Family("balance_low_threshold", "gauge", "Configured low_balance threshold.", CURRENCY)
SETTLED = Family("transfers", "counter", "Transfers that reached a final state.", SETTLED_FLOW)
AMOUNT = Family(
    "transfer_amount",
    "counter",
    "Summed amounts of transfers that reached a final state.",
    SETTLED_FLOW,
)
CORRECTIONS = Family(
    "transfer_corrections",
    "counter",
    "Transfers counted in transfers_total that left the state or currency again.",
    SETTLED_FLOW,
)
CORRECTED = Family(
    "transfer_corrected_amount",
    "counter",
    "Amounts counted in transfer_amount_total taken back by reversals and amendments.",
    SETTLED_FLOW,
)
IN_FLIGHT = Family(
    "transfers_in_flight", "gauge", "Transfers pending or in an unknown state.", FLOW
)
STUCK = Family("transfers_stuck", "gauge", "Transfers in flight longer than their threshold.", FLOW)
OLDEST = Family(
    "transfer_oldest_in_flight_timestamp_seconds",
    "gauge",
    "Start of the oldest in-flight transfer.",
    FLOW,
)
THRESHOLD = Family(
    "transfer_stuck_threshold_seconds",
    "gauge",
    "Configured stuck threshold.",
    Labels("account", "direction", "provider"),
)
UP = Family(
    "up", "gauge", "1 if the last poll of every endpoint of the account succeeded.", ACCOUNT
)
LAST_SUCCESS = Family(
    "last_success_timestamp_seconds", "gauge", "Time of the last successful poll.", ENDPOINT
)
# Alert rules read the interval to tell stale data from a poll that is not yet due.
INTERVAL = Family("poll_interval_seconds", "gauge", "Configured poll interval.", ACCOUNT)
POLLS = Family("polls", "counter", "Polls started.", ENDPOINT)
POLL_ERRORS = Family(
    "poll_errors",
    "counter",
    "Polls that failed, by reason.",
    Labels("account", "endpoint", "provider", "reason"),
)
HTTP_REQUESTS = Family(
    "http_requests",
    "counter",
    "HTTP responses from providers (code 'error' when none).",
    Labels("code", "endpoint", "provider"),
)
HTTP_DURATION = Family(
    "http_request_duration_seconds",
    "histogram",
    "Provider request latency.",
    Labels("endpoint", "provider"),
)
RATE_LIMITED = Family("rate_limited", "counter", "HTTP 429 responses received.", PROVIDER)
SCHEDULER_DELAY = Family(
    "scheduler_delay_seconds",
    "histogram",
    "How late a poll started against its due time.",
    PROVIDER,
)
EVENTS = Family("events", "counter", "Alert events emitted.", Labels("event"))
STORE_ERRORS = Family("store_errors", "counter", "State commits that failed.", PROVIDER)
STATE_FILE_OK = Family(
    "state_file_ok", "gauge", "1 while the state file is the one walletwatch opened at start."
)
MALFORMED = Family(
    "malformed_records",
    "counter",
    "Records of provider answers set aside as malformed (a negative deposit, no id...).",
    ENDPOINT,
)
BUILD_INFO = Family("build_info", "gauge", "walletwatch version.", Labels("version"))
OUTBOX_PENDING = Family("outbox_pending", "gauge", "Events in the outbox not yet delivered.", SINK)
DELIVERY_FAILURES = Family(
    "delivery_failures", "counter", "Failed attempts to deliver events.", SINK
)
EVENTS_PARKED = Family(
    "events_parked",
    "counter",
    "Events a sink refused for good (HTTP 4xx), set aside and skipped.",
    SINK,
)
BUCKET_RATE = Family(
    "bucket_rate",
    "gauge",
    "Requests per second the bucket paces at now (lowered after repeated 429s).",
    BUCKET,
)
BUCKET_MAX_RATE = Family(
    "bucket_max_rate",
    "gauge",
    "Requests per second the bucket paces at when unthrottled (limit less margin).",
    BUCKET,
)
BUCKET_REQUESTS = Family(
    "bucket_requests", "counter", "Request slots the bucket handed out.", BUCKET
)
BUCKET_WAIT = Family(
    "bucket_wait_seconds",
    "counter",
    "Seconds requests spent waiting for a slot of the bucket.",
    BUCKET,
)
BUCKET_RATE_LIMITED = Family(
    "bucket_rate_limited", "counter", "HTTP 429s charged to the bucket.", BUCKET
)
WEB_CONNECTIONS = Family("web_connections", "gauge", "Connections open to the web server.")
WEB_CONNECTIONS_LIMIT = Family(
    "web_connections_limit",
    "gauge",
    "Connections the web server keeps open at most (the open files limit less polling's reserve).",
)
WEB_CONNECTIONS_CLOSED = Family(
    "web_connections_closed",
    "counter",
    "Connections the web server closed itself: header_timeout, evicted (to make room), refused.",
    Labels("reason"),
)
WEB_ACCEPT_ERRORS = Family(
    "web_accept_errors", "counter", "Failed accept() calls (out of descriptors or memory)."
)
RELOAD_OK = Family(
    "config_last_reload_successful", "gauge", "1 if the last configuration reload succeeded."
)
RELOAD_TIME = Family(
    "config_last_reload_success_timestamp_seconds",
    "gauge",
    "Time of the last successful configuration (re)load.",
)
CLOCK_OFFSET = Family(
    "clock_offset_seconds",
    "gauge",
    "System wall clock less walletwatch's steady time: a step since start (restart adopts it).",
)

# The order the families are served in: those made from the watchers (with the provider
# gauges, sorted by name, after ACCOUNT_FAMILIES), then walletwatch's own.
ACCOUNT_FAMILIES = (
    *(BALANCE, PENDING, LOW, SETTLED, AMOUNT, CORRECTIONS, CORRECTED),
    *(IN_FLIGHT, STUCK, OLDEST, THRESHOLD),
)
HEALTH_FAMILIES = (UP, LAST_SUCCESS, INTERVAL)
TELEMETRY_FAMILIES = (
    *(POLLS, POLL_ERRORS, HTTP_REQUESTS, HTTP_DURATION, RATE_LIMITED, SCHEDULER_DELAY),
    *(EVENTS, STORE_ERRORS, STATE_FILE_OK, MALFORMED, BUILD_INFO),
    *(OUTBOX_PENDING, DELIVERY_FAILURES, EVENTS_PARKED),
    *(BUCKET_RATE, BUCKET_MAX_RATE, BUCKET_REQUESTS, BUCKET_WAIT, BUCKET_RATE_LIMITED),
    *(WEB_CONNECTIONS, WEB_CONNECTIONS_LIMIT, WEB_CONNECTIONS_CLOSED, WEB_ACCEPT_ERRORS),
)
WEB_CLOSE_REASONS = ("evicted", "header_timeout", "refused")
"""The reasons of web_connections_closed_total: each is served from the start, at 0."""
RELOAD_FAMILIES = (RELOAD_OK, RELOAD_TIME)

SLICE = 2000
"""Lines of a long telemetry family written per step (about a millisecond)."""
KEEP_SLICE = 200
"""Accounts whose kept lines are brought up to date per step (a millisecond, or less)."""


@dataclass(slots=True)
class ReloadStatus:
    """How the last configuration (re)load went, for the two config_last_reload series."""

    successful: bool
    success_time: float  # Unix time of the last successful (re)load


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
        self._accounts: weakref.WeakKeyDictionary[AccountWatcher, _Account]
        self._accounts = weakref.WeakKeyDictionary()
        self._keys = _TelemetryKeys(SortedKeys(), SortedKeys(), SortedKeys())
        # Watchers whose series failed at the last render (logged once, until they render).
        self._failing: weakref.WeakSet[AccountWatcher] = weakref.WeakSet()

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
        out = _Render(self._clock.time(), self._accounts)
        watchers = list(self._watchers())
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
        yield from out.telemetry(self._telemetry, self._keys)
        yield from _parts(out.families(openmetrics, TELEMETRY_FAMILIES), escaping)
        if self._reload is not None:
            out.reload(self._reload)
            yield from _parts(out.families(openmetrics, RELOAD_FAMILIES), escaping)
        out.lines[CLOCK_OFFSET] = [CLOCK_OFFSET.line("", _number(self._telemetry.clock_offset))]
        yield from _parts(out.families(openmetrics, (CLOCK_OFFSET,)), escaping)
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


@dataclass(slots=True)
class _Account:
    """What one watcher's series are made of, kept while what they are made from stays.

    The config-made lines are remade when the watcher's config is replaced (a reload replaces
    the watcher itself). The state-made ones when its state is: a state is replaced, never
    changed in place, and most polls leave it as it was, so most scrapes remake none. The
    gauge lines when a gauge is replaced; a LAST_SUCCESS line when its timestamp changed.
    """

    config: AccountConfig
    account: str
    provider: str
    up: tuple[str, str]  # its UP lines, down and up
    low: str
    threshold: str
    interval: str
    # Made from ``state``: its BALANCE, PENDING, SETTLED and AMOUNT lines (the Decimal to
    # float conversions cost the most), its IN_FLIGHT and OLDEST lines, and its STUCK lines:
    # as they are where nothing is in flight, else the FLOW labels and the transfers in
    # flight there, to be counted against the clock at each render.
    state: AccountState | None = None
    balance: str = ""
    pending: str = ""
    settled: str = ""
    amount: str = ""
    corrections: str = ""  # only where a total was ever corrected
    corrected: str = ""
    in_flight: str = ""
    stuck: tuple[str | tuple[str, tuple[TrackedTransfer, ...]], ...] = ()
    oldest: str = ""
    # Made from the watcher's health (changed in place): by endpoint, the LAST_SUCCESS line
    # with the timestamp it shows.
    last_success: dict[str, tuple[float, str]] = field(default_factory=dict)
    # Made from the watcher's gauges (an entry is replaced when its value changes): the
    # Gauge objects, then each gauge name's lines with the names of its own labels.
    gauges_of: tuple[Gauge, ...] = ()
    gauges: tuple[tuple[str, str, frozenset[str]], ...] = ()

    @classmethod
    def of(cls, watcher: AccountWatcher) -> _Account:
        """What ``watcher``'s config gives its series."""
        config = watcher.config
        a, p = _escape(watcher.name), _escape(watcher.provider)
        labels = ACCOUNT.template % (a, p)
        up = (UP.line(labels, _count(False)), UP.line(labels, _count(True)))
        low = "".join(
            LOW.line(CURRENCY.template % (a, _escape(c), p), _number(float(value)))
            for c, value in sorted(config.low_balance.items())
        )
        threshold = "".join(
            THRESHOLD.line(THRESHOLD.labels.template % (a, d, p), _number(config.stuck_after(d)))
            for d in DIRECTIONS
        )
        interval = INTERVAL.line(labels, _number(config.interval))
        return cls(config, a, p, up, low, threshold, interval)

    def read(self, state: AccountState, esc: _Escapes) -> None:
        """Remake the state-made lines from ``state``."""
        a, p = self.account, self.provider
        balance, pending = [], []
        for currency, held in sorted(state.balances.items()):
            labels = CURRENCY.template % (a, esc[currency], p)
            balance.append(BALANCE.line(labels, _number(float(held.balance.available))))
            if held.balance.pending is not None:
                pending.append(PENDING.line(labels, _number(float(held.balance.pending))))
        settled, amount, corrections, corrected = [], [], [], []
        for (currency, direction, final), total in sorted(state.totals.items()):
            labels = SETTLED_FLOW.template % (a, esc[currency], direction, p, final)
            settled.append(SETTLED.line(labels, _count(total.count)))
            amount.append(AMOUNT.line(labels, _number(float(total.amount))))
            if total.corrections or total.corrected:
                corrections.append(CORRECTIONS.line(labels, _count(total.corrections)))
                corrected.append(CORRECTED.line(labels, _number(float(total.corrected))))
        in_flight: dict[tuple[str, Direction], list[TrackedTransfer]] = {}
        for tracked in state.in_flight():
            flow = (tracked.transfer.currency, tracked.transfer.direction)
            in_flight.setdefault(flow, []).append(tracked)
        counts, oldest = [], []
        stuck: list[str | tuple[str, tuple[TrackedTransfer, ...]]] = []
        if not in_flight:  # the usual case: nothing in flight, every count 0, no oldest
            for c in (esc[c] for c in _currencies(state, ())):
                counts.append(_NONE_IN_FLIGHT % (a, c, p, a, c, p))
                stuck.append(_NONE_STUCK % (a, c, p, a, c, p))
        for currency in _currencies(state, in_flight) if in_flight else ():
            for direction in DIRECTIONS:
                labels = FLOW.template % (a, esc[currency], direction, p)
                group = tuple(in_flight.get((currency, direction), ()))
                counts.append(IN_FLIGHT.line(labels, _count(len(group))))
                if group:
                    stuck.append((labels, group))
                    began = min(tracked.started_at for tracked in group)
                    oldest.append(OLDEST.line(labels, _number(began)))
                else:
                    stuck.append(STUCK.line(labels, _count(0)))
        self.state, self.oldest = state, "".join(oldest)
        self.in_flight, self.stuck = "".join(counts), _joined(stuck)
        self.balance, self.pending = "".join(balance), "".join(pending)
        self.settled, self.amount = "".join(settled), "".join(amount)
        self.corrections, self.corrected = "".join(corrections), "".join(corrected)

    def read_gauges(
        self,
        gauges: tuple[Gauge, ...],
        esc: _Escapes,
        templates: dict[tuple[str, tuple[tuple[str, str], ...]], str],
    ) -> None:
        """Remake the provider gauges' lines from ``gauges``."""
        a, p = self.account, self.provider
        by_name: dict[str, tuple[list[str], set[str]]] = {}
        for gauge in gauges:
            key = (gauge.name, gauge.labels)
            template = templates.get(key)
            if template is None:
                template = templates[key] = _gauge_labels(gauge.labels, esc)
            lines, names = by_name.setdefault(gauge.name, ([], set()))
            names.update(name for name, _ in gauge.labels)
            value = _number(float(gauge.value))
            lines.append(f"{P}{gauge.name}{{{template % (a, p)}}} {value}\n")
        self.gauges_of = gauges
        self.gauges = tuple(
            (name, "".join(lines), frozenset(names)) for name, (lines, names) in by_name.items()
        )


class _Render:
    """One exposition being written: its lines by family, gathered account by account."""

    def __init__(
        self, now: float, kept: weakref.WeakKeyDictionary[AccountWatcher, _Account]
    ) -> None:
        self.now = now
        self.kept = kept
        self.accounts: dict[AccountWatcher, _Account] = {}  # this render's
        self.lines: dict[Family, list[str]] = {
            family: [] for family in (*ACCOUNT_FAMILIES, *HEALTH_FAMILIES, *TELEMETRY_FAMILIES)
        }
        self.gauges: dict[str, list[str]] = defaultdict(list)
        self.gauge_labels: dict[tuple[str, tuple[tuple[str, str], ...]], str] = {}
        self.gauge_label_names: dict[str, set[str]] = {}
        self.providers: set[str] = set()
        self.escaped = _Escapes()

    def keep(self, w: AccountWatcher) -> _Account:
        """What is kept of one watcher's series, remade where its config or state changed."""
        entry = self.accounts.get(w) or self.kept.get(w)
        if entry is None or entry.config is not w.config:
            entry = self.kept[w] = _Account.of(w)
        if entry.state is not w.state:
            entry.read(w.state, self.escaped)
        self.accounts[w] = entry
        return entry

    def account(self, w: AccountWatcher) -> None:
        """Every series of one watcher; none of them if making one fails.

        Everything that can fail is made first, and only then is any line added.
        """
        entry = self.accounts[w]
        if entry.state is not w.state or entry.config is not w.config:
            entry = self.keep(w)  # a poll changed it since it was kept
        stuck: list[str] = []
        for part in entry.stuck:
            if isinstance(part, str):
                stuck.append(part)
            else:  # transfers in flight: how many are stuck depends on the clock
                labels, group = part
                late = sum(is_stuck(tracked, w.config, self.now) for tracked in group)
                stuck.append(STUCK.line(labels, _count(late)))
        gauges = tuple(w.gauges.values())
        if not _same(gauges, entry.gauges_of):
            entry.read_gauges(gauges, self.escaped, self.gauge_labels)
        last: list[str] = []
        kept = entry.last_success
        for endpoint, health in sorted(w.health.items()):
            if (stamp := health.last_success) is not None:
                line = kept.get(endpoint)
                if line is None or line[0] != stamp:
                    # A timestamp: past _number's short cut, and _go_float is slow.
                    text = LAST_SUCCESS.template % (
                        entry.account,
                        self.escaped[endpoint],
                        entry.provider,
                        _go_float(stamp),
                    )
                    line = kept[endpoint] = (stamp, text)
                last.append(line[1])
        up = entry.up[w.up]

        lines = self.lines
        self.escaped[w.name] = entry.account  # for the poll counters, keyed by name
        lines[BALANCE].append(entry.balance)
        lines[PENDING].append(entry.pending)
        lines[LOW].append(entry.low)
        lines[SETTLED].append(entry.settled)
        lines[AMOUNT].append(entry.amount)
        lines[CORRECTIONS].append(entry.corrections)
        lines[CORRECTED].append(entry.corrected)
        lines[IN_FLIGHT].append(entry.in_flight)
        lines[STUCK] += stuck
        lines[OLDEST].append(entry.oldest)
        lines[THRESHOLD].append(entry.threshold)
        for name, text, label_names in entry.gauges:
            self.gauges[name].append(text)
            names = self.gauge_label_names.get(name)
            if names is None:
                names = self.gauge_label_names[name] = set(ACCOUNT.names)
            names.update(label_names)
        lines[UP].append(up)
        lines[LAST_SUCCESS] += last
        lines[INTERVAL].append(entry.interval)

    def failed(self, w: AccountWatcher) -> None:
        """One watcher's series could not be made: it shows as down, and nothing is kept.

        Its other series are left out of this render; what was kept of them is dropped, so
        the next render makes them afresh rather than serve what failed again.
        """
        self.accounts.pop(w, None)
        self.kept.pop(w, None)
        labels = ACCOUNT.template % (_escape(w.name), _escape(w.provider))
        self.lines[UP].append(UP.line(labels, _count(False)))

    def telemetry(self, t: Telemetry, keys: _TelemetryKeys) -> Iterator[None]:
        """walletwatch's own series: polls, requests, events, delivery, rate-limit buckets."""
        lines, esc = self.lines, self.escaped
        yield from keys.polls.update(t.polls)
        yield from self._counters(POLLS, t.polls, keys.polls.of(t.polls), keys.poll_lines)
        errors = keys.poll_errors.of(t.poll_errors)
        yield from self._counters(POLL_ERRORS, t.poll_errors, errors, keys.error_lines)
        yield

        requests = lines[HTTP_REQUESTS]
        for (provider, endpoint, code), value in sorted(t.http_requests.items()):
            labels = HTTP_REQUESTS.labels.template % (esc[code], esc[endpoint], esc[provider])
            requests.append(HTTP_REQUESTS.line(labels, _count(value)))
        for (provider, endpoint), hist in sorted(t.http_duration.items()):
            lines[HTTP_DURATION] += _histogram(
                HTTP_DURATION, {"endpoint": esc[endpoint], "provider": esc[provider]}, hist
            )
        for provider in sorted(self.providers | set(t.rate_limited)):
            labels = PROVIDER.template % esc[provider]
            lines[RATE_LIMITED].append(RATE_LIMITED.line(labels, _count(t.rate_limited[provider])))
        for provider, hist in sorted(t.scheduler_delay.items()):
            lines[SCHEDULER_DELAY] += _histogram(SCHEDULER_DELAY, {"provider": esc[provider]}, hist)
        for name in EVENT_NAMES:
            labels = EVENTS.labels.template % esc[name]
            lines[EVENTS].append(EVENTS.line(labels, _count(t.events[name])))
        for provider in sorted(self.providers | set(t.store_errors)):
            labels = PROVIDER.template % esc[provider]
            lines[STORE_ERRORS].append(STORE_ERRORS.line(labels, _count(t.store_errors[provider])))
        lines[STATE_FILE_OK].append(STATE_FILE_OK.line("", "1.0" if t.state_file_ok else "0.0"))
        for (provider, account, endpoint), value in sorted(t.malformed.items()):
            labels = ENDPOINT.template % (esc[account], esc[endpoint], esc[provider])
            lines[MALFORMED].append(MALFORMED.line(labels, _count(value)))
        version = BUILD_INFO.labels.template % esc[__version__]
        lines[BUILD_INFO].append(BUILD_INFO.line(version, "1.0"))

        # The outbox as each sink sees it: what waits, what failed, what was refused.
        for sink in sorted(set(t.outbox_pending) | set(t.delivery_failures) | set(t.events_parked)):
            labels = SINK.template % esc[sink]
            waiting = _count(t.outbox_pending.get(sink, 0))
            lines[OUTBOX_PENDING].append(OUTBOX_PENDING.line(labels, waiting))
            failures = _count(t.delivery_failures[sink])
            lines[DELIVERY_FAILURES].append(DELIVERY_FAILURES.line(labels, failures))
            parked = _count(t.events_parked[sink])
            lines[EVENTS_PARKED].append(EVENTS_PARKED.line(labels, parked))
        self._web(t)
        yield

        yield from self._buckets(t, keys)

    def _web(self, t: Telemetry) -> None:
        """The web server's connections: open, the cap, and those it closed, by reason."""
        web, lines = t.web, self.lines
        lines[WEB_CONNECTIONS].append(WEB_CONNECTIONS.line("", _count(web.open)))
        lines[WEB_CONNECTIONS_LIMIT].append(WEB_CONNECTIONS_LIMIT.line("", _count(web.limit)))
        for reason in sorted({*WEB_CLOSE_REASONS, *web.dropped}):
            labels = WEB_CONNECTIONS_CLOSED.labels.template % self.escaped[reason]
            value = _count(web.dropped[reason])
            lines[WEB_CONNECTIONS_CLOSED].append(WEB_CONNECTIONS_CLOSED.line(labels, value))
        lines[WEB_ACCEPT_ERRORS].append(WEB_ACCEPT_ERRORS.line("", _count(web.accept_errors)))

    def _counters(
        self,
        family: Family,
        counts: Mapping[PollKey, int],
        keys: list[PollKey],
        kept: dict[PollKey, tuple[int, str]],
    ) -> Iterator[None]:
        """The POLLS or POLL_ERRORS lines, each kept with the count it shows."""
        out, esc = self.lines[family], self.escaped
        if len(kept) > len(counts):  # counters went: forget their lines
            for gone in kept.keys() - counts.keys():
                del kept[gone]
        for n, key in enumerate(keys, 1):  # (provider, account, endpoint[, reason])
            value = counts.get(key)
            if value is not None:
                line = kept.get(key)
                if line is None:
                    parts: tuple[str, ...] = key
                    ordered = (parts[1], parts[2], parts[0], *parts[3:])  # as labels sort
                    labels = family.labels.template % tuple(esc[v] for v in ordered)
                    line = kept[key] = (value, family.line(labels, _count(value)))
                elif line[0] != value:  # the same labels: only the value after them changed
                    text = line[1]
                    line = kept[key] = (value, f"{text[: text.rindex(' ')]} {_count(value)}\n")
                out.append(line[1])
            if n % SLICE == 0:
                yield

    def _buckets(self, t: Telemetry, keys: _TelemetryKeys) -> Iterator[None]:
        """The rate-limit buckets: their pace now and at most, what they served and made wait.

        Each bucket's lines are kept with the values they show (a value equal to the last but
        for the sign of a zero would keep the old line: no bucket counts below zero).
        """
        rate, max_rate = self.lines[BUCKET_RATE], self.lines[BUCKET_MAX_RATE]
        served, waited = self.lines[BUCKET_REQUESTS], self.lines[BUCKET_WAIT]
        limited = self.lines[BUCKET_RATE_LIMITED]
        kept = keys.bucket_lines
        if len(kept) > len(t.buckets):  # buckets went: forget their lines
            for gone in kept.keys() - t.buckets.keys():
                del kept[gone]
        yield from keys.buckets.update(t.buckets)
        for n, name in enumerate(keys.buckets.of(t.buckets), 1):
            if (stats := t.buckets.get(name)) is None:
                continue
            bucket = kept.get(name)
            if bucket is None:
                bucket = kept[name] = _Bucket(BUCKET.template % _escape(name))
            if bucket.pace != (stats.rate, stats.max_rate, stats.rate_limited):
                bucket.pace = (stats.rate, stats.max_rate, stats.rate_limited)
                bucket.paced = (
                    BUCKET_RATE.line(bucket.labels, _number(stats.rate)),
                    BUCKET_MAX_RATE.line(bucket.labels, _number(stats.max_rate)),
                    BUCKET_RATE_LIMITED.line(bucket.labels, _count(stats.rate_limited)),
                )
            if bucket.requests != stats.requests:
                bucket.requests = stats.requests
                bucket.served = BUCKET_REQUESTS.line(bucket.labels, _count(stats.requests))
            if bucket.wait != stats.wait_seconds:
                bucket.wait = stats.wait_seconds
                bucket.waited = BUCKET_WAIT.line(bucket.labels, _number(stats.wait_seconds))
            rate.append(bucket.paced[0])
            max_rate.append(bucket.paced[1])
            served.append(bucket.served)
            waited.append(bucket.waited)
            limited.append(bucket.paced[2])
            if n % (SLICE // 5) == 0:
                yield

    def reload(self, status: ReloadStatus) -> None:
        """Prometheus' own names for whether the last reload worked, and when one last did."""
        self.lines[RELOAD_OK] = [RELOAD_OK.line("", _count(status.successful))]
        self.lines[RELOAD_TIME] = [RELOAD_TIME.line("", _number(status.success_time))]

    def families(
        self, openmetrics: bool, families: Iterable[Family], gauges: bool = False
    ) -> Iterator[tuple[Family, list[str]]]:
        """Each family with its lines, HELP and TYPE first; then the provider gauges', if asked."""
        for family in families:
            yield family, [family.header(openmetrics), *self.lines.pop(family)]
        for name in sorted(self.gauges) if gauges else ():
            labels = Labels(*sorted(self.gauge_label_names[name]))
            family = Family(name, "gauge", gauge_help(name), labels)
            yield family, [family.header(openmetrics), *self.gauges[name]]


K = TypeVar("K", bound="SupportsRichComparison")


class SortedKeys(Generic[K]):
    """The keys of a dict that only gains keys (Telemetry's), kept sorted from call to call.

    Sorting the 30,000 poll counters of 10,000 accounts takes some 25 ms, too long for one
    step on the event loop. A dict iterates in insertion order, so the keys it gained since
    the last call are those past the count seen then: ``update`` sorts them into the sorted
    list CHUNK at a time, a step each (the first render after start-up gets them all), and
    costs nothing when there are none (the usual case once every account polled). Were a
    key removed, callers skip it (``d.get``) and fewer keys mean a fresh sort.
    """

    CHUNK = 4096

    def __init__(self) -> None:
        self._keys: list[K] = []

    def update(self, d: Mapping[K, object]) -> Iterator[None]:
        """Sort the keys ``d`` gained into the list, yielding between chunks of them."""
        seen = len(self._keys)
        if len(d) < seen:  # keys were removed after all: start over
            self._keys = sorted(d)
            return
        new = list(itertools.islice(d, seen, None))
        for start in range(0, len(new), self.CHUNK):
            # A sorted run and a short unsorted one: Timsort merges them in linear time.
            self._keys = sorted([*self._keys, *new[start : start + self.CHUNK]])
            yield None

    def of(self, d: Mapping[K, object]) -> list[K]:
        """``sorted(d)``; the list returned is never changed afterwards."""
        for _ in self.update(d):
            pass
        return self._keys


@dataclass(slots=True)
class _Bucket:
    """One rate-limit bucket's lines, each with the values it shows (None: none made yet)."""

    labels: str  # BUCKET filled in
    pace: tuple[float, float, int] | None = None  # rate, max_rate, rate_limited
    paced: tuple[str, str, str] = ("", "", "")  # their lines
    requests: int | None = None
    served: str = ""
    wait: float | None = None
    waited: str = ""


@dataclass(frozen=True, slots=True)
class _TelemetryKeys:
    """The sorted keys of the telemetry counters that grow with the number of accounts, and
    their lines, kept with the values they show."""

    polls: SortedKeys[tuple[str, str, str]]
    poll_errors: SortedKeys[tuple[str, str, str, str]]
    buckets: SortedKeys[str]
    poll_lines: dict[tuple[str, str, str], tuple[int, str]] = field(default_factory=dict)
    error_lines: dict[tuple[str, str, str, str], tuple[int, str]] = field(default_factory=dict)
    bucket_lines: dict[str, _Bucket] = field(default_factory=dict)


DIRECTIONS = tuple(Direction)


def _none_in_flight(family: Family) -> str:
    """The lines of one currency's flows at 0: a template of (account, currency, provider) x2."""
    return "".join(family.line(FLOW.template % ("%s", "%s", d, "%s"), "0.0") for d in DIRECTIONS)


_NONE_IN_FLIGHT, _NONE_STUCK = _none_in_flight(IN_FLIGHT), _none_in_flight(STUCK)
_go_float: Callable[[float], str] = floatToGoString  # typed here: the library's is not
_COUNTS = tuple(f"{n}.0" for n in range(1024))


class _Escapes(dict[str, str]):
    """Label values escaped, each worked out once per render."""

    def __missing__(self, value: str) -> str:
        escaped = self[value] = _escape(value)
        return escaped


LABEL_UNSAFE = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f\ud800-\udfff]")
"""Characters a label value keeps as their escape text (``\\u0000``): lone surrogates, which
UTF-8 cannot encode, and control characters, which Prometheus' own parser may take a NUL of
for the end of its input. A newline has an escape of its own in the format."""


def _escape(value: str) -> str:
    """A label value as the exposition writes it: backslash, newline and quote escaped, and
    lone surrogates and control characters as text (``\\ud800``, written ``\\\\ud800``)."""
    if value.isprintable() and "\\" not in value and '"' not in value:
        return value  # the usual case; a newline is not printable
    value = escaped_text(value, LABEL_UNSAFE)
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


def _exposition_errors(err: UnicodeError) -> tuple[str, int]:
    """A character UTF-8 cannot encode as its escape text, as a label value or HELP writes it.

    Label values are escaped before (``_escape``): this is for what nothing foresaw, so that
    one value never fails a scrape.
    """
    if not isinstance(err, UnicodeEncodeError):
        raise err
    bad = err.object[err.start : err.end]
    return "".join(f"\\\\u{ord(c):04x}" for c in bad), err.end


EXPOSITION_ERRORS = "walletwatch.exposition"
codecs.register_error(EXPOSITION_ERRORS, _exposition_errors)


def _number(value: float) -> str:
    """A sample value as prometheus_client writes it (``floatToGoString``)."""
    value = float(value)
    # Below a million, finite floats are their repr; above, Go's exponent form (1e+06) and
    # the spellings of +Inf, -Inf and NaN take over.
    if -math.inf < value < 1e6:
        return repr(value)
    return _go_float(value)


def _count(value: int) -> str:
    """An integer sample value (a count, a flag) as prometheus_client writes it."""
    if 0 <= value < 1024:
        return _COUNTS[value]
    if -1_000_000 < value < 1_000_000:
        return f"{value:d}.0"
    return _go_float(value)


def _same(these: tuple[object, ...], those: tuple[object, ...]) -> bool:
    """Whether two tuples hold the very same objects, in order."""
    return len(these) == len(those) and all(map(operator.is_, these, those))


def _joined(
    parts: Iterable[str | tuple[str, tuple[TrackedTransfer, ...]]],
) -> tuple[str | tuple[str, tuple[TrackedTransfer, ...]], ...]:
    """``parts`` with each run of strings joined into one."""
    out: list[str | tuple[str, tuple[TrackedTransfer, ...]]] = []
    for part in parts:
        if isinstance(part, str) and out and isinstance(out[-1], str):
            out[-1] += part
        else:
            out.append(part)
    return tuple(out)


def _currencies(state: AccountState, in_flight: Iterable[tuple[str, Direction]]) -> list[str]:
    """The currencies an account has series of flows in: balances, totals, in flight."""
    currencies = set(state.balances)
    currencies.update(c for c, _, _ in state.totals)
    currencies.update(c for c, _ in in_flight)
    return sorted(currencies)


def _gauge_labels(labels: tuple[tuple[str, str], ...], esc: _Escapes) -> str:
    """A provider gauge's labels as a %-template of the account's and provider's values."""
    own = ((name, esc[value].replace("%", "%%")) for name, value in labels)
    return _sorted_labels([("account", "%s"), ("provider", "%s"), *own])


def _sorted_labels(labels: Iterable[tuple[str, str]]) -> str:
    """Escaped (name, value) pairs as the text between a sample's braces, sorted by name."""
    return ",".join(f'{name}="{value}"' for name, value in sorted(labels))


def _histogram(family: Family, labels: dict[str, str], hist: Histogram) -> list[str]:
    """One histogram's _bucket lines, then its _count and _sum."""
    name, buckets = family.name, hist.buckets()
    lines = [
        f"{name}_bucket{{{_sorted_labels([*labels.items(), ('le', le)])}}} {_number(count)}\n"
        for le, count in buckets
    ]
    plain = _sorted_labels(labels.items())
    lines.append(f"{name}_count{{{plain}}} {_number(buckets[-1][1])}\n")
    lines.append(f"{name}_sum{{{plain}}} {_number(hist.total)}\n")
    return lines
