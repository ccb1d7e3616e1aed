"""The seeded KredsWallet demo: a block a step; deposits confirm over steps, a withdraw completes.

The demo config is meant to watch ``DEMO_KREDSWALLET_ACCOUNT`` with ``confirmations_required:
3`` (``DEMO_KREDSWALLET_CONFIRMATIONS``), so a deposit made on one step is confirmed three
steps later. Each step mines one block, which takes in every unconfirmed transfer.
"""

from __future__ import annotations

import random
from decimal import Decimal

from walletwatch.sim.common import Clock
from walletwatch.sim.kredswallet import KredsWalletSim

# (account name for the demo config, api_key, api_secret)
DEMO_KREDSWALLET_ACCOUNT = ("kreds-main", "demo-kreds-key", "demo-kreds-secret")
DEMO_KREDSWALLET_CONFIRMATIONS = 3
DEMO_KREDSWALLET_START_BALANCE = Decimal(1250)

_API_KEY = DEMO_KREDSWALLET_ACCOUNT[1]
# (kind, amount, hours ago, confirmations): settled history the daemon takes as its baseline.
_HISTORY = (
    ("receive", "400", 50, 600),
    ("receive", "250.5", 20, 240),
    ("send", "120", 10, 120),
    ("receive", "75.25", 3, 36),
)
_RECEIVE = (Decimal(5), Decimal(300))
_SEND = (Decimal(10), Decimal(150))
_FEE = Decimal("0.01")
_RECEIVE_CHANCE = 0.5
_SEND_CHANCE = 0.25
_ADDRESS_CHARS = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"  # base58


class KredsWalletScenario:
    """Seeded demo activity on the demo KredsWallet account; one ``step()`` per advance."""

    def __init__(self, sim: KredsWalletSim, rng: random.Random, clock: Clock) -> None:
        self._sim = sim
        self._rng = rng
        self._steps = 0
        sim.confirmations_required = DEMO_KREDSWALLET_CONFIRMATIONS
        _, api_key, api_secret = DEMO_KREDSWALLET_ACCOUNT
        sim.add_account(api_key, api_secret)
        now = clock()
        for kind, amount, hours_ago, confirmations in _HISTORY:
            add = sim.add_deposit if kind == "receive" else sim.add_withdraw
            add(
                api_key,
                Decimal(amount),
                address=self._address(),
                confirmations=confirmations,
                created_at=now - hours_ago * 3600.0,
            )
        sim.set_balance(api_key, DEMO_KREDSWALLET_START_BALANCE)

    def step(self) -> None:
        """Mine a block; add a deposit (always on step 1) and a withdraw (always on step 1)."""
        self._steps += 1
        first = self._steps == 1
        self._sim.mine()
        if first or self._rng.random() < _RECEIVE_CHANCE:
            amount = self._amount(*_RECEIVE)
            self._sim.add_deposit(_API_KEY, amount, address=self._address())
        if first or self._rng.random() < _SEND_CHANCE:
            wanted = self._amount(*_SEND)
            amount = min(wanted, self._sim.balance(_API_KEY) - _FEE)
            if amount > 0:
                self._sim.add_withdraw(_API_KEY, amount, fee=_FEE, address=self._address())

    def _amount(self, low: Decimal, high: Decimal) -> Decimal:
        """A random amount in range with eight decimals, drawn without floats."""
        units = self._rng.randint(int(low * 10**8), int(high * 10**8))
        return Decimal(units).scaleb(-8)

    def _address(self) -> str:
        return "K" + "".join(self._rng.choice(_ADDRESS_CHARS) for _ in range(33))
