"""Which accounts and transfers the status page shows: its filters, read from the query
string, and the order of its rows, problems first."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import urlencode

STATES = ("all", "problems", "down", "stuck", "low")
"""The state filter's values: every account, any problem, or one kind of problem."""

_RANK = {"down": 0, "stuck": 1, "low": 2, "waiting": 3, "up": 4}
"""Row order: problems first, the worst first."""

Item = Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class Filters:
    """What the query string asks to see, and notes on what in it was not understood."""

    provider: str = ""
    account: str = ""
    state: str = "all"
    page: int = 1
    tpage: int = 1
    notes: tuple[str, ...] = ()

    @classmethod
    def parse(cls, query: Mapping[str, str]) -> Filters:
        """The filters of a query string; a value not understood is noted and left out."""
        notes: list[str] = []
        state = query.get("state", "").strip() or "all"
        if state not in STATES:
            notes.append(f"Unknown state {state!r}: showing all.")
            state = "all"
        pages = []
        for name in ("page", "tpage"):
            raw = query.get(name, "").strip() or "1"
            page = int(raw) if raw.isdigit() and len(raw) < 7 else 0
            if page < 1:
                notes.append(f"Page {raw!r} is not a page number: showing the first.")
            pages.append(max(page, 1))
        return cls(
            provider=query.get("provider", "").strip(),
            account=query.get("account", "").strip(),
            state=state,
            page=pages[0],
            tpage=pages[1],
            notes=tuple(notes),
        )

    def link(self, **changes: object) -> str:
        """A relative URL of the page with these filters, ``changes`` applied."""
        moved = replace(self, **changes)  # type: ignore[arg-type]
        pairs = [
            (name, str(value))
            for name, value, default in (
                ("provider", moved.provider, ""),
                ("account", moved.account, ""),
                ("state", moved.state, "all"),
                ("page", moved.page, 1),
                ("tpage", moved.tpage, 1),
            )
            if value != default
        ]
        # surrogatepass: a filter typed with a lone surrogate still links back to itself
        return "?" + urlencode(pairs, encoding="utf-8", errors="surrogatepass")


def is_low(account: Item) -> bool:
    """Whether any of the account's balances is below its threshold."""
    return any(b.get("low") for b in account.get("balances") or ())


def problem(account: Item) -> str:
    """The account's worst condition: down, stuck, low, waiting or up."""
    state = account.get("state")
    if state == "down":
        return "down"
    if account.get("stuck"):
        return "stuck"
    if is_low(account):
        return "low"
    return "waiting" if state == "waiting" else "up"


_KEPT = {
    "all": frozenset(_RANK),
    "problems": frozenset({"down", "stuck", "low"}),
    "down": frozenset({"down"}),
    "stuck": frozenset({"stuck"}),  # and down ones with stuck transfers, below
    "low": frozenset({"low"}),  # and down or stuck ones with a low balance, below
}
"""The conditions each state filter keeps."""


def matches(account: Item, filters: Filters, worst: str | None = None) -> bool:
    """Whether the filters keep ``account`` (provider exact, account a substring, any case).

    ``worst`` is its ``problem``, when known already.
    """
    if filters.provider and account.get("provider") != filters.provider:
        return False
    if filters.account and filters.account.casefold() not in str(account.get("account")).casefold():
        return False
    worst = problem(account) if worst is None else worst
    if worst in _KEPT[filters.state]:
        return True
    if filters.state == "stuck":
        return bool(account.get("stuck"))
    return filters.state == "low" and worst in ("down", "stuck") and is_low(account)


class Tally:
    """The accounts the filters keep, ranked, and the counts over every account, taken in
    one account at a time (so a caller can let the event loop run between them)."""

    def __init__(self, filters: Filters) -> None:
        self._filters = filters
        self._ranked: dict[str, list[Item]] = {rank: [] for rank in _RANK}  # in _RANK's order
        self._ranks = dict.fromkeys(_RANK, 0)
        self._low = self._stuck = self._stuck_transfers = 0
        self.providers: set[str] = set()
        self.reach = [0, 0]
        """Stuck and in-flight transfers of every account of the provider asked for (or all)."""
        self.held = [0, 0]
        """Stuck and in-flight transfers of the accounts kept."""
        self.names: set[str] = set()
        """The names of the accounts kept."""

    def add(self, account: Item) -> None:
        """Count ``account``, and keep it if the filters do."""
        worst = problem(account)
        self._ranks[worst] += 1
        self._low += worst == "low" or (worst in ("down", "stuck") and is_low(account))
        transfers = int(account.get("stuck") or 0)
        self._stuck += transfers > 0
        self._stuck_transfers += transfers
        provider = account.get("provider")
        self.providers.add(str(provider))
        flying = int(account.get("in_flight") or 0)
        if not self._filters.provider or provider == self._filters.provider:
            self.reach[0] += transfers
            self.reach[1] += flying
        if matches(account, self._filters, worst):
            self._ranked[worst].append(account)
            self.held[0] += transfers
            self.held[1] += flying
            self.names.add(str(account.get("account")))

    def shown(self) -> list[Item]:
        """The accounts kept, problems first and otherwise in the order added; the tally lets
        go of them (so the caller alone decides when they are freed)."""
        shown = [account for ranked in self._ranked.values() for account in ranked]
        for ranked in self._ranked.values():
            ranked.clear()
        return shown

    def counts(self) -> Counts:
        """The counts over every account added."""
        ranks = self._ranks
        added = sum(ranks.values())
        return Counts(
            added, ranks["down"], self._stuck, self._low, ranks["waiting"], self._stuck_transfers
        )


def stuck_only(filters: Filters) -> bool:
    """Whether the filters list stuck transfers alone, not every one in flight."""
    return filters.state in ("stuck", "problems")


def moving_count(shown: Iterable[Item], filters: Filters) -> int:
    """How many transfers the page lists for the accounts it shows, by their own counts."""
    field = "stuck" if stuck_only(filters) else "in_flight"
    return sum(int(a.get(field) or 0) for a in shown)


def in_order(stuck: Sequence[Item], in_flight: Sequence[Item]) -> list[Item]:
    """Stuck transfers first, then the other in-flight ones, each oldest first."""
    return [*stuck, *(t for t in in_flight if not t.get("stuck"))]


@dataclass(frozen=True, slots=True)
class Counts:
    """How many accounts are in each condition, and the stuck transfers among them."""

    accounts: int
    down: int
    stuck: int
    low: int
    waiting: int
    stuck_transfers: int


def event_matches(event: Item, filters: Filters) -> bool:
    """Whether the filters keep an event (by its provider and account)."""
    if filters.provider and event.get("provider") != filters.provider:
        return False
    return filters.account.casefold() in str(event.get("account", "")).casefold()
