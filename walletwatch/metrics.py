"""The /metrics collector: every series is read from current state at scrape time.

A custom Collector (client_python's pattern for exporters) so nothing is double-booked and
no ``_created`` series appear. Decimal becomes float here, at the metric boundary, and only
here.

The collector runs in a worker thread (web.py), beside the event loop. That is safe because
an AccountState is replaced, never changed in place, and every live dict is read through one
C-level step (``sorted(d.items())``, ``list(d.values())``) that no other thread can split.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from walletwatch import __version__
from walletwatch.events import EVENT_NAMES
from walletwatch.model import Direction
from walletwatch.telemetry import Histogram, Telemetry
from walletwatch.tracker import is_stuck
from walletwatch.types import Clock
from walletwatch.watcher import AccountWatcher

P = "walletwatch_"
ACCOUNT = ["provider", "account"]
CURRENCY = [*ACCOUNT, "currency"]
FLOW = [*CURRENCY, "direction"]

PROVIDER_GAUGES = {
    "wallet_whitelisted": "1 if the wallet is whitelisted (Sila)",
    "api_enabled": "1 if the provider reports its API enabled (KredsWallet)",
    "payment_method_enabled": "1 if the payment method is enabled (bitexbit)",
    "price": "price of the provider's currency in the quote currency (PotWallet)",
}


@dataclass(slots=True)
class ReloadStatus:
    """How the last configuration (re)load went, for the two config_last_reload series."""

    successful: bool
    success_time: float  # Unix time of the last successful (re)load


def reload_metrics(status: ReloadStatus) -> Iterator[Metric]:
    """Prometheus' own names for whether the last config reload worked, and when one last did."""
    ok = GaugeMetricFamily(
        P + "config_last_reload_successful", "1 if the last configuration reload succeeded."
    )
    ok.add_metric([], 1.0 if status.successful else 0.0)
    when = GaugeMetricFamily(
        P + "config_last_reload_success_timestamp_seconds",
        "Time of the last successful configuration (re)load.",
    )
    when.add_metric([], status.success_time)
    yield from (ok, when)


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

    def collect(self) -> Iterator[Metric]:
        """Build every metric family from the current state."""
        watchers = list(self._watchers())
        yield from self._accounts(watchers, self._clock.time())
        yield from self._health(watchers)
        yield from self._self_metrics({w.provider for w in watchers})
        yield from self._delivery()
        yield from self._budget()
        if self._reload is not None:
            yield from reload_metrics(self._reload)

    def _accounts(self, watchers: list[AccountWatcher], now: float) -> Iterator[Metric]:
        balance = GaugeMetricFamily(
            P + "balance", "Available balance from the last successful poll.", labels=CURRENCY
        )
        pending = GaugeMetricFamily(
            P + "balance_pending",
            "Pending balance, where the provider reports one.",
            labels=CURRENCY,
        )
        low = GaugeMetricFamily(
            P + "balance_low_threshold", "Configured low_balance threshold.", labels=CURRENCY
        )
        settled = CounterMetricFamily(
            P + "transfers",
            "Transfers that reached a final state.",
            labels=[*FLOW, "state"],
        )
        amount = CounterMetricFamily(
            P + "transfer_amount",
            "Summed amounts of transfers that reached a final state.",
            labels=[*FLOW, "state"],
        )
        in_flight = GaugeMetricFamily(
            P + "transfers_in_flight", "Transfers pending or in an unknown state.", labels=FLOW
        )
        stuck = GaugeMetricFamily(
            P + "transfers_stuck",
            "Transfers in flight longer than their threshold.",
            labels=FLOW,
        )
        oldest = GaugeMetricFamily(
            P + "transfer_oldest_in_flight_timestamp_seconds",
            "Start of the oldest in-flight transfer.",
            labels=FLOW,
        )
        threshold = GaugeMetricFamily(
            P + "transfer_stuck_threshold_seconds",
            "Configured stuck threshold.",
            labels=[*ACCOUNT, "direction"],
        )
        extra: dict[str, GaugeMetricFamily] = {}
        for w in watchers:
            labels = [w.provider, w.name]
            state, config = w.state, w.config
            for currency, held in sorted(state.balances.items()):
                balance.add_metric([*labels, currency], float(held.balance.available))
                if held.balance.pending is not None:
                    pending.add_metric([*labels, currency], float(held.balance.pending))
            for currency, value in sorted(config.low_balance.items()):
                low.add_metric([*labels, currency], float(value))
            for (currency, direction, final), total in sorted(state.totals.items()):
                key = [*labels, currency, str(direction), str(final)]
                settled.add_metric(key, total.count)
                amount.add_metric(key, float(total.amount))
            flights: dict[tuple[str, Direction], list[float]] = defaultdict(list)
            stuck_count: dict[tuple[str, Direction], int] = defaultdict(int)
            for tracked in state.in_flight():
                key2 = (tracked.transfer.currency, tracked.transfer.direction)
                flights[key2].append(tracked.started_at)
                stuck_count[key2] += is_stuck(tracked, config, now)
            currencies = (
                set(state.balances) | {c for c, _, _ in state.totals} | {c for c, _ in flights}
            )
            for currency in sorted(currencies):
                for direction in Direction:
                    key = [*labels, currency, str(direction)]
                    starts = flights.get((currency, direction), [])
                    in_flight.add_metric(key, len(starts))
                    stuck.add_metric(key, stuck_count.get((currency, direction), 0))
                    if starts:
                        oldest.add_metric(key, min(starts))
            for direction in Direction:
                threshold.add_metric([*labels, str(direction)], config.stuck_after(direction))
            for gauge in list(w.gauges.values()):  # one C-level copy: thread-safe
                family = extra.get(gauge.name)
                if family is None:
                    family = extra[gauge.name] = GaugeMetricFamily(
                        P + gauge.name,
                        PROVIDER_GAUGES.get(gauge.name, gauge.name),
                        labels=[*ACCOUNT, *(k for k, _ in gauge.labels)],
                    )
                family.add_metric([*labels, *(v for _, v in gauge.labels)], float(gauge.value))
        yield from (balance, pending, low, settled, amount, in_flight, stuck, oldest, threshold)
        yield from (extra[name] for name in sorted(extra))

    def _health(self, watchers: list[AccountWatcher]) -> Iterator[Metric]:
        up = GaugeMetricFamily(
            P + "up",
            "1 if the last poll of every endpoint of the account succeeded.",
            labels=ACCOUNT,
        )
        last = GaugeMetricFamily(
            P + "last_success_timestamp_seconds",
            "Time of the last successful poll.",
            labels=[*ACCOUNT, "endpoint"],
        )
        # Alert rules read the interval to tell stale data from a poll that is not yet due.
        interval = GaugeMetricFamily(
            P + "poll_interval_seconds", "Configured poll interval.", labels=ACCOUNT
        )
        for w in watchers:
            up.add_metric([w.provider, w.name], 1.0 if w.up else 0.0)
            interval.add_metric([w.provider, w.name], w.config.interval)
            for endpoint, health in sorted(w.health.items()):
                if health.last_success is not None:
                    last.add_metric([w.provider, w.name, endpoint], health.last_success)
        t = self._telemetry
        polls = CounterMetricFamily(P + "polls", "Polls started.", labels=[*ACCOUNT, "endpoint"])
        for key, value in sorted(t.polls.items()):
            polls.add_metric(list(key), value)
        errors = CounterMetricFamily(
            P + "poll_errors",
            "Polls that failed, by reason.",
            labels=[*ACCOUNT, "endpoint", "reason"],
        )
        for key4, value in sorted(t.poll_errors.items()):
            errors.add_metric(list(key4), value)
        yield from (up, last, interval, polls, errors)

    def _self_metrics(self, providers: set[str]) -> Iterator[Metric]:
        t = self._telemetry
        requests = CounterMetricFamily(
            P + "http_requests",
            "HTTP responses from providers (code 'error' when none).",
            labels=["provider", "endpoint", "code"],
        )
        for key, value in sorted(t.http_requests.items()):
            requests.add_metric(list(key), value)
        yield requests
        yield _histogram(
            P + "http_request_duration_seconds",
            "Provider request latency.",
            ["provider", "endpoint"],
            t.http_duration.items(),
        )
        limited = CounterMetricFamily(
            P + "rate_limited", "HTTP 429 responses received.", labels=["provider"]
        )
        for provider in sorted(providers | set(t.rate_limited)):
            limited.add_metric([provider], t.rate_limited[provider])
        yield limited
        yield _histogram(
            P + "scheduler_delay_seconds",
            "How late a poll started against its due time.",
            ["provider"],
            (((p,), h) for p, h in list(t.scheduler_delay.items())),
        )
        events = CounterMetricFamily(P + "events", "Alert events emitted.", labels=["event"])
        for name in EVENT_NAMES:
            events.add_metric([name], t.events[name])
        yield events
        stores = CounterMetricFamily(
            P + "store_errors", "State commits that failed.", labels=["provider"]
        )
        for provider in sorted(providers | set(t.store_errors)):
            stores.add_metric([provider], t.store_errors[provider])
        yield stores
        info = GaugeMetricFamily(P + "build_info", "walletwatch version.", labels=["version"])
        info.add_metric([__version__], 1.0)
        yield info

    def _delivery(self) -> Iterator[Metric]:
        """The outbox as each sink sees it: what waits, what failed, what was refused."""
        t = self._telemetry
        sinks = sorted(set(t.outbox_pending) | set(t.delivery_failures) | set(t.events_parked))
        pending = GaugeMetricFamily(
            P + "outbox_pending", "Events in the outbox not yet delivered.", labels=["sink"]
        )
        failures = CounterMetricFamily(
            P + "delivery_failures", "Failed attempts to deliver events.", labels=["sink"]
        )
        parked = CounterMetricFamily(
            P + "events_parked",
            "Events a sink refused for good (HTTP 4xx), set aside and skipped.",
            labels=["sink"],
        )
        for sink in sinks:
            pending.add_metric([sink], t.outbox_pending.get(sink, 0))
            failures.add_metric([sink], t.delivery_failures[sink])
            parked.add_metric([sink], t.events_parked[sink])
        yield from (pending, failures, parked)

    def _budget(self) -> Iterator[Metric]:
        """The rate-limit buckets: their pace now and at most, what they served and made wait."""
        rate = GaugeMetricFamily(
            P + "bucket_rate",
            "Requests per second the bucket paces at now (lowered after repeated 429s).",
            labels=["bucket"],
        )
        max_rate = GaugeMetricFamily(
            P + "bucket_max_rate",
            "Requests per second the bucket paces at when unthrottled (limit less margin).",
            labels=["bucket"],
        )
        requests = CounterMetricFamily(
            P + "bucket_requests", "Request slots the bucket handed out.", labels=["bucket"]
        )
        waited = CounterMetricFamily(
            P + "bucket_wait_seconds",
            "Seconds requests spent waiting for a slot of the bucket.",
            labels=["bucket"],
        )
        limited = CounterMetricFamily(
            P + "bucket_rate_limited", "HTTP 429s charged to the bucket.", labels=["bucket"]
        )
        for name, stats in sorted(self._telemetry.buckets.items()):
            rate.add_metric([name], stats.rate)
            max_rate.add_metric([name], stats.max_rate)
            requests.add_metric([name], stats.requests)
            waited.add_metric([name], stats.wait_seconds)
            limited.add_metric([name], stats.rate_limited)
        yield from (rate, max_rate, requests, waited, limited)


def _histogram(
    name: str, doc: str, labels: list[str], data: Iterable[tuple[Sequence[str], Histogram]]
) -> HistogramMetricFamily:
    family = HistogramMetricFamily(name, doc, labels=labels)
    for key, hist in sorted(data, key=lambda item: tuple(item[0])):
        family.add_metric(list(key), hist.buckets(), hist.total)
    return family
