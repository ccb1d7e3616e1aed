"""An account's state as the state database's rows and JSON, and back."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from decimal import Decimal
from typing import Any

from walletwatch.errors import StoreError
from walletwatch.model import Direction, State, Transfer
from walletwatch.tracker import (
    AccountState,
    Settled,
    Total,
    TrackedBalance,
    TrackedTransfer,
    settled_set,
)


def changed(old: AccountState, new: AccountState) -> Iterator[TrackedTransfer]:
    """The whole record of every transfer new or changed between ``old`` and ``new``.

    A compact settled entry has no row data: its record comes from ``new.unsaved``, which
    holds one for every entry the step that made ``new`` wrote. An entry without one means
    ``new`` was not made from ``old`` by one tracker step; nothing incomplete is written.
    """
    for key, tracked in new.transfers.items():
        if old.transfers.get(key) is not tracked:
            yield tracked
    for direction, settled in new.settled.items():
        before = old.settled.get(direction, {})
        if settled is before:
            continue
        for transfer_id, entry in settled.items():
            if before.get(transfer_id) is entry:
                continue
            record = new.unsaved.get((direction, transfer_id))
            if record is None:
                raise StoreError(
                    f"no record of settled transfer {direction} {transfer_id!r} to write: "
                    "a state must be committed against the state it was made from"
                )
            yield record


def optional_decimal(text: str | None) -> Decimal | None:
    return None if text is None else Decimal(text)


def optional_text(value: Decimal | None) -> str | None:
    return None if value is None else str(value)


def transfer_to_row(account: str, tracked: TrackedTransfer) -> tuple[Any, ...]:
    t = tracked.transfer
    return (
        account,
        str(t.direction),
        t.id,
        t.currency,
        str(t.amount),
        optional_text(t.fee),
        t.address,
        t.txid,
        t.status,
        str(t.state),
        t.confirmations,
        t.created_at,
        t.updated_at,
        tracked.first_seen,
        tracked.revision,
        int(tracked.stuck),
        ",".join(sorted(tracked.settled)),
        json.dumps(t.details),
    )


def transfer_from_row(row: Sequence[Any], shared: dict[object, Any]) -> TrackedTransfer:
    """A transfers row as a whole record.

    SQLite gives a new string or float object per row: repeated values (currency, status,
    first sight) become one shared object through ``shared``.
    """
    transfer = Transfer(
        id=row[2],
        direction=Direction(row[1]),
        currency=shared.setdefault(row[3], row[3]),
        amount=Decimal(row[4]),
        fee=optional_decimal(row[5]),
        address=row[6],
        txid=row[7],
        status=shared.setdefault(row[8], row[8]),
        state=State(row[9]),
        confirmations=row[10],
        created_at=row[11],
        updated_at=row[12],
        details=tuple((str(k), str(v)) for k, v in json.loads(row[17])),
    )
    return TrackedTransfer(
        transfer,
        first_seen=shared.setdefault(row[13], row[13]),
        revision=row[14],
        stuck=bool(row[15]),
        settled=settled_set(State(s) for s in row[16].split(",") if s),
    )


def state_to_json(state: AccountState) -> dict[str, Any]:
    return {
        "baselined": sorted(state.baselined),
        "failures": dict(state.failures),
        "down": state.down,
        "downs": state.downs,
        "totals": [
            [c, str(d), str(s), t.count, str(t.amount), t.corrections, str(t.corrected)]
            for (c, d, s), t in state.totals.items()
        ],
        "pruned": {str(d): mark for d, mark in state.pruned.items()},
    }


def _total(fields: Sequence[Any]) -> Total:
    """A total as state_to_json writes it; one written before corrections has none."""
    count, amount, corrections, corrected = (*fields, 0, "0")[:4]
    return Total(int(count), Decimal(amount), int(corrections), Decimal(corrected))


def state_from_json(
    body: Mapping[str, Any],
    transfers: Mapping[tuple[Direction, str], TrackedTransfer],
    settled: Mapping[Direction, Mapping[str, Settled]],
    balances: Mapping[str, TrackedBalance],
) -> AccountState:
    return AccountState(
        transfers=transfers,
        settled=settled,
        balances=balances,
        baselined=frozenset(Direction(d) for d in body["baselined"]),
        totals={(c, Direction(d), State(s)): _total(rest) for c, d, s, *rest in body["totals"]},
        failures=dict(body["failures"]),
        down=bool(body["down"]),
        downs=int(body["downs"]),
        pruned={Direction(d): float(mark) for d, mark in body["pruned"].items()},
    )
