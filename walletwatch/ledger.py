"""How an account's transfers are held: whole while in flight, compact once settled.

Settled transfers are most of what an account remembers, so they are kept compact (see
``Settled``): a plain tuple of atomic values each, which CPython's cyclic GC stops tracking,
in one dict per direction keyed by id. Transfers in flight stay whole (``TrackedTransfer``):
providers, metrics and the stuck rule read them. ``Ledger`` is one tracker step's view of
both, copying a mapping on its first write only.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Final

from walletwatch.model import Direction, State, Transfer

TransferKey = tuple[Direction, str]


@dataclass(frozen=True, slots=True)
class TrackedTransfer:
    """A transfer with what walletwatch knows about it beyond the provider's view."""

    transfer: Transfer
    first_seen: float
    revision: int = 0
    stuck: bool = False
    settled: frozenset[State] = frozenset()  # the final states it was counted in

    @property
    def started_at(self) -> float:
        """When the transfer began: the provider's created_at, else when it was first seen."""
        created = self.transfer.created_at
        return created if created is not None else self.first_seen


Settled = tuple[int, str, str, int, int, float, float | None, float | None]
"""A settled transfer, compact: (fingerprint, state, status, revision, flags, first_seen,
created_at, updated_at).

It holds what the tracker decides with later: whether a newly observed Transfer differs from
the one seen (``fingerprint`` of the other fields, its high half those an amendment
reports; state, status and the times are compared exactly), the state and status it would
move from, its revision, ``flags`` (the states it was counted in as bits, and whether it
was stuck) and the times pruning reads. State and status are plain interned strings
shared by every transfer; no Transfer, Decimal or set is kept. The store keeps the full
row (see ``AccountState.unsaved``).
"""
FP: Final = 0
STATE: Final = 1
STATUS: Final = 2
REVISION: Final = 3
FLAGS: Final = 4
FIRST_SEEN: Final = 5
CREATED: Final = 6
UPDATED: Final = 7

BIT: Mapping[str, int] = {s: 1 << i for i, s in enumerate(State)}
STUCK_BIT = 1 << len(State)
SETS = tuple(frozenset(s for s in State if m & BIT[s]) for m in range(STUCK_BIT))
"""Every possible ``settled`` set, indexed by its bits: shared, never one per transfer."""
PLAIN: Mapping[State, str] = {s: s.value for s in State}
STATES: Mapping[str, State] = {s.value: s for s in State}
HALF = 30
HALF_MASK = (1 << HALF) - 1  # two halves of 30 bits: an int of two digits, 32 bytes


def money_print(t: Transfer) -> int:
    """A 30-bit hash of the money fields of a transfer: currency, amount, fee and address."""
    fee = None if t.fee is None else str(t.fee)
    return hash((t.currency, str(t.amount), fee, t.address)) & HALF_MASK


def fingerprint(t: Transfer) -> int:
    """A 60-bit hash of the transfer's fields that no rule compares exactly.

    The high half is ``money_print``, the low half hashes txid, confirmations and details.
    Python's hash, randomized per process for strings: never persisted (a loaded state
    computes it afresh from the row). Amounts go in as their text, which hashes several
    times faster than a Decimal; "1.50" and "1.5" then differ, which costs one look-up of
    the stored row (see ``to_look_up``) and one silent row update, and nothing else. A
    change collides with odds of 2**-30 per half (ints hash by value: confirmations -1 and
    -2 collide always). A collision of the quiet half only delays a row update; one of the
    money half would hide an amendment of a settled transfer, about once in a billion
    amendments: the price of keeping the compact entry at one int, not two. State, status
    and times are compared exactly (``unchanged``).
    """
    quiet = hash((t.txid, t.confirmations, t.details)) & HALF_MASK
    return (money_print(t) << HALF) | quiet


def settled_set(states: Iterable[State]) -> frozenset[State]:
    """The shared frozenset holding ``states``."""
    return SETS[sum(BIT[s] for s in set(states))]


def _intern(text: str) -> str:
    return sys.intern(text) if type(text) is str else text


def compact(tracked: TrackedTransfer) -> Settled:
    """The compact entry of a settled transfer."""
    t = tracked.transfer
    flags = sum(BIT[s] for s in tracked.settled) | (STUCK_BIT if tracked.stuck else 0)
    return (
        fingerprint(t),
        PLAIN[t.state],
        _intern(t.status),
        tracked.revision,
        flags,
        tracked.first_seen,
        t.created_at,
        t.updated_at,
    )


def unchanged(entry: Settled, t: Transfer) -> bool:
    """True if ``t`` is the transfer ``entry`` was made from (``prev.transfer == t``)."""
    return (
        entry[STATE] == t.state
        and entry[STATUS] == t.status
        and entry[CREATED] == t.created_at
        and entry[UPDATED] == t.updated_at
        and entry[FP] == fingerprint(t)
    )


class Ledger:
    """The transfers of one step: the state's mappings, copied on the first write only."""

    def __init__(
        self,
        transfers: Mapping[TransferKey, TrackedTransfer],
        settled: Mapping[Direction, Mapping[str, Settled]],
    ) -> None:
        self.full = transfers
        self.settled = settled
        self.unsaved: dict[TransferKey, TrackedTransfer] = {}
        self.touched: set[Direction] = set()
        self._full: dict[TransferKey, TrackedTransfer] | None = None
        self._outer: dict[Direction, Mapping[str, Settled]] | None = None
        self._inner: dict[Direction, dict[str, Settled]] = {}

    def get(self, direction: Direction, transfer_id: str) -> TrackedTransfer | Settled | None:
        """The entry of a transfer, whole or compact; None if unknown."""
        settled = self.settled.get(direction)  # a key is in one mapping only
        entry = None if settled is None else settled.get(transfer_id)
        return entry if entry is not None else self.full.get((direction, transfer_id))

    def put(self, tracked: TrackedTransfer) -> None:
        """Record a new or changed transfer: whole while in flight, else compact."""
        t = tracked.transfer
        key = (t.direction, t.id)
        self.touched.add(t.direction)
        if t.state.in_flight:
            self._whole()[key] = tracked
            settled = self.settled.get(t.direction)
            if settled is not None and t.id in settled:
                del self._compact(t.direction)[t.id]
        else:
            if key in self.full:
                del self._whole()[key]
            self._compact(t.direction)[t.id] = compact(tracked)
            self.unsaved[key] = tracked

    def _whole(self) -> dict[TransferKey, TrackedTransfer]:
        if self._full is None:
            self.full = self._full = dict(self.full)
        return self._full

    def _compact(self, direction: Direction) -> dict[str, Settled]:
        if self._outer is None:
            self.settled = self._outer = dict(self.settled)
        inner = self._inner.get(direction)
        if inner is None:
            inner = self._inner[direction] = dict(self._outer.get(direction, {}))
            self._outer[direction] = inner
        return inner

    def floors(self, floors: tuple[float, ...]) -> tuple[float, ...]:
        """``floors`` forgotten for the directions this step changed."""
        return tuple(
            -math.inf if d in self.touched else floor
            for d, floor in zip(Direction, floors, strict=True)
        )

    def finish(self) -> None:
        """Drop the directions this step left without a settled transfer."""
        for direction, inner in self._inner.items():
            if not inner and self._outer is not None:
                del self._outer[direction]
