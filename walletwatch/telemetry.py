"""walletwatch's own counters and histograms, kept in memory and read by the collector."""

from __future__ import annotations

import bisect
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
DELAY_BUCKETS = (0.1, 0.5, 1.0, 5.0, 15.0, 60.0, 300.0)


@dataclass(slots=True)
class Histogram:
    """Cumulative-bucket histogram in Prometheus' form."""

    bounds: Sequence[float]
    counts: list[int] = field(default_factory=list)
    total: float = 0.0
    count: int = 0

    def observe(self, value: float) -> None:
        """Add one observation."""
        if not self.counts:
            self.counts = [0] * len(self.bounds)
        index = bisect.bisect_left(self.bounds, value)
        if index < len(self.counts):
            self.counts[index] += 1
        self.total += value
        self.count += 1

    def buckets(self) -> list[tuple[str, float]]:
        """(le, cumulative count) pairs ending with +Inf."""
        out, running = [], 0
        counts = self.counts or [0] * len(self.bounds)
        for bound, n in zip(self.bounds, counts, strict=True):
            running += n
            out.append((_le(bound), float(running)))
        out.append(("+Inf", float(self.count)))
        return out


def _le(bound: float) -> str:
    return repr(float(bound))


@dataclass(slots=True)
class BucketStats:
    """One rate-limit bucket's pace and counters (kept up to date by the bucket itself)."""

    rate: float = 0.0  # requests/s it paces at now; lower than max_rate after 429s
    max_rate: float = 0.0  # the published limit less the margin
    requests: int = 0  # slots handed out
    wait_seconds: float = 0.0  # summed time requests waited for their slot
    rate_limited: int = 0  # HTTP 429s charged to the bucket


@dataclass(slots=True)
class WebConnections:
    """The web server's connections: how many are open, the cap, and those it closed."""

    open: int = 0
    limit: int = 0  # the cap; 0 until the server listens
    # Closed by walletwatch, by reason: header_timeout, evicted (to make room), refused.
    dropped: Counter[str] = field(default_factory=Counter)
    accept_errors: int = 0  # accept() failures (out of descriptors or memory)


@dataclass(slots=True)
class PushStats:
    """The push receiver: hints by (provider, account, result), and its connections."""

    enabled: bool = False  # a push section is configured: its series are served
    hints: Counter[tuple[str, str, str]] = field(default_factory=Counter)
    connections: WebConnections = field(default_factory=WebConnections)


@dataclass(slots=True)
class Telemetry:
    """Everything walletwatch counts about its own work."""

    polls: Counter[tuple[str, str, str]] = field(default_factory=Counter)
    poll_errors: Counter[tuple[str, str, str, str]] = field(default_factory=Counter)
    http_requests: Counter[tuple[str, str, str]] = field(default_factory=Counter)
    http_duration: dict[tuple[str, str], Histogram] = field(default_factory=dict)
    rate_limited: Counter[str] = field(default_factory=Counter)
    scheduler_delay: dict[str, Histogram] = field(default_factory=dict)
    events: Counter[str] = field(default_factory=Counter)
    store_errors: Counter[str] = field(default_factory=Counter)
    state_file_ok: bool = True  # False while the state file is not the one the daemon opened
    # Records set aside as malformed, by (provider, account, endpoint).
    malformed: Counter[tuple[str, str, str]] = field(default_factory=Counter)
    # Records skipped as not of the kind asked for, by (provider, account, endpoint).
    skipped: Counter[tuple[str, str, str]] = field(default_factory=Counter)
    # Currencies of low_balance or currencies the last balance answer lacked, by account.
    unreported: dict[tuple[str, str], frozenset[str]] = field(default_factory=dict)
    # Event delivery, by sink name (set and counted by sinks.Dispatcher).
    outbox_pending: dict[str, int] = field(default_factory=dict)
    delivery_failures: Counter[str] = field(default_factory=Counter)
    events_parked: Counter[str] = field(default_factory=Counter)
    # Rate-limit buckets by name: a credential_id, or provider@host.
    buckets: dict[str, BucketStats] = field(default_factory=dict)
    web: WebConnections = field(default_factory=WebConnections)
    # The system's wall clock less the daemon's steady one (clock.SystemClock), last measured.
    clock_offset: float = 0.0
    push: PushStats = field(default_factory=PushStats)

    def request(self, provider: str, endpoint: str, code: str, seconds: float) -> None:
        """Count one HTTP exchange (code ``error`` when no response came)."""
        self.http_requests[(provider, endpoint, code)] += 1
        hist = self.http_duration.get((provider, endpoint))
        if hist is None:
            hist = self.http_duration[(provider, endpoint)] = Histogram(LATENCY_BUCKETS)
        hist.observe(seconds)
        if code == "429":
            self.rate_limited[provider] += 1

    def bucket(self, name: str) -> BucketStats:
        """The stats of the bucket called ``name``, created on first use."""
        stats = self.buckets.get(name)
        if stats is None:
            stats = self.buckets[name] = BucketStats()
        return stats

    def delay(self, provider: str, seconds: float) -> None:
        """How late a poll started against its due time."""
        hist = self.scheduler_delay.get(provider)
        if hist is None:
            hist = self.scheduler_delay[provider] = Histogram(DELAY_BUCKETS)
        hist.observe(max(0.0, seconds))
