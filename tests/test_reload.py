"""SIGHUP reload: accounts added, removed, changed and a broken file, in process and for real."""

from __future__ import annotations

import gc
import json
import os
import signal
import subprocess
import sys
import time
import weakref
from collections.abc import AsyncIterator, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import structlog
import yaml
from structlog.testing import capture_logs

from tests.simthread import serve_in_thread
from tests.test_cli import DEADLINE, free_port, wait_for
from walletwatch.app import Daemon
from walletwatch.cli import reload_config
from walletwatch.clock import SystemClock
from walletwatch.config import Config, load_config
from walletwatch.sim import Simulator, start

ACCOUNTS = {"hot": ("hot-key", "hot-secret"), "cold": ("cold-key", "cold-secret")}


def funded() -> Simulator:
    """A simulator with the two accounts, each with a balance and a pending withdrawal."""
    sim = Simulator(rate_limit=100_000)
    for key, secret in ACCOUNTS.values():
        sim.westwallet.add_account(key, secret, {"BTC": Decimal(2)})
        sim.westwallet.add_transaction(
            key, type="send", currency="BTC", amount=Decimal("0.1"), created_at=time.time() - 60
        )
    return sim


def body(sim_url: str, names: list[str], interval: str = "30s", **extra: Any) -> dict[str, Any]:
    """The YAML body of a config watching the ``names`` accounts."""
    return {
        "listen": "127.0.0.1:0",
        "state_path": "state.db",
        "events_file": "events.jsonl",
        "providers": {"westwallet": {"rate_limit": 1000}},
        "accounts": [
            {
                "name": name,
                "provider": "westwallet",
                "base_url": f"{sim_url}/westwallet",
                "credentials": {"api_key": ACCOUNTS[name][0], "secret_key": ACCOUNTS[name][1]},
                "interval": interval,
            }
            for name in names
        ],
        **extra,
    }


def write(path: Path, data: object) -> Config | None:
    """Write ``data`` as the config file; the parsed Config when it is valid."""
    path.write_text(yaml.safe_dump(data))
    try:
        return load_config(path, environ={})
    except Exception:  # noqa: BLE001 - a broken file is the point of some calls
        return None


def events(path: Path) -> list[dict[str, Any]]:
    """The events file, parsed."""
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines()]


def up(daemon: Daemon, account: str) -> float | None:
    """walletwatch_up of ``account``, None when the series is absent."""
    return daemon.registry.get_sample_value(
        "walletwatch_up", {"provider": "westwallet", "account": account}
    )


def reload_ok(daemon: Daemon) -> float | None:
    """walletwatch_config_last_reload_successful."""
    return daemon.registry.get_sample_value("walletwatch_config_last_reload_successful")


@pytest.fixture(autouse=True)
def fixture_logging() -> None:
    """Info events reach capture_logs whatever level an earlier in-process CLI test set."""
    structlog.reset_defaults()


@pytest.fixture(name="sim")
def fixture_sim() -> Simulator:
    """The simulator with both accounts."""
    return funded()


@pytest.fixture(name="sim_url")
async def fixture_sim_url(sim: Simulator) -> AsyncIterator[str]:
    """The simulator on a loopback port."""
    runner, port = await start(sim, "127.0.0.1", 0)
    yield f"http://127.0.0.1:{port}"
    await runner.cleanup()


@pytest.fixture(name="daemon")
async def fixture_daemon(sim_url: str, tmp_path: Path) -> AsyncIterator[Daemon]:
    """A started daemon watching 'hot' (polls driven by the test)."""
    config = write(tmp_path / "config.yaml", body(sim_url, ["hot"]))
    assert config is not None
    daemon = Daemon(config, clock=SystemClock())
    await daemon.start(serve=False)
    yield daemon
    await daemon.close()


class TestFrozenHeap:
    """The daemon keeps its long-lived heap out of the collector's full passes."""

    async def test_frozen_at_start_and_after_the_first_scrape(
        self, sim_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Polling freezes the heap; the first scrape after that freezes the renderer's caches
        once; close() thaws everything."""
        freezes: list[int] = []
        freeze = gc.freeze

        def counted() -> None:
            freezes.append(1)
            freeze()

        monkeypatch.setattr(gc, "freeze", counted)
        config = write(tmp_path / "config.yaml", body(sim_url, ["hot"]))
        assert config is not None
        daemon = Daemon(config, clock=SystemClock())
        await daemon.start(serve=True)
        try:
            daemon.run_scheduler()
            assert len(freezes) == 1
            assert gc.get_freeze_count() > 0
            async with aiohttp.ClientSession() as session:
                for _ in range(3):
                    async with session.get(daemon.url + "/metrics") as response:
                        assert response.status == 200
                        await response.read()
            assert len(freezes) == 2  # after the first scrape only
        finally:
            await daemon.close()
        assert gc.get_freeze_count() == 0


class TestReload:
    """Daemon.reload applies accounts live, never announcing a fact twice."""

    async def test_add_change_remove_break_and_readd(
        self, sim: Simulator, sim_url: str, daemon: Daemon, tmp_path: Path
    ) -> None:
        """Each step takes effect; events are never repeated; a broken file changes nothing."""
        path, log = tmp_path / "config.yaml", tmp_path / "events.jsonl"
        await daemon.poll_once()
        assert up(daemon, "hot") == 1.0
        assert reload_ok(daemon) == 1.0
        first = daemon.registry.get_sample_value(
            "walletwatch_config_last_reload_success_timestamp_seconds"
        )
        hot_key = ACCOUNTS["hot"][0]
        sim.westwallet.add_transaction(hot_key, type="receive", currency="BTC", amount=Decimal(1))
        await daemon.poll_once()
        seen = events(log)
        assert [e["event"] for e in seen].count("deposit.detected") == 1

        # Added and changed: cold starts with a silent baseline, hot keeps its state.
        new = write(path, body(sim_url, ["hot", "cold"], interval="20s"))
        assert new is not None
        assert await daemon.reload(new) == ()
        assert daemon.watchers["hot"].config.interval == 20.0
        await daemon.poll_once()
        assert up(daemon, "cold") == 1.0
        assert events(log) == seen  # nothing re-announced, cold's baseline is silent

        # Removed: cold's series go; its state stays in the store.
        daemon.run_scheduler()
        assert daemon.scheduler.polling("cold")
        assert gc.get_freeze_count() > 0  # the long-lived heap is kept out of full passes
        cold = weakref.ref(daemon.watchers["cold"])
        new = write(path, body(sim_url, ["hot"]))
        assert new is not None
        await daemon.reload(new)
        assert not daemon.scheduler.polling("cold")
        assert daemon.scheduler.polling("hot")
        assert cold() is None  # what a reload drops is freed, frozen heap or not
        assert gc.get_freeze_count() > 0
        assert up(daemon, "cold") is None
        assert "cold" not in daemon.watchers

        # Broken: the problems are logged, the running config is kept, the gauge says so.
        assert write(path, {**body(sim_url, ["hot", "cold"]), "accounts": "many"}) is None
        running = daemon.config
        with capture_logs() as logs:
            await reload_config(daemon, path)
        failed = [e for e in logs if e["event"] == "config.reload_failed"]
        assert failed
        assert "accounts" in failed[0]["problems"][0]
        assert daemon.config is running
        assert reload_ok(daemon) == 0.0
        stamp = daemon.registry.get_sample_value(
            "walletwatch_config_last_reload_success_timestamp_seconds"
        )
        assert stamp is not None
        assert first is not None
        assert stamp >= first

        # Re-added, with a deposit made while it was gone: it resumes from its stored state,
        # so only the new deposit is announced.
        cold_key = ACCOUNTS["cold"][0]
        sim.westwallet.add_transaction(cold_key, type="receive", currency="BTC", amount=Decimal(3))
        write(path, body(sim_url, ["hot", "cold"]))
        await reload_config(daemon, path)
        assert reload_ok(daemon) == 1.0
        await daemon.poll_once()
        added = [e for e in events(log) if e not in seen]
        assert {(e["account"], e["event"]) for e in added} >= {("cold", "deposit.detected")}
        assert all(e["account"] == "cold" for e in added)
        ids = [e["event_id"] for e in events(log)]
        assert len(ids) == len(set(ids))

    async def test_top_level_changes_need_a_restart(
        self, sim_url: str, daemon: Daemon, tmp_path: Path
    ) -> None:
        """A new listen address is reported and not applied; accounts still are."""
        new = write(tmp_path / "config.yaml", body(sim_url, ["hot", "cold"], listen="0.0.0.0:1"))
        assert new is not None
        with capture_logs() as logs:
            assert await daemon.reload(new) == ("listen",)
        assert daemon.config.listen.host == "127.0.0.1"
        assert set(daemon.watchers) == {"hot", "cold"}
        done = next(e for e in logs if e["event"] == "config.reloaded")
        assert done["added"] == ["cold"]
        assert done["restart_needed"] == ["listen"]


@pytest.fixture(name="thread_sim_url")
def fixture_thread_sim_url() -> Iterator[str]:
    """The simulator served from a thread, for the subprocess test."""
    with serve_in_thread(funded()) as url:
        yield url


class TestSighup:
    """walletwatch run reloads its file on a real SIGHUP."""

    def test_sighup(self, tmp_path: Path, thread_sim_url: str) -> None:
        """An added account appears; a broken file is refused and the daemon keeps running."""
        port = free_port()
        path = tmp_path / "config.yaml"
        listen = f"127.0.0.1:{port}"
        write(path, body(thread_sim_url, ["hot"], interval="1s", listen=listen))
        proc = subprocess.Popen(
            [sys.executable, "-m", "walletwatch", "run", "-c", str(path)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        url = f"http://127.0.0.1:{port}/metrics"
        try:
            wait_for(f"http://127.0.0.1:{port}/readyz")
            write(path, body(thread_sim_url, ["hot", "cold"], interval="1s", listen=listen))
            proc.send_signal(signal.SIGHUP)
            wait_for(url, lambda m: 'walletwatch_up{account="cold",provider="westwallet"} 1.0' in m)
            path.write_text("accounts: [")
            proc.send_signal(signal.SIGHUP)
            metrics = wait_for(url, lambda m: "walletwatch_config_last_reload_successful 0.0" in m)
            assert 'account="cold"' in metrics
        finally:
            proc.send_signal(signal.SIGTERM)
            out, err = proc.communicate(timeout=DEADLINE)
        assert proc.returncode == 0, err
        logs = [json.loads(line) for line in out.splitlines()]
        assert [e["event"] for e in logs if e.get("event", "").startswith("config.")] == [
            "config.reloading",
            "config.reloaded",
            "config.reloading",
            "config.reload_failed",
        ]
