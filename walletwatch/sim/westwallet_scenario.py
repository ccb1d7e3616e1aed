"""The seeded WestWallet demo: deposits arrive, withdrawals progress, one is stuck, one runs low.

The demo config is meant to watch ``DEMO_WESTWALLET_ACCOUNTS`` with ``low_balance: {USDT:
1000}`` and ``withdrawal_stuck_after: 1h`` on the first account.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from decimal import Decimal

from walletwatch.sim.common import Clock
from walletwatch.sim.westwallet import WestWalletSim

# (account name for the demo config, api_key, secret_key)
DEMO_WESTWALLET_ACCOUNTS = (
    ("ww-exchange-hot", "demo-hot-key", "demo-hot-secret"),
    ("ww-merchant", "demo-merchant-key", "demo-merchant-secret"),
)
DEMO_LOW_BALANCE_USDT = Decimal(1000)  # the first account's USDT falls below this
STUCK_AGE = 3 * 3600.0  # seconds the stuck withdrawal has been pending at construction

_HOT_KEY = DEMO_WESTWALLET_ACCOUNTS[0][1]
_MERCHANT_KEY = DEMO_WESTWALLET_ACCOUNTS[1][1]


@dataclass(frozen=True, slots=True)
class Flow:
    """The shape of one kind of transfer: currency, amount range and precision, fee."""

    currency: str
    low: Decimal
    high: Decimal
    places: int
    fee: Decimal = Decimal(0)

    def amount(self, rng: random.Random) -> Decimal:
        """A random amount in range with ``places`` decimals, drawn without floats."""
        scale = 10**self.places
        units = rng.randint(int(self.low * scale), int(self.high * scale))
        return Decimal(units).scaleb(-self.places)


@dataclass(frozen=True, slots=True)
class InFlight:
    """A scenario transfer still pending, and how many steps until it completes."""

    api_key: str
    tx_id: int
    steps_left: int


_START_BALANCES = {
    _HOT_KEY: {"BTC": Decimal("2.5"), "USDT": Decimal(1320)},
    _MERCHANT_KEY: {"ETH": Decimal("12.5"), "USDT": Decimal(5400)},
}
# (api_key, type, currency, amount, fee, hours ago), all completed
_HISTORY = (
    (_HOT_KEY, "receive", "BTC", "0.75", "0", 50),
    (_HOT_KEY, "receive", "USDT", "900", "0", 30),
    (_HOT_KEY, "send", "USDT", "300", "1", 20),
    (_HOT_KEY, "send", "BTC", "0.1", "0.0002", 8),
    (_MERCHANT_KEY, "receive", "ETH", "1.25", "0", 40),
    (_MERCHANT_KEY, "receive", "USDT", "150.5", "0", 26),
    (_MERCHANT_KEY, "receive", "USDT", "89.99", "0", 5),
    (_MERCHANT_KEY, "send", "ETH", "0.5", "0.002", 12),
)
_RECEIVES = {
    _HOT_KEY: (Flow("BTC", Decimal("0.01"), Decimal("0.4"), 8),),
    _MERCHANT_KEY: (
        Flow("USDT", Decimal(20), Decimal(400), 2),
        Flow("ETH", Decimal("0.05"), Decimal("1.5"), 6),
    ),
}
_MERCHANT_SENDS = (
    Flow("USDT", Decimal(50), Decimal(300), 2, fee=Decimal(1)),
    Flow("ETH", Decimal("0.1"), Decimal(1), 6, fee=Decimal("0.002")),
)
_DRAIN = Flow("USDT", Decimal(90), Decimal(140), 2, fee=Decimal(1))  # hot-wallet payouts
_RECEIVE_CHANCE = 0.5
_SEND_CHANCE = 0.3


def _age(entry: tuple[str, str, str, str, str, int]) -> int:
    return -entry[5]


class WestWalletScenario:
    """Seeded demo activity on the two demo WestWallet accounts; one ``step()`` per advance."""

    def __init__(self, sim: WestWalletSim, rng: random.Random, clock: Clock) -> None:
        self._sim = sim
        self._rng = rng
        self._clock = clock
        self._in_flight: list[InFlight] = []
        self._steps = 0
        for _, api_key, secret in DEMO_WESTWALLET_ACCOUNTS:
            sim.add_account(api_key, secret)
        now = clock()
        # Oldest first, so ids grow with created_at as they do on the real service.
        for api_key, kind, currency, amount, fee, hours_ago in sorted(_HISTORY, key=_age):
            sim.add_transaction(
                api_key,
                type=kind,
                currency=currency,
                amount=Decimal(amount),
                fee=Decimal(fee),
                status="completed",
                address=self._address(currency),
                confirmations=3,
                txid=self._hash(),
                created_at=now - hours_ago * 3600.0,
            )
        self.stuck_id = sim.add_transaction(
            _HOT_KEY,
            type="send",
            currency="BTC",
            amount=Decimal("0.35"),
            fee=Decimal("0.0002"),
            address=self._address("BTC"),
            created_at=now - STUCK_AGE,
        )
        for api_key, balances in _START_BALANCES.items():
            for currency, balance in balances.items():
                sim.set_balance(api_key, currency, balance)

    def step(self) -> None:
        """Progress pending transfers, drain the hot wallet's USDT, maybe add new transfers."""
        self._steps += 1
        first = self._steps == 1
        self._progress()
        # The first step's payout completes on the next step, so a withdrawal visibly
        # progresses early in the demo.
        self._send(_HOT_KEY, _DRAIN, steps=1 if first else None)
        if first or self._rng.random() < _RECEIVE_CHANCE:
            api_key = self._rng.choice(sorted(_RECEIVES))
            self._receive(api_key, self._rng.choice(_RECEIVES[api_key]))
        if self._rng.random() < _SEND_CHANCE:
            self._send(_MERCHANT_KEY, self._rng.choice(_MERCHANT_SENDS))

    def _progress(self) -> None:
        still: list[InFlight] = []
        for item in self._in_flight:
            tx = self._sim.transaction(item.api_key, item.tx_id)
            done = item.steps_left <= 1
            if tx.type == "receive":
                self._sim.set_status(
                    item.api_key,
                    tx.id,
                    "completed" if done else "pending",
                    confirmations=tx.confirmations + 1,
                )
            elif done:
                self._sim.set_status(
                    item.api_key, tx.id, "completed", confirmations=1, txid=self._hash()
                )
            if not done:
                still.append(InFlight(item.api_key, item.tx_id, item.steps_left - 1))
        self._in_flight = still

    def _receive(self, api_key: str, flow: Flow) -> None:
        tx_id = self._sim.add_transaction(
            api_key,
            type="receive",
            currency=flow.currency,
            amount=flow.amount(self._rng),
            address=self._address(flow.currency),
            txid=self._hash(),
        )
        self._in_flight.append(InFlight(api_key, tx_id, self._rng.randint(1, 3)))

    def _send(self, api_key: str, flow: Flow, *, steps: int | None = None) -> None:
        """Create a pending send, capped so the balance never goes below zero."""
        wanted = flow.amount(self._rng)
        steps_left = self._rng.randint(1, 3) if steps is None else steps
        amount = min(wanted, self._sim.balance(api_key, flow.currency) - flow.fee)
        if amount <= 0:
            return
        tx_id = self._sim.add_transaction(
            api_key,
            type="send",
            currency=flow.currency,
            amount=amount,
            fee=flow.fee,
            address=self._address(flow.currency),
        )
        self._in_flight.append(InFlight(api_key, tx_id, steps_left))

    def _hash(self) -> str:
        return self._rng.randbytes(32).hex()

    def _address(self, currency: str) -> str:
        if currency == "BTC":
            return "bc1q" + self._rng.randbytes(19).hex()
        return "0x" + self._rng.randbytes(20).hex()
