"""Pruning: forgetting settled transfers with no sign of life for ``retention``.

Pure like the tracker: values in, values out. A direction keeps its KEEP_NEWEST newest
transfers whatever their age; what was forgotten is remembered by its newest creation time,
so old history showing up again is never news.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping
from dataclasses import replace
from operator import itemgetter

from walletwatch.account import DIRECTION_INDEX, AccountState
from walletwatch.ledger import CREATED, FIRST_SEEN, UPDATED, TransferKey
from walletwatch.model import Direction, Transfer

KEEP_NEWEST = 100
"""Settled transfers a direction keeps whatever their age: a provider's first history page
then holds a known transfer, so a client paging back until a known one stops there."""


def prune(
    state: AccountState, before: float, directions: Collection[Direction] = tuple(Direction)
) -> AccountState:
    """Forget settled transfers of ``directions`` with no sign of life since ``before``.

    A direction keeps its KEEP_NEWEST newest transfers, and a transfer without a provider
    creation time is never forgotten: ``pruned`` remembers the newest creation time
    forgotten, and a transfer created no later than that which is not known is old history
    showing up again, never news (see ``_forgotten``). Returns ``state`` itself when nothing
    is forgotten, in O(1) while ``before`` is under the state's prune floors.
    """
    plan = prune_plan(state, before, directions)
    if plan is None or not plan[0]:
        return state
    return forget(state, *plan)


def prune_floors(state: AccountState) -> AccountState:
    """``state`` with its prune floors computed (for a state built outside the tracker)."""
    floors = tuple(_scan(state, d, -math.inf)[1] for d in Direction)
    return replace(state, prune_floor=floors)


def prune_plan(
    state: AccountState, before: float, directions: Collection[Direction]
) -> tuple[dict[TransferKey, float], tuple[float, ...]] | None:
    """What prune() forgets (key -> created_at) and the new floors; None if nothing can be."""
    floors = state.prune_floor
    due = [d for d in directions if before > floors[DIRECTION_INDEX[d]]]
    if not due:
        return None
    gone: dict[TransferKey, float] = {}
    new = list(floors)
    for direction in due:
        forgotten, new[DIRECTION_INDEX[direction]] = _scan(state, direction, before)
        gone.update(forgotten)
    return gone, tuple(new)


def _scan(
    state: AccountState, direction: Direction, before: float
) -> tuple[dict[TransferKey, float], float]:
    """One direction's transfers to forget, and the floor of what it keeps.

    Beyond the KEEP_NEWEST newest, a settled transfer with a creation time goes once its
    last sign of life is before ``before``; the floor is the earliest last sign of life of
    those that stay. A transfer that changes, or a new one, forgets the floor (``Ledger``).
    """
    settled = state.settled.get(direction, {})
    mine = [(key[1], t) for key, t in state.transfers.items() if key[0] == direction]
    if len(settled) + len(mine) <= KEEP_NEWEST:
        return {}, math.inf
    ranked: list[tuple[float, str, float | None, float | None]] = []
    for transfer_id, tracked in mine:
        t = tracked.transfer
        life = _life(t.state.final, t.created_at, t.updated_at, tracked.first_seen)
        ranked.append((tracked.started_at, transfer_id, life, t.created_at))
    for transfer_id, entry in settled.items():
        created, first_seen = entry[CREATED], entry[FIRST_SEEN]
        life = _life(True, created, entry[UPDATED], first_seen)
        started = created if created is not None else first_seen
        ranked.append((started, transfer_id, life, created))
    ranked.sort(key=itemgetter(0, 1), reverse=True)
    gone: dict[TransferKey, float] = {}
    floor = math.inf
    for _, transfer_id, life, created in ranked[KEEP_NEWEST:]:
        if life is None or created is None:
            continue
        if life < before:
            gone[(direction, transfer_id)] = created
        else:
            floor = min(floor, life)
    return gone, floor


def _life(final: bool, created: float | None, updated: float | None, seen: float) -> float | None:
    """A settled transfer's last sign of life; None if it is never forgotten."""
    if not final or created is None:
        return None
    return max(created, updated or created, seen)


def forget(
    state: AccountState, gone: Mapping[TransferKey, float], floors: tuple[float, ...]
) -> AccountState:
    """``state`` without the ``gone`` transfers, with its prune marks moved on."""
    marks = dict(state.pruned)
    for (direction, _), created in gone.items():
        marks[direction] = max(marks.get(direction, -math.inf), created)
    transfers = state.transfers
    if any(key in transfers for key in gone):
        transfers = {k: t for k, t in transfers.items() if k not in gone}
    settled = dict(state.settled)
    for direction in {d for d, _ in gone}:
        inner = {i: e for i, e in settled.get(direction, {}).items() if (direction, i) not in gone}
        if inner:
            settled[direction] = inner
        else:
            settled.pop(direction, None)
    unsaved = state.unsaved
    if any(key in unsaved for key in gone):
        unsaved = {k: t for k, t in unsaved.items() if k not in gone}
    return replace(
        state,
        transfers=transfers,
        settled=settled,
        pruned=marks,
        unsaved=unsaved,
        prune_floor=floors,
    )


def forgotten(state: AccountState, t: Transfer) -> bool:
    """True if ``t`` is not known but as old as a transfer prune() forgot."""
    mark = state.pruned.get(t.direction)
    return mark is not None and t.created_at is not None and t.created_at <= mark
