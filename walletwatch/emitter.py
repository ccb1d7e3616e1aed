"""The events of one tracker step: their ids, timestamps and fields as the contract names them."""

from __future__ import annotations

from typing import Any

from walletwatch.account import Policy
from walletwatch.events import Event, event_id
from walletwatch.model import Transfer

_EVENT_CORE = frozenset({"event", "event_id", "ts", "severity", "provider", "account"})


class Emitter:
    """Collects the events of one tracker step for one account."""

    def __init__(self, policy: Policy, now: float) -> None:
        self.policy = policy
        self.now = now
        self.events: list[Event] = []

    def emit(self, name: str, id_parts: tuple[object, ...], **fields: Any) -> None:
        """Add the event ``name``, its id made of the account and ``id_parts``."""
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
        """Add the event ``name`` about transfer ``t``, with the contract's transfer fields."""
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
