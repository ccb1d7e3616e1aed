"""The rate budget: token buckets without bursts, paced below a provider's published limit.

Every request passes token buckets: one per credential (every account on an API key shares it)
and one per provider host where the provider publishes a host limit, each paced a margin below
the published rate (``paced``). A 429 pauses the bucket it applies to for the provider's
Retry-After. A 429 within REPEAT_WINDOW of the previous one halves the bucket's rate (down to
FLOOR of it) and every response without one wins back INCREASE of it (AIMD). A 429 is charged
to the request's credential bucket, and to a shared bucket once 429s have come through it for
two credentials: then the shared limit is the one being hit.

A bucket is arithmetic on the monotonic time of the clock it is given; who gets its slots, and
when, is the request arbiter's (walletwatch.arbiter).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from walletwatch.telemetry import BucketStats
from walletwatch.types import Clock

REPEAT_WINDOW = 60.0
"""A 429 this soon after the previous one on a bucket means its rate is too high, not a blip."""

DECREASE = 0.5
"""A repeated 429 multiplies the bucket's rate by this (multiplicative decrease)..."""

FLOOR = 0.1
"""...but never below this fraction of its configured rate."""

INCREASE = 0.01
"""Each response without a 429 gives back this fraction of the configured rate (additive
increase): about a minute from half the rate back to all of it at 1-2 requests a second."""


def paced(limit: float, margin: float) -> float:
    """The rate a bucket keeps to: ``margin`` (a fraction) below the published ``limit``."""
    return limit * (1.0 - margin)


class TokenBucket:
    """A rate limit without bursts: one slot every 1/rate seconds, never two closer together.

    ``reserve`` is the pacing itself (a virtual-scheduling GCRA); requests and polls wait for
    their slots through the bucket's ``slots`` (a walletwatch.arbiter.Slots, which may be
    shared with other buckets; one of its own is made on first use when none is given).
    """

    def __init__(
        self,
        rate: float,
        clock: Clock,
        *,
        name: str = "",
        slots: object | None = None,
        stats: BucketStats | None = None,
    ) -> None:
        if not (math.isfinite(rate) and rate > 0):
            raise ValueError(f"rate must be a positive number, got {rate!r}")
        self.name = name
        self.max_rate = rate
        self.clock = clock
        self.slots = slots
        self.stats = stats if stats is not None else BucketStats()
        self.stats.max_rate = rate
        self.claims = 0  # polls started that have not queued their first request yet
        self._rate = rate
        self._next = -math.inf
        self._paused_until = -math.inf
        self._last_429: float | None = None
        self._struck_by: dict[str, float] = {}
        self._set_rate(rate)

    def __repr__(self) -> str:
        return f"TokenBucket({self.name!r}, rate={self._rate:g})"

    @property
    def rate(self) -> float:
        """Requests per second the bucket paces at now (lowered after repeated 429s)."""
        return self._rate

    @property
    def interval(self) -> float:
        """Seconds between two slots at the current rate."""
        return 1.0 / self._rate

    @property
    def free_at(self) -> float:
        """The monotonic time of the next slot (later while paused)."""
        return max(self._next, self._paused_until)

    def reserve(self, now: float) -> float:
        """Take the next free slot at or after ``now`` and return how long until it comes."""
        slot = max(self.free_at, now)
        self._next = slot + self.interval
        return slot - now

    def pause(self, seconds: float) -> None:
        """No slot is handed out for the next ``seconds`` (a provider's Retry-After)."""
        self._paused_until = max(self._paused_until, self.clock.monotonic() + seconds)

    def rate_limited(self, retry_after: float | None) -> None:
        """An HTTP 429 is charged to this bucket: pause, and slow down if it is a repeat."""
        now = self.clock.monotonic()
        self.stats.rate_limited += 1
        # A 429 to a request sent before the current pause began is the same event again.
        if now >= self._paused_until:
            if self._last_429 is not None and now - self._last_429 <= REPEAT_WINDOW:
                self._set_rate(max(self.max_rate * FLOOR, self._rate * DECREASE))
            self._last_429 = now
        if retry_after is not None:
            self.pause(retry_after)

    def relieved(self) -> None:
        """A response without 429 came back: win back a little of the configured rate."""
        if self._rate < self.max_rate:
            self._set_rate(min(self.max_rate, self._rate + self.max_rate * INCREASE))

    def struck(self, credential: str) -> bool:
        """Note a 429 to ``credential`` through this shared bucket; True when two credentials
        have had one within REPEAT_WINDOW, which means this bucket's limit is the one hit."""
        now = self.clock.monotonic()
        self._struck_by = {k: t for k, t in self._struck_by.items() if now - t <= REPEAT_WINDOW}
        self._struck_by[credential] = now
        return len(self._struck_by) >= 2

    def _set_rate(self, rate: float) -> None:
        self._rate = rate
        self.stats.rate = rate


def rate_limited(buckets: Sequence[TokenBucket], retry_after: float | None) -> None:
    """Charge an HTTP 429 to the buckets its request went through (credential bucket first)."""
    if not buckets:
        return
    own, *shared = buckets
    own.rate_limited(retry_after)
    for bucket in shared:
        if bucket.struck(own.name):
            bucket.rate_limited(retry_after)


def relieved(buckets: Sequence[TokenBucket]) -> None:
    """A request through ``buckets`` got a response other than 429."""
    for bucket in buckets:
        bucket.relieved()
