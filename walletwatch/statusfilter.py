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


def problem(account: Item) -> str:
    """The account's worst condition: down, stuck, low, waiting or up."""
    if account.get("state") == "down":
        return "down"
    if account.get("stuck"):
        return "stuck"
    if any(b.get("low") for b in account.get("balances") or ()):
        return "low"
    return "waiting" if account.get("state") == "waiting" else "up"


def matches(account: Item, filters: Filters) -> bool:
    """Whether the filters keep ``account`` (provider exact, account a substring, any case)."""
    if filters.provider and account.get("provider") != filters.provider:
        return False
    if filters.account and filters.account.casefold() not in str(account.get("account")).casefold():
        return False
    if filters.state == "all":
        return True
    worst = problem(account)
    if filters.state == "problems":
        return worst in ("down", "stuck", "low")
    if filters.state == "down":
        return worst == "down"
    if filters.state == "stuck":
        return bool(account.get("stuck"))
    return any(b.get("low") for b in account.get("balances") or ())


def chosen(accounts: Iterable[Item], filters: Filters) -> list[Item]:
    """The accounts the filters keep, problems first and otherwise in config order."""
    kept = [a for a in accounts if matches(a, filters)]
    kept.sort(key=lambda a: _RANK[problem(a)])  # stable: config order within a rank
    return kept


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

    @classmethod
    def of(cls, accounts: Sequence[Item]) -> Counts:
        """The counts over every account."""
        ranks = dict.fromkeys(_RANK, 0)
        low = stuck_transfers = 0
        for account in accounts:
            ranks[problem(account)] += 1
            low += any(b.get("low") for b in account.get("balances") or ())
            stuck_transfers += int(account.get("stuck") or 0)
        stuck = sum(1 for a in accounts if a.get("stuck"))
        return cls(len(accounts), ranks["down"], stuck, low, ranks["waiting"], stuck_transfers)


def event_matches(event: Item, filters: Filters) -> bool:
    """Whether the filters keep an event (by its provider and account)."""
    if filters.provider and event.get("provider") != filters.provider:
        return False
    return filters.account.casefold() in str(event.get("account", "")).casefold()
