"""A real monitoring stack on loopback: simulator, daemon, Prometheus and Alertmanager.

The simulator runs in a thread; ``walletwatch run``, Debian's ``prometheus`` and
``prometheus-alertmanager`` run as subprocesses with generated configs, data under a
temporary directory and ports picked free on 127.0.0.1 (never the packages' defaults or
their system services). Prometheus scrapes the daemon and evaluates ``prometheus/alerts.yml``
every second, with every ``for:`` shortened to ``E2E_FOR`` so the test takes seconds.
Prometheus sends its alerts to two Alertmanagers: one with a bare config, and one run with
the routes and inhibit rules of the README's Monitoring section, to which the daemon's
Alertmanager sink posts its per-transfer alerts.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import IO, Any

import yaml

from tests.monitoring.tools import (
    ALERTS,
    README,
    free_port,
    get_json,
    get_text,
    post_json,
    tool,
    wait_for,
)
from tests.simthread import serve_in_thread
from walletwatch.sim import Simulator

HOT = ("hot", "e2e-hot-key", "e2e-hot-secret")
BROKEN = ("broken", "e2e-broken-key", "e2e-broken-secret")
WITHDRAWAL_STUCK_AFTER = 5  # seconds: the pending BTC withdrawal is stuck soon after start
E2E_FOR = "1s"  # every rule's `for:` in the end-to-end run (the real ones are minutes)
STARTUP = 30.0  # seconds a process gets to come up; generous for a loaded CI machine


@dataclass(frozen=True, slots=True)
class Stack:
    """URLs of the running parts, and where their logs are."""

    sim_url: str
    daemon_url: str
    prometheus_url: str
    alertmanager_url: str
    routed_url: str  # the Alertmanager run with the README's routes and inhibit rules
    workdir: Path
    started: float  # time.monotonic() when the stack began to start

    def prometheus(self, path: str, **params: str) -> Any:
        """GET a Prometheus API path and return its ``data`` (asserting success)."""
        body = get_json(f"{self.prometheus_url}{path}", **params)
        assert body["status"] == "success", body
        return body["data"]


def simulator() -> Simulator:
    """hot: BTC 2 (threshold 0.5), USDT 500 (threshold 1000), a BTC withdrawal pending now."""
    sim = Simulator(rate_limit=100_000)  # far above the daemon's pace: no 429 here
    _, key, secret = HOT
    sim.westwallet.add_account(key, secret, {"BTC": Decimal(2), "USDT": Decimal(500)})
    sim.westwallet.add_transaction(
        key,
        type="receive",
        currency="BTC",
        amount=Decimal("0.5"),
        status="completed",
        created_at=time.time() - 86400,
    )
    sim.westwallet.add_transaction(key, type="send", currency="BTC", amount=Decimal("0.25"))
    _, key, secret = BROKEN
    sim.westwallet.add_account(key, secret, {"BTC": Decimal(1)})
    return sim


def daemon_config(sim_url: str, port: int, routed_url: str) -> dict[str, Any]:
    """Short intervals and thresholds; the broken account's secret is wrong.

    The Alertmanager sink posts per-transfer alerts to the routed Alertmanager.
    """
    base_url = f"{sim_url}/westwallet"
    name, key, secret = HOT
    broken, broken_key, _ = BROKEN
    return {
        "listen": f"127.0.0.1:{port}",
        "state_path": "state.db",
        "events_file": "events.jsonl",
        "log_format": "json",
        "providers": {"westwallet": {"rate_limit": 1000, "max_backoff": "2s"}},
        "sinks": [{"type": "alertmanager", "name": "alertmanager", "url": routed_url}],
        "accounts": [
            {
                "name": name,
                "provider": "westwallet",
                "base_url": base_url,
                "credentials": {"api_key": key, "secret_key": secret},
                "interval": "1s",
                "low_balance": {"USDT": "1000", "BTC": "0.5"},
                "withdrawal_stuck_after": f"{WITHDRAWAL_STUCK_AFTER}s",
                "deposit_stuck_after": "1h",
            },
            {
                "name": broken,
                "provider": "westwallet",
                "base_url": base_url,
                "credentials": {"api_key": broken_key, "secret_key": "not-the-secret"},
                "interval": "1s",
                "down_after": 1,
            },
        ],
    }


def e2e_rules() -> dict[str, Any]:
    """prometheus/alerts.yml with every ``for:`` shortened to E2E_FOR; nothing else changes
    (the recording rules the alerts read stay, in their place)."""
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    return {
        "groups": [
            {
                **group,
                "rules": [
                    {**rule, "for": E2E_FOR} if "for" in rule else rule for rule in group["rules"]
                ],
            }
            for group in groups
        ]
    }


def prometheus_config(daemon: str, *alertmanagers: str) -> dict[str, Any]:
    """Scrape and evaluate every second; send alerts to our Alertmanagers."""
    return {
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
        "rule_files": ["rules.yml"],
        "alerting": {"alertmanagers": [{"static_configs": [{"targets": list(alertmanagers)}]}]},
        "scrape_configs": [{"job_name": "walletwatch", "static_configs": [{"targets": [daemon]}]}],
    }


ALERTMANAGER_CONFIG = {
    # Alerts are read back through the API; nothing needs to be delivered anywhere.
    "route": {
        "receiver": "nowhere",
        "group_by": ["alertname", "provider", "account"],
        "group_wait": "1s",
        "group_interval": "1s",
        "repeat_interval": "1h",
    },
    "receivers": [{"name": "nowhere"}],
    "inhibit_rules": [
        {
            "source_matchers": ["alertname = WalletwatchAccountDown"],
            "target_matchers": ["alertname = WalletwatchDataStale"],
            "equal": ["job", "instance", "provider", "account"],
        }
    ],
}


def routed_config() -> dict[str, Any]:
    """The README's routes, receivers and inhibit rules, as a reader would copy them."""
    section = README.read_text().split("\n## Monitoring\n", 1)[1].split("\n## ", 1)[0]
    for block in re.findall(r"```yaml\n(.*?)```", section, flags=re.DOTALL):
        config = yaml.safe_load(block)
        if "inhibit_rules" in config:
            return dict(config)
    raise AssertionError("no Alertmanager config in the README's Monitoring section")


class Process:
    """A subprocess whose output goes to a log file, stopped with SIGTERM (then SIGKILL)."""

    def __init__(self, name: str, args: list[str], workdir: Path) -> None:
        self.name = name
        self.log = workdir / f"{name}.log"
        self._out: IO[bytes] = self.log.open("wb")
        self.proc = subprocess.Popen(
            args,
            cwd=workdir,
            stdout=self._out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )

    def running(self) -> bool:
        """Whether the process is still alive."""
        return self.proc.poll() is None

    def tail(self, lines: int = 30) -> str:
        """The end of the process's log."""
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def stop(self) -> None:
        """SIGTERM, wait up to 10 s, then SIGKILL."""
        if self.running():
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self._out.close()


def wait_ready(process: Process, url: str) -> None:
    """Wait until url answers 200, failing early with the log if the process died."""

    def probe() -> bool | None:
        if not process.running():
            raise AssertionError(f"{process.name} exited:\n{process.tail()}")
        get_text(url, timeout=2)
        return True

    wait_for(probe, f"{process.name} at {url}", deadline=STARTUP)


@contextlib.contextmanager
def running_stack(workdir: Path) -> Iterator[Stack]:
    """Start everything, make the post-baseline scenario happen, yield; stop it all after."""
    started = time.monotonic()
    prometheus_bin = tool("prometheus")
    alertmanager_bin = tool("prometheus-alertmanager")
    with serve_in_thread(simulator()) as sim_url, contextlib.ExitStack() as stops:

        def launch(name: str, args: list[str]) -> Process:
            process = Process(name, args, workdir)
            stops.callback(process.stop)
            return process

        daemon_port, prom_port, am_port = free_port(), free_port(), free_port()
        routed_port = free_port()
        routed_url = f"http://127.0.0.1:{routed_port}"
        (workdir / "walletwatch.yml").write_text(
            yaml.safe_dump(daemon_config(sim_url, daemon_port, routed_url))
        )
        daemon = launch(
            "walletwatch", [sys.executable, "-m", "walletwatch", "run", "-c", "walletwatch.yml"]
        )
        (workdir / "alertmanager.yml").write_text(yaml.safe_dump(ALERTMANAGER_CONFIG))
        alertmanager = launch(
            "alertmanager",
            [
                alertmanager_bin,
                "--config.file=alertmanager.yml",
                f"--storage.path={workdir / 'alertmanager-data'}",
                f"--web.listen-address=127.0.0.1:{am_port}",
                "--cluster.listen-address=",  # no HA gossip port
                "--log.level=warn",
            ],
        )
        (workdir / "routed.yml").write_text(yaml.safe_dump(routed_config()))
        routed = launch(
            "alertmanager-routed",
            [
                alertmanager_bin,
                "--config.file=routed.yml",
                f"--storage.path={workdir / 'routed-data'}",
                f"--web.listen-address=127.0.0.1:{routed_port}",
                "--cluster.listen-address=",
                "--log.level=warn",
            ],
        )
        # Prometheus starts once the daemon answers, so WalletwatchAbsent never fires.
        daemon_url = f"http://127.0.0.1:{daemon_port}"
        wait_ready(daemon, f"{daemon_url}/readyz")
        (workdir / "rules.yml").write_text(yaml.safe_dump(e2e_rules(), sort_keys=False))
        (workdir / "prometheus.yml").write_text(
            yaml.safe_dump(
                prometheus_config(
                    f"127.0.0.1:{daemon_port}", f"127.0.0.1:{am_port}", f"127.0.0.1:{routed_port}"
                )
            )
        )
        prometheus = launch(
            "prometheus",
            [
                prometheus_bin,
                "--config.file=prometheus.yml",
                f"--storage.tsdb.path={workdir / 'prometheus-data'}",
                f"--web.listen-address=127.0.0.1:{prom_port}",
                # Resend firing alerts every second (default 1m), so Alertmanager holds
                # annotations rendered from more than the first samples.
                "--rules.alert.resend-delay=1s",
                "--log.level=warn",
            ],
        )
        # After the baseline, so both settle as news: a transfers_total series for each
        # direction, which the dashboard draws.
        _, key, _ = HOT
        for kind, currency, amount in (("receive", "USDT", "100"), ("send", "BTC", "0.1")):
            post_json(
                f"{sim_url}/_sim/westwallet/{key}/transactions",
                {"type": kind, "currency": currency, "amount": amount, "status": "completed"},
            )
        wait_ready(alertmanager, f"http://127.0.0.1:{am_port}/-/ready")
        wait_ready(routed, f"{routed_url}/-/ready")
        wait_ready(prometheus, f"http://127.0.0.1:{prom_port}/-/ready")
        yield Stack(
            sim_url=sim_url,
            daemon_url=daemon_url,
            prometheus_url=f"http://127.0.0.1:{prom_port}",
            alertmanager_url=f"http://127.0.0.1:{am_port}",
            routed_url=routed_url,
            workdir=workdir,
            started=started,
        )
