"""Issue 16, item 8: a reload at scale must never stall the event loop nor pile up."""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import yaml
from structlog.testing import capture_logs

from tests.test_reload import body, fixture_logging, fixture_sim, fixture_sim_url, write
from walletwatch.app import Daemon
from walletwatch.cli import Reloader, reload_config
from walletwatch.clock import SystemClock
from walletwatch.reload import RELOAD_SLICE

__all__ = ["fixture_logging", "fixture_sim", "fixture_sim_url"]  # fixtures, used by name

BOUND = 10.0  # seconds any wait in these tests may take before it counts as a hang


class Fifo:
    """A config "file" that is a named pipe: reading it blocks until the test writes to it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        os.mkfifo(path, 0o600)

    def write_later(self, texts: list[str]) -> threading.Thread:
        """Write each text in turn to the next reader of the pipe, from a thread."""

        def serve() -> None:
            for text in texts:
                # Opening for writing blocks until a reader opens the pipe.
                fd = os.open(self.path, os.O_WRONLY)
                with os.fdopen(fd, "w") as pipe:
                    pipe.write(text)

        thread = threading.Thread(target=serve, daemon=True)
        thread.start()
        return thread


def text(data: object) -> str:
    """A config body as YAML."""
    return yaml.safe_dump(data)


@pytest.fixture(name="daemon")
async def fixture_daemon(sim_url: str, tmp_path: Path) -> AsyncIterator[Daemon]:
    """A started daemon watching 'hot', with its config file at tmp_path/config.yaml."""
    config = write(tmp_path / "config.yaml", body(sim_url, ["hot"]))
    assert config is not None
    daemon = Daemon(config, clock=SystemClock())
    await daemon.start(serve=False)
    yield daemon
    await daemon.close()


class TestOffTheLoop:
    """Reading and validating the new file never holds the event loop."""

    async def test_a_blocking_read_leaves_the_loop_running(
        self, sim_url: str, daemon: Daemon, tmp_path: Path
    ) -> None:
        """While the file's read blocks (a FIFO nobody writes yet), other tasks keep running;
        the reload applies once the content comes."""
        fifo = Fifo(tmp_path / "config.fifo")
        reload = asyncio.create_task(reload_config(daemon, fifo.path))
        began = time.monotonic()
        for _ in range(20):  # 0.2 s of 10 ms sleeps, each on time though the read blocks
            await asyncio.sleep(0.01)
        assert time.monotonic() - began < 1.0
        assert not reload.done()
        writer = fifo.write_later([text(body(sim_url, ["hot", "cold"]))])
        await asyncio.wait_for(reload, BOUND)
        writer.join(BOUND)
        assert set(daemon.watchers) == {"hot", "cold"}

    async def test_the_loop_is_never_held_long(
        self, sim_url: str, daemon: Daemon, tmp_path: Path
    ) -> None:
        """Reloading a 2,000-account file, no 5 ms sleep of another task wakes 0.5 s late.

        Read on the loop, this file held it for over a second; bench/reload.py measures the
        100 ms target at 10,000 accounts. The margin is for a loaded test machine.
        """
        data = body(sim_url, ["hot"])
        template = data["accounts"][0]
        data["accounts"] += [{**template, "name": f"acct-{i:04d}"} for i in range(2000)]
        path = tmp_path / "config.yaml"
        write(path, data)
        late: list[float] = []
        stop = asyncio.Event()

        async def tick() -> None:
            loop = asyncio.get_running_loop()
            while not stop.is_set():
                before = loop.time()
                await asyncio.sleep(0.005)
                late.append(loop.time() - before - 0.005)

        ticker = asyncio.create_task(tick())
        await asyncio.wait_for(reload_config(daemon, path), BOUND)
        stop.set()
        await ticker
        assert len(daemon.watchers) == 2001
        assert max(late) < 0.5


class TestCoalescing:
    """SIGHUPs during a reload cause exactly one more reload after it."""

    async def test_five_signals_during_a_reload_make_one_more(
        self, sim_url: str, daemon: Daemon, tmp_path: Path
    ) -> None:
        """Real SIGHUPs: one starts a reload whose read blocks, four more come meanwhile;
        two reloads run in all, the second reading the file as written after the signals."""
        fifo = Fifo(tmp_path / "config.fifo")
        reloader = Reloader(daemon, fifo.path)
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGHUP, reloader.request)
        try:
            with capture_logs() as logs:
                for _ in range(5):
                    os.kill(os.getpid(), signal.SIGHUP)
                    await asyncio.sleep(0.01)
                # One text per reader: a writer racing ahead could hand the second text
                # to the first reader before it closes the pipe.
                first = fifo.write_later([text(body(sim_url, ["hot", "cold"]))])
                await asyncio.to_thread(first.join, BOUND)
                async with asyncio.timeout(BOUND):
                    while reloader.runs < 2:  # noqa: ASYNC110 - a count, no event to wait on
                        await asyncio.sleep(0.01)
                fifo.write_later([text(body(sim_url, ["cold"]))])
                await asyncio.wait_for(reloader.idle(), BOUND)
        finally:
            loop.remove_signal_handler(signal.SIGHUP)
        assert reloader.runs == 2
        assert set(daemon.watchers) == {"cold"}
        assert [e["event"] for e in logs if e["event"].startswith("config.reload")] == [
            "config.reloading",
            "config.reload_queued",
            "config.reloaded",
            "config.reloading",
            "config.reloaded",
        ]

    async def test_a_request_after_a_reload_ends_runs_again(
        self, sim_url: str, daemon: Daemon, tmp_path: Path
    ) -> None:
        """Coalescing holds only during a reload: one that comes later is a reload of its own."""
        path = tmp_path / "config.yaml"
        write(path, body(sim_url, ["hot", "cold"]))
        reloader = Reloader(daemon, path)
        reloader.request()
        await asyncio.wait_for(reloader.idle(), BOUND)
        reloader.request()
        await asyncio.wait_for(reloader.idle(), BOUND)
        assert reloader.runs == 2


class TestSlices:
    """A reload applies its accounts a slice at a time, with the loop free between."""

    async def test_the_loop_runs_between_slices(
        self, sim_url: str, daemon: Daemon, tmp_path: Path
    ) -> None:
        """A task running during a reload of 2.5 slices of new accounts sees the watchers
        grow in steps, not all at once; then removing them all goes in steps too."""
        many = [f"acct-{i:04d}" for i in range(RELOAD_SLICE * 5 // 2)]
        data = body(sim_url, ["hot"])
        template = data["accounts"][0]
        data["accounts"] += [{**template, "name": name} for name in many]
        new = write(tmp_path / "config.yaml", data)
        assert new is not None
        old = daemon.config
        for target in (new, old):
            seen: list[int] = []
            stop = asyncio.Event()

            async def watch(seen: list[int] = seen, stop: asyncio.Event = stop) -> None:
                while not stop.is_set():
                    seen.append(len(daemon.watchers))
                    await asyncio.sleep(0)

            watcher = asyncio.create_task(watch())
            await asyncio.sleep(0)
            await daemon.reload(target)
            stop.set()
            await watcher
            between = {n for n in seen if 1 < n < len(many) + 1}
            assert len(between) >= 2, seen  # at least two slices' ends observed
        assert set(daemon.watchers) == {"hot"}


class TestBadConfig:
    """A bad file during a reload keeps the running config."""

    async def test_broken_file_keeps_the_old_config(self, daemon: Daemon, tmp_path: Path) -> None:
        """The problems are logged, the watchers and config stay, the gauge says 0."""
        path = tmp_path / "config.yaml"
        path.write_text("accounts: [")
        running = daemon.config
        reloader = Reloader(daemon, path)
        with capture_logs() as logs:
            reloader.request()
            await asyncio.wait_for(reloader.idle(), BOUND)
        assert [e["event"] for e in logs if e["event"].startswith("config.reload")] == [
            "config.reloading",
            "config.reload_failed",
        ]
        assert daemon.config is running
        assert set(daemon.watchers) == {"hot"}
        assert daemon.registry.get_sample_value("walletwatch_config_last_reload_successful") == 0


class TestStatesLoaded:
    """A reload reads from the store only the states of the accounts it starts."""

    async def test_load_of_named_accounts(
        self, sim_url: str, daemon: Daemon, tmp_path: Path
    ) -> None:
        """With names, Store.load returns those accounts' states and no other."""
        new = write(tmp_path / "config.yaml", body(sim_url, ["hot", "cold"]))
        assert new is not None
        await daemon.reload(new)
        await daemon.poll_once()
        assert daemon._store is not None
        store = daemon._store.store
        assert set(store.load()) == {"hot", "cold"}
        assert set(store.load(["cold"])) == {"cold"}
        assert store.load(["cold"])["cold"] == daemon.watchers["cold"].state
        assert store.load([]) == {}
