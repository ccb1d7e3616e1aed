"""The operator API's answers as ``walletwatch status`` reads them: checked, into values.

Pure: it takes the JSON of ``/api/v1/accounts`` and ``/api/v1/transfers?state=in_flight`` and
returns a Snapshot, or raises StatusUnavailable naming the first thing that is not the API's
shape. Strings are kept as the daemon sent them; showing them safely is ``statusview``'s job.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from walletwatch.errors import StatusUnavailable


@dataclass(frozen=True, slots=True)
class BalanceLine:
    """One currency of an account: amounts as the API's decimal strings."""

    currency: str
    available: str
    pending: str | None
    threshold: str | None
    low: bool


@dataclass(frozen=True, slots=True)
class EndpointError:
    """The last failure of one endpoint whose latest poll failed."""

    endpoint: str
    reason: str
    message: str
    at: str | None


@dataclass(frozen=True, slots=True)
class AccountLine:
    """One account as the daemon sees it."""

    provider: str
    account: str
    state: str  # up | down | waiting (or a state a newer daemon names)
    down_since: str | None
    last_success: str | None
    errors: tuple[EndpointError, ...]
    balances: tuple[BalanceLine, ...]
    in_flight: int
    stuck: int

    @property
    def low(self) -> int:
        """How many of its balances are below their threshold."""
        return sum(1 for b in self.balances if b.low)

    @property
    def problem(self) -> bool:
        """Whether it needs a look: not up, a balance low, or a transfer stuck."""
        return self.state != "up" or self.stuck > 0 or self.low > 0


@dataclass(frozen=True, slots=True)
class TransferLine:
    """One in-flight transfer."""

    provider: str
    account: str
    id: str
    direction: str
    currency: str
    amount: str
    status: str
    state: str
    txid: str | None
    age_seconds: float | None
    stuck: bool


@dataclass(frozen=True, slots=True)
class Snapshot:
    """What the daemon reported: its accounts and in-flight transfers at ``generated_at``."""

    generated_at: datetime | None
    accounts: tuple[AccountLine, ...]
    transfers: tuple[TransferLine, ...]
    truncated: bool  # the daemon's listing stopped at its limit: more matched than it holds

    @property
    def stuck(self) -> int:
        """Stuck transfers, counted by the accounts (complete even when the list is not)."""
        return max(sum(a.stuck for a in self.accounts), sum(t.stuck for t in self.transfers))

    @property
    def in_flight(self) -> int:
        """Transfers in flight, counted by the accounts (complete even when the list is not)."""
        return max(sum(a.in_flight for a in self.accounts), len(self.transfers))

    @property
    def healthy(self) -> bool:
        """Every account up and nothing stuck: ``walletwatch status`` exits 0.

        No account at all is not healthy: a config always has one, so a daemon that answers
        none (a replica that follows did, before it answered 503) vouches for nothing.
        """
        return (
            bool(self.accounts) and all(a.state == "up" for a in self.accounts) and not self.stuck
        )


def read_snapshot(accounts_doc: object, transfers_doc: object) -> Snapshot:
    """The Snapshot of the two answers; StatusUnavailable when they are not the API's shape."""
    top = _mapping(accounts_doc, "accounts answer")
    stamp = _opt_str(top, "generated_at", "accounts answer")
    accounts = tuple(
        _account(item, f"accounts[{i}]")
        for i, item in enumerate(_list(top.get("accounts"), "accounts"))
    )
    body = _mapping(transfers_doc, "transfers answer")
    transfers = tuple(
        _transfer(item, f"transfers[{i}]")
        for i, item in enumerate(_list(body.get("transfers"), "transfers"))
    )
    truncated = body.get("truncated", False)
    if not isinstance(truncated, bool):
        raise _shape("transfers answer.truncated", "expected true or false")
    return Snapshot(parse_time(stamp), accounts, transfers, truncated)


def combined(accounts_doc: object, transfers_doc: object) -> dict[str, object]:
    """``--json``'s one document: both answers' lists as the API gave them, and when."""
    top = _mapping(accounts_doc, "accounts answer")
    body = _mapping(transfers_doc, "transfers answer")
    return {
        "generated_at": top.get("generated_at"),
        "accounts": top.get("accounts"),
        "transfers": body.get("transfers"),
        "truncated": body.get("truncated", False),
    }


def stuck_total(accounts_doc: object) -> int:
    """How many transfers the accounts answer counts as stuck (0 where it is not the shape).

    Only sizes the next request: read_snapshot checks the answer and names what is wrong.
    """
    accounts = accounts_doc.get("accounts") if isinstance(accounts_doc, Mapping) else None
    if not isinstance(accounts, list):
        return 0
    counts = (a.get("stuck") for a in accounts if isinstance(a, Mapping))
    return sum(n for n in counts if isinstance(n, int) and not isinstance(n, bool) and n > 0)


def with_stuck(stuck_doc: object, oldest_doc: object) -> object:
    """One transfers answer: every stuck transfer, then the oldest in flight that are not.

    An answer that is not the API's shape is returned as it is, for read_snapshot to name.
    """
    if not isinstance(stuck_doc, Mapping) or not isinstance(stuck_doc.get("transfers"), list):
        return stuck_doc
    if not isinstance(oldest_doc, Mapping) or not isinstance(oldest_doc.get("transfers"), list):
        return oldest_doc
    moving = [
        t
        for t in oldest_doc["transfers"]
        if not (isinstance(t, Mapping) and t.get("stuck") is True)  # listed with the stuck
    ]
    return {
        "transfers": [*stuck_doc["transfers"], *moving],
        "truncated": stuck_doc.get("truncated", False),
    }


def _account(item: object, where: str) -> AccountLine:
    raw = _mapping(item, where)
    state = _opt_str(raw, "state", where)
    if state is None:  # DESIGN's first shape had only ``up``
        state = "up" if raw.get("up") is True else "down"
    endpoints = raw.get("endpoints") or {}
    errors: list[EndpointError] = []
    for name, endpoint in _mapping(endpoints, f"{where}.endpoints").items():
        error = _mapping(endpoint, f"{where}.endpoints.{name}").get("last_error")
        if error is not None:
            here = f"{where}.endpoints.{name}.last_error"
            got = _mapping(error, here)
            errors.append(
                EndpointError(
                    str(name),
                    _opt_str(got, "reason", here) or "failed",
                    _opt_str(got, "message", here) or "",
                    _opt_str(got, "at", here),
                )
            )
    balances = tuple(
        _balance(b, f"{where}.balances[{i}]")
        for i, b in enumerate(_list(raw.get("balances", []), f"{where}.balances"))
    )
    return AccountLine(
        provider=_str(raw, "provider", where),
        account=_str(raw, "account", where),
        state=state,
        down_since=_opt_str(raw, "down_since", where),
        last_success=_opt_str(raw, "last_success", where),
        errors=tuple(errors),
        balances=balances,
        in_flight=_count(raw, "in_flight", where),
        stuck=_count(raw, "stuck", where),
    )


def _balance(item: object, where: str) -> BalanceLine:
    raw = _mapping(item, where)
    return BalanceLine(
        currency=_str(raw, "currency", where),
        available=_amount(raw, "available", where) or "",
        pending=_amount(raw, "pending", where),
        threshold=_amount(raw, "low_threshold", where),
        low=raw.get("low") is True,
    )


def _transfer(item: object, where: str) -> TransferLine:
    raw = _mapping(item, where)
    age = raw.get("age_seconds")
    if age is not None and (isinstance(age, bool) or not isinstance(age, int | float)):
        raise _shape(f"{where}.age_seconds", "expected a number")
    return TransferLine(
        provider=_str(raw, "provider", where),
        account=_str(raw, "account", where),
        id=_str(raw, "id", where),
        direction=_opt_str(raw, "direction", where) or "",
        currency=_opt_str(raw, "currency", where) or "",
        amount=_amount(raw, "amount", where) or "",
        status=_opt_str(raw, "status", where) or "",
        state=_opt_str(raw, "state", where) or "",
        txid=_opt_str(raw, "txid", where),
        age_seconds=None if age is None else float(age),
        stuck=raw.get("stuck") is True,
    )


def _shape(where: str, problem: str) -> StatusUnavailable:
    return StatusUnavailable(f"the answer is not walletwatch's operator API: {where}: {problem}")


def _mapping(value: object, where: str) -> Mapping[str, object]:
    if not isinstance(value, Mapping):
        raise _shape(where, "expected an object")
    return value


def _list(value: object, where: str) -> Sequence[object]:
    if not isinstance(value, list):
        raise _shape(where, "expected a list")
    return value


def _str(raw: Mapping[str, object], key: str, where: str) -> str:
    value = raw.get(key)
    if not isinstance(value, str):
        raise _shape(f"{where}.{key}", "expected a string")
    return value


def _opt_str(raw: Mapping[str, object], key: str, where: str) -> str | None:
    value = raw.get(key)
    if value is not None and not isinstance(value, str):
        raise _shape(f"{where}.{key}", "expected a string or null")
    return value


def _amount(raw: Mapping[str, object], key: str, where: str) -> str | None:
    """A decimal string as the API writes it (a bare number is taken as written too)."""
    value = raw.get(key)
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    return _opt_str(raw, key, where)


def _count(raw: Mapping[str, object], key: str, where: str) -> int:
    value = raw.get(key, 0)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise _shape(f"{where}.{key}", "expected a count")
    return value


def parse_time(stamp: str | None) -> datetime | None:
    """An RFC 3339 time, or None when absent or unreadable (it is only shown, never trusted)."""
    if stamp is None:
        return None
    try:
        when = datetime.fromisoformat(stamp)
    except ValueError:
        return None
    return when if when.tzinfo is not None else None
