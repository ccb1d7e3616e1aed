"""Provider callbacks the simulator sends: to which URL, when, how often, and what came of them.

A provider's simulator calls ``Pusher.moved`` whenever a transfer of an account moves (it
arrives, or its status or confirmations change). When that account has a push URL
(``subscribe``), the provider's ``PushKind`` turns the transfer, as the provider's API lists
it, into the ``Callback`` the provider sends, and the Pusher sends it in the background: one
task per push, at most ``concurrency`` requests at once, each cut off after ``timeout``
seconds, at most ``capacity`` pushes waiting or in flight (more are dropped and counted as
``overflow``). Nothing here runs in an API request's path, so a slow or dead receiver never
slows an answer.

A kind may repeat its callback until the answer body is exactly ``until`` (``Backoff``
between tries, at most ``attempts`` of them), and may disable a subscription after
``disable_after`` failed deliveries in a row (setting its URL again enables it).

Test switches per subscription: ``delay`` (seconds before the first try), ``duplicate`` and
``drop`` (the fraction of pushes sent twice, or never), and ``forge`` (a push for a transfer
that does not exist, in the provider's shape). Pushes go out only while ``running``; those
made before wait for it.

The URL carries the receiver's token, so only its origin is ever shown or logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import random
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import structlog
from yarl import URL

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]
Item = Mapping[str, Any]
Account = tuple[str, ...]  # what identifies an account in its simulator (its snapshot keys)

log = structlog.get_logger("walletwatch.sim.push")

MAX_ANSWER = 65_536  # bytes of a receiver's answer read: far more than any "ok"
MAX_DOUBLINGS = 32  # keeps 2**n finite whatever the attempt count


@dataclass(frozen=True, slots=True)
class Callback:
    """One request a provider sends: method, query added to the URL's own, body, content type.

    ``not_before`` is the simulator time the transfer happens, for one scheduled ahead.
    """

    method: str
    query: tuple[tuple[str, str], ...] = ()
    body: bytes = b""
    content_type: str | None = None
    not_before: float | None = None


@dataclass(frozen=True, slots=True)
class PushKind:
    """How a provider calls back: the callback for a transfer as listed, and a forged transfer.

    ``request(item, now)`` is the callback the provider would send now (None: it sends none
    for that transfer); ``forge(account, rng, now)`` a transfer of the account that does not
    exist, as the API would list it.
    """

    request: Callable[[Item, float], Callback | None]
    forge: Callable[[Account, random.Random, float], dict[str, Any]]
    until: bytes | None = None  # repeat until the answer body is exactly this; else any 2xx
    attempts: int = 1
    disable_after: int | None = None  # failed deliveries in a row that disable a subscription


@dataclass(frozen=True, slots=True)
class Backoff:
    """Seconds between the tries of a repeated callback: ``first``, doubling, at most ``cap``."""

    first: float = 1.0
    cap: float = 60.0

    def delay(self, attempt: int) -> float:
        """Seconds to wait after failed try number ``attempt`` (from 1)."""
        return min(self.cap, self.first * 2.0 ** min(max(attempt - 1, 0), MAX_DOUBLINGS))


@dataclass(frozen=True, slots=True)
class Switches:
    """A subscription's test switches: a delay, and fractions of pushes duplicated or dropped."""

    delay: float = 0.0
    duplicate: float = 0.0
    drop: float = 0.0

    def __post_init__(self) -> None:
        """Refuse a negative delay and fractions outside 0..1."""
        if not 0 <= self.delay < float("inf"):
            raise ValueError(f"delay must be seconds, not negative, got {self.delay!r}")
        if not (0 <= self.duplicate <= 1 and 0 <= self.drop <= 1):
            raise ValueError("duplicate and drop must be fractions between 0 and 1")


def origin(url: URL) -> str:
    """What may be shown of a push URL: scheme, host and port (its path holds a token)."""
    return str(url.origin())


def push_url(text: str) -> URL:
    """A push URL as given to the control API: absolute http or https; ValueError otherwise."""
    url = URL(text)
    if url.scheme not in ("http", "https") or not url.host:
        raise ValueError("url must be an absolute http or https URL")
    return url


@dataclass(slots=True)
class Subscription:
    """Where one account's pushes go, its switches, and what came of them (changed in place)."""

    url: URL = field(repr=False)
    switches: Switches
    counts: Counter[str] = field(default_factory=Counter)
    failing: int = 0  # failed deliveries in a row
    disabled: bool = False

    def record(self, delivered: bool, disable_after: int | None) -> str | None:
        """Count one try; return the transition it makes (failing, recovered, disabled) if any."""
        if delivered:
            self.counts["delivered"] += 1
            was_failing, self.failing = self.failing, 0
            return "recovered" if was_failing else None
        self.counts["failed"] += 1
        self.failing += 1
        if disable_after is not None and self.failing >= disable_after and not self.disabled:
            self.disabled = True
            return "disabled"
        return "failing" if self.failing == 1 else None

    def view(self) -> dict[str, Any]:
        """The subscription as the control API shows it: its URL's origin only."""
        return {
            "target": origin(self.url),
            "delay": self.switches.delay,
            "duplicate": self.switches.duplicate,
            "drop": self.switches.drop,
            "failed_in_a_row": self.failing,
            "disabled": self.disabled,
            "counts": dict(sorted(self.counts.items())),
        }


@dataclass(frozen=True, slots=True)
class _Push:
    """One push on its way: whose, in which shape, of which transfer."""

    provider: str
    account: Account
    kind: PushKind
    item: Item
    sub: Subscription


class Pusher:
    """Sends providers' callbacks to subscribed URLs in the background, and counts outcomes."""

    def __init__(
        self,
        clock: Clock = time.time,
        *,
        seed: int = 0,
        capacity: int = 1000,
        concurrency: int = 8,
        timeout: float = 5.0,
        backoff: Backoff | None = None,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        if capacity < 1 or concurrency < 1 or not timeout > 0:
            raise ValueError("capacity and concurrency must be positive, timeout too")
        self._clock = clock
        self._rng = random.Random(seed)
        self._capacity = capacity
        self._concurrency = concurrency
        self._timeout = timeout
        self._backoff = backoff or Backoff()
        self._sleep = sleep
        self._subs: dict[tuple[str, Account], Subscription] = {}
        self._totals: dict[str, Counter[str]] = {}
        self._pending = 0  # pushes accepted and not yet done, waiting ones included
        self._backlog: list[_Push] = []  # accepted before running
        self._tasks: set[asyncio.Task[None]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._session: aiohttp.ClientSession | None = None
        self._limit: asyncio.Semaphore | None = None
        self._overflowing = False
        self._idle: asyncio.Event | None = None  # set while running with nothing pending

    # -- what the control API and the simulators call ------------------------------------------

    def subscribe(
        self, provider: str, account: Account, url: str, switches: Switches | None = None
    ) -> dict[str, Any]:
        """Send the account's pushes to url from now on (enabled afresh); return its view."""
        sub = Subscription(push_url(url), switches or Switches())
        self._subs[(provider, account)] = sub
        return sub.view()

    def unsubscribe(self, provider: str, account: Account) -> None:
        """Stop sending the account's pushes, those on their way included; KeyError if none."""
        del self._subs[(provider, account)]

    def subscription(self, provider: str, account: Account) -> dict[str, Any]:
        """The account's subscription and its counts; KeyError if it has none."""
        return self._subs[(provider, account)].view()

    def status(self) -> dict[str, Any]:
        """Pushes pending, and counts per provider and outcome (no URL, no account)."""
        return {
            "pending": self._pending,
            "capacity": self._capacity,
            "running": self._session is not None,
            "providers": {
                name: dict(sorted(counts.items())) for name, counts in sorted(self._totals.items())
            },
        }

    def moved(self, provider: str, account: Account, kind: PushKind, item: Item) -> None:
        """Push a transfer that moved to the account's URL, if it has one; never waits."""
        if self._subs:  # the common case of nobody listening costs nothing
            self._in_loop(functools.partial(self._accept, provider, account, kind, dict(item)))

    def forge(self, provider: str, account: Account, kind: PushKind) -> dict[str, Any]:
        """Push a transfer that does not exist to the account's URL; return it as listed."""
        if (provider, account) not in self._subs:
            raise KeyError(account)
        item = kind.forge(account, self._rng, self._clock())
        self._in_loop(functools.partial(self._accept, provider, account, kind, item, forged=True))
        return item

    async def drained(self) -> None:
        """Wait until no push is pending (while running; at once when not running)."""
        if self._idle is not None:
            await self._idle.wait()

    # -- the shell ----------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """Send pushes while inside (on the running loop); cancel those still out on leaving."""
        self._loop = asyncio.get_running_loop()
        self._limit = asyncio.Semaphore(self._concurrency)
        self._idle = asyncio.Event()
        timeout = aiohttp.ClientTimeout(total=self._timeout)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            self._session = session
            backlog, self._backlog = self._backlog, []
            for push in backlog:
                self._start(push)
            self._settle()
            try:
                yield
            finally:
                self._session, self._loop, self._idle = None, None, None
                for task in self._tasks:
                    task.cancel()
                await asyncio.gather(*self._tasks, return_exceptions=True)
                self._pending = 0  # a task cancelled before it ran never counted itself out

    def _in_loop(self, job: Callable[[], None]) -> None:
        """Run job on the sending loop: at once from it, else handed over thread-safely."""
        loop = self._loop
        if loop is not None and _running_loop() is not loop:
            loop.call_soon_threadsafe(job)
        else:
            job()

    def _accept(
        self, provider: str, account: Account, kind: PushKind, item: Item, *, forged: bool = False
    ) -> None:
        sub = self._subs.get((provider, account))
        if sub is None or kind.request(item, self._clock()) is None:
            return
        if sub.disabled:
            self._count(provider, sub, "not_sent_disabled")
            return
        if forged:
            self._count(provider, sub, "forged")
        elif self._rng.random() < sub.switches.drop:
            self._count(provider, sub, "dropped")
            return
        copies = 2 if not forged and self._rng.random() < sub.switches.duplicate else 1
        for _ in range(copies):
            self._launch(_Push(provider, account, kind, item, sub))
        if copies == 2:
            self._count(provider, sub, "duplicated")

    def _launch(self, push: _Push) -> None:
        if self._pending >= self._capacity:
            self._count(push.provider, push.sub, "overflow")
            if not self._overflowing:
                log.warning("sim.push.overflow", provider=push.provider, capacity=self._capacity)
            self._overflowing = True  # until the queue drains: one log line per episode
            return
        self._pending += 1
        self._settle()
        if self._session is None:
            self._backlog.append(push)
        else:
            self._start(push)

    def _start(self, push: _Push) -> None:
        task = asyncio.get_running_loop().create_task(self._deliver(push))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _deliver(self, push: _Push) -> None:
        kind, sub = push.kind, push.sub
        try:
            first = kind.request(push.item, self._clock())
            due = first.not_before if first is not None and first.not_before else 0.0
            wait = sub.switches.delay + max(0.0, due - self._clock())
            if wait > 0:
                await self._sleep(wait)
            for attempt in range(1, kind.attempts + 1):
                if self._subs.get((push.provider, push.account)) is not sub or sub.disabled:
                    return  # cleared, replaced or disabled meanwhile
                callback = kind.request(push.item, self._clock())
                if callback is None:
                    return
                delivered, reason = await self._attempt(sub.url, callback, kind.until)
                change = sub.record(delivered, kind.disable_after)
                totals = self._totals.setdefault(push.provider, Counter())
                totals["delivered" if delivered else "failed"] += 1
                self._transition(push.provider, sub, change, reason)
                if delivered:
                    return
                if attempt < kind.attempts:
                    self._count(push.provider, sub, "retried")
                    await self._sleep(self._backoff.delay(attempt))
            if kind.attempts > 1:
                self._count(push.provider, sub, "abandoned")
        finally:
            self._pending -= 1
            self._overflowing = self._overflowing and self._pending > 0
            self._settle()

    async def _attempt(self, url: URL, callback: Callback, until: bytes | None) -> tuple[bool, str]:
        """Send one try; whether it was delivered, and why not (no URL in the reason)."""
        session, limit = self._session, self._limit
        if session is None or limit is None:
            return False, "stopped"
        target = url.extend_query(callback.query) if callback.query else url
        headers = {"Content-Type": callback.content_type} if callback.content_type else None
        try:
            async with (
                limit,
                session.request(
                    callback.method,
                    target,
                    data=callback.body or None,
                    headers=headers,
                    allow_redirects=False,
                ) as resp,
            ):
                body = await resp.content.read(MAX_ANSWER)
        except (aiohttp.ClientError, TimeoutError) as err:
            return False, type(err).__name__
        if until is not None:
            return body == until, f"HTTP {resp.status}, answer not {until.decode()!r}"
        return 200 <= resp.status < 300, f"HTTP {resp.status}"

    def _settle(self) -> None:
        """Keep the idle event in step with the pending count."""
        if self._idle is not None:
            if self._pending:
                self._idle.clear()
            else:
                self._idle.set()

    def _count(self, provider: str, sub: Subscription, outcome: str) -> None:
        """Count an outcome for the subscription and for its provider."""
        self._totals.setdefault(provider, Counter())[outcome] += 1
        sub.counts[outcome] += 1

    def _transition(
        self, provider: str, sub: Subscription, change: str | None, reason: str
    ) -> None:
        """Log a subscription's change of health, once per change."""
        target = origin(sub.url)
        if change == "failing":
            log.warning("sim.push.failing", provider=provider, target=target, reason=reason)
        elif change == "disabled":
            log.warning("sim.push.disabled", provider=provider, target=target, failed=sub.failing)
        elif change == "recovered":
            log.info("sim.push.recovered", provider=provider, target=target)


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None
