"""Strict readers for provider JSON: each returns a typed value or raises BadPayload."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from walletwatch.errors import BadPayload
from walletwatch.model import Malformed, Transfer

MAX_CONFIRMATIONS = 10_000_000


def mapping(value: Any, where: str) -> Mapping[str, Any]:
    """A JSON object."""
    if not isinstance(value, Mapping):
        raise BadPayload(f"{where}: expected an object, got {type(value).__name__}")
    return value


def items(value: Any, where: str) -> list[Any]:
    """A JSON array."""
    if not isinstance(value, list):
        raise BadPayload(f"{where}: expected an array, got {type(value).__name__}")
    return value


def amount(value: Any, where: str) -> Decimal:
    """A finite decimal amount from a JSON number or a numeric string."""
    if isinstance(value, bool) or not isinstance(value, int | Decimal | str):
        raise BadPayload(f"{where}: expected an amount, got {type(value).__name__}")
    try:
        result = Decimal(value.strip() if isinstance(value, str) else value)
    except (InvalidOperation, ValueError) as err:
        raise BadPayload(f"{where}: not an amount: {str(value)[:40]!r}") from err
    if not result.is_finite() or abs(result.adjusted()) > 30:
        raise BadPayload(f"{where}: amount out of range: {str(value)[:40]!r}")
    return result


def non_negative(value: Any, where: str) -> Decimal:
    """An amount that is zero or more (a deposit's amount, a fee)."""
    result = amount(value, where)
    if result < 0:
        raise BadPayload(f"{where}: negative amount {str(result)[:40]!r}")
    return result


def optional_non_negative(value: Any, where: str) -> Decimal | None:
    """A non-negative amount, or None for null or an empty string."""
    return None if value is None or value == "" else non_negative(value, where)


def optional_amount(value: Any, where: str) -> Decimal | None:
    """An amount, or None for null or an empty string."""
    return None if value is None or value == "" else amount(value, where)


def text(value: Any, where: str) -> str:
    """A non-empty string (numbers are accepted as their decimal text, as ids often are)."""
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise BadPayload(f"{where}: expected a string, got {type(value).__name__}")
    result = str(value)
    if not result or len(result) > 512:
        raise BadPayload(f"{where}: empty or overlong string")
    return result


def status(value: Any, where: str) -> str:
    """A provider's raw status, kept verbatim (even empty) so it can map to ``unknown``."""
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise BadPayload(f"{where}: expected a status, got {type(value).__name__}")
    result = str(value)
    if len(result) > 128:
        raise BadPayload(f"{where}: overlong status")
    return result


def optional_text(value: Any, where: str) -> str | None:
    """A string, or None for null or empty."""
    return None if value is None or value == "" else text(value, where)


def count(value: Any, where: str) -> int:
    """A non-negative, plausible integer such as a confirmation count."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise BadPayload(f"{where}: expected an integer, got {type(value).__name__}")
    if not 0 <= value <= MAX_CONFIRMATIONS:
        raise BadPayload(f"{where}: integer out of range: {value}")
    return value


def utc_time(value: Any, where: str, fmt: str = "%Y-%m-%d %H:%M:%S") -> float:
    """A UTC wall-clock string in ``fmt`` as seconds since the epoch."""
    if not isinstance(value, str):
        raise BadPayload(f"{where}: expected a time, got {type(value).__name__}")
    try:
        return datetime.strptime(value, fmt).replace(tzinfo=UTC).timestamp()
    except ValueError as err:
        raise BadPayload(f"{where}: not a time in {fmt}: {value[:40]!r}") from err


def optional_utc_time(value: Any, where: str, fmt: str = "%Y-%m-%d %H:%M:%S") -> float | None:
    """A UTC time, or None for null or empty."""
    return None if value is None or value == "" else utc_time(value, where, fmt)


def records(
    raw: list[Any], one: Callable[[Any, str], Transfer], where: str, id_key: str
) -> tuple[tuple[Transfer, ...], tuple[Malformed, ...]]:
    """Each item of a listing read by ``one``; an item it refuses is set aside as malformed.

    One record the provider should never send (a negative deposit, no id) must not hold
    back the others of its answer; the caller reports what is set aside.
    """
    good: list[Transfer] = []
    bad: list[Malformed] = []
    for i, item in enumerate(raw):
        here = f"{where}[{i}]"
        try:
            good.append(one(item, here))
        except BadPayload as err:
            bad.append(Malformed(where=here, problem=str(err), transfer_id=record_id(item, id_key)))
    return tuple(good), tuple(bad)


def record_id(item: Any, key: str) -> str | None:
    """The id of a listed record where it has a usable one, for reporting it."""
    value = item.get(key) if isinstance(item, Mapping) else None
    if isinstance(value, bool) or not isinstance(value, str | int):
        return None
    result = str(value)
    return result[:128] if result else None
