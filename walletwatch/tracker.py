"""The pure heart of walletwatch: (previous state, observation, now) -> (new state, events).

Nothing here does I/O or reads a clock. States are immutable; an unchanged transfer or
balance keeps its identity in the new state, so the store can write only what changed, and
an observation that changes nothing gives back the very same state.

How transfers are held, whole in flight and compact once settled, is ``walletwatch.ledger``;
its names the store and the tests use are re-exported here.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from decimal import Decimal
from operator import itemgetter
from types import MappingProxyType
from typing import Any, Protocol

from walletwatch.events import Event, event_id
from walletwatch.ledger import (
    BIT,
    CREATED,
    FIRST_SEEN,
    FLAGS,
    FP,
    HALF,
    REVISION,
    SETS,
    STATE,
    STATES,
    STATUS,
    STUCK_BIT,
    UPDATED,
    Ledger,
    Settled,
    TrackedTransfer,
    TransferKey,
    compact,
    fingerprint,
    money_print,
    settled_set,
    unchanged,
)
from walletwatch.model import Balance, Direction, Observation, State, Transfer

__all__ = [
    "FINAL_EVENT",
    "KEEP_NEWEST",
    "AccountState",
    "Policy",
    "Settled",
    "Total",
    "TotalKey",
    "TrackedBalance",
    "TrackedTransfer",
    "TransferKey",
    "compact",
    "fail",
    "fingerprint",
    "is_stuck",
    "money_print",
    "observe",
    "prune",
    "prune_floors",
    "settled_set",
    "to_look_up",
]

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


_NO_ROWS: Mapping[TransferKey, TrackedTransfer] = MappingProxyType({})
_NO_PREVIOUS: Mapping[TransferKey, Transfer] = MappingProxyType({})
_UNKNOWN_FLOORS = (-math.inf,) * len(Direction)
_DIRECTION_INDEX: Mapping[Direction, int] = {d: i for i, d in enumerate(Direction)}


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
        default_factory=lambda: _NO_ROWS, compare=False, repr=False
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
        return self if not self.unsaved else replace(self, unsaved=_NO_ROWS)


FINAL_EVENT: Mapping[tuple[Direction, State], str] = {
    (Direction.DEPOSIT, State.OK): "deposit.confirmed",
    (Direction.DEPOSIT, State.FAILED): "deposit.failed",
    (Direction.DEPOSIT, State.CANCELED): "deposit.failed",
    (Direction.WITHDRAWAL, State.OK): "withdrawal.completed",
    (Direction.WITHDRAWAL, State.FAILED): "withdrawal.failed",
    (Direction.WITHDRAWAL, State.CANCELED): "withdrawal.failed",
}


_EVENT_CORE = frozenset({"event", "event_id", "ts", "severity", "provider", "account"})


class _Emitter:
    """Collects the events of one tracker step for one account."""

    def __init__(self, policy: Policy, now: float) -> None:
        self.policy = policy
        self.now = now
        self.events: list[Event] = []

    def emit(self, name: str, id_parts: tuple[object, ...], **fields: Any) -> None:
        p = self.policy
        self.events.append(
            Event(
                event=name,
                event_id=event_id(p.provider, p.name, name, *id_parts),
                ts=self.now,
                provider=p.provider,
                account=p.name,
                fields=fields,
            )
        )

    def transfer(self, name: str, t: Transfer, *extra_id: object, **fields: Any) -> None:
        core: dict[str, Any] = {
            "currency": t.currency,
            "amount": t.amount,
            "fee": t.fee,
            "transfer_id": t.id,
            "txid": t.txid,
            "address": t.address,
            "status": t.status,
            "state": str(t.state),
            "confirmations": t.confirmations,
            **fields,
        }
        # A provider's details never overwrite the contract's fields of the same name.
        extra = {k: v for k, v in t.details if k not in core and k not in _EVENT_CORE}
        self.emit(name, (t.direction, t.id, *extra_id), **extra, **core)


def observe(
    state: AccountState,
    obs: Observation,
    policy: Policy,
    now: float,
    previous: Mapping[TransferKey, Transfer] = _NO_PREVIOUS,
) -> tuple[AccountState, list[Event]]:
    """Fold one successful poll of one endpoint into the state.

    ``previous`` holds the stored records of the transfers ``to_look_up`` names (settled
    ones whose money fields changed: the compact entries do not keep them). An observation
    that changes nothing gives back ``state`` itself.
    """
    out = _Emitter(policy, now)
    balances = state.balances
    if obs.balances is not None:
        balances = _balances(state.balances, obs.balances, policy, out)
    ledger = Ledger(state.transfers, state.settled)
    totals = _transfers(ledger, state, obs, out, previous)
    _stuck(ledger, obs.directions, policy, out)
    failures = state.failures
    if failures.get(obs.endpoint) != 0:
        failures = {**failures, obs.endpoint: 0}
    down = state.down
    if down and not any(failures.values()):
        down = False
        out.emit("account.recovered", (state.downs,), endpoint=obs.endpoint)
    baselined = state.baselined
    if not obs.directions <= baselined:
        baselined = baselined | obs.directions
    before = now - policy.retention
    if (
        not ledger.touched
        and balances is state.balances
        and totals is state.totals
        and failures is state.failures
        and baselined is state.baselined
        and down == state.down
    ):
        return prune(state, before, obs.directions), out.events
    ledger.finish()
    new = replace(
        state,
        transfers=ledger.full,
        settled=ledger.settled,
        unsaved=ledger.unsaved or _NO_ROWS,
        prune_floor=ledger.floors(state.prune_floor),
        balances=balances,
        baselined=baselined,
        totals=totals,
        failures=failures,
        down=down,
    )
    plan = _plan(new, before, obs.directions)
    if plan is not None:
        gone, floors = plan
        new = _forget(new, gone, floors) if gone else replace(new, prune_floor=floors)
    return new, out.events


def to_look_up(state: AccountState, obs: Observation) -> tuple[TransferKey, ...]:
    """Settled transfers in ``obs`` whose money fields changed: observe() needs their records.

    The compact entries keep a hash of currency, amount, fee and address, not the values;
    an amendment is rare, so the shell reads the few records from the store instead.
    """
    keys: list[TransferKey] = []
    for t in obs.transfers:
        settled = state.settled.get(t.direction)
        entry = None if settled is None else settled.get(t.id)
        if entry is not None and entry[FP] >> HALF != money_print(t):
            keys.append(t.key)
    return tuple(keys)


def fail(
    state: AccountState, endpoint: str, reason: str, policy: Policy, now: float
) -> tuple[AccountState, list[Event]]:
    """Record a failed poll; the account goes down once after ``down_after`` in a row."""
    out = _Emitter(policy, now)
    failures = {**state.failures, endpoint: state.failures.get(endpoint, 0) + 1}
    down, downs = state.down, state.downs
    if not down and failures[endpoint] >= policy.down_after:
        down, downs = True, downs + 1
        out.emit(
            "account.down",
            (downs,),
            endpoint=endpoint,
            reason=reason,
            failures=failures[endpoint],
        )
    new = replace(state, failures=failures, down=down, downs=downs, unsaved=_NO_ROWS)
    return new, out.events


def _wanted(currency: str, policy: Policy) -> bool:
    return policy.currencies is None or currency in policy.currencies


def _balances(
    previous: Mapping[str, TrackedBalance],
    observed: Iterable[Balance],
    policy: Policy,
    out: _Emitter,
) -> Mapping[str, TrackedBalance]:
    """The new balances; a currency missing from a complete answer is dropped.

    ``previous`` itself when nothing changed.
    """
    result: dict[str, TrackedBalance] = {}
    changed = False
    for bal in observed:
        if not _wanted(bal.currency, policy):
            continue
        prev = previous.get(bal.currency)
        tracked = prev or TrackedBalance(balance=bal)
        if prev is not None and prev.balance != bal:
            changes = prev.changes + 1
            out.emit(
                "balance.changed",
                (bal.currency, changes),
                currency=bal.currency,
                amount=bal.available,
                previous_amount=prev.balance.available,
                pending=bal.pending,
            )
            tracked = replace(prev, balance=bal, changes=changes)
        threshold = policy.low_balance.get(bal.currency)
        low = threshold is not None and bal.available < threshold
        if low and not tracked.low:
            crossings = tracked.low_crossings + 1
            out.emit(
                "balance.low",
                (bal.currency, crossings),
                currency=bal.currency,
                amount=bal.available,
                threshold=threshold,
            )
            tracked = replace(tracked, low=True, low_crossings=crossings)
        elif tracked.low and not low:
            out.emit(
                "balance.recovered",
                (bal.currency, tracked.low_crossings),
                currency=bal.currency,
                amount=bal.available,
                threshold=threshold,
            )
            tracked = replace(tracked, low=False)
        changed = changed or tracked is not prev
        result[bal.currency] = tracked
    if not changed and len(result) == len(previous):
        return previous
    return result


def _transfers(
    ledger: Ledger,
    state: AccountState,
    obs: Observation,
    out: _Emitter,
    previous: Mapping[TransferKey, Transfer],
) -> Mapping[TotalKey, Total]:
    """Merge observed transfers into ``ledger``, emitting what is new after the baseline.

    Returns the totals: ``state.totals`` itself when nothing settled or changed.
    """
    totals = _Totals(state.totals)
    currencies = out.policy.currencies
    for t in obs.transfers:
        direction = t.direction
        if direction not in obs.directions:
            continue
        prev = ledger.get(direction, t.id)
        # A known transfer moved to a currency not watched is an amendment, not noise.
        if prev is None and currencies is not None and t.currency not in currencies:
            continue
        silent = direction not in state.baselined
        final = t.state.final
        bit = BIT[t.state] if final else 0
        if prev is None:
            if _forgotten(state, t):
                continue  # pruned long ago, showing up again on a history page: not news
            # ``settled`` holds the states a transfer was counted in: none in a baseline.
            counted = SETS[0 if silent else bit]
            ledger.put(TrackedTransfer(transfer=t, first_seen=out.now, settled=counted))
            if silent:
                continue
            out.transfer(f"{direction}.detected", t, "detected")
            if final:
                totals.add((t.currency, direction, t.state), t.amount)
                _announce(t, None, out)
            continue
        before: Transfer | None  # the money fields it had; None if they could not be read
        if isinstance(prev, tuple):  # settled, compact: the common case, kept cheap
            if unchanged(prev, t):
                continue
            old_state, old_status = STATES[prev[STATE]], prev[STATUS]
            first_seen, revision = prev[FIRST_SEEN], prev[REVISION]
            stuck, settled = bool(prev[FLAGS] & STUCK_BIT), prev[FLAGS] & ~STUCK_BIT
            # Unchanged money fields need no stored row; changed ones the shell looked up.
            same = prev[FP] >> HALF == money_print(t)
            before = t if same else previous.get(t.key)
        else:
            if prev.transfer == t:
                continue
            old_state, old_status = prev.transfer.state, prev.transfer.status
            first_seen, revision, stuck = prev.first_seen, prev.revision, prev.stuck
            settled = sum(BIT[s] for s in prev.settled)
            before = prev.transfer
        moved = old_state != t.state or old_status != t.status
        amended = old_state.final and (before is None or _money(before) != _money(t))
        if silent:
            ledger.put(TrackedTransfer(t, first_seen, revision + moved, stuck, SETS[settled]))
            continue
        ledger.put(
            TrackedTransfer(
                t, first_seen, revision + (moved or amended), stuck, SETS[settled | bit]
            )
        )
        _changes(
            t,
            old_state,
            old_status=old_status,
            revision=revision + 1,
            settled=settled,
            before=before,
            amended=amended,
            totals=totals,
            out=out,
        )
    return totals.result()


def _changes(
    t: Transfer,
    old_state: State,
    *,
    old_status: str,
    revision: int,
    settled: int,
    before: Transfer | None,
    amended: bool,
    totals: _Totals,
    out: _Emitter,
) -> None:
    """The events and counts of a known transfer that changed, after the baseline.

    ``revision`` is the transfer's new one: it tells apart facts that repeat (a deposit
    reversed twice is two facts). ``settled`` holds, as bits, the states it was counted in;
    ``before`` its money fields before, or None if they could not be read.
    """
    direction, final = t.direction, t.state.final
    counted = old_state.final and bool(settled & BIT[old_state])
    old = before if before is not None else t  # unreadable: count as if unchanged
    if amended:
        out.transfer(
            "transfer.amended",
            t,
            "amended",
            revision,
            previous_currency=None if before is None else before.currency,
            previous_amount=None if before is None else before.amount,
            previous_fee=None if before is None else before.fee,
            previous_address=None if before is None else before.address,
        )
    if direction is Direction.DEPOSIT and old_state is State.OK and t.state is not State.OK:
        out.transfer(
            "deposit.reversed",
            t,
            "reversed",
            revision,
            previous_state=str(old_state),
            previous_status=old_status,
        )
    if t.state != old_state:
        if counted:  # it leaves a state it was counted in: the count is corrected
            totals.correct((old.currency, direction, old_state), old.amount)
        if final:
            totals.add((t.currency, direction, t.state), t.amount)
            if not settled & BIT[t.state]:  # a settlement is announced once, even if it flaps
                _announce(t, old_state, out)
    elif counted and amended and before is not None:
        key = (t.currency, direction, t.state)
        if before.currency != t.currency:
            totals.correct((before.currency, direction, t.state), before.amount)
            totals.add(key, t.amount)
        elif t.amount > before.amount:
            totals.add(key, t.amount - before.amount, count=0)
        elif t.amount < before.amount:
            totals.correct(key, before.amount - t.amount, count=0)
    moved = old_state != t.state or old_status != t.status
    if moved and not (final and t.state != old_state) and direction is Direction.WITHDRAWAL:
        out.transfer(
            "withdrawal.status_changed",
            t,
            "status",
            revision,
            t.status,
            previous_state=str(old_state),
            previous_status=old_status,
        )


def _money(t: Transfer) -> tuple[str, Decimal, Decimal | None, str | None]:
    """The fields of a transfer whose change in a final state is an amendment."""
    return (t.currency, t.amount, t.fee, t.address)


class _Totals:
    """The totals of one step: the state's mapping, copied on the first change only."""

    def __init__(self, totals: Mapping[TotalKey, Total]) -> None:
        self._base = totals
        self._new: dict[TotalKey, Total] | None = None

    def _copy(self) -> dict[TotalKey, Total]:
        if self._new is None:
            self._new = dict(self._base)
        return self._new

    def add(self, key: TotalKey, amount: Decimal, count: int = 1) -> None:
        """Count ``count`` transfers and ``amount`` more in ``key``."""
        totals = self._copy()
        total = totals.get(key, Total())
        totals[key] = replace(total, count=total.count + count, amount=total.amount + amount)

    def correct(self, key: TotalKey, amount: Decimal, count: int = 1) -> None:
        """Count ``count`` transfers and ``amount`` as taken back from ``key``."""
        totals = self._copy()
        total = totals.get(key, Total())
        totals[key] = replace(
            total, corrections=total.corrections + count, corrected=total.corrected + amount
        )

    def result(self) -> Mapping[TotalKey, Total]:
        """The new totals; the state's own mapping if nothing changed."""
        return self._new if self._new is not None else self._base


def _announce(t: Transfer, previous: State | None, out: _Emitter) -> None:
    """Emit a transfer's final event."""
    name = FINAL_EVENT[(t.direction, t.state)]
    fields: dict[str, Any] = {}
    if previous is not None:
        fields["previous_state"] = str(previous)
    out.transfer(name, t, t.state, **fields)


def _stuck(ledger: Ledger, directions: frozenset[Direction], policy: Policy, out: _Emitter) -> None:
    """Mark and announce, once each, in-flight transfers older than their threshold.

    Several at once are announced in key order, whatever order the state holds them in (a
    transfer back in flight after settling is whole again, at the end).
    """
    stuck = [
        tracked
        for tracked in ledger.full.values()
        if not tracked.stuck
        and tracked.transfer.direction in directions
        and is_stuck(tracked, policy, out.now)
    ]
    stuck.sort(key=lambda tracked: tracked.transfer.key)
    for tracked in stuck:
        t = tracked.transfer
        ledger.put(replace(tracked, stuck=True))
        out.transfer(
            f"{t.direction}.stuck",
            t,
            "stuck",
            threshold=int(policy.stuck_after(t.direction)),
            age_seconds=int(out.now - tracked.started_at),
        )


def is_stuck(tracked: TrackedTransfer, policy: Policy, now: float) -> bool:
    """In flight longer than the account's threshold for its direction."""
    t = tracked.transfer
    return t.state.in_flight and now - tracked.started_at > policy.stuck_after(t.direction)


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
    plan = _plan(state, before, directions)
    if plan is None or not plan[0]:
        return state
    return _forget(state, *plan)


def prune_floors(state: AccountState) -> AccountState:
    """``state`` with its prune floors computed (for a state built outside the tracker)."""
    floors = tuple(_scan(state, d, -math.inf)[1] for d in Direction)
    return replace(state, prune_floor=floors)


def _plan(
    state: AccountState, before: float, directions: Collection[Direction]
) -> tuple[dict[TransferKey, float], tuple[float, ...]] | None:
    """What prune() forgets (key -> created_at) and the new floors; None if nothing can be."""
    floors = state.prune_floor
    due = [d for d in directions if before > floors[_DIRECTION_INDEX[d]]]
    if not due:
        return None
    gone: dict[TransferKey, float] = {}
    new = list(floors)
    for direction in due:
        forgotten, new[_DIRECTION_INDEX[direction]] = _scan(state, direction, before)
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


def _forget(
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


def _forgotten(state: AccountState, t: Transfer) -> bool:
    """True if ``t`` is not known but as old as a transfer prune() forgot."""
    mark = state.pruned.get(t.direction)
    return mark is not None and t.created_at is not None and t.created_at <= mark
