"""The shared history-paging routine, against a fake history and a fake tracked state."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal

from walletwatch.model import Direction, Malformed, State, Transfer
from walletwatch.providers.paging import EMPTY, Page, page_back
from walletwatch.types import InFlight

DEPOSIT = Direction.DEPOSIT


def tx(transfer_id: str, state: State = State.OK, direction: Direction = DEPOSIT) -> Transfer:
    """A transfer of one BTC."""
    return Transfer(
        id=transfer_id,
        direction=direction,
        currency="BTC",
        amount=Decimal(1),
        status=state.value,
        state=state,
    )


@dataclass(frozen=True)
class Item:
    """An in-flight transfer as a provider sees it."""

    transfer: Transfer
    started_at: float


@dataclass
class FakeTracked:
    """Known ids and in-flight transfers, as the tracker would tell them."""

    known_ids: set[str] = field(default_factory=set)
    flying: list[Item] = field(default_factory=list)

    def known(self, direction: Direction, transfer_id: str) -> bool:
        """Known in any direction (the tests use deposits)."""
        del direction
        return transfer_id in self.known_ids

    def in_flight(self) -> Iterable[InFlight]:
        """The in-flight items."""
        return iter(self.flying)


class History:
    """Pages of ids, newest first; records every page and lookup asked for."""

    def __init__(self, *pages: Sequence[str]) -> None:
        self.pages = pages
        self.fetched: list[int] = []
        self.looked_up: list[str] = []

    async def fetch(self, number: int) -> Page:
        """Page ``number``; the last one says so."""
        self.fetched.append(number)
        ids = self.pages[number]
        return Page(tuple(tx(i) for i in ids), last=number == len(self.pages) - 1)

    async def look_up(self, item: InFlight) -> Page:
        """A fresh copy of the transfer, settled; 'gone' is unknown to the provider."""
        self.looked_up.append(item.transfer.id)
        if item.transfer.id == "gone":
            return EMPTY
        return Page((tx(item.transfer.id),), (Malformed("lookup", "odd", item.transfer.id),))


class TestPageBack:
    async def test_stops_at_the_first_page_holding_a_known_transfer(self) -> None:
        """With lookups, paging stops at the page where a known transfer shows."""
        history = History(["9", "8"], ["7", "6"], ["5"])
        tracked = FakeTracked(known_ids={"7"})

        transfers, _ = await page_back(
            history.fetch, DEPOSIT, tracked, 10, look_up=history.look_up, max_lookups=5
        )

        assert history.fetched == [0, 1]
        assert [t.id for t in transfers] == ["9", "8", "7", "6"]

    async def test_stops_after_max_pages(self) -> None:
        """Nothing known: at most max_pages pages."""
        history = History(["5"], ["4"], ["3"], ["2"])

        transfers, _ = await page_back(history.fetch, DEPOSIT, FakeTracked(), 2)

        assert history.fetched == [0, 1]
        assert [t.id for t in transfers] == ["5", "4"]

    async def test_stops_at_the_last_page(self) -> None:
        """A page that says it is the last ends the paging."""
        history = History(["5"], ["4"])

        await page_back(history.fetch, DEPOSIT, FakeTracked(), 10)

        assert history.fetched == [0, 1]

    async def test_looks_up_unseen_in_flight_oldest_first_within_budget(self) -> None:
        """Unseen in-flight transfers of the direction, lookable, oldest first, at most N."""
        history = History(["9", "8"])
        flying = [
            Item(tx("a", State.PENDING), 3.0),
            Item(tx("b", State.PENDING), 1.0),
            Item(tx("skip", State.PENDING), 0.0),
            Item(tx("9", State.PENDING), 0.5),  # listed: not looked up
            Item(tx("w", State.PENDING, Direction.WITHDRAWAL), 0.1),  # other direction
            Item(tx("c", State.PENDING), 2.0),
        ]
        tracked = FakeTracked(known_ids={"8"}, flying=flying)

        transfers, malformed = await page_back(
            history.fetch,
            DEPOSIT,
            tracked,
            10,
            look_up=history.look_up,
            max_lookups=2,
            lookable=lambda t: t.id != "skip",
        )

        assert history.looked_up == ["b", "c"]
        assert [t.id for t in transfers] == ["9", "8", "b", "c"]
        assert [m.transfer_id for m in malformed] == ["b", "c"]

    async def test_a_transfer_unknown_to_the_provider_keeps_what_is_known(self) -> None:
        """An EMPTY lookup adds nothing."""
        history = History(["9"])
        tracked = FakeTracked(known_ids={"9"}, flying=[Item(tx("gone", State.PENDING), 0.0)])

        transfers, malformed = await page_back(
            history.fetch, DEPOSIT, tracked, 10, look_up=history.look_up, max_lookups=5
        )

        assert (history.looked_up, [t.id for t in transfers], malformed) == (["gone"], ["9"], ())

    async def test_without_lookups_pages_on_until_every_in_flight_one_shows(self) -> None:
        """Past a known transfer, paging goes on until the in-flight ones have been seen."""
        history = History(["9"], ["8"], ["7"], ["6"])
        tracked = FakeTracked(known_ids={"9"}, flying=[Item(tx("7", State.PENDING), 0.0)])

        transfers, _ = await page_back(history.fetch, DEPOSIT, tracked, 10)

        assert history.fetched == [0, 1, 2]
        assert [t.id for t in transfers] == ["9", "8", "7"]

    async def test_merge_turns_the_listed_entries_into_transfers(self) -> None:
        """The listed entries reach the observation through ``merge``."""
        history = History(["9", "8", "7"])

        def newest_only(listed: Sequence[Transfer]) -> Iterable[Transfer]:
            return listed[:1]

        transfers, _ = await page_back(history.fetch, DEPOSIT, FakeTracked(), 1, merge=newest_only)

        assert [t.id for t in transfers] == ["9"]
