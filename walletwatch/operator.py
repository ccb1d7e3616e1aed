"""The operator's view of the daemon: accounts, transfers and events as the API gives them.

Read from the live state the watchers hold and, for settled transfers and events, from the
state database on its read connection: never a request to a provider. Every answer is built
a slice at a time, yielding to the event loop between slices, so a listing of 10,000
accounts never stalls the polls. Amounts are fixed-point decimal strings and times RFC 3339
UTC, as in the event stream.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import json
from collections.abc import AsyncIterator, Callable, Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from operator import itemgetter
from typing import Any, TypeVar

from walletwatch.asyncstore import AsyncStore
from walletwatch.errors import BadParameter, NotLeading
from walletwatch.escape import SURROGATES, cleaned
from walletwatch.events import format_ts
from walletwatch.health import EndpointHealth
from walletwatch.model import Direction, plain
from walletwatch.storeread import final_transfers, recent_events
from walletwatch.tracker import TrackedTransfer, is_stuck
from walletwatch.types import Clock
from walletwatch.watcher import AccountWatcher

SLICE_SECONDS = 0.005
"""How long a listing runs before it lets the event loop run other tasks."""

TRANSFER_STATES = ("in_flight", "stuck", "final", "all")
MOVING = "moving"
"""A state the status page asks for, never the API: in flight and not (yet) stuck."""
DEFAULT_LIMIT = 1000
MAX_LIMIT = 100_000
EVENTS_LIMIT = 100
MAX_EVENTS_LIMIT = 1000

_RUN = 2048
"""How many in-flight transfers are sorted in one go: some 2 ms."""

T = TypeVar("T")
Row = dict[str, Any]
_SortKey = tuple[float, str, str, str]


@dataclass(frozen=True, slots=True)
class TransferQuery:
    """Which transfers a listing wants: its state, its filters, and how many at most."""

    state: str = "in_flight"
    provider: str | None = None
    account: str | None = None
    direction: Direction | None = None
    limit: int = DEFAULT_LIMIT
    accounts: frozenset[str] | None = field(default=None, repr=False)
    """Only these accounts' transfers, by name: the status page's filters, not an API's."""
    offset: int = 0
    """How many of the oldest that match to pass over, unbuilt: the status page's pages."""


def transfer_query(params: Mapping[str, str]) -> TransferQuery:
    """The query the parameters ask for; BadParameter names the first one it cannot take."""
    unknown = sorted(set(params) - {"state", "provider", "account", "direction", "limit"})
    if unknown:
        raise BadParameter(unknown[0], f"unknown parameter {unknown[0]!r}")
    state = params.get("state", "in_flight")
    if state not in TRANSFER_STATES:
        raise BadParameter("state", f"state must be one of {', '.join(TRANSFER_STATES)}")
    direction = params.get("direction")
    if direction is not None and direction not in Direction.__members__.values():
        raise BadParameter("direction", "direction must be deposit or withdrawal")
    return TransferQuery(
        state=state,
        provider=params.get("provider") or None,
        account=params.get("account") or None,
        direction=None if direction is None else Direction(direction),
        limit=_limit(params, DEFAULT_LIMIT, MAX_LIMIT),
    )


def events_query(params: Mapping[str, str]) -> tuple[str | None, int]:
    """The ``after`` event id and the ``limit`` the parameters ask for."""
    unknown = sorted(set(params) - {"after", "limit"})
    if unknown:
        raise BadParameter(unknown[0], f"unknown parameter {unknown[0]!r}")
    return params.get("after") or None, _limit(params, EVENTS_LIMIT, MAX_EVENTS_LIMIT)


def _limit(params: Mapping[str, str], default: int, most: int) -> int:
    text = params.get("limit")
    if text is None:
        return default
    if not text.isascii() or not text.isdigit() or not 1 <= int(text) <= most:
        raise BadParameter("limit", f"limit must be a whole number from 1 to {most}")
    return int(text)


class OperatorView:
    """Answers the operator API's questions from the daemon's watchers and store."""

    def __init__(
        self,
        watchers: Callable[[], Iterable[AccountWatcher]],
        store: Callable[[], AsyncStore],
        clock: Clock,
        slice_seconds: float = SLICE_SECONDS,
        leading: Callable[[], bool] = lambda: True,
    ) -> None:
        self._watchers = watchers
        self._store = store
        self._clock = clock
        self._slice = slice_seconds
        self._leading = leading  # a follower's view is empty: it must say so, not "all well"

    def check_leading(self) -> None:
        """Raise NotLeading on a replica that follows (its empty view is no answer)."""
        if not self._leading():
            raise NotLeading(
                "this replica follows: another holds the lease and watches the accounts; "
                "ask the leader (the replica with walletwatch_leader 1)"
            )

    async def accounts(self, names: Collection[str] | None = None) -> list[Row]:
        """Every account (or those ``names`` names) in config order: how it is, why it is
        down, balances, transfers."""
        now = self._clock.time()
        return [
            account_row(w, now)
            async for w in self._sliced(self._watchers())
            if names is None or w.name in names
        ]

    async def briefs(self) -> list[Row]:
        """Every account in config order, with only what the status page's filters and counts
        read (a tenth of the cost of the whole rows, which it builds for its page alone)."""
        now = self._clock.time()
        return [account_brief(w, now) async for w in self._sliced(self._watchers())]

    async def transfers(self, query: TransferQuery) -> tuple[list[Row], bool]:
        """The transfers the query wants, oldest first, and whether more matched than its limit.

        In-flight ones come from live state; settled ones from the store's rows, merged in.
        The ``offset`` oldest are passed over without building their rows.
        """
        now = self._clock.time()
        watchers = [
            w
            async for w in self._sliced(self._watchers())
            if (query.provider is None or w.provider == query.provider)
            and (query.account is None or w.name == query.account)
            and (query.accounts is None or w.name in query.accounts)
        ]
        wanted = query.offset + query.limit + 1  # one more than the limit tells if it was cut
        runs: list[list[tuple[_SortKey, AccountWatcher, TrackedTransfer]]] = []
        if query.state != "final":
            runs = await self._in_flight_runs(watchers, query, wanted, now)
        settled: list[tuple[_SortKey, Row]] = []
        if query.state in ("final", "all") and watchers:
            providers = {w.name: w.provider for w in watchers}
            store = self._store()
            found = await store.read(
                final_transfers,
                store.store.account_in(list(providers)),
                None if query.direction is None else str(query.direction),
                wanted,
            )
            settled = [
                _stored(row, providers[row[0]], now) async for row in self._sliced(consumed(found))
            ]
        merged: Iterator[tuple[Any, ...]] = heapq.merge(*runs, consumed(settled), key=_first)
        rows: list[Row] = []
        async for n, item in self._sliced(enumerate(itertools.islice(merged, wanted))):
            if n >= query.offset:
                rows.append(transfer_row(item[1], item[2], now) if len(item) == 3 else item[1])
        async for run in self._sliced(runs, every=1):
            run.clear()  # a run at a time: freeing 50,000 keys at once stalls the loop
        truncated = len(rows) > query.limit
        del rows[query.limit :]
        return rows, truncated

    async def _in_flight_runs(
        self, watchers: list[AccountWatcher], query: TransferQuery, wanted: int, now: float
    ) -> list[list[tuple[_SortKey, AccountWatcher, TrackedTransfer]]]:
        """The in-flight transfers the query wants, in runs each sorted oldest first and
        cut to its ``wanted`` oldest (no later one can be among the oldest ``wanted`` of all).

        Sorted a run at a time, the loop running between: sorting (or selecting the oldest
        tens of thousands of) hundreds of thousands at once would stall it; a lazy merge of
        the runs gives the oldest first.
        """
        stuck_only, moving = query.state == "stuck", query.state == MOVING
        runs = []
        run: list[tuple[_SortKey, AccountWatcher, TrackedTransfer]] = []
        async for w in self._sliced(watchers):
            for t in w.state.in_flight():
                if query.direction is not None and t.transfer.direction is not query.direction:
                    continue
                if (stuck_only or moving) and is_stuck(t, w.config, now) is moving:
                    continue
                run.append((_key(w.name, t), w, t))
                if len(run) == _RUN:
                    runs.append(_sorted_run(run, wanted))
                    run = []
        runs.append(_sorted_run(run, wanted))
        return runs

    async def events(self, after: str | None = None, limit: int = EVENTS_LIMIT) -> list[Row]:
        """The most recent events, oldest first; with ``after``, those queued after that one.

        BadParameter when the outbox no longer holds the ``after`` event (it was pruned).
        """
        bodies = await self._store().read(recent_events, after, limit)
        if bodies is None:
            raise BadParameter("after", "no event with that id is kept; omit after= for the latest")
        return [json.loads(body) async for body in self._sliced(bodies)]

    async def _sliced(self, items: Iterable[T], every: int = 64) -> AsyncIterator[T]:
        """``items`` one by one, letting the loop run every ``slice_seconds`` (looked at
        after ``every`` items)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._slice
        for count, item in enumerate(items):
            yield item
            if count % every == every - 1 and loop.time() >= deadline:
                await asyncio.sleep(0)
                deadline = loop.time() + self._slice


def account_row(w: AccountWatcher, now: float) -> Row:
    """One account as /api/v1/accounts gives it."""
    endpoints = {name: _endpoint(w.health.get(name)) for name in w.endpoints}
    failing = [h.failing_since for h in w.health.values() if not h.ok and h.failing_since]
    successes = [h.last_success for h in w.health.values() if h.last_success is not None]
    up = w.up
    in_flight = list(w.state.in_flight())
    return {
        "provider": w.provider,
        "account": w.name,
        "state": _state(w, up),
        "up": up,
        "down_since": _ts(min(failing)) if failing and not up else None,
        "last_success": _ts(max(successes, default=None)),
        "endpoints": endpoints,
        "balances": [
            _balance(currency, tracked.balance.available, tracked.balance.pending, tracked.low, w)
            for currency, tracked in sorted(w.state.balances.items())
        ],
        "in_flight": len(in_flight),
        "stuck": sum(is_stuck(t, w.config, now) for t in in_flight),
    }


def account_brief(w: AccountWatcher, now: float) -> Row:
    """One account as ``account_row`` gives it, with only provider, account, state, in_flight,
    stuck and each balance's low."""
    in_flight = list(w.state.in_flight())
    return {
        "provider": w.provider,
        "account": w.name,
        "state": _state(w, w.up),
        "balances": [{"low": tracked.low} for _, tracked in sorted(w.state.balances.items())],
        "in_flight": len(in_flight),
        "stuck": sum(is_stuck(t, w.config, now) for t in in_flight),
    }


def _state(w: AccountWatcher, up: bool) -> str:
    return "up" if up else ("down" if w.polled else "waiting")


def _endpoint(health: EndpointHealth | None) -> Row:
    if health is None:
        return {"last_success": None, "last_error": None}
    error = None
    if not health.ok:
        error = {"reason": health.reason, "message": health.error, "at": _ts(health.failed_at)}
    return {"last_success": _ts(health.last_success), "last_error": error}


def _balance(
    currency: str, available: Decimal, pending: Decimal | None, low: bool, w: AccountWatcher
) -> Row:
    threshold = w.config.low_balance.get(currency)
    return {
        "currency": currency,
        "available": plain(available),
        "pending": None if pending is None else plain(pending),
        "low_threshold": None if threshold is None else plain(threshold),
        "low": low,
    }


def transfer_row(w: AccountWatcher, tracked: TrackedTransfer, now: float) -> Row:
    """One in-flight transfer as /api/v1/transfers gives it."""
    t = tracked.transfer
    return {
        "provider": w.provider,
        "account": w.name,
        "id": t.id,
        "direction": str(t.direction),
        "currency": t.currency,
        "amount": plain(t.amount),
        "fee": None if t.fee is None else plain(t.fee),
        "address": t.address,
        "txid": t.txid,
        "status": t.status,
        "state": str(t.state),
        "created_at": _ts(t.created_at),
        "first_seen": _ts(tracked.first_seen),
        "updated_at": _ts(t.updated_at),
        "age_seconds": round(now - tracked.started_at, 3),
        "stuck": is_stuck(tracked, w.config, now),
    }


def _stored(row: tuple[Any, ...], provider: str, now: float) -> tuple[_SortKey, Row]:
    """A settled transfer's row (storeread.TRANSFER_COLUMNS) with its sort key."""
    account, direction, tid, currency, amount, fee, address, txid, status, state = row[:10]
    created_at, updated_at, first_seen = row[10:13]
    started = created_at if created_at is not None else first_seen
    return (started, account, direction, tid), {
        "provider": provider,
        "account": account,
        "id": tid,
        "direction": direction,
        "currency": currency,
        "amount": plain(Decimal(amount)),
        "fee": None if fee is None else plain(Decimal(fee)),
        "address": address,
        "txid": txid,
        "status": status,
        "state": state,
        "created_at": _ts(created_at),
        "first_seen": _ts(first_seen),
        "updated_at": _ts(updated_at),
        "age_seconds": round(now - started, 3),
        "stuck": False,
    }


def consumed(items: list[T]) -> Iterator[T]:
    """``items`` in order, each let go of as it is taken, leaving ``items`` empty.

    Freeing 100,000 rows at once when a listing's lists go out of scope stalled the loop for
    some 100 ms; let go one by one, they are freed in the slices that use them.
    """
    items.reverse()
    while items:
        yield items.pop()


def _key(account: str, tracked: TrackedTransfer) -> _SortKey:
    t = tracked.transfer
    return (tracked.started_at, account, str(t.direction), t.id)


def _sorted_run(
    run: list[tuple[_SortKey, AccountWatcher, TrackedTransfer]], wanted: int
) -> list[tuple[_SortKey, AccountWatcher, TrackedTransfer]]:
    """``run`` sorted by its items' first member (a C key: a run is sorted in one go), cut to
    its ``wanted`` first."""
    run.sort(key=itemgetter(0))
    del run[wanted:]
    return run


def _first(item: tuple[_SortKey, Any] | tuple[_SortKey, Any, Any]) -> _SortKey:
    return item[0]


def _ts(moment: float | None) -> str | None:
    return None if moment is None else format_ts(moment)


def json_chunks(head: str, rows: list[Row], tail: Mapping[str, Any]) -> Iterator[bytes]:
    """``{"<head>": [rows...], **tail}`` as JSON, in chunks of 100 rows; ``rows`` is emptied.

    Lone surrogates are kept escaped (as in the event stream), so strict parsers read it.
    """
    yield f'{{"{head}":['.encode()
    each = consumed(rows)
    first = True
    while batch := list(itertools.islice(each, 100)):
        part = _encoded(batch)
        yield part if first else b"," + part
        first = False
    rest = "".join(f",{json.dumps(key)}:{json.dumps(value)}" for key, value in tail.items())
    yield f"]{rest}}}\n".encode()


def _encoded(rows: list[Row]) -> bytes:
    """``rows`` as comma-separated JSON in UTF-8, written by the C encoder where it can be.

    Only text holding a lone surrogate, which UTF-8 cannot carry, takes the slow walk that
    escapes it.
    """
    text = ",".join(json.dumps(row, ensure_ascii=False, separators=(",", ":")) for row in rows)
    try:
        return text.encode()
    except UnicodeEncodeError:
        cleaned_rows = (cleaned(row, SURROGATES) for row in rows)
        return ",".join(
            json.dumps(row, ensure_ascii=False, separators=(",", ":")) for row in cleaned_rows
        ).encode()
