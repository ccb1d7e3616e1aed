"""What the status page reads from the operator views: the accounts a slice at a time, and
only the transfers its page lists.

At 10,000 accounts the page must not hold the event loop the daemon polls and is scraped on:
the accounts are tallied, and the page's HTML built, in slices of ``SLICE_SECONDS`` with the
loop running between them, as the operator API's listings are (walletwatch.operator).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Collection, Iterable, Sequence
from typing import Any, Protocol, TypeVar

from walletwatch.operator import MAX_LIMIT, SLICE_SECONDS, TransferQuery
from walletwatch.statusfilter import Filters, Item, Tally

T = TypeVar("T")


class Views(Protocol):
    """What the page reads: walletwatch.operator.OperatorView's answers.

    Declared here rather than in walletwatch.types: its TransferQuery comes from
    walletwatch.operator, which imports walletwatch.types (the house allows no cycle).
    """

    async def briefs(self) -> list[dict[str, Any]]:
        """Every account in config order, with provider, account, state, in_flight, stuck and
        each balance's low, in a new list."""
        ...

    async def accounts(self, names: Collection[str] | None = None) -> list[dict[str, Any]]:
        """The accounts ``names`` names in config order, as /api/v1/accounts lists them."""
        ...

    async def transfers(self, query: TransferQuery) -> tuple[list[dict[str, Any]], bool]:
        """The transfers ``query`` wants, oldest first, and whether more matched."""
        ...

    async def events(self, after: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        """The most recent events, oldest first."""
        ...


class Pacer:
    """Lets the event loop run each time the work since it last ran passes a slice."""

    def __init__(self, slice_seconds: float = SLICE_SECONDS) -> None:
        self._slice = slice_seconds
        self._loop = asyncio.get_running_loop()
        self._deadline = self._loop.time() + slice_seconds

    async def pause(self) -> None:
        """Yield to the loop if this slice is spent."""
        if self._loop.time() >= self._deadline:
            await asyncio.sleep(0)
            self._deadline = self._loop.time() + self._slice

    async def each(self, items: Iterable[T]) -> AsyncIterator[T]:
        """``items`` one by one, pausing between them."""
        for item in items:
            yield item
            await self.pause()


class Window:
    """The transfers of the accounts a page shows, read as few at a time as will do."""

    FEW = 20
    """Up to this many accounts are asked for one by one; more, all at once."""

    def __init__(self, view: Views, shown: Sequence[Item], filters: Filters, tally: Tally) -> None:
        """``shown``: the accounts ``tally`` kept for ``filters``."""
        self._view = view
        self._shown = shown
        self._tally = tally
        self._provider = filters.provider or None
        self.cut = False

    async def rows(self, state: str, first: int, last: int) -> list[Item]:
        """The transfers at ``first`` up to ``last`` in ``state`` (stuck or MOVING), oldest first.

        ``last`` counts from the oldest transfer in ``state`` of the accounts shown.
        """
        if last <= first:
            return []
        if len(self._shown) > self.FEW:
            # The names only when the accounts shown leave out some with such transfers.
            parts = 1 if state == "stuck" else 2
            every = self._tally.held[:parts] == self._tally.reach[:parts]
            names = None if every else frozenset(self._tally.names)
            query = TransferQuery(
                state, self._provider, limit=last - first, accounts=names, offset=first
            )
            got, _ = await self._view.transfers(query)
            return list(got)
        return (await self._one_by_one(state, last))[first:last]

    async def _one_by_one(self, state: str, last: int) -> list[Item]:
        """The oldest ``last`` in ``state``, from each account's own listing (of at most
        MAX_LIMIT: the cut is said on the page)."""
        stuck = state == "stuck"
        # An account's in-flight listing holds its stuck transfers too: read past them.
        limit = min(
            MAX_LIMIT, last + (0 if stuck else sum(int(a.get("stuck") or 0) for a in self._shown))
        )
        rows: list[Item] = []
        cut = False
        for a in self._shown:
            if a.get("stuck" if stuck else "in_flight"):
                query = TransferQuery(
                    "stuck" if stuck else "in_flight",
                    a.get("provider"),
                    a.get("account"),
                    limit=limit,
                )
                got, more = await self._view.transfers(query)
                rows.extend(t for t in got if stuck or not t.get("stuck"))
                cut = cut or more
        rows.sort(key=lambda t: -float(t.get("age_seconds") or 0))  # oldest first
        # Cut short only when the most the view gives was not enough for this page.
        self.cut = self.cut or (cut and limit == MAX_LIMIT and len(rows) < last)
        return rows
