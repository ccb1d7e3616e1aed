"""Per-transfer alerts for Alertmanager: what each event fires or resolves, and their JSON.

Pure: the alerts held firing, an event (or the daemon's view of what is in flight) and the
time go in; the alerts to post and the change to what is held come out. The Alertmanager
sink (``alertmanager.py``) does the posting and keeps what is held in the store.

A stuck transfer fires ``WalletwatchTransferStuck``, re-posted every REPOST seconds with
``endsAt`` AHEAD seconds on, so it expires by itself if walletwatch stops saying so; its final
event, or its leaving the in-flight set some other way, resolves it (``endsAt`` then).
``deposit.reversed`` fires ``WalletwatchDepositReversed`` once, ending REVERSED_FOR later.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any

from walletwatch.events import Event, format_ts
from walletwatch.schema import format_duration
from walletwatch.tracker import FINAL_EVENT

STUCK = "WalletwatchTransferStuck"
REVERSED = "WalletwatchDepositReversed"
ALERTNAMES = (STUCK, REVERSED)

REPOST = 60.0
"""Seconds between re-posts of a firing alert (Alertmanager's own clients resend each minute)."""

AHEAD = 300.0
"""How far ahead of each post a firing alert's endsAt is: five re-posts may fail in a row
before Alertmanager lets it expire."""

REVERSED_FOR = 86400.0
"""How long a WalletwatchDepositReversed alert lasts: it is posted once, never resolved."""

TEXT_MAX = 1024
"""Characters of a provider's text (txid, status) kept in an annotation: enough for any real
txid, and a bound on what a hostile answer can make walletwatch post."""

RUNBOOK = "docs/runbook.md#"

SETTLING = frozenset(FINAL_EVENT.values())
"""The final events of a transfer: each resolves the transfer's stuck alert."""

EMPTY: Mapping[str, Alert] = MappingProxyType({})

InFlight = Callable[[str, str, str], bool | None]
"""(account, direction, transfer_id) -> whether the daemon has that transfer in flight now;
None when it cannot tell (the account is being rebuilt by a reload)."""


@dataclass(frozen=True, slots=True)
class Alert:
    """One alert as walletwatch posts it; ``ends_at`` None while it fires."""

    name: str
    labels: Mapping[str, str]  # besides alertname
    annotations: Mapping[str, str]  # besides age, which each post computes
    starts_at: float
    began: float | None = None  # when the transfer began: the age counts from it
    ends_at: float | None = None

    @property
    def key(self) -> str:
        """Which transfer it is about: account, direction and transfer id."""
        return key_of(self.labels["account"], self.labels["direction"], self.labels["transfer_id"])

    def to_json(self) -> str:
        """The form kept in the store."""
        return json.dumps(
            {
                "name": self.name,
                "labels": dict(self.labels),
                "annotations": dict(self.annotations),
                "starts_at": self.starts_at,
                "began": self.began,
            },
            separators=(",", ":"),
        )

    @classmethod
    def from_json(cls, text: str) -> Alert:
        """Read back what ``to_json`` wrote."""
        body = json.loads(text)
        return cls(
            name=body["name"],
            labels=body["labels"],
            annotations=body["annotations"],
            starts_at=float(body["starts_at"]),
            began=None if body["began"] is None else float(body["began"]),
        )


@dataclass(frozen=True, slots=True)
class Change:
    """What to post, and what to hold or forget once it is posted."""

    post: tuple[Alert, ...]
    hold: Mapping[str, Alert] = field(default_factory=lambda: EMPTY)
    forget: tuple[str, ...] = ()


def key_of(account: str, direction: str, transfer_id: str) -> str:
    """The key of a transfer's alert (a JSON list: any id is safe in it)."""
    return json.dumps([account, direction, transfer_id], separators=(",", ":"))


def parse_key(key: str) -> tuple[str, str, str]:
    """(account, direction, transfer_id) of a key."""
    account, direction, transfer_id = json.loads(key)
    return str(account), str(direction), str(transfer_id)


def on_event(held: Mapping[str, Alert], event: Event) -> Change | None:
    """What one event changes; None for the events that concern no alert."""
    name = event.event
    if name.endswith(".stuck"):
        alert = _stuck(event)
        return Change(post=(alert,), hold={alert.key: alert})
    if name == "deposit.reversed":
        return Change(post=(_reversed(event),))
    if name in SETTLING:
        direction = name.partition(".")[0]
        key = key_of(event.account, direction, _text(event.fields.get("transfer_id")))
        firing = held.get(key)
        if firing is None:
            return None
        annotations = {**firing.annotations, "status": _text(event.fields.get("status"))}
        resolved = replace(firing, annotations=annotations, ends_at=event.ts)
        return Change(post=(resolved,), forget=(key,))
    return None


def settled(held: Mapping[str, Alert], in_flight: InFlight, now: float) -> Change:
    """Resolve, at ``now``, the alerts of transfers the daemon no longer has in flight."""
    gone = [
        alert
        for alert in held.values()
        if in_flight(*parse_key(alert.key)) is False  # None: cannot tell yet
    ]
    return Change(
        post=tuple(replace(alert, ends_at=now) for alert in gone),
        forget=tuple(alert.key for alert in gone),
    )


def payload(alert: Alert, now: float) -> dict[str, Any]:
    """The alert as Alertmanager's POST /api/v2/alerts takes it, as posted at ``now``."""
    ends = now + AHEAD if alert.ends_at is None else alert.ends_at
    annotations = dict(alert.annotations)
    if alert.began is not None:
        age = max(0.0, min(now, ends) - alert.began)
        annotations["age"] = format_duration(float(int(age)))
        annotations["description"] += f" In flight for {annotations['age']}."
    return {
        "labels": {"alertname": alert.name, **alert.labels},
        "annotations": annotations,
        "startsAt": format_ts(alert.starts_at),
        "endsAt": format_ts(max(ends, alert.starts_at)),
    }


def _text(value: object) -> str:
    """A provider's value as annotation text, bounded."""
    text = "" if value is None else str(value)
    return text if len(text) <= TEXT_MAX else text[: TEXT_MAX - 3] + "..."


def _labels(event: Event, direction: str) -> dict[str, str]:
    f = event.fields
    return {
        "provider": event.provider,
        "account": event.account,
        "currency": _text(f.get("currency")),
        "direction": direction,
        "transfer_id": _text(f.get("transfer_id")),
        "severity": event.severity,
    }


def _stuck(event: Event) -> Alert:
    """The alert of a ``withdrawal.stuck`` or ``deposit.stuck`` event."""
    f = event.fields
    direction = event.event.partition(".")[0]
    labels = _labels(event, direction)
    age = _number(f.get("age_seconds"))
    threshold = _number(f.get("threshold"))
    began = event.ts - age
    # Stuck since the threshold passed, which may be before walletwatch saw it (a restart).
    starts = min(event.ts, began + threshold)
    txid = _text(f.get("txid")) or "none yet"
    amount, currency, status = _text(f.get("amount")), labels["currency"], _text(f.get("status"))
    where = f"{event.provider} account {event.account}"
    return Alert(
        name=STUCK,
        labels=labels,
        annotations={
            "txid": txid,
            "amount": amount,
            "status": status,
            "summary": f"{currency} {direction} {labels['transfer_id']} stuck at {where}",
            "description": (
                f"The {direction} {labels['transfer_id']} of {amount} {currency} at {where} "
                f"(txid {txid}) is still in flight in provider status {status!r}, longer "
                f"than its {direction}_stuck_after of {format_duration(threshold)}."
            ),
            "runbook_url": RUNBOOK + STUCK.lower(),
        },
        starts_at=starts,
        began=began,
    )


def _reversed(event: Event) -> Alert:
    """The one-shot alert of a ``deposit.reversed`` event."""
    f = event.fields
    labels = _labels(event, "deposit")
    txid = _text(f.get("txid")) or "none"
    amount, currency = _text(f.get("amount")), labels["currency"]
    status, previous = _text(f.get("status")), _text(f.get("previous_status"))
    where = f"{event.provider} account {event.account}"
    return Alert(
        name=REVERSED,
        labels=labels,
        annotations={
            "txid": txid,
            "amount": amount,
            "status": status,
            "summary": f"{currency} deposit {labels['transfer_id']} reversed at {where}",
            "description": (
                f"The deposit {labels['transfer_id']} of {amount} {currency} at {where} "
                f"(txid {txid}) had reached ok (provider status {previous!r}) and is now "
                f"{_text(f.get('state'))} in provider status {status!r}."
            ),
            "runbook_url": RUNBOOK + REVERSED.lower(),
        },
        starts_at=event.ts,
        ends_at=event.ts + REVERSED_FOR,
    )


def _number(value: object) -> float:
    """A count of seconds from an event field; 0 when it is missing or not a number."""
    try:
        number = float(str(value))
    except ValueError:
        return 0.0
    return number if math.isfinite(number) and number > 0 else 0.0
