"""What walletwatch remembers about one account: its immutable state, balances and totals.

How transfers are held, whole in flight and compact once settled, is ``walletwatch.ledger``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from decimal import Decimal
from types import MappingProxyType
from typing import Protocol

from walletwatch.ledger import STATE, STATES, Settled, TrackedTransfer, TransferKey
from walletwatch.model import Balance, Direction, State

TotalKey = tuple[str, Direction, State]


class Policy(Protocol):
    """What the tracker needs to know about an account (an AccountConfig satisfies it)."""

    @property
    def name(self) -> str: ...
    @property
    def provider(self) -> str: ...
    @property
    def currencies(self) -> frozenset[str] | None: ...
    @property
    def low_balance(self) -> Mapping[str, Decimal]: ...
    @property
    def down_after(self) -> int: ...
    @property
    def retention(self) -> float: ...
    def stuck_after(self, direction: str) -> float: ...


@dataclass(frozen=True, slots=True)
class TrackedBalance:
    """The last balance of one currency, whether it is low, and counters for event ids."""

    balance: Balance
    low: bool = False
    changes: int = 0
    low_crossings: int = 0


@dataclass(frozen=True, slots=True)
class Total:
    """How many transfers reached one final state, their summed amount, and corrections.

    Every field only grows (they are counters). A transfer that leaves the state again, or
    moves to another currency, is one ``corrections``; an amount that is lowered, or that of
    a transfer leaving, is added to ``corrected``. Net: ``count - corrections`` transfers
    are in the state now, summing ``amount - corrected``.
    """

    count: int = 0
    amount: Decimal = Decimal(0)
    corrections: int = 0
    corrected: Decimal = Decimal(0)


NO_ROWS: Mapping[TransferKey, TrackedTransfer] = MappingProxyType({})
_UNKNOWN_FLOORS = (-math.inf,) * len(Direction)

DIRECTION_INDEX: Mapping[Direction, int] = {d: i for i, d in enumerate(Direction)}


@dataclass(frozen=True, slots=True)
class AccountState:
    """Everything walletwatch remembers about one account."""

    # Transfers kept whole: those in flight (and any a caller builds a state with).
    transfers: Mapping[TransferKey, TrackedTransfer] = field(default_factory=dict)
    balances: Mapping[str, TrackedBalance] = field(default_factory=dict)
    baselined: frozenset[Direction] = frozenset()
    totals: Mapping[TotalKey, Total] = field(default_factory=dict)
    failures: Mapping[str, int] = field(default_factory=dict)
    down: bool = False
    downs: int = 0
    # Per direction, the newest created_at among transfers pruned from ``transfers``.
    pruned: Mapping[Direction, float] = field(default_factory=dict)
    # Settled transfers, compact, per direction and id; a key is here or in ``transfers``.
    settled: Mapping[Direction, Mapping[str, Settled]] = field(default_factory=dict)
    unsaved: Mapping[TransferKey, TrackedTransfer] = field(
        default_factory=lambda: NO_ROWS, compare=False, repr=False
    )
    """The whole records of the compact entries the step that made this state wrote: the
    store writes their rows from these. The shell drops them once committed (``saved``)."""
    prune_floor: tuple[float, ...] = field(default=_UNKNOWN_FLOORS, compare=False, repr=False)
    """Per direction (in Direction's order), prune() forgets nothing while its ``before``
    is at most this; -inf when unknown. A cache: it never changes what the state means."""

    def in_flight(self) -> Iterable[TrackedTransfer]:
        """Transfers that have not settled."""
        return (t for t in self.transfers.values() if t.transfer.state.in_flight)

    def known(self, direction: Direction, transfer_id: str) -> bool:
        """True if the transfer has been seen before."""
        if (direction, transfer_id) in self.transfers:
            return True
        settled = self.settled.get(direction)
        return settled is not None and transfer_id in settled

    def transfer_keys(self) -> Iterator[TransferKey]:
        """The key of every transfer tracked, in flight or settled."""
        yield from self.transfers
        for direction, settled in self.settled.items():
            for transfer_id in settled:
                yield (direction, transfer_id)

    def state_of(self, direction: Direction, transfer_id: str) -> State | None:
        """A tracked transfer's normalized state; None if it is not tracked."""
        tracked = self.transfers.get((direction, transfer_id))
        if tracked is not None:
            return tracked.transfer.state
        entry = self.settled.get(direction, {}).get(transfer_id)
        return None if entry is None else STATES[entry[STATE]]

    def saved(self) -> AccountState:
        """This state without the records kept for the store: what to keep once committed."""
        return self if not self.unsaved else replace(self, unsaved=NO_ROWS)
