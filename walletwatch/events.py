"""Alert events: what they carry, how their stable ids are made, and their JSON form."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from walletwatch.escape import SURROGATES, cleaned
from walletwatch.model import plain

SEVERITY: Mapping[str, str] = {
    "deposit.detected": "info",
    "deposit.confirmed": "info",
    "deposit.failed": "warning",
    "deposit.stuck": "warning",
    "withdrawal.detected": "info",
    "withdrawal.status_changed": "info",
    "withdrawal.completed": "info",
    "withdrawal.failed": "critical",
    "withdrawal.stuck": "critical",
    "balance.changed": "info",
    "balance.low": "critical",
    "balance.recovered": "info",
    "account.down": "critical",
    "account.recovered": "info",
    "deposit.reversed": "critical",
    "transfer.amended": "warning",
}
EVENT_NAMES = tuple(SEVERITY)


def event_id(*parts: object) -> str:
    """A stable id for a fact: the same parts always give the same id."""
    text = "\x1f".join(str(p) for p in parts)
    # surrogatepass: the same bytes as strict UTF-8 for every text that has them, and bytes
    # still for a lone surrogate, which parsing escapes but a bug might let through.
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:32]


@dataclass(frozen=True, slots=True)
class Event:
    """One alert event; ``fields`` holds what applies (currency, amount, transfer_id, ...)."""

    event: str
    event_id: str
    ts: float
    provider: str
    account: str
    fields: Mapping[str, Any] = field(default_factory=dict)

    @property
    def severity(self) -> str:
        """info, warning or critical."""
        return SEVERITY[self.event]

    def to_dict(self) -> dict[str, Any]:
        """The JSON-ready form: RFC 3339 UTC time, Decimals as fixed-point text, no None values."""
        body: dict[str, Any] = {
            "event": self.event,
            "event_id": self.event_id,
            "ts": format_ts(self.ts),
            "severity": self.severity,
            "provider": self.provider,
            "account": self.account,
        }
        for key, value in self.fields.items():
            if value is not None:
                body[key] = plain(value) if isinstance(value, Decimal) else value
        return body

    def to_json(self, **head: str) -> str:
        """One line of JSON that strict parsers accept: a lone surrogate is kept escaped.

        ``head`` fields come first (``kind="event"`` tells events from logs on stdout).

        Python would write a lone surrogate as the escape ``\\ud800``, which many JSON parsers
        refuse; it is written as the six characters ``\\ud800`` instead (JSON ``"\\\\ud800"``),
        as parsing keeps provider text, so this is defence in depth. A value JSON has no form
        for is written as its ``str``: never an exception.
        """
        body = {**head, **self.to_dict()} if head else self.to_dict()
        return json.dumps(
            cleaned(body, SURROGATES), separators=(",", ":"), sort_keys=False, default=str
        )

    @classmethod
    def from_json(cls, text: str) -> Event:
        """Read back what ``to_json`` wrote (amounts stay strings)."""
        body = json.loads(text)
        core = {"event", "event_id", "ts", "severity", "provider", "account"}
        return cls(
            event=body["event"],
            event_id=body["event_id"],
            ts=datetime.fromisoformat(body["ts"]).timestamp(),
            provider=body["provider"],
            account=body["account"],
            fields={k: v for k, v in body.items() if k not in core},
        )


def format_ts(ts: float) -> str:
    """RFC 3339 UTC with millisecond precision, e.g. 2026-11-21T10:00:00.123Z."""
    moment = datetime.fromtimestamp(ts, tz=UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"
