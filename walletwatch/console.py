"""Alert events for a person at a terminal: one short line each, coloured by severity.

Used on stdout when it is a terminal (``walletwatch demo`` in a shell); anything else gets the
JSON lines of the contract. Every text a provider supplied is shown with its control
characters escaped, so an answer cannot rewrite the terminal.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from walletwatch.escape import escaped
from walletwatch.events import Event
from walletwatch.model import plain

COLOURS = {"critical": "\x1b[1;31m", "warning": "\x1b[33m", "info": "\x1b[2m"}
"""ANSI colour by severity: bold red, yellow, dim."""
RESET = "\x1b[0m"
LABELS = {"critical": "CRIT", "warning": "WARN", "info": "info"}
UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")
"""What a line must not show as it is: control characters (an escape sequence rewrites the
terminal, a newline breaks the line) and lone surrogates (no terminal encoding has them)."""
ID_CHARS = 16
"""How much of an id or txid a line shows: enough to find it, short enough for one line."""


def event_line(event: Event, *, colour: bool) -> str:
    """One line saying what happened, to which account, with the figures that matter."""
    stamp = datetime.fromtimestamp(event.ts, UTC).strftime("%H:%M:%S")
    head = f"{stamp} {LABELS.get(event.severity, event.severity):4} {event.event:26}"
    text = f"{head} {_text(event.provider)}/{_text(event.account)}  {_details(event.fields)}"
    text = text.rstrip()
    if not colour:
        return text
    return f"{COLOURS.get(event.severity, '')}{text}{RESET}"


def _details(f: Mapping[str, Any]) -> str:
    """The fields of an event a person reads first, in the order they read them."""
    parts: list[str] = []
    currency = _text(f.get("currency", ""))
    if "previous_amount" in f and "transfer_id" not in f:  # a balance that moved
        parts.append(f"{_money(f['previous_amount'])} -> {_money(f.get('amount'))} {currency}")
    elif f.get("amount") is not None:
        parts.append(f"{_money(f['amount'])} {currency}".strip())
    if f.get("threshold") is not None:
        parts.append(f"threshold {_money(f['threshold'])}")
    if f.get("transfer_id") is not None:
        parts.append(f"id {_short(f['transfer_id'])}")
    if f.get("status") is not None:
        name = f.get("status_name")
        status = _text(f["status"]) + (f" ({_text(name)})" if name else "")
        previous = f.get("previous_state")
        parts.append(f"{_text(previous)} -> {status}" if previous else status)
    if f.get("age_seconds") is not None:
        parts.append(f"in flight {_duration(f['age_seconds'])}")
    if f.get("txid") and f["txid"] != f.get("transfer_id"):  # some providers' ids are txids
        parts.append(f"tx {_short(f['txid'])}")
    if f.get("endpoint") is not None:  # account.down and .recovered
        parts.append(f"endpoint {_text(f['endpoint'])}")
    if f.get("reason") is not None:
        parts.append(f"reason {_text(f['reason'])}")
    return "  ".join(parts)


def _short(value: object) -> str:
    """An id or txid cut to what finds it: the events file and webhooks have it whole."""
    text = _text(value)
    return text if len(text) <= ID_CHARS else text[:ID_CHARS] + "..."


def _money(value: object) -> str:
    return plain(value) if isinstance(value, Decimal) else _text(value)


def _text(value: object) -> str:
    """A value as text with control characters and lone surrogates kept as escapes."""
    text = value if isinstance(value, str) else str(value)
    return escaped(text, UNSAFE) if UNSAFE.search(text) else text


def _duration(seconds: object) -> str:
    """``3h05m``, ``12m``, ``45s``: an age at a glance."""
    try:
        total = int(float(str(seconds)))
    except ValueError:
        return _text(seconds)
    hours, rest = divmod(max(total, 0), 3600)
    if hours:
        return f"{hours}h{rest // 60:02d}m"
    return f"{rest // 60}m" if rest >= 60 else f"{rest}s"
