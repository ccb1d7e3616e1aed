"""Builds walletwatch from its config, once, and owns the running parts.

This is the one place that creates the HTTP session, the store, the buckets, the watchers,
the registry and the web server; everything else receives them.
"""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import random
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TextIO
from urllib.parse import urlsplit

import aiohttp
import structlog
from prometheus_client import CollectorRegistry

from walletwatch import __version__
from walletwatch.arbiter import Slots
from walletwatch.asyncstore import AsyncStore
from walletwatch.budget import TokenBucket, paced
from walletwatch.clockwatch import ClockWatch
from walletwatch.collecthold import HOLD
from walletwatch.config import AccountConfig, Config
from walletwatch.configmodel import Secret
from walletwatch.context import Nonces, ProviderContext, Shared
from walletwatch.errors import ConfigError, StartupError
from walletwatch.events import Event
from walletwatch.filewatch import watch_file
from walletwatch.hostcheck import path_problems
from walletwatch.http import Http
from walletwatch.leadership import Leadership
from walletwatch.metrics import WalletwatchCollector
from walletwatch.operator import OperatorView
from walletwatch.pgstore import PgStore
from walletwatch.providers import REGISTRY
from walletwatch.push import push_server
from walletwatch.reload import RESTART_KEYS, changes, restart_needed, slices, yield_loop
from walletwatch.render import ReloadStatus
from walletwatch.scheduler import Scheduler
from walletwatch.sinks import DELIVERY_GRACE, Dispatcher, stdout_json
from walletwatch.sinkset import InFlight, build_sinks
from walletwatch.store import MEMORY, Store
from walletwatch.telemetry import Telemetry
from walletwatch.tracker import AccountState
from walletwatch.types import Clock, ProviderFactory
from walletwatch.watcher import AccountWatcher
from walletwatch.webserver import WebServer

log = structlog.get_logger("walletwatch.app")

SHUTDOWN_GRACE = 10.0
"""Seconds in-flight polls get to finish on SIGTERM before they are cancelled."""


def check_supported(config: Config, providers: Mapping[str, ProviderFactory]) -> None:
    """Every account's provider has a client in this build."""
    problems = [
        f"accounts[{i}].provider: {a.provider!r} has no client in walletwatch {__version__} "
        f"(available: {', '.join(sorted(providers))})"
        for i, a in enumerate(config.accounts)
        if a.provider not in providers
    ]
    if problems:
        raise ConfigError(problems)


def _revealed(secret: Secret | None) -> str | None:
    return None if secret is None else secret.reveal()


class Daemon:
    """walletwatch's running parts, built from one Config."""

    def __init__(
        self,
        config: Config,
        *,
        clock: Clock,
        stdout: TextIO | None = None,
        stdout_lines: Callable[[Event], str] = stdout_json,
        rng: random.Random | None = None,
        state_path: Path | None = None,
        providers: Mapping[str, ProviderFactory] = REGISTRY,
    ) -> None:
        check_supported(config, providers)
        self._providers = providers
        self.config = config
        self.clock = clock
        self.telemetry = Telemetry()
        self.watchers: dict[str, AccountWatcher] = {}
        self.registry = CollectorRegistry(auto_describe=True)
        self.reload_status = ReloadStatus(successful=True, success_time=clock.time())
        self.collector = WalletwatchCollector(
            self.watchers.values, self.telemetry, clock, self.reload_status
        )
        self.registry.register(self.collector)
        self.scheduler = Scheduler(
            clock, rng=rng, on_delay=self.telemetry.delay, on_round=self._freeze
        )
        self._stdout = stdout
        self._stdout_lines = stdout_lines  # JSON, or console lines for a person
        self._state_path = state_path or config.state_path
        self._buckets: dict[str, TokenBucket] = {}
        # Polls start by deadline among those sharing a bucket: one arbiter per provider with
        # a host limit, else per credential. One arbiter for all made each start O(accounts).
        self._slots: dict[str, Slots] = {}
        self._shared = Shared()
        self._store: AsyncStore | None = None
        self._session: aiohttp.ClientSession | None = None
        self._dispatcher: Dispatcher | None = None
        self._file_task: asyncio.Task[None] | None = None
        self.push = push_server(config.push, clock, self.telemetry.push, self)
        self._web = WebServer(config, clock, self.telemetry.web, self.push)
        self._nonces: Nonces | None = None
        # PostgreSQL: replicas share the state and the lease says which one leads. Not for
        # `once` (a throwaway state_path is given): it must not lead, nor wait to.
        self._replicated = config.store is not None and state_path is None
        self._leadership: Leadership | None = None
        self._lease_task: asyncio.Task[None] | None = None
        self._polling = False
        self._renders_frozen = False  # True once a render after the last freeze was frozen too
        self._reloading = asyncio.Lock()
        self._clock_watch = ClockWatch(clock, self.telemetry)
        self._started = False  # start() completed: close() then announces the stop

    def __repr__(self) -> str:
        return f"Daemon(accounts={len(self.config.accounts)})"

    async def start(self, *, serve: bool = True) -> None:
        """Open the store, build every watcher, start delivering events and serving HTTP.

        If any part fails (a client refusing its credentials, a port in use), whatever was
        already opened is closed again before the error propagates.
        """
        try:
            await self._start(serve=serve)
        except BaseException:
            await self.close()
            raise
        self._started = True

    async def _start(self, *, serve: bool) -> None:
        # Refusals first, before anything is created: a state file made by a start that then
        # fails on its address would be a silent new baseline at the next one.
        replicated = self._replicated
        state_path = MEMORY if replicated else self._state_path
        problems = path_problems(state_path, self.config.events_file)
        if problems:
            raise StartupError("; ".join(problems))
        if serve:
            await self._web.bind()
        self._session = aiohttp.ClientSession(
            headers={"User-Agent": f"walletwatch/{__version__}"},
            connector=aiohttp.TCPConnector(limit=100, ttl_dns_cache=300),
            trust_env=False,
        )
        if self.config.store is not None and replicated:
            self.collector.leading = False  # until the lease is taken
            pg = PgStore(self.config.store.url, _revealed(self.config.store.password))
            self._store = AsyncStore(pg)
            self._leadership = Leadership.open(
                self.config.store, pg, self.clock, on_lead=self._lead, on_follow=self._follow
            )
            self.collector.lease = self._leadership.leading
            self._lease_task = asyncio.create_task(self._leadership.run(), name="lease")
        else:
            sqlite = Store(self._state_path)
            self._store = AsyncStore(sqlite)
            if self._state_path != MEMORY:
                self._file_task = asyncio.create_task(
                    watch_file(self._store, sqlite, self.telemetry, self.clock, self._period),
                    name="state-file",
                )
            await self._lead()
        if serve:
            view = OperatorView(
                self.watchers.values, lambda: self.store, self.clock, leading=self.collector.leads
            )
            await self._web.serve(self.collector, self.watchers.values, self._rendered, view)
        log.info(
            "walletwatch.started",
            version=__version__,
            accounts=len(self.watchers),
            listen=self.url if serve else None,
        )

    async def _lead(self) -> None:
        """Load the state, start delivering events, build every watcher; poll if polling.

        At start with SQLite; with PostgreSQL each time this replica takes the lease.
        """
        store, session = self.store, self._session
        if session is None:
            raise RuntimeError("the session is made by start()")
        async with self._reloading:
            states = await store.call(store.store.load)
            nonces = self._nonces = await Nonces.load(self.clock, store)
            sinks = build_sinks(
                self.config,
                stdout=self._stdout,
                stdout_lines=self._stdout_lines,
                session=session,
                clock=self.clock,
                store=store,
                in_flight=InFlight(self.watchers, lambda: self.config),
            )
            self._dispatcher = Dispatcher(
                store,
                sinks,
                self.clock,
                telemetry=self.telemetry,
                # Delivered events are kept as long as the longest-kept transfers.
                retention=max(a.retention for a in self.config.accounts),
            )
            await self._dispatcher.prepare()
            for account in self.config.accounts:
                self.watchers[account.name] = self._watcher(
                    account, states.get(account.name), store, session, nonces
                )
            self._dispatcher.start()
            self.collector.leading = True
            if self._polling:
                self.scheduler.progress = self.clock.monotonic()  # not stalled while following
                for watcher in self.watchers.values():
                    self.scheduler.start(watcher, watcher.endpoints)
                self._freeze()

    async def _follow(self) -> None:
        """Stop polling and delivering, drop the watchers: another replica leads now."""
        async with self._reloading:
            self.collector.leading = False
            await asyncio.gather(*(self.scheduler.stop_poller(name) for name in self.watchers))
            self.watchers.clear()  # in place: the collector and the web server read this dict
            self._nonces = None
            if self._dispatcher is not None:
                # Nothing more is delivered: the new leader delivers from the shared outbox.
                await self._dispatcher.close(0.0)
                self._dispatcher = None

    def _period(self) -> float:
        """The shortest account interval: how often the state file is checked."""
        return min((a.interval for a in self.config.accounts), default=60.0)

    def _watcher(
        self,
        account: AccountConfig,
        state: AccountState | None,
        store: AsyncStore,
        session: aiohttp.ClientSession,
        nonces: Nonces,
    ) -> AccountWatcher:
        settings = self.config.providers[account.provider]
        margin = settings.rate_margin
        arbiter = account.provider if settings.host_rate_limit else account.credential_id
        buckets = [self._bucket(account.credential_id, settings.rate_limit, margin, arbiter)]
        if settings.host_rate_limit is not None:
            host = urlsplit(account.base_url).netloc
            host_key = f"{account.provider}@{host}"
            buckets.append(self._bucket(host_key, settings.host_rate_limit, margin, arbiter))
        http = Http(
            session,
            provider=account.provider,
            buckets=buckets,
            telemetry=self.telemetry,
            clock=self.clock,
            timeout=aiohttp.ClientTimeout(
                total=settings.timeout,
                connect=settings.connect_timeout,
                sock_read=settings.read_timeout,
            ),
            max_backoff=settings.max_backoff,
            credential_names=tuple(account.credentials),
            gate=None if self._leadership is None else self._leadership.leading,
        )
        context = ProviderContext(settings, http, self.clock, nonces, self._shared)
        client = self._providers[account.provider](account, context)
        return AccountWatcher(
            account,
            settings,
            client,
            state or AccountState(),
            store=store,
            telemetry=self.telemetry,
            clock=self.clock,
            on_events=self._wake,
            buckets=buckets,
            http=http,
        )

    def _bucket(self, key: str, limit: float, margin: float, arbiter: str) -> TokenBucket:
        """The bucket called ``key`` (a credential_id or provider@host), made on first use."""
        bucket = self._buckets.get(key)
        if bucket is None:
            slots = self._slots.get(arbiter)
            if slots is None:
                slots = self._slots[arbiter] = Slots(self.clock)
            bucket = self._buckets[key] = TokenBucket(
                paced(limit, margin),
                self.clock,
                name=key,
                slots=slots,
                stats=self.telemetry.bucket(key),
            )
        return bucket

    def _wake(self) -> None:
        if self._dispatcher is not None:
            self._dispatcher.wake()

    @property
    def store(self) -> AsyncStore:
        """The open state store (the one connection to the state file this process may have)."""
        if self._store is None:
            raise RuntimeError("the store is opened by start()")
        return self._store

    @property
    def url(self) -> str:
        """The base URL of the web server."""
        return self._web.url

    @property
    def port(self) -> int | None:
        """The port the web server listens on (once started with ``serve``)."""
        return self._web.port

    def run_scheduler(self) -> None:
        """Start polling every account on its schedule."""
        self._polling = True
        for watcher in self.watchers.values():
            self.scheduler.start(watcher, watcher.endpoints)
        self._freeze()
        self._clock_watch.start()

    def check_clock(self) -> None:
        """Export the system wall clock's offset; log when it leaves or rejoins tolerance."""
        self._clock_watch.check()

    def _freeze(self) -> None:
        """Keep what the daemon built to run out of the cyclic collector's full passes.

        The config, the watchers with their loaded state, the clients and the modules live
        as long as the daemon does, yet a full collection would scan them all, every time:
        hundreds of milliseconds of stalled event loop at 10,000 accounts. Frozen, they are
        still freed by reference counting; reload() thaws them first, so that what a reload
        drops is collected, and close() thaws them for good. Done once polling starts, and
        again once every account has been polled (its health, gauges and first states), and
        after the first scrape that follows (the renderer's caches: about 9 objects an account).
        """
        gc.collect()
        gc.freeze()
        self._renders_frozen = False

    def _rendered(self) -> None:
        if self._polling and not self._renders_frozen:
            # No collection first, unlike _freeze(): it would stall this scrape by a full pass
            # over the new caches, and what garbage it could find now is a few young objects.
            gc.freeze()
            self._renders_frozen = True

    def failed_reload(self) -> None:
        """Record a reload refused before it reached the daemon (the new file is invalid)."""
        self.reload_status.successful = False

    async def reload(self, new: Config) -> tuple[str, ...]:
        """Apply ``new``'s accounts live; return the top-level keys that need a restart.

        Accounts are matched by name. A removed account's loops stop and its watcher (so its
        series) goes; its state stays in the store, so adding it back resumes where it was. An
        added account starts from its stored state, or takes a fresh baseline. A changed one is
        rebuilt from its committed state. No event is announced twice: every watcher starts
        from what the store committed with its events. Top-level settings other than the
        accounts and defaults keep their running values until a restart.

        The work goes in slices of RELOAD_SLICE accounts with the event loop free between
        them, and only the states of the accounts started are loaded: at 10,000 accounts a
        reload done in one go stalled polls, scrapes and the watchdog for seconds.
        """
        store, session, nonces = self._store, self._session, self._nonces
        if store is None or session is None:
            raise RuntimeError("reload before start")
        if nonces is None:  # a follower: its accounts are built from the config when it leads
            async with self._reloading:
                kept = {k: getattr(self.config, k) for k in RESTART_KEYS}
                restart = restart_needed(self.config, new)
                self.config = dataclasses.replace(new, **kept)
                self.reload_status.successful = True
                self.reload_status.success_time = self.clock.time()
            return restart
        try:
            check_supported(new, self._providers)
        except ConfigError:
            self.failed_reload()
            raise
        async with self._reloading:
            old = self.config
            restart = restart_needed(old, new)
            kept = {k: getattr(old, k) for k in RESTART_KEYS}
            self.config = new = dataclasses.replace(new, **kept)
            before = {a.name: a for a in old.accounts}
            after = {a.name: a for a in new.accounts}
            # No collection during the slices: what they build (10,000 watchers, at most)
            # set off full passes of 100-200 ms over the unfrozen heap. It is frozen at the
            # end, uncollected (collecting even the young generation that now holds all of
            # it took 150 ms); a watcher dropped has no cycles, it is freed at once.
            with HOLD.held():
                await self._apply(before, after, store, session, nonces)
                self.reload_status.successful = True
                self.reload_status.success_time = self.clock.time()
                if self._polling:
                    gc.freeze()
                    self._renders_frozen = False
        log.info(
            "config.reloaded",
            added=sorted(after.keys() - before.keys()),
            removed=sorted(before.keys() - after.keys()),
            changed=sorted(n for n in after.keys() & before.keys() if after[n] != before[n]),
            restart_needed=list(restart),
        )
        return restart

    async def _apply(
        self,
        before: Mapping[str, AccountConfig],
        after: Mapping[str, AccountConfig],
        store: AsyncStore,
        session: aiohttp.ClientSession,
        nonces: Nonces,
    ) -> None:
        """Stop the accounts gone or changed, start those new or changed, a slice at a time."""
        gone, started = await changes(before, after)
        for names in slices(gone):
            await asyncio.gather(*(self.scheduler.stop_poller(name) for name in names))
            for name in names:
                gone_watcher = self.watchers.pop(name)
                # Its successor, if any, says again after its first balance answer.
                self.telemetry.unreported.pop((gone_watcher.provider, name), None)
            await yield_loop()
        states = await store.call(store.store.load, [a.name for a in started])
        for accounts in slices(started):
            for account in accounts:
                state = states.pop(account.name, None)
                watcher = self._watcher(account, state, store, session, nonces)
                self.watchers[account.name] = watcher
                if self._polling:
                    self.scheduler.start(watcher, watcher.endpoints)
            await yield_loop()

    async def poll_once(self) -> None:
        """Poll every endpoint of every account once, then deliver the events."""

        async def one(watcher: AccountWatcher) -> None:
            for endpoint in watcher.endpoints:
                await watcher.poll(endpoint)

        await asyncio.gather(*(one(w) for w in self.watchers.values()))
        await self.deliver()

    async def deliver(self) -> None:
        """Deliver every event in the outbox now."""
        if self._dispatcher is not None:
            await self._dispatcher.drain()

    async def close(self) -> None:
        """Stop polling (in-flight polls finish), deliver for a bounded grace, close everything.

        What the sinks could not deliver within DELIVERY_GRACE stays in the outbox for the
        next start.
        """
        self._clock_watch.stop()
        await self.scheduler.stop(SHUTDOWN_GRACE)
        gc.unfreeze()
        if self._file_task is not None:
            self._file_task.cancel()
            await asyncio.gather(self._file_task, return_exceptions=True)
        if self._dispatcher is not None:
            # Bounded: SHUTDOWN_GRACE + DELIVERY_GRACE + WEB_GRACE, inside TimeoutStopSec=30s.
            await self._dispatcher.close(DELIVERY_GRACE)
        if self._leadership is not None:
            await self._leadership.release()  # after the last commit and acknowledgement
        if self._lease_task is not None:
            self._lease_task.cancel()
            await asyncio.gather(self._lease_task, return_exceptions=True)
        if self._leadership is not None:
            self._leadership.close()
        await self._web.close()
        if self._session is not None:
            await self._session.close()
        if self._store is not None:
            self._store.close()
        if self._started:
            log.info("walletwatch.stopped")
