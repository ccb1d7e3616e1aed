"""The failure policy: how long a failed poll waits, and when an account's endpoints stop.

The account's health (walletwatch.health) counts failed polls in a row, across its endpoints
and per endpoint. A failed poll is retried after an exponential backoff with full jitter,
capped at ``max_backoff``; after ``down_after`` failures in a row the account's circuit holds
every endpoint of the account back while one probe at a time tries again. A 429 is no failure
of the account: the poll that got it is retried by its own loop once the pause is over (the
one retry owner), keeping its deadline.
"""

from __future__ import annotations

import asyncio
import math
import random
from collections import deque
from dataclasses import dataclass, field

from walletwatch.health import AccountHealth

MIN_RETRY = 1.0
"""Never retry a failed poll sooner than this."""


def failure_delay(failures: int, interval: float, cap: float, rng: random.Random) -> float:
    """Exponential backoff with full jitter after ``failures`` consecutive failures."""
    ceiling = min(max(cap, interval), interval * 2.0 ** min(failures, 30))
    return max(MIN_RETRY, rng.uniform(0.0, ceiling))


@dataclass(slots=True)
class Circuit:
    """One account's endpoints held back while its health says so, probing one at a time."""

    health: AccountHealth  # the account's failed polls in a row: open at down_after
    retry_at: float = -math.inf  # while open, no endpoint polls before this
    probing: bool = False  # while open, one endpoint at a time tries
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    waiting: deque[str] = field(default_factory=deque)  # endpoints in line to probe, in turn

    @property
    def open(self) -> bool:
        """True while the account's endpoints wait for a probe to succeed."""
        return self.health.open

    def settle(self, *, probed: bool) -> None:
        """A poll is over (``probed``: it was the probe); wake the endpoints waiting."""
        if probed:
            self.probing = False
        self.notify()

    def notify(self) -> None:
        """Wake the endpoints waiting on the circuit to look again (if any: most polls end
        with none waiting, and need not leave a new Event behind)."""
        if self.waiting:
            self.changed.set()
            self.changed = asyncio.Event()
