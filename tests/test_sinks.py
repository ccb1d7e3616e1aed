"""Tests of sinks.py: the events file, the stdout stream and the outbox dispatcher."""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from tests.fakes import START, FakeClock
from walletwatch.asyncstore import AsyncStore
from walletwatch.events import Event
from walletwatch.sinks import DeliveryError, Dispatcher, FileSink, StreamSink
from walletwatch.store import Store, StoreError
from walletwatch.tracker import AccountState


def make_event(n: int, name: str = "deposit.detected", account: str = "hot") -> Event:
    """The n-th distinct event of an account."""
    return Event(
        event=name,
        event_id=f"{account}-{n:05d}",
        ts=START + n,
        provider="westwallet",
        account=account,
        fields={"currency": "BTC", "amount": "0.5", "transfer_id": str(n)},
    )


def make_events(first: int, count: int, account: str = "hot") -> list[Event]:
    """``count`` distinct events numbered from ``first``."""
    return [make_event(n, account=account) for n in range(first, first + count)]


def file_ids(path: Path) -> list[str]:
    """event_ids of the lines of an events file, failing on any line that is not JSON."""
    return [json.loads(line)["event_id"] for line in path.read_text().splitlines()]


async def parked(clock: FakeClock) -> None:
    """Return once a task sleeps on the fake clock (the dispatcher may await its store first)."""
    while not clock.sleepers:  # noqa: ASYNC110 - the store's worker thread runs in real time
        await asyncio.sleep(0.001)


class RecordingSink:
    """A sink that keeps what it was given and can be told to fail."""

    batch_size = 500

    def __init__(self, name: str) -> None:
        self.name = name
        self.batches: list[list[Event]] = []
        self.failing = False
        self.attempts = 0
        self.called = asyncio.Event()

    @property
    def ids(self) -> list[str]:
        """event_ids of everything delivered, in order."""
        return [e.event_id for batch in self.batches for e in batch]

    async def deliver(self, events: Sequence[Event]) -> None:
        """Record the batch, or raise when failing."""
        self.attempts += 1
        self.called.set()
        if self.failing:
            raise OSError("disk on fire")
        self.batches.append(list(events))


class FlakySink(RecordingSink):
    """Delivers the first event of every batch, then fails on the next (if there is one)."""

    async def deliver(self, events: Sequence[Event]) -> None:
        """Take one event; refuse the rest of the batch for now."""
        self.attempts += 1
        self.batches.append(list(events[:1]))
        if len(events) > 1:
            raise DeliveryError("busy", delivered=1)


class FailingAckStore(Store):
    """A store whose first cursor move fails, as on a full disk."""

    failed = False

    def ack(self, sink: str, seq: int) -> None:
        """Fail once, then move the cursor."""
        if not self.failed:
            self.failed = True
            raise StoreError("cannot move the cursor: database or disk is full")
        super().ack(sink, seq)


@pytest.fixture(name="store")
def fixture_store(tmp_path: Path) -> Iterator[AsyncStore]:
    """A real state database on tmp_path, on its worker thread."""
    store = AsyncStore(Store(tmp_path / "state.db"))
    yield store
    store.close()


async def commit(store: AsyncStore, events: Sequence[Event], account: str = "hot") -> None:
    """Queue events in the outbox the way a watcher does: through Store.commit."""
    state = AccountState()
    await store.call(store.store.commit, account, "westwallet", state, state, events)


class TestStreamSink:
    async def test_writes_one_json_line_per_event(self) -> None:
        """Each event becomes one line holding its JSON form, led by ``"kind": "event"``."""
        stream = io.StringIO()
        events = make_events(0, 3)
        await StreamSink(stream).deliver(events)
        lines = stream.getvalue().splitlines()
        assert [json.loads(line) for line in lines] == [
            {"kind": "event", **e.to_dict()} for e in events
        ]
        assert all(line.startswith('{"kind":"event",') for line in lines)
        assert stream.getvalue().endswith("\n")

    async def test_renders_with_the_given_function(self) -> None:
        """A sink for a person writes what its render function makes of each event."""
        stream = io.StringIO()
        events = make_events(0, 2)
        await StreamSink(stream, render=lambda e: f"<{e.event_id}>").deliver(events)
        assert stream.getvalue() == "".join(f"<{e.event_id}>\n" for e in events)

    async def test_batches_append(self) -> None:
        """Successive batches follow each other on the stream."""
        stream = io.StringIO()
        sink = StreamSink(stream)
        await sink.deliver(make_events(0, 2))
        await sink.deliver(make_events(2, 1))
        ids = [json.loads(line)["event_id"] for line in stream.getvalue().splitlines()]
        assert ids == ["hot-00000", "hot-00001", "hot-00002"]


class TestFileSink:
    async def test_appends_json_lines(self, tmp_path: Path) -> None:
        """Delivered events are appended to the file, one JSON object a line."""
        path = tmp_path / "events.jsonl"
        sink = FileSink(path)
        await sink.deliver(make_events(0, 2))
        await sink.deliver(make_events(2, 2))
        assert file_ids(path) == [f"hot-{n:05d}" for n in range(4)]
        assert json.loads(path.read_text().splitlines()[0]) == make_event(0).to_dict()

    async def test_keeps_what_was_in_the_file(self, tmp_path: Path) -> None:
        """An existing file is appended to, never truncated."""
        path = tmp_path / "events.jsonl"
        await FileSink(path).deliver(make_events(0, 2))
        await FileSink(path).deliver(make_events(2, 1))
        assert file_ids(path) == ["hot-00000", "hot-00001", "hot-00002"]

    async def test_repeats_within_one_run_are_dropped(self, tmp_path: Path) -> None:
        """A batch delivered twice (a crash before the cursor moved) is written once."""
        path = tmp_path / "events.jsonl"
        sink = FileSink(path)
        await sink.deliver(make_events(0, 3))
        await sink.deliver(make_events(1, 3))
        assert file_ids(path) == [f"hot-{n:05d}" for n in range(4)]

    async def test_restart_skips_event_ids_already_in_the_file(self, tmp_path: Path) -> None:
        """A new FileSink on the same path drops events whose ids are already in the file."""
        path = tmp_path / "events.jsonl"
        await FileSink(path).deliver(make_events(0, 5))
        restarted = FileSink(path)
        await restarted.deliver(make_events(3, 4))
        assert file_ids(path) == [f"hot-{n:05d}" for n in range(7)]

    async def test_restart_with_a_partial_last_line_starts(self, tmp_path: Path) -> None:
        """A last line cut by a crash mid-write is ignored; the complete lines are remembered."""
        path = tmp_path / "events.jsonl"
        await FileSink(path).deliver(make_events(0, 2))
        with path.open("a", encoding="utf-8") as fh:
            fh.write(make_event(2).to_json()[:25])
        restarted = FileSink(path)
        await restarted.deliver(make_events(0, 2))
        assert path.read_text().splitlines()[:2] == [e.to_json() for e in make_events(0, 2)]
        assert path.read_text().count("hot-00000") == 1

    async def test_a_partial_last_line_is_cut_before_the_next_write(self, tmp_path: Path) -> None:
        """The fragment a crash mid-write left is removed; its event follows whole, once."""
        path = tmp_path / "events.jsonl"
        await FileSink(path).deliver(make_events(0, 2))
        with path.open("a", encoding="utf-8") as fh:
            fh.write(make_event(2).to_json()[:25])
        await FileSink(path).deliver(make_events(2, 2))
        assert file_ids(path) == [f"hot-{n:05d}" for n in range(4)]

    async def test_an_overlong_last_line_is_kept_and_ended(self, tmp_path: Path) -> None:
        """A last line longer than the tail read is no event of ours: kept, then a newline."""
        path = tmp_path / "events.jsonl"
        path.write_bytes(b"x" * (2 * 1024 * 1024))
        await FileSink(path).deliver(make_events(0, 1))
        lines = path.read_bytes().split(b"\n")
        assert lines[0] == b"x" * (2 * 1024 * 1024)
        assert json.loads(lines[1])["event_id"] == "hot-00000"

    @pytest.mark.parametrize(
        "junk",
        [b"", b"\n\n", b"not json\n", b"[1, 2]\n", b'{"event_id": 7}\n', b"\xff\xfe\n"],
        ids=["empty", "blank", "text", "list", "numeric-id", "bad-utf8"],
    )
    async def test_start_tolerates_foreign_lines(self, junk: bytes, tmp_path: Path) -> None:
        """Lines that are not events do not stop the sink from starting or remembering."""
        path = tmp_path / "events.jsonl"
        path.write_bytes(junk + (make_event(0).to_json() + "\n").encode())
        await FileSink(path).deliver(make_events(0, 2))
        assert path.read_text(errors="replace").count("hot-00000") == 1
        assert path.read_text(errors="replace").count("hot-00001") == 1

    async def test_missing_file_is_created(self, tmp_path: Path) -> None:
        """A sink on a path that does not exist yet creates the file on first delivery."""
        path = tmp_path / "events.jsonl"
        sink = FileSink(path)
        assert not path.exists()
        await sink.deliver(make_events(0, 1))
        assert file_ids(path) == ["hot-00000"]


class TestDispatcher:
    async def test_delivers_committed_events_in_order(
        self, store: AsyncStore, clock: FakeClock
    ) -> None:
        """Events committed through Store.commit reach the sink in commit order."""
        sink = RecordingSink("memory")
        dispatcher = Dispatcher(store, [sink], clock)
        await dispatcher.prepare()
        await commit(store, make_events(0, 3))
        await commit(store, make_events(3, 2, account="cold"))
        assert await dispatcher.drain() is None
        assert sink.ids == [*(f"hot-{n:05d}" for n in range(3)), "cold-00003", "cold-00004"]
        assert [e.to_dict() for e in sink.batches[0][:3]] == [
            e.to_dict() for e in make_events(0, 3)
        ]

    async def test_cursor_moves_after_delivery(self, store: AsyncStore, clock: FakeClock) -> None:
        """A second drain delivers nothing, and the outbox has nothing pending for the sink."""
        sink = RecordingSink("memory")
        dispatcher = Dispatcher(store, [sink], clock)
        await dispatcher.prepare()
        await commit(store, make_events(0, 3))
        await dispatcher.drain()
        assert await dispatcher.drain() is None
        assert sink.attempts == 1
        assert await store.call(store.store.pending, "memory") == []

    async def test_only_new_events_follow(self, store: AsyncStore, clock: FakeClock) -> None:
        """Events committed after a drain are delivered by the next one, and only they."""
        sink = RecordingSink("memory")
        dispatcher = Dispatcher(store, [sink], clock)
        await dispatcher.prepare()
        await commit(store, make_events(0, 2))
        await dispatcher.drain()
        await commit(store, make_events(2, 2))
        await dispatcher.drain()
        assert [[e.event_id for e in b] for b in sink.batches] == [
            ["hot-00000", "hot-00001"],
            ["hot-00002", "hot-00003"],
        ]

    async def test_large_backlog_is_delivered_in_full(
        self, store: AsyncStore, clock: FakeClock
    ) -> None:
        """A backlog larger than one batch is delivered completely, in order, in one drain."""
        sink = RecordingSink("memory")
        dispatcher = Dispatcher(store, [sink], clock)
        await dispatcher.prepare()
        await commit(store, make_events(0, 1234))
        assert await dispatcher.drain() is None
        assert sink.ids == [f"hot-{n:05d}" for n in range(1234)]
        assert len(sink.batches) > 1

    async def test_failing_sink_keeps_its_events(self, store: AsyncStore, clock: FakeClock) -> None:
        """A sink that raises loses nothing: its next drain gets every event it missed."""
        good, bad = RecordingSink("good"), RecordingSink("bad")
        dispatcher = Dispatcher(store, [bad, good], clock)
        await dispatcher.prepare()
        bad.failing = True
        await commit(store, make_events(0, 2))
        assert await dispatcher.drain() == 2.0
        await commit(store, make_events(2, 2))
        await clock.advance(2.0)
        assert await dispatcher.drain() == 4.0
        assert good.ids == [f"hot-{n:05d}" for n in range(4)]
        assert bad.ids == []
        bad.failing = False
        await clock.advance(4.0)
        assert await dispatcher.drain() is None
        assert bad.ids == [f"hot-{n:05d}" for n in range(4)]
        assert good.ids == [f"hot-{n:05d}" for n in range(4)]

    async def test_new_events_do_not_cut_a_rest_short(
        self, store: AsyncStore, clock: FakeClock
    ) -> None:
        """Draining again while a failed sink rests does not call it; others still get events."""
        good, bad = RecordingSink("good"), RecordingSink("bad")
        dispatcher = Dispatcher(store, [bad, good], clock)
        await dispatcher.prepare()
        bad.failing = True
        await commit(store, make_events(0, 1))
        assert await dispatcher.drain() == 2.0
        await clock.advance(1.5)
        await commit(store, make_events(1, 1))
        assert await dispatcher.drain() == pytest.approx(0.5)
        assert bad.attempts == 1
        assert good.ids == [f"hot-{n:05d}" for n in range(2)]

    async def test_retry_delay_grows_and_caps(self, store: AsyncStore, clock: FakeClock) -> None:
        """Each consecutive failure doubles the retry delay up to a minute; success resets it."""
        sink = RecordingSink("bad")
        dispatcher = Dispatcher(store, [sink], clock)
        await dispatcher.prepare()
        await commit(store, make_events(0, 1))
        sink.failing = True
        delays = []
        for _ in range(8):
            delay = await dispatcher.drain()
            assert delay is not None
            delays.append(delay)
            await clock.advance(delay)
        assert delays == [2.0, 4.0, 8.0, 16.0, 32.0, 60.0, 60.0, 60.0]
        sink.failing = False
        assert await dispatcher.drain() is None
        sink.failing = True
        await commit(store, make_events(1, 1))
        assert await dispatcher.drain() == 2.0

    async def test_a_sink_that_makes_progress_keeps_a_short_rest(
        self, store: AsyncStore, clock: FakeClock
    ) -> None:
        """Failures with deliveries in between rest 2 s each; only a dead streak backs off."""
        sink = FlakySink("flaky")
        dispatcher = Dispatcher(store, [sink], clock)
        await dispatcher.prepare()
        await commit(store, make_events(0, 4))
        rests = []
        for _ in range(3):  # one event delivered, then a failure, each time
            rest = await dispatcher.drain()
            assert rest is not None
            rests.append(rest)
            await clock.advance(rest)
        assert rests == [2.0, 2.0, 2.0]
        assert sink.ids == [f"hot-{n:05d}" for n in range(3)]

    async def test_a_cursor_that_cannot_be_saved_resends_nothing(
        self, tmp_path: Path, clock: FakeClock
    ) -> None:
        """When the ack fails (a full disk), the retry saves the cursor; no event goes twice."""
        store = AsyncStore(FailingAckStore(tmp_path / "state.db"))
        try:
            sink = RecordingSink("memory")
            dispatcher = Dispatcher(store, [sink], clock)
            await dispatcher.prepare()
            await commit(store, make_events(0, 2))
            assert await dispatcher.drain() == 2.0
            await clock.advance(2.0)
            assert await dispatcher.drain() is None
            assert sink.ids == ["hot-00000", "hot-00001"]
            assert await store.call(store.store.pending, "memory") == []
        finally:
            store.close()

    async def test_concurrent_drains_deliver_once(
        self, store: AsyncStore, clock: FakeClock
    ) -> None:
        """Two drains at the same moment (the dispatcher task and a shutdown) deliver once."""
        sink = RecordingSink("file")
        dispatcher = Dispatcher(store, [sink], clock)
        await dispatcher.prepare()
        await commit(store, make_events(0, 3))
        await asyncio.gather(dispatcher.drain(), dispatcher.drain())
        assert sink.ids == [f"hot-{n:05d}" for n in range(3)]

    async def test_new_sink_starts_at_the_end(self, store: AsyncStore, clock: FakeClock) -> None:
        """A sink new to the state skips the outbox's history and gets only later events."""
        await commit(store, make_events(0, 3))
        sink = RecordingSink("late")
        dispatcher = Dispatcher(store, [sink], clock)
        await dispatcher.prepare()
        assert await dispatcher.drain() is None
        assert sink.ids == []
        await commit(store, make_events(3, 1))
        await dispatcher.drain()
        assert sink.ids == ["hot-00003"]

    async def test_known_sink_resumes_after_restart(
        self, store: AsyncStore, clock: FakeClock
    ) -> None:
        """prepare() keeps a known sink's cursor, so what it missed while down is delivered."""
        first = RecordingSink("file")
        dispatcher = Dispatcher(store, [first], clock)
        await dispatcher.prepare()
        await commit(store, make_events(0, 2))
        await dispatcher.drain()
        await commit(store, make_events(2, 2))
        again, newcomer = RecordingSink("file"), RecordingSink("webhook")
        restarted = Dispatcher(store, [again, newcomer], clock)
        await restarted.prepare()
        await restarted.drain()
        assert again.ids == ["hot-00002", "hot-00003"]
        assert newcomer.ids == []

    async def test_file_sink_after_crash_writes_each_fact_once(
        self, store: AsyncStore, clock: FakeClock, tmp_path: Path
    ) -> None:
        """Events the file got before a crash that kept the cursor back are not written twice."""
        path = tmp_path / "events.jsonl"
        dispatcher = Dispatcher(store, [FileSink(path)], clock)
        await dispatcher.prepare()
        await commit(store, make_events(0, 3))
        # The crash: the file received the events but the cursor never moved.
        await FileSink(path).deliver(make_events(0, 3))
        await Dispatcher(store, [FileSink(path)], clock).drain()
        assert file_ids(path) == ["hot-00000", "hot-00001", "hot-00002"]

    async def test_run_retries_on_the_clock_and_delivers_when_woken(
        self, store: AsyncStore, clock: FakeClock
    ) -> None:
        """run() retries a failed sink once its delay has passed on the clock; wake() drains."""
        sink = RecordingSink("memory")
        dispatcher = Dispatcher(store, [sink], clock)
        await dispatcher.prepare()
        await commit(store, make_events(0, 2))
        sink.failing = True
        task = asyncio.create_task(dispatcher.run())
        try:
            await asyncio.wait_for(sink.called.wait(), timeout=10)
            await asyncio.wait_for(parked(clock), timeout=10)  # after the store thread's count
            assert (sink.attempts, clock.sleepers) == (1, 1)
            sink.failing = False
            sink.called.clear()
            await clock.advance(1.9)
            assert (sink.attempts, clock.sleepers) == (1, 1)
            await clock.advance(0.1)
            await asyncio.wait_for(sink.called.wait(), timeout=10)
            assert sink.ids == ["hot-00000", "hot-00001"]
            sink.called.clear()
            await commit(store, make_events(2, 1))
            dispatcher.wake()
            await asyncio.wait_for(sink.called.wait(), timeout=10)
            assert sink.ids == ["hot-00000", "hot-00001", "hot-00002"]
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def test_prunes_delivered_events_once_an_hour(
        self, store: AsyncStore, clock: FakeClock
    ) -> None:
        """With a retention, delivered events older than it leave the outbox, hourly at most."""
        sink, slow = RecordingSink("memory"), RecordingSink("slow")
        dispatcher = Dispatcher(store, [sink, slow], clock, retention=100.0)
        await dispatcher.prepare()
        await commit(store, make_events(0, 3))  # ts START .. START + 2
        slow.failing = True
        await dispatcher.drain()  # prunes nothing: too recent, and "slow" still needs them
        await clock.advance(3600.0)
        await dispatcher.drain()  # an hour on: still needed by "slow"
        assert len(await store.call(store.store.pending, "someone")) == 3
        slow.failing = False
        await clock.advance(60.0)
        await dispatcher.drain()  # delivered to both now, but the last pruning was 60 s ago
        assert len(await store.call(store.store.pending, "someone")) == 3
        await clock.advance(3600.0)
        await dispatcher.drain()
        assert await store.call(store.store.pending, "someone") == []
        assert slow.ids == sink.ids == ["hot-00000", "hot-00001", "hot-00002"]
