"""Polling health, counted in one place: how each poll went, failures in a row, account.down.

Like Home Assistant's DataUpdateCoordinator owns its ``last_update_success``, an account's
``AccountHealth`` is the one record of how its polls went. Its watcher records every poll in
it; the scheduler asks it how far a failed poll backs off and whether the account's circuit is
open; the collector and the status page ask the watcher's ``up``, which reads it.

One threshold, ``down_after``, and two counts of failed polls in a row, apart on purpose:

- live, in ``AccountHealth``: across the account's endpoints and per endpoint, a poll the
  provider rate-limited (with a Retry-After) not counted, since it is no failure of the
  account. The backoff and the circuit go by these.
- committed, in the account's state (``fail``, ``recover``): per endpoint, every failed poll
  counted. account.down and account.recovered go by these, committed in the transaction
  that queues the event, so each is announced exactly once across restarts and failed
  commits (while no commit succeeds, the count does not move either).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace

from walletwatch.account import NO_ROWS, AccountState, Policy
from walletwatch.emitter import Emitter
from walletwatch.events import Event


@dataclass(slots=True)
class EndpointHealth:
    """How the last poll of one endpoint went.

    Its account's health updates it in place: one object per endpoint for the daemon's life,
    where one per poll, kept until the next, would fill the collector's oldest generation.
    """

    ok: bool
    last_success: float | None
    reason: str | None = None
    error: str | None = None
    failed_at: float | None = None  # the latest failed poll
    failing_since: float | None = None  # the first failed poll since it last worked


class AccountHealth(dict[str, EndpointHealth]):
    """One account's polling health: its endpoints' last polls by name, and failures in a row."""

    __slots__ = ("_streaks", "down_after", "failures")

    def __init__(self, down_after: int) -> None:
        super().__init__()
        self.down_after = down_after
        self.failures = 0  # failed polls in a row across the endpoints (429s not counted)
        self._streaks: dict[str, int] = {}  # the same, per endpoint

    def __repr__(self) -> str:
        return f"AccountHealth(failures={self.failures}, endpoints={dict(self)!r})"

    @property
    def open(self) -> bool:
        """True while the account's circuit is open: ``down_after`` failed polls in a row."""
        return self.failures >= self.down_after

    def backoff(self, endpoint: str) -> int:
        """The failures in a row a failed poll of ``endpoint`` backs off for."""
        return max(self._streaks.get(endpoint, 0), self.failures)

    def working(self, endpoints: int) -> bool:
        """True when each of the account's ``endpoints`` was polled, its last poll a success."""
        return len(self) == endpoints and all(h.ok for h in self.values())

    def succeeded(self, endpoint: str, now: float) -> bool:
        """Record a successful poll at ``now``; True if the endpoint was failing until now."""
        self.failures = 0
        if self._streaks.get(endpoint):
            self._streaks[endpoint] = 0
        health = self.get(endpoint)
        if health is None:
            self[endpoint] = EndpointHealth(ok=True, last_success=now)
            return False
        recovered = not health.ok
        health.ok, health.last_success, health.reason, health.error = True, now, None, None
        health.failing_since = None
        return recovered

    def failed(self, endpoint: str, reason: str, error: str, now: float) -> bool:
        """Record how a poll failed at ``now``; True if the endpoint was working (or not
        polled) until now.

        The failure is counted in a row by ``counted``, once the poll is over.
        """
        previous = self.get(endpoint)
        if previous is None:
            self[endpoint] = EndpointHealth(
                ok=False,
                last_success=None,
                reason=reason,
                error=error,
                failed_at=now,
                failing_since=now,
            )
            return True
        started = previous.ok
        previous.ok, previous.reason, previous.error = False, reason, error
        previous.failed_at = now
        if started or previous.failing_since is None:
            previous.failing_since = now
        return started

    def counted(self, endpoint: str) -> None:
        """Count a failed poll of ``endpoint`` in a row (not one the provider rate-limited)."""
        self.failures += 1
        self._streaks[endpoint] = self._streaks.get(endpoint, 0) + 1


def fail(
    state: AccountState, endpoint: str, reason: str, policy: Policy, now: float
) -> tuple[AccountState, list[Event]]:
    """Record a failed poll; the account goes down once after ``down_after`` in a row."""
    out = Emitter(policy, now)
    failures = {**state.failures, endpoint: state.failures.get(endpoint, 0) + 1}
    down, downs = state.down, state.downs
    if not down and failures[endpoint] >= policy.down_after:
        down, downs = True, downs + 1
        out.emit(
            "account.down",
            (downs,),
            endpoint=endpoint,
            reason=reason,
            failures=failures[endpoint],
        )
    new = replace(state, failures=failures, down=down, downs=downs, unsaved=NO_ROWS)
    return new, out.events


def recover(state: AccountState, endpoint: str, out: Emitter) -> tuple[Mapping[str, int], bool]:
    """The committed failure counts and down flag after a successful poll of ``endpoint``.

    The account recovers, announced once, when no endpoint has a failure left. Unchanged
    counts are ``state.failures`` itself.
    """
    failures = state.failures
    if failures.get(endpoint) != 0:
        failures = {**failures, endpoint: 0}
    down = state.down
    if down and not any(failures.values()):
        down = False
        out.emit("account.recovered", (state.downs,), endpoint=endpoint)
    return failures, down
