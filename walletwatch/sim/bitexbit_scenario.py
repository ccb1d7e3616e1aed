"""The bitexbit demo: deposits confirm, withdrawals climb the status ladder, one never leaves
moderation.

The demo config watches ``DEMO_BITEXBIT_ACCOUNT`` with ``balances: v2`` (so it shows a
balance, and requests under two signing schemes) and ``withdrawal_stuck_after: 1h``: the
withdrawal held in moderation (status 25) since ``MODERATION_AGE`` ago shows as stuck. The
deposit history is longer than a page of 50, so the first poll follows a ``next`` URL.
"""

from __future__ import annotations

import random
from decimal import Decimal

from walletwatch.sim.bitexbit import LADDER, MODERATION, BitexbitSim
from walletwatch.sim.common import Clock

# (account name for the demo config, api_key, secret_key)
DEMO_BITEXBIT_ACCOUNT = ("bx-gateway", "demo-bitexbit-key", "demo-bitexbit-secret")
MODERATION_AGE = 3 * 3600.0  # seconds the held withdrawal has been in moderation at start
HISTORY_DEPOSITS = 60  # confirmed deposits at start: more than one page of 50
REFUSED = 40

# (ticker, network, lowest, highest, decimal places) of the demo's transfers
_FLOWS = (
    ("BTC", "bitcoin", Decimal("0.001"), Decimal("0.2"), 8),
    ("USDT", "tron", Decimal(10), Decimal(900), 2),
    ("ETH", "ethereum", Decimal("0.01"), Decimal(2), 6),
)
# (ticker, network, deposits enabled, withdrawals enabled)
_METHODS = (
    ("BTC", "bitcoin", True, True),
    ("USDT", "tron", True, True),
    ("USDT", "ethereum", True, False),
    ("ETH", "ethereum", True, True),
)
_START = {"BTC": Decimal("1.5"), "USDT": Decimal(4200), "ETH": Decimal(8)}
_DEPOSIT_CHANCE = 0.5
_WITHDRAWAL_CHANCE = 0.35
_REFUSE_CHANCE = 0.15  # of a withdrawal reaching moderation
_TOGGLE_CHANCE = 0.1  # of USDT on ethereum switching withdrawals on or off
_CONFIRMATIONS = 3


def _amount(rng: random.Random, low: Decimal, high: Decimal, places: int) -> Decimal:
    """A random amount in range with ``places`` decimals, drawn without floats."""
    scale = 10**places
    return Decimal(rng.randint(int(low * scale), int(high * scale))).scaleb(-places)


class BitexbitScenario:
    """Seeded demo activity on the demo bitexbit account; one ``step()`` per advance."""

    def __init__(self, sim: BitexbitSim, rng: random.Random, clock: Clock) -> None:
        self._sim = sim
        self._rng = rng
        self._key = key = DEMO_BITEXBIT_ACCOUNT[1]
        self._steps = 0
        self._deposits: list[int] = []  # pending, gaining a confirmation per step
        self._withdrawals: list[int] = []  # climbing the ladder, a rung per step
        sim.add_account(key, DEMO_BITEXBIT_ACCOUNT[2])
        for ticker, network, deposit, withdraw in _METHODS:
            sim.set_payment_method(ticker, network, deposit=deposit, withdraw=withdraw)
        for ticker, amount in _START.items():
            sim.set_balance(key, ticker, amount)
        now = clock()
        for age in range(HISTORY_DEPOSITS, 0, -1):  # oldest first: ids grow with time
            self._deposit(status="5", created_at=now - age * 12 * 3600.0)
        for age, status in ((200, LADDER[-1]), (90, LADDER[-1]), (40, REFUSED), (10, LADDER[-1])):
            self._withdraw(status=status, created_at=now - age * 3600.0)
        self.held_id = sim.add_withdrawal(
            key,
            ticker="BTC",
            network="bitcoin",
            amount=Decimal("0.05"),
            status=MODERATION,
            hold=True,
            created_at=now - MODERATION_AGE,
        )
        """The withdrawal that stays in moderation, stuck after an hour."""

    def step(self) -> None:
        """Climb withdrawals a rung, confirm deposits, maybe add transfers or toggle a method."""
        self._steps += 1
        first = self._steps == 1
        climbing = []
        for wid in self._withdrawals:
            status = self._sim.withdrawal(self._key, wid)["status"]
            if status == MODERATION and self._rng.random() < _REFUSE_CHANCE:
                self._sim.set_withdrawal_status(self._key, wid, REFUSED)
            elif self._sim.advance_withdrawal(self._key, wid) != LADDER[-1]:
                climbing.append(wid)
        pending = []
        for did in self._deposits:
            count = self._sim.deposit(self._key, did)["actual_confirmations"] + 1
            if self._sim.update_deposit(self._key, did, confirmations=count)["status"] == "1":
                pending.append(did)
        self._withdrawals, self._deposits = climbing, pending
        if first or self._rng.random() < _DEPOSIT_CHANCE:
            self._deposits.append(self._deposit(status="1"))
        if first or self._rng.random() < _WITHDRAWAL_CHANCE:
            new = self._withdraw(status=LADDER[0])
            if new is not None:
                self._withdrawals.append(new)
        if self._rng.random() < _TOGGLE_CHANCE:
            deposit, withdraw = self._sim.methods[("USDT", "ethereum")]
            self._sim.set_payment_method("USDT", "ethereum", deposit=deposit, withdraw=not withdraw)

    def _deposit(self, *, status: str, created_at: float | None = None) -> int:
        ticker, network, low, high, places = self._rng.choice(_FLOWS)
        confirmed = status == "5"
        return self._sim.add_deposit(
            self._key,
            ticker=ticker,
            network=network,
            amount=_amount(self._rng, low, high, places),
            status=status,
            confirmations=_CONFIRMATIONS if confirmed else 0,
            required_confirmations=_CONFIRMATIONS,
            txid=self._rng.randbytes(32).hex(),
            aml_success=True if confirmed else None,
            aml_risk=_amount(self._rng, Decimal(0), Decimal("0.3"), 2),
            created_at=created_at,
        )

    def _withdraw(self, *, status: int, created_at: float | None = None) -> int | None:
        """A withdrawal of at most what is available, or None when nothing is."""
        ticker, network, low, high, places = self._rng.choice(_FLOWS)
        wanted = _amount(self._rng, low, high, places)
        amount = min(wanted, self._sim.balance(self._key, ticker)[0])
        if amount <= 0:
            return None
        return self._sim.add_withdrawal(
            self._key,
            ticker=ticker,
            network=network,
            amount=amount,
            status=status,
            address="0x" + self._rng.randbytes(20).hex(),
            created_at=created_at,
        )
