"""What ``walletwatch status`` prints: a Snapshot laid out for a person at a terminal.

Pure: a Snapshot in, text out. Problems come first and in full (accounts down or waiting,
balances low, transfers stuck); what is healthy is summarised beyond a few, so the view stays
readable at 10,000 accounts. Every string may come from a provider, so each is shown with its
control characters, line separators and bidirectional and zero-width characters escaped: an
answer can neither rewrite the terminal nor make one txid read as another.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import UTC, datetime

from walletwatch.escape import escaped
from walletwatch.statusdoc import AccountLine, BalanceLine, Snapshot, TransferLine, parse_time

UNSAFE = re.compile(
    "[\x00-\x1f\x7f-\x9f\u061c\u200b-\u200f\u2028-\u202e\u2060-\u2069\ufeff\ud800-\udfff]"
)
"""What a terminal must not get as it is: control characters (an escape sequence rewrites the
screen), line and paragraph separators, zero-width and bidirectional formatting characters
(they hide or reorder the characters of a txid) and lone surrogates."""

COLOURS = {"bad": "\x1b[1;31m", "warn": "\x1b[33m", "good": "\x1b[32m", "dim": "\x1b[2m"}
"""ANSI colour by meaning: bold red, yellow, green, dim."""
RESET = "\x1b[0m"

SMALL = 20
"""Up to this many accounts every one is listed; beyond, only those with a problem."""
IN_FLIGHT_SHOWN = 20
"""In-flight transfers that are not stuck listed without ``--all``: the oldest ones."""
CELL_WIDTH = 40
"""Widest a cell pads its column to: one long provider string does not push every row."""
INDENT = "    "
LONGEST = 256
"""Most characters of one string shown: a real txid, id or error is shorter, and a huge one
would bury the view (``--json`` has it whole)."""

Cell = tuple[str, str | None]
"""A table cell: its text (already escaped) and its colour's name, if any."""


def render(snap: Snapshot, *, source: str, colour: bool, show_all: bool) -> str:
    """The whole view: a header, the accounts, the transfers, and a one-line summary."""
    paint = _Paint(colour)
    when = "" if snap.generated_at is None else f" at {_stamp(snap.generated_at)}"
    lines = [paint(f"walletwatch {text(source)}{when}", "dim"), ""]
    lines += _accounts(snap, paint, show_all=show_all)
    transfers = _transfers(snap, paint, show_all=show_all)
    if transfers:
        lines += ["", *transfers]
    lines += ["", paint(summary(snap), "good" if snap.healthy else "bad")]
    return "\n".join(lines)


def summary(snap: Snapshot) -> str:
    """One line: the verdict, accounts by state, low balances, transfers in flight and stuck."""
    states: dict[str, int] = {}
    for a in snap.accounts:
        states[a.state] = states.get(a.state, 0) + 1
    order = sorted(states, key=lambda s: (s == "up", s == "waiting", s))
    parts = [
        _count(len(snap.accounts), "account")
        + (": " + ", ".join(f"{states[s]:,} {text(s)}" for s in order) if order else "")
    ]
    low = sum(a.low for a in snap.accounts)
    if low:
        parts.append(f"{_count(low, 'balance')} low")
    parts.append(f"{_count(snap.in_flight, 'transfer')} in flight, {snap.stuck:,} stuck")
    return ("OK: " if snap.healthy else "PROBLEM: ") + "; ".join(parts)


def text(value: str) -> str:
    """``value`` safe to print: what UNSAFE matches as its escape (``\\u001b``), cut at LONGEST."""
    if len(value) > LONGEST:
        rest = len(value) - LONGEST
        return f"{escaped(value[:LONGEST], UNSAFE)}...[{rest:,} more characters]"
    return escaped(value, UNSAFE)


# Accounts -------------------------------------------------------------------------------------


def _accounts(snap: Snapshot, paint: _Paint, *, show_all: bool) -> list[str]:
    everyone = show_all or len(snap.accounts) <= SMALL
    shown = [a for a in snap.accounts if everyone or a.problem]
    # Problems first (down, then waiting, then stuck, then low), in the daemon's (config)
    # order within each kind.
    shown.sort(key=lambda a: (a.state == "up", a.state != "down", a.stuck == 0, a.low == 0))
    header = ("STATE", "ACCOUNT", "LAST POLL OK", "IN FLIGHT", "STUCK")
    rows: list[Sequence[Cell] | str] = [[(name, None) for name in header]]
    for a in shown:
        rows.append(
            [
                _state_cell(a.state),
                (f"{text(a.provider)}/{text(a.account)}", None),
                (_ago(a.last_success, snap.generated_at) or "never", None),
                (f"{a.in_flight:,}", None),
                (f"{a.stuck:,}", "bad" if a.stuck else None),
            ]
        )
        rows += _account_details(a, snap.generated_at, paint)
    lines = _table(rows, paint, right={3, 4})
    hidden = len(snap.accounts) - len(shown)
    if hidden:
        lines.append(
            paint(
                f"... and {_count(hidden, 'more account')} up, no balance low, nothing stuck"
                " (--all lists them)",
                "dim",
            )
        )
    if not snap.accounts:
        lines = [
            paint(
                "no accounts: this daemon watches none, so it vouches for none",
                "bad",
            )
        ]
    return lines


def _state_cell(state: str) -> Cell:
    if state == "up":
        return "up", "good"
    if state == "down":
        return "DOWN", "bad"
    return text(state), "warn"


def _account_details(a: AccountLine, now: datetime | None, paint: _Paint) -> list[str]:
    """Why it is down and since when, then its balances against their thresholds."""
    lines: list[str] = []
    if a.state == "down" and a.down_since is not None:
        lines.append(paint(f"{INDENT}down since {_since(a.down_since, now)}", "bad"))
    for e in a.errors:
        at = "" if e.at is None else f" at {_since(e.at, now)}"
        message = f": {text(e.message)}" if e.message else ""
        lines.append(f"{INDENT}{text(e.endpoint)} failed ({text(e.reason)}){at}{message}")
    width = max((len(text(b.currency)) for b in a.balances), default=0)
    amount = max((len(text(b.available)) for b in a.balances), default=0)
    lines += [_balance(b, width, amount, paint) for b in a.balances]
    return lines


def _balance(b: BalanceLine, width: int, amount: int, paint: _Paint) -> str:
    line = f"{INDENT}{text(b.currency).ljust(width)}  {text(b.available).rjust(amount)}"
    if b.pending is not None and b.pending.strip("0.") != "":
        line += f"  pending {text(b.pending)}"
    if b.low:
        threshold = "" if b.threshold is None else f" (threshold {text(b.threshold)})"
        return line + "  " + paint(f"LOW{threshold}", "warn")
    if b.threshold is not None:
        line += f"  threshold {text(b.threshold)}"
    return line


# Transfers ------------------------------------------------------------------------------------


def _transfers(snap: Snapshot, paint: _Paint, *, show_all: bool) -> list[str]:
    stuck = [t for t in snap.transfers if t.stuck]
    moving = [t for t in snap.transfers if not t.stuck]
    shown = moving if show_all else moving[:IN_FLIGHT_SHOWN]
    # The answer may list only the oldest of those not stuck: the accounts count them all.
    moving_total = max(snap.in_flight - snap.stuck, len(moving))
    if not stuck and not moving:
        return []
    header: Sequence[Cell] = [
        (name, None) for name in ("AGE", "DIRECTION", "ACCOUNT", "AMOUNT", "STATUS", "ID", "TXID")
    ]
    rows: list[Sequence[Cell] | str] = []
    if stuck:
        rows += [paint(f"STUCK TRANSFERS ({max(snap.stuck, len(stuck)):,})", "bad"), header]
        rows += [_transfer_row(t, "bad") for t in stuck]
    if moving:
        if stuck:
            rows.append("")
        rows += [f"IN FLIGHT ({moving_total:,})", header]
        rows += [_transfer_row(t, None) for t in shown]
    lines = _table(rows, paint, right={0})
    if moving and len(shown) < moving_total and not show_all:
        more = _count(moving_total - len(shown), "more transfer")
        lines.append(paint(f"... and {more} in flight, none stuck (--all lists them)", "dim"))
    if snap.truncated:
        lines.append(
            paint(
                f"(the daemon's listing stopped at {len(snap.transfers):,} transfers;"
                " the counts above are complete)",
                "warn",
            )
        )
    return lines


def _transfer_row(t: TransferLine, style: str | None) -> Sequence[Cell]:
    status = text(t.status)
    if t.state and t.state != t.status:
        status = f"{status} ({text(t.state)})" if status else text(t.state)
    return [
        ("?" if t.age_seconds is None else duration(t.age_seconds), style),
        (text(t.direction), None),
        (f"{text(t.provider)}/{text(t.account)}", None),
        (f"{text(t.amount)} {text(t.currency)}".strip(), None),
        (status, None),
        (text(t.id), None),
        ("-" if t.txid is None else text(t.txid), None),  # last, never cut: it is copied
    ]


# Layout ---------------------------------------------------------------------------------------


class _Paint:
    """Colours text by meaning, or leaves it plain (not a terminal, or NO_COLOR)."""

    def __init__(self, colour: bool) -> None:
        self.colour = colour

    def __call__(self, value: str, style: str | None) -> str:
        if not self.colour or style is None or not value:
            return value
        return f"{COLOURS[style]}{value}{RESET}"


def _table(rows: Sequence[Sequence[Cell] | str], paint: _Paint, right: set[int]) -> list[str]:
    """Cells padded to their column's width (at most CELL_WIDTH); a str row is printed as is.

    Padding is measured on the plain text and colour added after, so colours never skew
    the columns. The last column is never padded: a txid there is shown whole.
    """
    widths: dict[int, int] = {}
    for row in rows:
        if not isinstance(row, str):
            for i, (cell, _) in enumerate(row[:-1]):
                widths[i] = max(widths.get(i, 0), min(len(cell), CELL_WIDTH))
    lines: list[str] = []
    for row in rows:
        if isinstance(row, str):
            lines.append(row)
            continue
        cells = []
        for i, (cell, style) in enumerate(row):
            width = widths.get(i, 0) if i < len(row) - 1 else 0
            pad = " " * max(width - len(cell), 0)
            cells.append(pad + paint(cell, style) if i in right else paint(cell, style) + pad)
        lines.append("  ".join(cells).rstrip())
    return lines


# Words ----------------------------------------------------------------------------------------


def duration(seconds: float) -> str:
    """``2d04h``, ``3h05m``, ``12m``, ``45s``: an age at a glance."""
    total = max(int(seconds), 0)
    days, rest = divmod(total, 86400)
    hours, rest = divmod(rest, 3600)
    if days:
        return f"{days}d{hours:02d}h"
    if hours:
        return f"{hours}h{rest // 60:02d}m"
    return f"{rest // 60}m" if rest >= 60 else f"{rest}s"


def _ago(stamp: str | None, now: datetime | None) -> str | None:
    """``12m ago`` from the daemon's own clock, or the time as given when it cannot say."""
    if stamp is None:
        return None
    when = parse_time(stamp)
    if when is None or now is None:
        return text(stamp)
    return f"{duration((now - when).total_seconds())} ago"


def _since(stamp: str, now: datetime | None) -> str:
    when = parse_time(stamp)
    if when is None or now is None:
        return text(stamp)
    return f"{_stamp(when)} ({duration((now - when).total_seconds())} ago)"


def _stamp(when: datetime) -> str:
    return when.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def _count(n: int, noun: str) -> str:
    return f"{n:,} {noun}" + ("" if n == 1 else "s")
