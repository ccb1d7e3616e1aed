"""One exposition being written: its lines by family, gathered account by account.

The lines made from what polls change in place or count up (health, provider gauges, poll
counters, rate-limit buckets) are kept line by line, each with the value it shows, and remade
only where that value changed. Not account by account: the scheduler spreads an account's
endpoints over its interval, so most accounts saw a poll since the last scrape, while most of
their values did not change. The stuck counts, which depend on the clock, are counted at each
render, only where transfers are in flight.
"""

from __future__ import annotations

import itertools
import operator
import weakref
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Generic, TypeVar

from walletwatch import __version__
from walletwatch.events import EVENT_NAMES
from walletwatch.exposition import Escapes, count, escape_label, go_float, histogram, number
from walletwatch.families import (
    ACCOUNT,
    ACCOUNT_FAMILIES,
    AMOUNT,
    BALANCE,
    BUCKET,
    BUCKET_MAX_RATE,
    BUCKET_RATE,
    BUCKET_RATE_LIMITED,
    BUCKET_REQUESTS,
    BUCKET_WAIT,
    BUILD_INFO,
    CORRECTED,
    CORRECTIONS,
    CURRENCY,
    DELIVERY_FAILURES,
    ENDPOINT,
    EVENTS,
    EVENTS_PARKED,
    HEALTH_FAMILIES,
    HTTP_DURATION,
    HTTP_REQUESTS,
    IN_FLIGHT,
    INTERVAL,
    LAST_SUCCESS,
    LEADER,
    LOW,
    MALFORMED,
    OLDEST,
    OUTBOX_PENDING,
    PENDING,
    POLL_ERRORS,
    POLLS,
    PROVIDER,
    RATE_LIMITED,
    RELOAD_OK,
    RELOAD_TIME,
    SCHEDULER_DELAY,
    SETTLED,
    SINK,
    SKIPPED,
    STATE_FILE_OK,
    STORE_ERRORS,
    STUCK,
    TELEMETRY_FAMILIES,
    THRESHOLD,
    UNREPORTED,
    UP,
    WEB_ACCEPT_ERRORS,
    WEB_CLOSE_REASONS,
    WEB_CONNECTIONS,
    WEB_CONNECTIONS_CLOSED,
    WEB_CONNECTIONS_LIMIT,
    Family,
    Labels,
)
from walletwatch.providers import gauge_help
from walletwatch.series import AccountSeries
from walletwatch.telemetry import Telemetry
from walletwatch.tracker import is_stuck
from walletwatch.watcher import AccountWatcher

if TYPE_CHECKING:
    from _typeshed import SupportsRichComparison

PollKey = TypeVar("PollKey", tuple[str, str, str], tuple[str, str, str, str])
"""A poll counter's key in Telemetry: (provider, account, endpoint[, reason])."""

SLICE = 2000
"""Lines of a long telemetry family written per step (about a millisecond)."""


@dataclass(slots=True)
class ReloadStatus:
    """How the last configuration (re)load went, for the two config_last_reload series."""

    successful: bool
    success_time: float  # Unix time of the last successful (re)load


class Render:
    """One exposition being written: its lines by family, gathered account by account."""

    def __init__(
        self, now: float, kept: weakref.WeakKeyDictionary[AccountWatcher, AccountSeries]
    ) -> None:
        self.now = now
        self.kept = kept
        self.accounts: dict[AccountWatcher, AccountSeries] = {}  # this render's
        self.lines: dict[Family, list[str]] = {
            family: [] for family in (*ACCOUNT_FAMILIES, *HEALTH_FAMILIES, *TELEMETRY_FAMILIES)
        }
        self.gauges: dict[str, list[str]] = defaultdict(list)
        self.gauge_labels: dict[tuple[str, tuple[tuple[str, str], ...]], str] = {}
        self.gauge_label_names: dict[str, set[str]] = {}
        self.providers: set[str] = set()
        self.escaped = Escapes()

    def keep(self, w: AccountWatcher) -> AccountSeries:
        """What is kept of one watcher's series, remade where its config or state changed."""
        entry = self.accounts.get(w) or self.kept.get(w)
        if entry is None or entry.config is not w.config:
            entry = self.kept[w] = AccountSeries.of(w)
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
                stuck.append(STUCK.line(labels, count(late)))
        gauges = tuple(w.gauges.values())
        if not _same(gauges, entry.gauges_of):
            entry.read_gauges(gauges, self.escaped, self.gauge_labels)
        last: list[str] = []
        kept = entry.last_success
        for endpoint, health in sorted(w.health.items()):
            if (stamp := health.last_success) is not None:
                line = kept.get(endpoint)
                if line is None or line[0] != stamp:
                    # A timestamp: past _number's short cut, and go_float is slow.
                    text = LAST_SUCCESS.template % (
                        entry.account,
                        self.escaped[endpoint],
                        entry.provider,
                        go_float(stamp),
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
        labels = ACCOUNT.template % (escape_label(w.name), escape_label(w.provider))
        self.lines[UP].append(UP.line(labels, count(False)))

    def telemetry(self, t: Telemetry, keys: TelemetryKeys) -> Iterator[None]:
        """What the leader's work counts: polls, requests, events, delivery, rate-limit buckets."""
        lines, esc = self.lines, self.escaped
        yield from keys.polls.update(t.polls)
        yield from self._counters(POLLS, t.polls, keys.polls.of(t.polls), keys.poll_lines)
        errors = keys.poll_errors.of(t.poll_errors)
        yield from self._counters(POLL_ERRORS, t.poll_errors, errors, keys.error_lines)
        yield

        requests = lines[HTTP_REQUESTS]
        for (provider, endpoint, code), value in sorted(t.http_requests.items()):
            labels = HTTP_REQUESTS.labels.template % (esc[code], esc[endpoint], esc[provider])
            requests.append(HTTP_REQUESTS.line(labels, count(value)))
        for (provider, endpoint), hist in sorted(t.http_duration.items()):
            lines[HTTP_DURATION] += histogram(
                HTTP_DURATION, {"endpoint": esc[endpoint], "provider": esc[provider]}, hist
            )
        for provider in sorted(self.providers | set(t.rate_limited)):
            labels = PROVIDER.template % esc[provider]
            lines[RATE_LIMITED].append(RATE_LIMITED.line(labels, count(t.rate_limited[provider])))
        for provider, hist in sorted(t.scheduler_delay.items()):
            lines[SCHEDULER_DELAY] += histogram(SCHEDULER_DELAY, {"provider": esc[provider]}, hist)
        for name in EVENT_NAMES:
            labels = EVENTS.labels.template % esc[name]
            lines[EVENTS].append(EVENTS.line(labels, count(t.events[name])))
        for provider in sorted(self.providers | set(t.store_errors)):
            labels = PROVIDER.template % esc[provider]
            lines[STORE_ERRORS].append(STORE_ERRORS.line(labels, count(t.store_errors[provider])))
        for (provider, account, endpoint), value in sorted(t.malformed.items()):
            labels = ENDPOINT.template % (esc[account], esc[endpoint], esc[provider])
            lines[MALFORMED].append(MALFORMED.line(labels, count(value)))
        for (provider, account, endpoint), value in sorted(t.skipped.items()):
            labels = ENDPOINT.template % (esc[account], esc[endpoint], esc[provider])
            lines[SKIPPED].append(SKIPPED.line(labels, count(value)))
        for (provider, account), codes in sorted(t.unreported.items()):
            for code in sorted(codes):
                labels = CURRENCY.template % (esc[account], esc[code], esc[provider])
                lines[UNREPORTED].append(UNREPORTED.line(labels, "1.0"))

        # The outbox as each sink sees it: what waits, what failed, what was refused.
        for sink in sorted(set(t.outbox_pending) | set(t.delivery_failures) | set(t.events_parked)):
            labels = SINK.template % esc[sink]
            waiting = count(t.outbox_pending.get(sink, 0))
            lines[OUTBOX_PENDING].append(OUTBOX_PENDING.line(labels, waiting))
            failures = count(t.delivery_failures[sink])
            lines[DELIVERY_FAILURES].append(DELIVERY_FAILURES.line(labels, failures))
            parked = count(t.events_parked[sink])
            lines[EVENTS_PARKED].append(EVENTS_PARKED.line(labels, parked))
        yield

        yield from self._buckets(t, keys)

    def daemon(self, t: Telemetry, leading: bool) -> None:
        """The process's own series, which every replica serves, leader or follower."""
        lines = self.lines
        version = BUILD_INFO.labels.template % self.escaped[__version__]
        lines[BUILD_INFO].append(BUILD_INFO.line(version, "1.0"))
        lines[LEADER].append(LEADER.line("", "1.0" if leading else "0.0"))
        lines[STATE_FILE_OK].append(STATE_FILE_OK.line("", "1.0" if t.state_file_ok else "0.0"))
        self._web(t)

    def _web(self, t: Telemetry) -> None:
        """The web server's connections: open, the cap, and those it closed, by reason."""
        web, lines = t.web, self.lines
        lines[WEB_CONNECTIONS].append(WEB_CONNECTIONS.line("", count(web.open)))
        lines[WEB_CONNECTIONS_LIMIT].append(WEB_CONNECTIONS_LIMIT.line("", count(web.limit)))
        for reason in sorted({*WEB_CLOSE_REASONS, *web.dropped}):
            labels = WEB_CONNECTIONS_CLOSED.labels.template % self.escaped[reason]
            value = count(web.dropped[reason])
            lines[WEB_CONNECTIONS_CLOSED].append(WEB_CONNECTIONS_CLOSED.line(labels, value))
        lines[WEB_ACCEPT_ERRORS].append(WEB_ACCEPT_ERRORS.line("", count(web.accept_errors)))

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
                    line = kept[key] = (value, family.line(labels, count(value)))
                elif line[0] != value:  # the same labels: only the value after them changed
                    text = line[1]
                    line = kept[key] = (value, f"{text[: text.rindex(' ')]} {count(value)}\n")
                out.append(line[1])
            if n % SLICE == 0:
                yield

    def _buckets(self, t: Telemetry, keys: TelemetryKeys) -> Iterator[None]:
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
                bucket = kept[name] = BucketLines(BUCKET.template % escape_label(name))
            if bucket.pace != (stats.rate, stats.max_rate, stats.rate_limited):
                bucket.pace = (stats.rate, stats.max_rate, stats.rate_limited)
                bucket.paced = (
                    BUCKET_RATE.line(bucket.labels, number(stats.rate)),
                    BUCKET_MAX_RATE.line(bucket.labels, number(stats.max_rate)),
                    BUCKET_RATE_LIMITED.line(bucket.labels, count(stats.rate_limited)),
                )
            if bucket.requests != stats.requests:
                bucket.requests = stats.requests
                bucket.served = BUCKET_REQUESTS.line(bucket.labels, count(stats.requests))
            if bucket.wait != stats.wait_seconds:
                bucket.wait = stats.wait_seconds
                bucket.waited = BUCKET_WAIT.line(bucket.labels, number(stats.wait_seconds))
            rate.append(bucket.paced[0])
            max_rate.append(bucket.paced[1])
            served.append(bucket.served)
            waited.append(bucket.waited)
            limited.append(bucket.paced[2])
            if n % (SLICE // 5) == 0:
                yield

    def reload(self, status: ReloadStatus) -> None:
        """Prometheus' own names for whether the last reload worked, and when one last did."""
        self.lines[RELOAD_OK] = [RELOAD_OK.line("", count(status.successful))]
        self.lines[RELOAD_TIME] = [RELOAD_TIME.line("", number(status.success_time))]

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
class BucketLines:
    """One rate-limit bucket's lines, each with the values it shows (None: none made yet)."""

    labels: str  # BUCKET filled in
    pace: tuple[float, float, int] | None = None  # rate, max_rate, rate_limited
    paced: tuple[str, str, str] = ("", "", "")  # their lines
    requests: int | None = None
    served: str = ""
    wait: float | None = None
    waited: str = ""


@dataclass(frozen=True, slots=True)
class TelemetryKeys:
    """The sorted keys of the telemetry counters that grow with the number of accounts, and
    their lines, kept with the values they show."""

    polls: SortedKeys[tuple[str, str, str]]
    poll_errors: SortedKeys[tuple[str, str, str, str]]
    buckets: SortedKeys[str]
    poll_lines: dict[tuple[str, str, str], tuple[int, str]] = field(default_factory=dict)
    error_lines: dict[tuple[str, str, str, str], tuple[int, str]] = field(default_factory=dict)
    bucket_lines: dict[str, BucketLines] = field(default_factory=dict)


def _same(these: tuple[object, ...], those: tuple[object, ...]) -> bool:
    """Whether two tuples hold the very same objects, in order."""
    return len(these) == len(those) and all(map(operator.is_, these, those))
