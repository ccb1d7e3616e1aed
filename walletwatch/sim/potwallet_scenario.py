"""The seeded PotWallet demo: receives and sends appear over steps, the POT price moves.

The demo config is meant to watch ``DEMO_POTWALLET_ACCOUNT`` with its default ``hash_key``
(raw) and ``price_currency`` (USD); the simulator also quotes CAD.
"""

from __future__ import annotations

import random
from decimal import ROUND_HALF_EVEN, Decimal

from walletwatch.sim.common import Clock
from walletwatch.sim.potwallet import PotWalletSim

# (account name for the demo config, public_key, private_key)
DEMO_POTWALLET_ACCOUNT = ("pot-treasury", "demo-pot-public", "demo-pot-private")
DEMO_POTWALLET_START_BALANCE = Decimal(250_000)
DEMO_POTWALLET_PRICES = {"USD": Decimal("0.00142000"), "CAD": Decimal("0.00176341")}
CAD_PER_USD = Decimal("1.241836")  # the doc's exchange-rate example
PRICE_PLACES = Decimal("0.00000001")
MAX_MOVE_BASIS_POINTS = 400  # the price moves by at most 4% a step

_PUBLIC_KEY = DEMO_POTWALLET_ACCOUNT[1]
# (category, amount, hours ago): settled history the daemon takes as its baseline.
_HISTORY = (
    ("receive", "5000", 30),
    ("receive", "1000", 20),
    ("send", "2500", 12),
    ("receive", "12000", 4),
)
_RECEIVE = (Decimal(100), Decimal(20_000))
_SEND = (Decimal(50), Decimal(8_000))
_RECEIVE_CHANCE = 0.5
_SEND_CHANCE = 0.35
_ADDRESS_CHARS = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"  # base58


class PotWalletScenario:
    """Seeded demo activity on the demo PotWallet account; one ``step()`` per advance."""

    def __init__(self, sim: PotWalletSim, rng: random.Random, clock: Clock) -> None:
        self._sim = sim
        self._rng = rng
        self._clock = clock
        self._steps = 0
        _, public_key, private_key = DEMO_POTWALLET_ACCOUNT
        sim.add_account(public_key, private_key)
        now = clock()
        for category, amount, hours_ago in _HISTORY:
            self._add(category, Decimal(amount), now - hours_ago * 3600.0)
        sim.set_balance(public_key, DEMO_POTWALLET_START_BALANCE)
        for currency, price in DEMO_POTWALLET_PRICES.items():
            sim.set_price(currency, price)

    def step(self) -> None:
        """Move the price; add a receive (always on step 1) and a send (always on step 2)."""
        self._steps += 1
        self._move_price()
        now = self._clock()
        if self._steps == 1 or self._rng.random() < _RECEIVE_CHANCE:
            self._add("receive", self._amount(*_RECEIVE), now)
        if self._steps == 2 or self._rng.random() < _SEND_CHANCE:
            wanted = self._amount(*_SEND)
            amount = min(wanted, self._sim.balance(_PUBLIC_KEY))  # never below zero
            if amount > 0:
                self._add("send", amount, now)

    def _move_price(self) -> None:
        move = Decimal(self._rng.randint(-MAX_MOVE_BASIS_POINTS, MAX_MOVE_BASIS_POINTS))
        usd = self._sim.price("USD") * (1 + move.scaleb(-4))
        usd = max(usd.quantize(PRICE_PLACES, ROUND_HALF_EVEN), PRICE_PLACES)
        self._sim.set_price("USD", usd)
        self._sim.set_price("CAD", (usd * CAD_PER_USD).quantize(PRICE_PLACES, ROUND_HALF_EVEN))

    def _amount(self, low: Decimal, high: Decimal) -> Decimal:
        """A random amount in range with 4 decimals, drawn without floats."""
        return Decimal(self._rng.randint(int(low * 10_000), int(high * 10_000))).scaleb(-4)

    def _add(self, category: str, amount: Decimal, date: float) -> None:
        self._sim.add_transaction(
            _PUBLIC_KEY,
            category=category,
            amount=amount,
            address="P" + "".join(self._rng.choice(_ADDRESS_CHARS) for _ in range(33)),
            txid=self._rng.randbytes(32).hex(),
            blockhash=self._rng.randbytes(32).hex(),
            date=date,
        )
