"""Reading a transfer history that pages newest first: the one routine every client shares.

Page back until a page holds a transfer already known (``Tracked.known`` holds for each
direction's newest transfers, so the first page usually does), then bring the in-flight
transfers the pages did not show up to date: by looking each up, where the provider can,
or else by paging on until every one has shown up.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass

from walletwatch.model import Direction, Malformed, Transfer
from walletwatch.types import InFlight, Tracked

__all__ = ["EMPTY", "Page", "page_back"]


@dataclass(frozen=True, slots=True)
class Page:
    """One parsed answer of a history listing or a lookup."""

    transfers: tuple[Transfer, ...]
    malformed: tuple[Malformed, ...] = ()
    last: bool = False  # no page follows this one


EMPTY = Page(())
"""A lookup's answer when the provider no longer knows the transfer: what is known stays."""


def _as_listed(listed: Sequence[Transfer]) -> Iterable[Transfer]:
    return listed


async def page_back(
    fetch: Callable[[int], Awaitable[Page]],
    direction: Direction,
    tracked: Tracked,
    max_pages: int,
    *,
    look_up: Callable[[InFlight], Awaitable[Page]] | None = None,
    max_lookups: int = 0,
    lookable: Callable[[Transfer], bool] = lambda _: True,
    merge: Callable[[Sequence[Transfer]], Iterable[Transfer]] = _as_listed,
) -> tuple[tuple[Transfer, ...], tuple[Malformed, ...]]:
    """The transfers of ``direction`` worth observing now, and the records set aside.

    ``fetch(n)`` reads page ``n`` (0 the newest) of at most ``max_pages``. ``merge`` turns
    the listed entries into transfers (one per id; the last listed wins by default). With
    ``look_up``, at most ``max_lookups`` in-flight transfers the pages did not show, oldest
    first and only those ``lookable``, are looked up one by one; without it, paging goes on
    until every in-flight one has shown up.
    """
    listed: list[Transfer] = []
    malformed: list[Malformed] = []
    unseen = {t.transfer.id for t in tracked.in_flight() if t.transfer.direction is direction}
    reached_known = False
    for number in range(max_pages):
        page = await fetch(number)
        listed.extend(page.transfers)
        malformed.extend(page.malformed)
        reached_known = reached_known or any(tracked.known(direction, t.id) for t in page.transfers)
        unseen.difference_update(t.id for t in page.transfers)
        if page.last or (reached_known and (look_up is not None or not unseen)):
            break
    seen = {t.id: t for t in merge(listed)}
    if look_up is None:
        return tuple(seen.values()), tuple(malformed)
    stale = sorted(
        (
            item
            for item in tracked.in_flight()
            if item.transfer.direction is direction
            and item.transfer.id not in seen
            and lookable(item.transfer)
        ),
        key=lambda item: item.started_at,
    )
    for item in stale[:max_lookups]:
        fresh = await look_up(item)
        seen.update((t.id, t) for t in fresh.transfers)
        malformed.extend(fresh.malformed)
    return tuple(seen.values()), tuple(malformed)
