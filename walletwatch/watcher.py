"""One account's polls: poll an endpoint, fold the answer in, commit, announce.

The watcher is the single owner of its account's state and of its polling health (an
AccountHealth, which the scheduler asks). A failed poll keeps the last good data, counts the
failure by reason, and is logged only when an endpoint changes between working and failing;
the committed count (health.fail) turns sustained failure into one account.down event.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext

import structlog

from walletwatch.arbiter import Ticket
from walletwatch.asyncstore import AsyncStore
from walletwatch.budget import TokenBucket
from walletwatch.config import AccountConfig, ProviderSettings
from walletwatch.errors import Internal, ProviderError, RateLimited, Unavailable
from walletwatch.events import Event
from walletwatch.health import AccountHealth, fail
from walletwatch.http import Http
from walletwatch.model import Balance, Direction, Gauge, Observation, Transfer
from walletwatch.scheduler import Outcome
from walletwatch.store import StoreError
from walletwatch.telemetry import Telemetry
from walletwatch.tracker import AccountState, TransferKey, observe, to_look_up
from walletwatch.types import Clock, Provider

log = structlog.get_logger("walletwatch.watcher")

_DIRECTIONS: dict[frozenset[Direction], frozenset[Direction]] = {}
"""The few distinct sets of directions an endpoint covers, one object each."""


class AccountWatcher:
    """Polls one account's endpoints on behalf of the scheduler."""

    def __init__(
        self,
        config: AccountConfig,
        settings: ProviderSettings,
        client: Provider,
        state: AccountState,
        *,
        store: AsyncStore,
        telemetry: Telemetry,
        clock: Clock,
        on_events: Callable[[], None] = lambda: None,
        buckets: Sequence[TokenBucket] = (),
        http: Http | None = None,
    ) -> None:
        self.config = config
        self.client = client
        self.state = state
        self.health = AccountHealth(config.down_after)
        self.gauges: dict[tuple[str, tuple[tuple[str, str], ...]], Gauge] = {}
        self._store = store
        self._telemetry = telemetry
        self._clock = clock
        self._on_events = on_events
        self._lock = asyncio.Lock()
        self.name = config.name
        self.provider = config.provider
        self.interval = config.interval
        self.max_backoff = settings.max_backoff
        self.poll_budget = settings.poll_budget  # a poll that takes longer fails as timeout
        self.down_after = config.down_after
        self.buckets = tuple(buckets)  # the scheduler starts a poll when these have a slot
        self._http = http  # the client's: its requests learn which poll they work for
        self._directions: dict[str, frozenset[Direction]] = {}  # what each endpoint covers
        self._commit_failed = False  # the last commit failed: log the next failure as debug
        self._set_aside: dict[str, frozenset[tuple[str | None, str]]] = {}  # malformed last poll
        self.unreported: frozenset[str] = frozenset()  # configured, not in the last balances

    def __repr__(self) -> str:
        return f"AccountWatcher({self.provider}:{self.name})"

    @property
    def endpoints(self) -> tuple[str, ...]:
        """The endpoints this account polls."""
        return self.client.endpoints

    @property
    def transfer_endpoints(self) -> tuple[str, ...]:
        """The endpoints whose answers list transfers (known once each has answered)."""
        return tuple(e for e in self.endpoints if self._directions.get(e))

    @property
    def up(self) -> bool:
        """True when the last poll of every endpoint succeeded and the state file is sound.

        A poll whose commit failed is a failed poll (reason ``store``); a state file removed
        or replaced under the daemon takes every account down, polled since or not.
        """
        return self._telemetry.state_file_ok and self.health.working(len(self.endpoints))

    @property
    def polled(self) -> bool:
        """True once every endpoint has been polled at least once, successfully or not."""
        return len(self.health) == len(self.endpoints)

    def interval_for(self, endpoint: str) -> float:
        """``fast_interval`` for an endpoint covering withdrawals while one is in flight."""
        if Direction.WITHDRAWAL in self._directions.get(endpoint, ()) and any(
            t.transfer.direction is Direction.WITHDRAWAL for t in self.state.in_flight()
        ):
            return self.config.fast_interval
        return self.interval

    async def poll(self, endpoint: str, ticket: Ticket | None = None) -> Outcome:
        """Poll one endpoint and record what came of it; anything raised is a failed poll.

        ``ticket`` is the scheduler's for this poll: the client's requests take its deadline.
        """
        try:
            return await self._poll(endpoint, ticket)
        except Exception as err:  # noqa: BLE001 - a bug costs one poll; crashed() logs it
            return await self.crashed(endpoint, err)

    async def crashed(self, endpoint: str, error: Exception) -> Outcome:
        """Record a poll that raised what no outcome maps: failed, reason ``internal``.

        Like any failed poll it sets ``up`` to 0 and counts toward account.down. The traceback
        is logged when the endpoint starts crashing, not at every poll that crashes again.
        """
        previous = self.health.get(endpoint)
        if previous is None or previous.reason != Internal.reason:
            log.error(
                "poll.crashed",
                provider=self.provider,
                account=self.name,
                endpoint=endpoint,
                error=type(error).__name__,
                exc_info=error,
            )
        return await self._failed(
            endpoint, Internal(f"{endpoint}: unexpected {type(error).__name__}")
        )

    async def _poll(self, endpoint: str, ticket: Ticket | None) -> Outcome:
        key = (self.provider, self.name, endpoint)
        self._telemetry.polls[key] += 1
        polling: AbstractContextManager[None] = (
            self._http.polling(endpoint, ticket) if self._http is not None else nullcontext()
        )
        try:
            async with asyncio.timeout(self.poll_budget):
                with polling:
                    obs = await self.client.poll(endpoint, self.state)
        except ProviderError as err:
            return await self._failed(endpoint, err, self._located(endpoint, str(err)))
        except TimeoutError:  # the whole poll's budget, not one request's timeout
            budget = Unavailable(
                f"{endpoint}: poll took over {self.poll_budget:g}s", reason="timeout"
            )
            return await self._failed(endpoint, budget)
        self._malformed(endpoint, obs)
        if obs.skipped:  # logged at debug by the client, which knows each record's type
            self._telemetry.skipped[(self.provider, self.name, endpoint)] += obs.skipped
        previous = await self._previous(obs)
        now = self._clock.time()
        refused = await self._apply(lambda s: observe(s, obs, self.config, now, previous))
        if refused is not None:  # fetched but not recorded: as failed as a poll gets
            return await self._failed(endpoint, Unavailable(str(refused), reason="store"))
        if self.health.succeeded(endpoint, now):
            log.info("poll.recovered", provider=self.provider, account=self.name, endpoint=endpoint)
        # The same objects as last time where nothing changed (see health.EndpointHealth).
        self._directions[endpoint] = _DIRECTIONS.setdefault(obs.directions, obs.directions)
        self._keep_gauges(obs)
        if obs.balances is not None:
            self._unreported(obs.balances)
        return Outcome(ok=True)

    def _unreported(self, balances: Sequence[Balance]) -> None:
        """Warn of configured currencies (low_balance, currencies) the answer did not have.

        A typo there (``usdt`` for a provider's ``USDT`` is fine: codes are compared without
        case, but ``USTD`` is not) would silently watch nothing: it is logged when it first
        shows, kept in ``unreported`` for the status output, and exported as a metric.
        """
        wanted = set(self.config.low_balance) | set(self.config.currencies or ())
        missing = frozenset(wanted - {b.currency.upper() for b in balances})
        if missing == self.unreported:
            return
        self.unreported = missing
        key = (self.provider, self.name)
        if missing:
            self._telemetry.unreported[key] = missing
            log.warning(
                "config.currency_unreported",
                provider=self.provider,
                account=self.name,
                currencies=sorted(missing),
                reported=sorted(b.currency for b in balances),
                note="low_balance or currencies names a currency this account's provider "
                "does not report: check the code",
            )
        else:
            self._telemetry.unreported.pop(key, None)

    def _located(self, endpoint: str, message: str) -> str:
        """``message`` led by the request it came from, if it does not say so already.

        Http's errors name the method and URL; a provider's own (an error in a 200 answer's
        body) name the endpoint only, so the last request of the endpoint is put in front.
        """
        where = self._http.last_request.get(endpoint) if self._http is not None else None
        if where is None or message.startswith(where):
            return message
        return f"{where}: {message.removeprefix(endpoint + ': ')}"

    async def _failed(
        self, endpoint: str, err: ProviderError, message: str | None = None
    ) -> Outcome:
        key = (self.provider, self.name, endpoint)
        self._telemetry.poll_errors[(*key, err.reason)] += 1
        message = str(err) if message is None else message
        now = self._clock.time()
        started = self.health.failed(endpoint, err.reason, message, now)
        # Warn when an endpoint starts failing; repeats of the same failure are debug noise.
        emit = log.warning if started else log.debug
        emit(
            "poll.failed",
            provider=self.provider,
            account=self.name,
            endpoint=endpoint,
            reason=err.reason,
            error=message,
        )
        # Committing a failure count says nothing of whether the poll's facts can be.
        await self._apply(lambda s: fail(s, endpoint, err.reason, self.config, now), heals=False)
        retry_after = err.retry_after if isinstance(err, RateLimited) else None
        if retry_after is None:  # a poll the provider rate-limited is no failure of the account
            self.health.counted(endpoint)
        return Outcome(ok=False, retry_after=retry_after)

    async def _apply(
        self,
        step: Callable[[AccountState], tuple[AccountState, Sequence[Event]]],
        *,
        heals: bool = True,
    ) -> StoreError | None:
        """Run a tracker step and commit its result; the StoreError if the commit failed.

        Most polls change nothing (the same page as last time): with no events and a state
        equal to the committed one there is nothing to write, and no commit is made. A failed
        commit keeps the last committed state: the next one diffs against it, so what was
        missed is announced once the store takes commits again. That includes the failure
        counts toward account.down: while no commit succeeds, no account.down can be queued
        either (the outbox is in the store); ``up``, the poll errors and the store alerts
        say it instead. A successful commit with ``heals`` logs that commits work again.
        """
        async with self._lock:
            new, events = step(self.state)
            if not events and new == self.state:
                return None
            try:
                await self._store.call(
                    self._store.store.commit, self.name, self.provider, self.state, new, events
                )
            except StoreError as err:
                self._telemetry.store_errors[self.provider] += 1
                # An error when commits start failing; the repeats are counted, not logged.
                emit = log.debug if self._commit_failed else log.error
                self._commit_failed = True
                emit(
                    "store.commit_failed", provider=self.provider, account=self.name, error=str(err)
                )
                return err
            if self._commit_failed and heals:
                self._commit_failed = False
                log.info("store.commit_recovered", provider=self.provider, account=self.name)
            self.state = new.saved()  # committed: the rows it carried are written
        for event in events:
            self._telemetry.events[event.event] += 1
        if events:
            self._on_events()
        return None

    def _malformed(self, endpoint: str, obs: Observation) -> None:
        """Count the records an answer set aside; warn of those its last answer did not have."""
        if not obs.malformed and endpoint not in self._set_aside:
            return
        self._telemetry.malformed[(self.provider, self.name, endpoint)] += len(obs.malformed)
        before = self._set_aside.pop(endpoint, frozenset())
        # Not by place: a record moves down the list as newer transfers arrive. Records
        # without an id and with the same fault are then one (each is still counted).
        keys = [(bad.transfer_id, bad.problem.removeprefix(bad.where)) for bad in obs.malformed]
        if keys:
            self._set_aside[endpoint] = frozenset(keys)
        for bad, key in zip(obs.malformed, keys, strict=True):
            if key not in before:
                log.warning(
                    "poll.malformed_record",
                    provider=self.provider,
                    account=self.name,
                    endpoint=endpoint,
                    transfer_id=bad.transfer_id,
                    where=bad.where,
                    problem=bad.problem,
                )

    async def _previous(self, obs: Observation) -> dict[TransferKey, Transfer]:
        """The stored records of the settled transfers in ``obs`` whose money changed."""
        keys = to_look_up(self.state, obs)
        if not keys:
            return {}
        try:
            return await self._store.call(self._store.store.transfers, self.name, keys)
        except StoreError as err:  # the amendment is still reported, without the old values
            self._telemetry.store_errors[self.provider] += 1
            log.error(  # noqa: TRY400 - the message says it all; no traceback
                "store.read_failed", provider=self.provider, account=self.name, error=str(err)
            )
            return {}

    def _keep_gauges(self, obs: Observation) -> None:
        for gauge in obs.gauges:
            key = (gauge.name, gauge.labels)
            if self.gauges.get(key) != gauge:
                self.gauges[key] = gauge
