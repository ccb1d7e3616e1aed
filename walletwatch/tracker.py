"""The pure heart of walletwatch: (previous state, observation, now) -> (new state, events).

Nothing here does I/O or reads a clock. States are immutable; an unchanged transfer or
balance keeps its identity in the new state, so the store can write only what changed.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field, replace
from decimal import Decimal
from typing import Any, Protocol

from walletwatch.events import Event, event_id
from walletwatch.model import Balance, Direction, Observation, State, Transfer

TransferKey = tuple[Direction, str]
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
class TrackedTransfer:
    """A transfer with what walletwatch knows about it beyond the provider's view."""

    transfer: Transfer
    first_seen: float
    revision: int = 0
    stuck: bool = False
    settled: frozenset[State] = frozenset()

    @property
    def started_at(self) -> float:
        """When the transfer began: the provider's created_at, else when it was first seen."""
        created = self.transfer.created_at
        return created if created is not None else self.first_seen


@dataclass(frozen=True, slots=True)
class TrackedBalance:
    """The last balance of one currency, whether it is low, and counters for event ids."""

    balance: Balance
    low: bool = False
    changes: int = 0
    low_crossings: int = 0


@dataclass(frozen=True, slots=True)
class Total:
    """How many transfers reached one final state, and their summed amount."""

    count: int = 0
    amount: Decimal = Decimal(0)


@dataclass(frozen=True, slots=True)
class AccountState:
    """Everything walletwatch remembers about one account."""

    transfers: Mapping[TransferKey, TrackedTransfer] = field(default_factory=dict)
    balances: Mapping[str, TrackedBalance] = field(default_factory=dict)
    baselined: frozenset[Direction] = frozenset()
    totals: Mapping[TotalKey, Total] = field(default_factory=dict)
    failures: Mapping[str, int] = field(default_factory=dict)
    down: bool = False
    downs: int = 0
    # Per direction, the newest created_at among transfers pruned from ``transfers``.
    pruned: Mapping[Direction, float] = field(default_factory=dict)

    def in_flight(self) -> Iterable[TrackedTransfer]:
        """Transfers that have not settled."""
        return (t for t in self.transfers.values() if t.transfer.state.in_flight)

    def known(self, direction: Direction, transfer_id: str) -> bool:
        """True if the transfer has been seen before."""
        return (direction, transfer_id) in self.transfers


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
    state: AccountState, obs: Observation, policy: Policy, now: float
) -> tuple[AccountState, list[Event]]:
    """Fold one successful poll of one endpoint into the state."""
    out = _Emitter(policy, now)
    balances = state.balances
    if obs.balances is not None:
        balances = _balances(state.balances, obs.balances, policy, out)
    transfers, totals = _transfers(state, obs, policy, out)
    transfers = _stuck(transfers, obs.directions, policy, out)
    pruned = prune(replace(state, transfers=transfers), now - policy.retention, obs.directions)
    failures = {**state.failures, obs.endpoint: 0}
    down, downs = state.down, state.downs
    if down and not any(failures.values()):
        down = False
        out.emit("account.recovered", (downs,), endpoint=obs.endpoint)
    new = replace(
        state,
        balances=balances,
        transfers=pruned.transfers,
        pruned=pruned.pruned,
        totals=totals,
        baselined=state.baselined | obs.directions,
        failures=failures,
        down=down,
    )
    return new, out.events


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
    return replace(state, failures=failures, down=down, downs=downs), out.events


def _wanted(currency: str, policy: Policy) -> bool:
    return policy.currencies is None or currency in policy.currencies


def _balances(
    previous: Mapping[str, TrackedBalance],
    observed: Iterable[Balance],
    policy: Policy,
    out: _Emitter,
) -> dict[str, TrackedBalance]:
    """The new balances; a currency missing from a complete answer is dropped."""
    result: dict[str, TrackedBalance] = {}
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
        result[bal.currency] = tracked
    return result


def _transfers(
    state: AccountState, obs: Observation, policy: Policy, out: _Emitter
) -> tuple[Mapping[TransferKey, TrackedTransfer], Mapping[TotalKey, Total]]:
    """Merge observed transfers, emitting what is new after the baseline."""
    transfers: dict[TransferKey, TrackedTransfer] | None = None
    totals = dict(state.totals)
    for t in obs.transfers:
        if t.direction not in obs.directions or not _wanted(t.currency, policy):
            continue
        prev = state.transfers.get(t.key)
        if prev is not None and prev.transfer == t:
            continue
        if prev is None and _forgotten(state, t):
            continue  # pruned long ago, showing up again on a history page: not news
        if transfers is None:
            transfers = dict(state.transfers)
        silent = t.direction not in state.baselined
        settled = frozenset({t.state}) if t.state.final else frozenset()
        if prev is None:
            transfers[t.key] = TrackedTransfer(transfer=t, first_seen=out.now, settled=settled)
            if silent:
                continue
            out.transfer(f"{t.direction}.detected", t, "detected")
            if t.state.final:
                _settle(t, None, totals, out)
            continue
        old = prev.transfer
        moved = old.state != t.state or old.status != t.status
        transfers[t.key] = replace(
            prev, transfer=t, revision=prev.revision + moved, settled=prev.settled | settled
        )
        if not moved or silent:
            continue
        if t.state.final and t.state != old.state:
            if t.state not in prev.settled:  # a settlement is one fact, even if it flaps
                _settle(t, old.state, totals, out)
        elif t.direction is Direction.WITHDRAWAL:
            out.transfer(
                "withdrawal.status_changed",
                t,
                "status",
                prev.revision + 1,
                t.status,
                previous_state=str(old.state),
                previous_status=old.status,
            )
    return (transfers if transfers is not None else state.transfers), totals


def _settle(
    t: Transfer, previous: State | None, totals: dict[TotalKey, Total], out: _Emitter
) -> None:
    """Emit a transfer's final event and count it."""
    name = FINAL_EVENT[(t.direction, t.state)]
    fields: dict[str, Any] = {}
    if previous is not None:
        fields["previous_state"] = str(previous)
    out.transfer(name, t, t.state, **fields)
    key = (t.currency, t.direction, t.state)
    total = totals.get(key, Total())
    totals[key] = Total(count=total.count + 1, amount=total.amount + t.amount)


def _stuck(
    transfers: Mapping[TransferKey, TrackedTransfer],
    directions: frozenset[Direction],
    policy: Policy,
    out: _Emitter,
) -> Mapping[TransferKey, TrackedTransfer]:
    """Mark and announce, once each, in-flight transfers older than their threshold."""
    result: dict[TransferKey, TrackedTransfer] | None = None
    for key, tracked in transfers.items():
        t = tracked.transfer
        if tracked.stuck or t.direction not in directions or not t.state.in_flight:
            continue
        threshold = policy.stuck_after(t.direction)
        age = out.now - tracked.started_at
        if age <= threshold:
            continue
        if result is None:
            result = dict(transfers)
        result[key] = replace(tracked, stuck=True)
        out.transfer(
            f"{t.direction}.stuck",
            t,
            "stuck",
            threshold=int(threshold),
            age_seconds=int(age),
        )
    return result if result is not None else transfers


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
    showing up again, never news (see ``_forgotten``).
    """
    old = [
        key
        for key, tracked in state.transfers.items()
        if key[0] in directions and _prunable(tracked, before)
    ]
    if not old:
        return state
    newest: set[TransferKey] = set()
    for direction in {key[0] for key in old}:
        mine = [(t.started_at, key) for key, t in state.transfers.items() if key[0] is direction]
        newest.update(key for _, key in sorted(mine, reverse=True)[:KEEP_NEWEST])
    gone = {key for key in old if key not in newest}
    if not gone:
        return state
    marks = dict(state.pruned)
    for key in gone:
        created = state.transfers[key].transfer.created_at
        if created is not None:  # always: _prunable asks for it
            marks[key[0]] = max(marks.get(key[0], -math.inf), created)
    transfers = {k: t for k, t in state.transfers.items() if k not in gone}
    return replace(state, transfers=transfers, pruned=marks)


def _prunable(tracked: TrackedTransfer, before: float) -> bool:
    """Settled, with a provider creation time, and nothing new about it since ``before``."""
    t = tracked.transfer
    if not t.state.final or t.created_at is None:
        return False
    return max(t.created_at, t.updated_at or t.created_at, tracked.first_seen) < before


def _forgotten(state: AccountState, t: Transfer) -> bool:
    """True if ``t`` is not known but as old as a transfer prune() forgot."""
    mark = state.pruned.get(t.direction)
    return mark is not None and t.created_at is not None and t.created_at <= mark
