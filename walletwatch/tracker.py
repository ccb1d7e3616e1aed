"""The pure heart of walletwatch: (previous state, observation, now) -> (new state, events).

Nothing here does I/O or reads a clock. States are immutable; an unchanged transfer or
balance keeps its identity in the new state, so the store can write only what changed, and
an observation that changes nothing gives back the very same state.

The state itself is ``walletwatch.account``, how transfers are held in it ``walletwatch.ledger``,
and forgetting old ones ``walletwatch.pruning``; the names the store and the tests use of
those are re-exported here.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import replace
from decimal import Decimal
from types import MappingProxyType
from typing import Any

from walletwatch.account import NO_ROWS, AccountState, Policy, Total, TotalKey, TrackedBalance
from walletwatch.emitter import Emitter
from walletwatch.events import Event
from walletwatch.health import fail, recover
from walletwatch.ledger import (
    BIT,
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
from walletwatch.pruning import KEEP_NEWEST, forget, forgotten, prune, prune_floors, prune_plan

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


_NO_PREVIOUS: Mapping[TransferKey, Transfer] = MappingProxyType({})


FINAL_EVENT: Mapping[tuple[Direction, State], str] = {
    (Direction.DEPOSIT, State.OK): "deposit.confirmed",
    (Direction.DEPOSIT, State.FAILED): "deposit.failed",
    (Direction.DEPOSIT, State.CANCELED): "deposit.failed",
    (Direction.WITHDRAWAL, State.OK): "withdrawal.completed",
    (Direction.WITHDRAWAL, State.FAILED): "withdrawal.failed",
    (Direction.WITHDRAWAL, State.CANCELED): "withdrawal.failed",
}


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
    out = Emitter(policy, now)
    balances = state.balances
    if obs.balances is not None:
        balances = _balances(state.balances, obs.balances, policy, out)
    ledger = Ledger(state.transfers, state.settled)
    totals = _transfers(ledger, state, obs, out, previous)
    _stuck(ledger, obs.directions, policy, out)
    failures, down = recover(state, obs.endpoint, out)
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
        unsaved=ledger.unsaved or NO_ROWS,
        prune_floor=ledger.floors(state.prune_floor),
        balances=balances,
        baselined=baselined,
        totals=totals,
        failures=failures,
        down=down,
    )
    plan = prune_plan(new, before, obs.directions)
    if plan is not None:
        gone, floors = plan
        new = forget(new, gone, floors) if gone else replace(new, prune_floor=floors)
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


def _wanted(currency: str, policy: Policy) -> bool:
    return policy.currencies is None or currency.upper() in policy.currencies


def _balances(
    previous: Mapping[str, TrackedBalance],
    observed: Iterable[Balance],
    policy: Policy,
    out: Emitter,
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
        threshold = policy.low_balance.get(bal.currency.upper())
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
    out: Emitter,
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
            if forgotten(state, t):
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
    out: Emitter,
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


def _announce(t: Transfer, previous: State | None, out: Emitter) -> None:
    """Emit a transfer's final event."""
    name = FINAL_EVENT[(t.direction, t.state)]
    fields: dict[str, Any] = {}
    if previous is not None:
        fields["previous_state"] = str(previous)
    out.transfer(name, t, t.state, **fields)


def _stuck(ledger: Ledger, directions: frozenset[Direction], policy: Policy, out: Emitter) -> None:
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
