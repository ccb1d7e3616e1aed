"""One account's series as lines of the exposition, kept while its config and state stay.

The lines made from a watcher's config, and those made from its state (balances, totals), are
remade only when the config or state object is replaced (neither is ever changed in place;
most polls leave the state as it was). The provider gauges' lines are remade when a gauge is.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from walletwatch.config import AccountConfig
from walletwatch.exposition import Escapes, count, escape_label, number, sorted_labels
from walletwatch.families import (
    ACCOUNT,
    AMOUNT,
    BALANCE,
    CORRECTED,
    CORRECTIONS,
    CURRENCY,
    FLOW,
    IN_FLIGHT,
    INTERVAL,
    LOW,
    OLDEST,
    PENDING,
    SETTLED,
    SETTLED_FLOW,
    STUCK,
    THRESHOLD,
    UP,
    Family,
    P,
)
from walletwatch.model import Direction, Gauge
from walletwatch.tracker import AccountState, TrackedTransfer
from walletwatch.watcher import AccountWatcher

DIRECTIONS = tuple(Direction)


def _none_in_flight(family: Family) -> str:
    """The lines of one currency's flows at 0: a template of (account, currency, provider) x2."""
    return "".join(family.line(FLOW.template % ("%s", "%s", d, "%s"), "0.0") for d in DIRECTIONS)


_NONE_IN_FLIGHT, _NONE_STUCK = _none_in_flight(IN_FLIGHT), _none_in_flight(STUCK)


@dataclass(slots=True)
class AccountSeries:
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
    def of(cls, watcher: AccountWatcher) -> AccountSeries:
        """What ``watcher``'s config gives its series."""
        config = watcher.config
        a, p = escape_label(watcher.name), escape_label(watcher.provider)
        labels = ACCOUNT.template % (a, p)
        up = (UP.line(labels, count(False)), UP.line(labels, count(True)))
        low = "".join(
            LOW.line(CURRENCY.template % (a, escape_label(c), p), number(float(value)))
            for c, value in sorted(config.low_balance.items())
        )
        threshold = "".join(
            THRESHOLD.line(THRESHOLD.labels.template % (a, d, p), number(config.stuck_after(d)))
            for d in DIRECTIONS
        )
        interval = INTERVAL.line(labels, number(config.interval))
        return cls(config, a, p, up, low, threshold, interval)

    def read(self, state: AccountState, esc: Escapes) -> None:
        """Remake the state-made lines from ``state``."""
        a, p = self.account, self.provider
        balance, pending = [], []
        for currency, held in sorted(state.balances.items()):
            labels = CURRENCY.template % (a, esc[currency], p)
            balance.append(BALANCE.line(labels, number(float(held.balance.available))))
            if held.balance.pending is not None:
                pending.append(PENDING.line(labels, number(float(held.balance.pending))))
        settled, amount, corrections, corrected = [], [], [], []
        for (currency, direction, final), total in sorted(state.totals.items()):
            labels = SETTLED_FLOW.template % (a, esc[currency], direction, p, final)
            settled.append(SETTLED.line(labels, count(total.count)))
            amount.append(AMOUNT.line(labels, number(float(total.amount))))
            if total.corrections or total.corrected:
                corrections.append(CORRECTIONS.line(labels, count(total.corrections)))
                corrected.append(CORRECTED.line(labels, number(float(total.corrected))))
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
                counts.append(IN_FLIGHT.line(labels, count(len(group))))
                if group:
                    stuck.append((labels, group))
                    began = min(tracked.started_at for tracked in group)
                    oldest.append(OLDEST.line(labels, number(began)))
                else:
                    stuck.append(STUCK.line(labels, count(0)))
        self.state, self.oldest = state, "".join(oldest)
        self.in_flight, self.stuck = "".join(counts), _joined(stuck)
        self.balance, self.pending = "".join(balance), "".join(pending)
        self.settled, self.amount = "".join(settled), "".join(amount)
        self.corrections, self.corrected = "".join(corrections), "".join(corrected)

    def read_gauges(
        self,
        gauges: tuple[Gauge, ...],
        esc: Escapes,
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
            value = number(float(gauge.value))
            lines.append(f"{P}{gauge.name}{{{template % (a, p)}}} {value}\n")
        self.gauges_of = gauges
        self.gauges = tuple(
            (name, "".join(lines), frozenset(names)) for name, (lines, names) in by_name.items()
        )


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


def _gauge_labels(labels: tuple[tuple[str, str], ...], esc: Escapes) -> str:
    """A provider gauge's labels as a %-template of the account's and provider's values."""
    own = ((name, esc[value].replace("%", "%%")) for name, value in labels)
    return sorted_labels([("account", "%s"), ("provider", "%s"), *own])
