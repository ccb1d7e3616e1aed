"""``walletwatch status`` end to end: a real daemon polling the simulator, asked over HTTP.

The command runs as its own process, as an operator or a check would run it; the daemon's
logs and events on this process's stdout stay apart from what it prints.
"""

from __future__ import annotations

import asyncio
import os
import socket
import sys
import time
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path

import bcrypt
import pytest
import trustme
import yaml

from walletwatch.app import Daemon
from walletwatch.clock import SystemClock
from walletwatch.config import load_config, parse_config
from walletwatch.sim import Simulator, start
from walletwatch.statuscmd import ENV_PASSWORD, ENV_USER

KEY, SECRET = "hot-key", "hot-secret"
PASSWORD = "correct horse"
TXID = "c0ffee" * 10 + "beef"


@pytest.fixture(name="sim")
def fixture_sim() -> Simulator:
    """One funded account with a withdrawal pending for two hours."""
    sim = Simulator(rate_limit=100_000)
    sim.westwallet.add_account(KEY, SECRET, {"BTC": Decimal(2)})
    return sim


@pytest.fixture(name="daemon")
async def fixture_daemon(sim: Simulator, tmp_path: Path) -> AsyncIterator[Daemon]:
    """A started daemon behind basic auth watching the simulator; the test drives its polls."""
    runner, port = await start(sim, "127.0.0.1", 0)
    hashed = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=4)).decode()
    config = parse_config(
        {
            "listen": "127.0.0.1:0",
            "state_path": "state.db",
            "web": {"basic_auth_users": {"ops": hashed}},
            "providers": {"westwallet": {"rate_limit": 1000}},
            "accounts": [
                {
                    "name": "hot",
                    "provider": "westwallet",
                    "base_url": f"http://127.0.0.1:{port}/westwallet",
                    "credentials": {"api_key": KEY, "secret_key": SECRET},
                    "withdrawal_stuck_after": "1h",
                }
            ],
        },
        base_dir=tmp_path,
        environ={},
    )
    daemon = Daemon(config, clock=SystemClock())
    await daemon.start()
    yield daemon
    await daemon.close()
    await runner.cleanup()


async def status(*argv: str) -> tuple[int, str, str]:
    """Run ``walletwatch status ARGV...`` with the daemon's credentials in the environment."""
    env = os.environ | {ENV_USER: "ops", ENV_PASSWORD: PASSWORD}
    env.pop("NO_COLOR", None)
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "walletwatch",
        "status",
        *argv,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


class TestAgainstTheDaemon:
    async def test_a_stuck_withdrawal_fails_the_check_until_it_completes(
        self, sim: Simulator, daemon: Daemon
    ) -> None:
        """Stuck in the simulator: exit 1 naming its txid; once completed: exit 0."""
        tx = sim.westwallet.add_transaction(
            KEY,
            type="send",
            currency="BTC",
            amount=Decimal("0.25"),
            txid=TXID,
            created_at=time.time() - 2 * 3600,
        )
        await daemon.poll_once()

        code, out, err = await status("--url", daemon.url)
        assert (code, err) == (1, "")
        stuck = out[out.index("STUCK TRANSFERS (1)") :].splitlines()[2]
        assert stuck.split()[1:6] == ["withdrawal", "westwallet/hot", "0.25", "BTC", "pending"]
        assert stuck.split()[-2:] == [str(tx), TXID]
        assert out.splitlines()[-1] == "PROBLEM: 1 account: 1 up; 1 transfer in flight, 1 stuck"

        sim.westwallet.set_status(KEY, tx, "completed")
        await daemon.poll_once()

        code, out, err = await status("--url", daemon.url)
        assert (code, err, TXID in out) == (0, "", False)
        assert out.splitlines()[-1] == "OK: 1 account: 1 up; 0 transfers in flight, 0 stuck"
        assert out.splitlines()[3].split()[:2] == ["up", "westwallet/hot"]

    async def test_a_replica_that_follows_fails_the_check(self, daemon: Daemon) -> None:
        """A replica without the lease answers 503: exit 2 with its words, whom to ask."""
        await daemon.poll_once()
        daemon.collector.leading = False
        code, out, err = await status("--url", daemon.url)
        assert (code, out) == (2, "")
        assert err.startswith(
            f"walletwatch status: {daemon.url}/api/v1/accounts: HTTP 503: this replica follows"
        )
        assert "ask the leader (the replica with walletwatch_leader 1)" in err
        assert err.count("\n") == 1

    async def test_found_from_its_config_over_tls(self, sim: Simulator, tmp_path: Path) -> None:
        """-c reads the daemon's listen and TLS block; --cacert trusts its certificate."""
        ca = trustme.CA()
        ca.issue_cert("127.0.0.1").private_key_and_cert_chain_pem.write_to_path(
            str(tmp_path / "server.pem")
        )
        ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        runner, sim_port = await start(sim, "127.0.0.1", 0)
        hashed = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=4)).decode()
        path = tmp_path / "config.yaml"
        path.write_text(
            yaml.safe_dump(
                {
                    "listen": f"127.0.0.1:{port}",
                    "state_path": "state.db",
                    "web": {
                        "tls_server_config": {"cert_file": "server.pem", "key_file": "server.pem"},
                        "basic_auth_users": {"ops": hashed},
                    },
                    "accounts": [
                        {
                            "name": "hot",
                            "provider": "westwallet",
                            "base_url": f"http://127.0.0.1:{sim_port}/westwallet",
                            "credentials": {"api_key": KEY, "secret_key": SECRET},
                        }
                    ],
                }
            )
        )
        daemon = Daemon(load_config(path, environ={}), clock=SystemClock())
        await daemon.start()
        try:
            code, out, err = await status("-c", str(path))
            assert code == 2
            assert "its TLS certificate is not trusted" in err

            code, out, err = await status("-c", str(path), "--cacert", str(tmp_path / "ca.pem"))
            assert (code, err) == (1, "")  # not polled yet: waiting
            assert out.startswith(f"walletwatch https://127.0.0.1:{port} at ")

            await daemon.poll_once()
            code, out, err = await status("-c", str(path), "--cacert", str(tmp_path / "ca.pem"))
            assert (code, err) == (0, "")
        finally:
            await daemon.close()
            await runner.cleanup()
