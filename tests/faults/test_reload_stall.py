"""Issue 16, item 8: a reload at scale must never stall the event loop nor pile up."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from tests.test_reload import body, fixture_logging, fixture_sim, fixture_sim_url, write
from walletwatch.app import RELOAD_SLICE, Daemon
from walletwatch.cli import Reloader, reload_config
from walletwatch.config import Config, load_config
from walletwatch.shard import Shard
from walletwatch.types import SystemClock

__all__ = ["fixture_logging", "fixture_sim", "fixture_sim_url"]  # fixtures, used by name

BOUND = 10.0  # seconds any wait in these tests may take before it counts as a hang


class GatedLoader:
    """load_config that blocks its thread until ``release()``, counting its calls."""

    def __init__(self) -> None:
        self.calls = 0
        self.entered = threading.Event()
        self._gate = threading.Event()

    def __call__(self, path: Path, *, shard: Shard | None = None) -> Config:
        """Wait for the gate, then load for real."""
        self.calls += 1
        self.entered.set()
        if not self._gate.wait(BOUND):
            raise TimeoutError("the gate was never opened")
        return load_config(path, environ={}, shard=shard)

    def release(self) -> None:
        """Let every call through from now on."""
        self._gate.set()


@pytest.fixture(name="daemon")
async def fixture_daemon(sim_url: str, tmp_path: Path) -> AsyncIterator[Daemon]:
    """A started daemon watching 'hot', with its config file at tmp_path/config.yaml."""
    config = write(tmp_path / "config.yaml", body(sim_url, ["hot"]))
    assert config is not None
    daemon = Daemon(config, clock=SystemClock())
    await daemon.start(serve=False)
    yield daemon
    await daemon.close()


async def entered(loader: GatedLoader) -> None:
    """Wait (without blocking the loop) until the loader's thread is inside it."""
    assert await asyncio.to_thread(loader.entered.wait, BOUND)


class TestOffTheLoop:
    """Reading and validating the new file happens in a worker thread."""

    async def test_a_blocked_loader_leaves_the_loop_running(
        self, sim_url: str, daemon: Daemon, tmp_path: Path
    ) -> None:
        """While the loader is stuck, other tasks keep running; the reload then applies."""
        path = tmp_path / "config.yaml"
        write(path, body(sim_url, ["hot", "cold"]))
        loader = GatedLoader()
        reload = asyncio.create_task(reload_config(daemon, path, loader))
        try:
            await entered(loader)
            ticks = 0
            for _ in range(5):  # the loop turns while the loader holds its thread
                await asyncio.sleep(0.01)
                ticks += 1
            assert ticks == 5
            assert not reload.done()
        finally:
            loader.release()
        await asyncio.wait_for(reload, BOUND)
        assert set(daemon.watchers) == {"hot", "cold"}


class TestCoalescing:
    """SIGHUPs during a reload cause exactly one more reload after it."""

    async def test_five_requests_during_a_reload_make_one_more(
        self, sim_url: str, daemon: Daemon, tmp_path: Path
    ) -> None:
        """A reload blocked in its loader, four more requests: two reloads in all, the last
        reading the file as it was after the requests."""
        path = tmp_path / "config.yaml"
        write(path, body(sim_url, ["hot", "cold"]))
        loader = GatedLoader()
        reloader = Reloader(daemon, path, loader)
        with capture_logs() as logs:
            reloader.request()
            await entered(loader)
            for _ in range(4):
                reloader.request()
            write(path, body(sim_url, ["cold"]))  # what the queued reload must see
            loader.release()
            await asyncio.wait_for(reloader.idle(), BOUND)
        assert loader.calls == 2
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
        reloader = Reloader(daemon, path, GatedLoaderOpen())
        reloader.request()
        await asyncio.wait_for(reloader.idle(), BOUND)
        reloader.request()
        await asyncio.wait_for(reloader.idle(), BOUND)
        assert reloader.runs == 2


class GatedLoaderOpen(GatedLoader):
    """A GatedLoader open from the start."""

    def __init__(self) -> None:
        super().__init__()
        self.release()


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
