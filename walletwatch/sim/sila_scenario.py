"""The seeded Sila demo: issues arrive and complete, redeems settle, one redeem sits in review.

One demo app with two wallets: ``DEMO_SILA_ECDSA_USER`` is watched with ECDSA signatures
(and answers in the doc's field names), ``DEMO_SILA_OAUTH_USER`` with an access token (and
answers in the SDKs' ``sila_*`` names). The demo config should give the ECDSA account a
``withdrawal_stuck_after`` well under ``STUCK_AGE`` (1h), so the review redeem shows as stuck.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass
from decimal import Decimal

from walletwatch.sim.common import Clock
from walletwatch.sim.sila import SilaSim
from walletwatch.sim.sila_auth import address_of_key


def _demo_key(role: str) -> str:
    """A fixed private key for the demo, derived so anyone can re-derive it."""
    return hashlib.sha256(f"walletwatch demo sila {role} key".encode()).hexdigest()


DEMO_SILA_APP = "walletwatch-demo"
DEMO_SILA_APP_KEY = _demo_key("app")
DEMO_SILA_ECDSA_USER = "demo-ecdsa-wallet"
DEMO_SILA_USER_KEY = _demo_key("user")
DEMO_SILA_OAUTH_USER = "demo-oauth-wallet"
DEMO_SILA_CLIENT_ID = "walletwatch-demo-client"
DEMO_SILA_CLIENT_SECRET = "walletwatch-demo-client-secret"  # noqa: S105 - a demo credential
# (account name for the demo config, auth mode, user_handle)
DEMO_SILA_ACCOUNTS = (
    ("sila-ecdsa", "ecdsa", DEMO_SILA_ECDSA_USER),
    ("sila-token", "token", DEMO_SILA_OAUTH_USER),
)
STUCK_AGE = 3 * 3600.0  # seconds the review redeem has been in flight at construction

_USERS = (DEMO_SILA_ECDSA_USER, DEMO_SILA_OAUTH_USER)
_START = {DEMO_SILA_ECDSA_USER: Decimal(52_000), DEMO_SILA_OAUTH_USER: Decimal(18_500)}
# (user, type, SILA, hours ago), all settled
_HISTORY = (
    (DEMO_SILA_ECDSA_USER, "issue", 25_000, 60),
    (DEMO_SILA_ECDSA_USER, "redeem", 4_000, 30),
    (DEMO_SILA_OAUTH_USER, "issue", 12_000, 48),
    (DEMO_SILA_OAUTH_USER, "issue", 7_500, 20),
    (DEMO_SILA_OAUTH_USER, "redeem", 1_000, 6),
)
_NEXT_STATUS = {"queued": "pending", "pending": "success"}
_ISSUE_CHANCE = 0.6
_REDEEM_CHANCE = 0.25
_FAIL_CHANCE = 0.1


@dataclass(frozen=True, slots=True)
class InFlight:
    """A scenario transaction still moving, and the steps until its next status."""

    user_handle: str
    tx_id: str
    steps_left: int


class SilaScenario:
    """Seeded demo activity on the demo Sila wallets; one ``step()`` per advance."""

    def __init__(self, sim: SilaSim, rng: random.Random, clock: Clock) -> None:
        self._sim = sim
        self._rng = rng
        self._in_flight: list[InFlight] = []
        self._steps = 0
        sim.add_app(
            DEMO_SILA_APP,
            address=address_of_key(DEMO_SILA_APP_KEY),
            client_id=DEMO_SILA_CLIENT_ID,
            client_secret=DEMO_SILA_CLIENT_SECRET,
        )
        sim.add_user(
            DEMO_SILA_APP, DEMO_SILA_ECDSA_USER, address=address_of_key(DEMO_SILA_USER_KEY)
        )
        sim.add_user(DEMO_SILA_APP, DEMO_SILA_OAUTH_USER, family="sdk")
        now = clock()
        for user, kind, amount, hours_ago in sorted(_HISTORY, key=lambda h: -h[3]):
            sim.add_transaction(
                DEMO_SILA_APP,
                user,
                type=kind,
                amount=Decimal(amount),
                status="success",
                created_at=now - hours_ago * 3600.0,
            )
        self.stuck_id = sim.add_transaction(
            DEMO_SILA_APP,
            DEMO_SILA_ECDSA_USER,
            type="redeem",
            amount=Decimal(9_000),
            status="review",
            created_at=now - STUCK_AGE,
        )
        for user, balance in _START.items():
            sim.set_wallet(DEMO_SILA_APP, user, available=balance, pending=Decimal(0))

    def step(self) -> None:
        """Move in-flight issues and redeems on, then maybe start new ones."""
        self._steps += 1
        self._progress()
        if self._steps == 1 or self._rng.random() < _ISSUE_CHANCE:
            user = self._rng.choice(_USERS)
            self._start(user, "issue", Decimal(self._rng.randint(500, 20_000)))
        if self._rng.random() < _REDEEM_CHANCE:
            available, _ = self._sim.balance(DEMO_SILA_APP, DEMO_SILA_OAUTH_USER)
            amount = min(Decimal(self._rng.randint(200, 5_000)), available)
            if amount > 0:
                self._start(DEMO_SILA_OAUTH_USER, "redeem", amount)

    def _start(self, user: str, kind: str, amount: Decimal) -> None:
        tx_id = self._sim.add_transaction(DEMO_SILA_APP, user, type=kind, amount=amount)
        self._in_flight.append(InFlight(user, tx_id, self._rng.randint(1, 2)))

    def _progress(self) -> None:
        still: list[InFlight] = []
        for item in self._in_flight:
            if item.steps_left > 1:
                still.append(InFlight(item.user_handle, item.tx_id, item.steps_left - 1))
                continue
            status = self._sim.transaction(DEMO_SILA_APP, item.user_handle, item.tx_id).status
            following = _NEXT_STATUS[status]
            if following == "success" and self._rng.random() < _FAIL_CHANCE:
                following = "failed"
            self._sim.set_status(DEMO_SILA_APP, item.user_handle, item.tx_id, following)
            if following == "pending":
                still.append(InFlight(item.user_handle, item.tx_id, self._rng.randint(1, 2)))
        self._in_flight = still
