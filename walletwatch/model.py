"""The data walletwatch observes: balances, transfers, and one endpoint's observation."""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from enum import StrEnum


class Direction(StrEnum):
    """Which way money moves."""

    DEPOSIT = "deposit"
    WITHDRAWAL = "withdrawal"


class State(StrEnum):
    """Normalized transfer state (ccxt's vocabulary plus ``unknown``)."""

    PENDING = "pending"
    OK = "ok"
    FAILED = "failed"
    CANCELED = "canceled"
    UNKNOWN = "unknown"

    @property
    def final(self) -> bool:
        """True for ok, failed and canceled."""
        return self in _FINAL

    @property
    def in_flight(self) -> bool:
        """True for pending and unknown: the transfer has not settled."""
        return not self.final


_FINAL = frozenset({State.OK, State.FAILED, State.CANCELED})


def plain(amount: Decimal) -> str:
    """An amount as exact fixed-point text, never in exponent form (``0E-8`` is ``0.00000000``)."""
    return format(amount, "f")


@dataclass(frozen=True, slots=True)
class Balance:
    """One currency's balance at an account."""

    currency: str
    available: Decimal
    pending: Decimal | None = None


@dataclass(frozen=True, slots=True)
class Transfer:
    """A deposit or withdrawal as the provider reports it, with its normalized state."""

    id: str
    direction: Direction
    currency: str
    amount: Decimal
    status: str
    state: State
    fee: Decimal | None = None
    address: str | None = None
    txid: str | None = None
    confirmations: int | None = None
    created_at: float | None = None
    updated_at: float | None = None
    details: tuple[tuple[str, str], ...] = ()
    """Provider-specific facts worth keeping (AML risk, a status's name...); never labels."""

    @property
    def key(self) -> tuple[Direction, str]:
        """The transfer's identity within its account."""
        return (self.direction, self.id)


@dataclass(frozen=True, slots=True)
class Gauge:
    """A provider-specific reading exported as-is (price, whitelisting, API status...)."""

    name: str
    labels: tuple[tuple[str, str], ...]
    value: Decimal


@dataclass(frozen=True, slots=True)
class Malformed:
    """A record the provider should never send, left out of its answer's observation."""

    where: str
    problem: str
    transfer_id: str | None = None


@dataclass(frozen=True, slots=True)
class Observation:
    """What one successful poll of one endpoint saw.

    ``balances`` is None when the endpoint does not report balances; otherwise it is the
    complete set. ``directions`` names the transfer histories this endpoint covers, so the
    tracker knows which ones it has a baseline for.
    """

    endpoint: str
    balances: tuple[Balance, ...] | None = None
    transfers: tuple[Transfer, ...] = ()
    directions: frozenset[Direction] = field(default_factory=frozenset)
    gauges: tuple[Gauge, ...] = ()
    malformed: tuple[Malformed, ...] = ()
    """Records of the answer left out as malformed; the rest of the answer is observed."""
    skipped: int = 0
    """Records of the answer left out as not of the kind asked for (another transaction type)."""
