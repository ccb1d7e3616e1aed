"""The dispatcher: moves events from the outbox to every sink, each sink on its own lane."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import structlog

from walletwatch.asyncstore import AsyncStore
from walletwatch.errors import WalletwatchError
from walletwatch.events import Event
from walletwatch.signals import sleep_until_set
from walletwatch.store import StoreError
from walletwatch.telemetry import Telemetry
from walletwatch.types import Clock, Refreshing, Sink

log = structlog.get_logger("walletwatch.sinks")

MAX_REST = 60.0
"""The longest a failing sink rests before the next attempt (and the cap on Retry-After)."""

PRUNE_EVERY = 3600.0
"""Seconds between prunings of delivered events from the outbox."""

COUNT_EVERY = 1.0
"""Seconds between refreshes of walletwatch_outbox_pending while events come and go: live, yet
one count query a second at most, however fast a sink acknowledges."""

DELIVERY_GRACE = 5.0
"""Seconds sinks get on shutdown to deliver what is pending, after polls have stopped (they get
up to 10 s): both well inside systemd's TimeoutStopSec=30s. What is left waits in the outbox."""


class DeliveryError(WalletwatchError):
    """A sink delivered the first ``delivered`` events of a batch, then failed on the next.

    With ``park`` the receiver refused that event for good: it is set aside and delivery goes
    on. Otherwise the rest of the batch is retried after a rest of at least ``retry_after``.
    """

    def __init__(
        self,
        message: str,
        *,
        delivered: int,
        park: bool = False,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.delivered = delivered
        self.park = park
        self.retry_after = retry_after


@dataclass(slots=True)
class _Lane:
    """One sink's delivery state: its backoff and the signals of its own loop."""

    sink: Sink
    refresh: Refreshing | None = None  # the sink, when it also sends on its own schedule
    failures: int = 0  # attempts failed since the sink last caught up (for the logs)
    streak: int = 0  # attempts failed in a row without delivering anything (for the backoff)
    unacked: int | None = None  # delivered up to this seq, but the cursor is not saved yet
    retry_at: float = -math.inf  # a failing sink rests until then, woken or not
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)  # one drain at a time per sink
    wake: asyncio.Event = field(default_factory=asyncio.Event)  # new events for this sink
    idle: asyncio.Event = field(default_factory=asyncio.Event)  # caught up, or resting


class Dispatcher:
    """Moves events from the outbox to every sink, each on its own loop with its own backoff.

    A slow or failing sink delays no other. A sink that raises DeliveryError keeps what it
    delivered; an event it refused for good is parked (kept in the store, counted, logged)
    and skipped. ``walletwatch_outbox_pending`` follows commits and acknowledgements within
    COUNT_EVERY. With ``retention``, delivered events older than that are pruned from the
    outbox once an hour.
    """

    def __init__(
        self,
        store: AsyncStore,
        sinks: Sequence[Sink],
        clock: Clock,
        *,
        telemetry: Telemetry | None = None,
        retention: float | None = None,
    ) -> None:
        self._store = store
        self._lanes = tuple(
            _Lane(sink, sink if isinstance(sink, Refreshing) else None) for sink in sinks
        )
        self._clock = clock
        self._telemetry = telemetry or Telemetry()
        self._retention = retention
        self._prune_at = -math.inf
        self._recount = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def wake(self) -> None:
        """New events are in the outbox."""
        for lane in self._lanes:
            lane.wake.set()
            lane.idle.clear()
        self._recount.set()

    async def prepare(self) -> None:
        """Give every sink a cursor; a sink new to this state starts at the end."""
        for lane in self._lanes:
            await self._store.call(self._store.store.start_cursor, lane.sink.name)
        await self._count_pending()

    def start(self) -> None:
        """Run every sink's loop, and the pending counts', until close()."""
        self._task = asyncio.create_task(self.run(), name="dispatcher")

    async def run(self) -> None:
        """Deliver to each sink whenever woken and retry it on its backoff, all independently."""
        tasks = [
            asyncio.create_task(self._run_lane(lane), name=f"sink:{lane.sink.name}")
            for lane in self._lanes
        ]
        tasks.append(asyncio.create_task(self._run_counts(), name="sink-counts"))
        try:
            await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _run_lane(self, lane: _Lane) -> None:
        lane.wake.set()  # start by delivering what the last run left
        while True:
            lane.wake.clear()
            rest = await self._drain_lane(lane)
            if not lane.wake.is_set():
                lane.idle.set()
            await sleep_until_set(self._clock, math.inf if rest is None else rest, lane.wake)
            lane.idle.clear()

    async def _run_counts(self) -> None:
        while True:
            await self._recount.wait()
            self._recount.clear()
            await self._count_pending()
            await self._prune()
            await self._clock.sleep(COUNT_EVERY)  # the changes meanwhile make one count

    async def drain(self) -> float | None:
        """Deliver everything pending to every sink at once; return seconds until a retry."""
        rests = await asyncio.gather(*(self._drain_lane(lane) for lane in self._lanes))
        await self._count_pending()
        await self._prune()
        return min((r for r in rests if r is not None), default=None)

    async def close(self, grace: float = DELIVERY_GRACE) -> None:
        """Deliver for at most ``grace`` seconds, then stop; the rest stays for the next start.

        A webhook request still in flight when the grace ends is abandoned unacknowledged: the
        next start sends that one event again (the receiver drops it by event_id).
        """
        if self._task is None:
            work: asyncio.Future[Any] = asyncio.ensure_future(self.drain())
        else:
            self.wake()
            work = asyncio.gather(*(lane.idle.wait() for lane in self._lanes))
        timer = asyncio.ensure_future(self._clock.sleep(grace))
        stopped: list[asyncio.Future[Any]] = [work, timer]
        if self._task is not None:
            stopped.append(self._task)
        try:
            await asyncio.wait({work, timer}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in stopped:
                task.cancel()
            await asyncio.gather(*stopped, return_exceptions=True)
            self._task = None
        await self._count_pending()
        for lane in self._lanes:
            left = self._telemetry.outbox_pending.get(lane.sink.name, 0)
            if left:
                log.warning("sink.undelivered_at_stop", sink=lane.sink.name, pending=left)

    async def _drain_lane(self, lane: _Lane) -> float | None:
        """Deliver what is pending for one sink; return seconds until it should retry.

        A sink that also sends on its own schedule (Refreshing) is refreshed after its
        events, and its next refresh is when it should be called again.
        """
        async with lane.lock:
            rest = lane.retry_at - self._clock.monotonic()
            if rest > 0:
                return rest
            progress: list[int] = []
            due = None
            unsent = None if lane.refresh is None else lane.refresh.unsent
            try:
                await self._drain_one(lane, progress)
                if lane.refresh is not None:
                    due = await lane.refresh.refresh()
            except Exception as err:  # noqa: BLE001 - any sink failure: the outbox keeps the events
                lane.failures += 1
                # A receiver that takes most events but fails some keeps a short rest: only
                # failures with nothing delivered in between lengthen it.
                lane.streak = 1 if progress else lane.streak + 1
                self._telemetry.delivery_failures[lane.sink.name] += 1
                wait = min(MAX_REST, 2.0 ** min(lane.streak, 6))
                if isinstance(err, DeliveryError) and err.retry_after is not None:
                    wait = max(wait, err.retry_after)
                lane.retry_at = self._clock.monotonic() + wait
                # Warn when a sink starts failing; the metric counts the repeats.
                emit = log.warning if lane.failures == 1 else log.debug
                emit("sink.failed", sink=lane.sink.name, error=str(err), retry_in=wait)
                return wait
            finally:
                if lane.refresh is not None and lane.refresh.unsent != unsent:
                    self._recount.set()  # its unsent alerts count with its pending events
            if lane.failures:
                log.info("sink.recovered", sink=lane.sink.name, failures=lane.failures)
            lane.failures = lane.streak = 0
            lane.retry_at = -math.inf
            return due

    async def _drain_one(self, lane: _Lane, progress: list[int]) -> None:
        """Deliver batch after batch until none is left; ``progress`` gets each seq passed."""
        sink, store = lane.sink, self._store.store
        while True:
            if lane.unacked is not None:
                # Delivered, but the cursor could not be saved (a full disk): save it before
                # reading the outbox again, rather than send those events a second time.
                await self._ack(lane, lane.unacked)
            batch = await self._store.call(store.pending, sink.name, sink.batch_size)
            if not batch:
                return
            try:
                await sink.deliver([event for _, event in batch])
            except DeliveryError as err:
                if err.delivered > 0:
                    progress.append(batch[err.delivered - 1][0])
                    await self._ack(lane, progress[-1])
                if not err.park:
                    raise
                seq, event = batch[err.delivered]
                await self._park(sink, seq, event, str(err))
                progress.append(seq)
            else:
                progress.append(batch[-1][0])
                await self._ack(lane, progress[-1])

    async def _ack(self, lane: _Lane, seq: int) -> None:
        lane.unacked = seq
        await self._store.call(self._store.store.ack, lane.sink.name, seq)
        lane.unacked = None
        self._recount.set()

    async def _park(self, sink: Sink, seq: int, event: Event, reason: str) -> None:
        """Set aside an event the sink refused for good, and move its cursor past it."""
        store = self._store.store
        await self._store.call(store.park, sink.name, seq, event, reason, self._clock.time())
        self._recount.set()
        self._telemetry.events_parked[sink.name] += 1
        log.error(
            "sink.event_parked",
            sink=sink.name,
            account=event.account,
            alert=event.event,  # "event" is the log line's own name
            event_id=event.event_id,
            reason=reason,
        )

    async def _count_pending(self) -> None:
        """Refresh walletwatch_outbox_pending for every sink."""
        names = [lane.sink.name for lane in self._lanes]
        try:
            counts = await self._store.call(self._store.store.pending_counts, names)
        except StoreError:
            return  # the gauges keep their last values; the failure shows elsewhere
        for lane in self._lanes:
            if lane.refresh is not None:
                counts[lane.sink.name] += lane.refresh.unsent
        self._telemetry.outbox_pending.update(counts)

    async def _prune(self) -> None:
        """Drop delivered events older than the retention, at most once per PRUNE_EVERY."""
        now = self._clock.monotonic()
        if self._retention is None or now < self._prune_at:
            return
        self._prune_at = now + PRUNE_EVERY
        names = [lane.sink.name for lane in self._lanes]
        before = self._clock.time() - self._retention
        try:
            count = await self._store.call(self._store.store.prune_outbox, before, names)
        except StoreError as err:
            log.warning("outbox.prune_failed", error=str(err))
            return
        if count:
            log.info("outbox.pruned", events=count)
