"""Soak benchmark: the daemon against a faulty simulator, watching for resource growth.

Run: .venv/bin/python bench/soak.py [--duration 600] [--faults SPEC] [--tick 3]

``walletwatch simulate`` runs with the demo scenario and fault mode (by default about a third
of requests fail: 5xx, garbage bodies, dropped connections, 429 storms, plus latency), and
the daemon runs the demo config against it in a second process (this script re-run with
``--daemon``, which also writes its asyncio task count to a status file every second). Every
few seconds this process samples the daemon's RSS, peak RSS, file descriptors, established
TCP connections and task count from /proc, and scrapes /metrics. It prints the figures at the
start, at the end and at their peak, whether /metrics answered throughout, and what the
daemon saw (requests by code, failed polls by reason). Not a test: nothing is asserted.
With ``--tick 3600`` the scenario stands still, so the daemon's data stops growing and any
memory growth left is the daemon's own.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any, TextIO

from walletwatch import logs
from walletwatch.app import Daemon
from walletwatch.cli import demo_config
from walletwatch.config import Listen
from walletwatch.types import SystemClock

DEFAULT_FAULTS = (
    "error=0.14,garbage=0.11,reset=0.09,storm=0.003,storm_seconds=3,latency=0.05,seed=7"
)
SAMPLE_EVERY = 5.0  # seconds between /proc samples
SCRAPE_EVERY = 2.0  # seconds between /metrics scrapes
WARMUP = 20.0  # seconds before the "start" sample: imports, first polls, pools filling


def free_port() -> int:
    """A loopback port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# The daemon process ------------------------------------------------------------------------


async def run_daemon(sim_url: str, port: int, workdir: Path, sink: TextIO) -> None:
    """The demo config against ``sim_url``; writes ``{"tasks": n}`` to a file every second."""
    status = workdir / "status.json"
    config = demo_config(sim_url, Listen("127.0.0.1", port), workdir)
    logs.configure("json", sink)
    daemon = Daemon(config, clock=SystemClock(), stdout=sink)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await daemon.start()
    daemon.run_scheduler()
    try:
        while not stop.is_set():
            tmp = status.with_suffix(".tmp")
            tmp.write_text(json.dumps({"tasks": len(asyncio.all_tasks())}))
            tmp.replace(status)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 1.0)
    finally:
        await daemon.close()


# Sampling ----------------------------------------------------------------------------------


def sample(pid: int, status: Path) -> dict[str, int]:
    """RSS and peak RSS (kB), open fds, established TCP connections and asyncio tasks."""
    proc = Path(f"/proc/{pid}")
    fields = {}
    for line in (proc / "status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = int(value.split()[0])
    sockets = set()
    fds = 0
    for fd in (proc / "fd").iterdir():
        fds += 1
        with contextlib.suppress(OSError):
            target = str(fd.readlink())
            if target.startswith("socket:["):
                sockets.add(target[8:-1])
    established = 0
    for table in ("tcp", "tcp6"):
        with contextlib.suppress(OSError):
            for row in (proc / "net" / table).read_text().splitlines()[1:]:
                cols = row.split()
                if cols[3] == "01" and cols[9] in sockets:  # 01 = ESTABLISHED
                    established += 1
    try:
        tasks = int(json.loads(status.read_text())["tasks"])
    except (OSError, ValueError, KeyError):
        tasks = -1
    return {
        "rss_kb": fields["VmRSS"],
        "peak_rss_kb": fields["VmHWM"],
        "fds": fds,
        "tcp_connections": established,
        "tasks": tasks,
    }


def scrape(url: str) -> str | None:
    """The /metrics text, or None when it did not answer 200 within 5 s."""
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:  # noqa: S310 - our loopback URL
            return str(resp.read().decode()) if resp.status == 200 else None
    except OSError:
        return None


def totals(text: str) -> tuple[Counter[str], Counter[str], float]:
    """Requests by code, failed polls by reason, and all polls, from /metrics text."""
    codes: Counter[str] = Counter()
    reasons: Counter[str] = Counter()
    polls = 0.0
    for line in text.splitlines():
        if line.startswith("walletwatch_http_requests_total{"):
            code = line.split('code="', 1)[1].split('"', 1)[0]
            codes[code] += int(float(line.rsplit(" ", 1)[1]))
        elif line.startswith("walletwatch_poll_errors_total{"):
            reason = line.split('reason="', 1)[1].split('"', 1)[0]
            reasons[reason] += int(float(line.rsplit(" ", 1)[1]))
        elif line.startswith("walletwatch_polls_total{"):
            polls += float(line.rsplit(" ", 1)[1])
    return codes, reasons, polls


def fmt(figures: dict[str, int]) -> str:
    """RSS (MB), tasks, fds and connections in a short form."""
    return (
        f"{figures['rss_kb'] / 1024:.1f}MB/{figures['tasks']}t/"
        f"{figures['fds']}fd/{figures['tcp_connections']}c"
    )


def wait_until(predicate: Any, what: str, timeout: float = 20.0) -> None:
    """Poll ``predicate`` until true, or fail with ``what``."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} did not start")
        time.sleep(0.1)


def soak(duration: float, faults: str, tick: float = 3.0) -> None:
    """Run the soak and print the report."""
    sim_port, port = free_port(), free_port()
    sim_url, metrics_url = f"http://127.0.0.1:{sim_port}", f"http://127.0.0.1:{port}/metrics"
    with tempfile.TemporaryDirectory(prefix="walletwatch-soak-") as tmp:
        workdir = Path(tmp)
        status = workdir / "status.json"
        command = [sys.executable, "-m", "walletwatch", "simulate", "--tick", str(tick)]
        sim = subprocess.Popen(  # noqa: S603 - our own CLI
            [*command, "--listen", f"127.0.0.1:{sim_port}", "--faults", faults],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        daemon = None
        try:
            wait_until(lambda: scrape(sim_url + "/_sim/requests") is not None, "the simulator")
            daemon = subprocess.Popen(  # noqa: S603 - this script, as the daemon process
                [sys.executable, __file__, "--daemon", sim_url, str(port), str(workdir)],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            wait_until(lambda: scrape(metrics_url) is not None, "the daemon")
            report(daemon.pid, status, metrics_url, duration, faults)
        finally:
            for process in (daemon, sim):
                if process is not None:
                    process.terminate()
                    process.wait(timeout=30)
            if daemon is not None:
                print(f"daemon exit code after SIGTERM: {daemon.returncode}")


def report(pid: int, status: Path, metrics_url: str, duration: float, faults: str) -> None:
    """Sample and scrape for ``duration`` seconds, then print the figures."""
    time.sleep(WARMUP)
    started = time.monotonic()
    first = sample(pid, status)
    peak = dict(first)
    scrapes = failures = 0
    slowest = 0.0
    last_text = ""
    next_sample = started + SAMPLE_EVERY
    timeline = [(0.0, first)]  # one sample a minute, to tell a plateau from a leak
    while (now := time.monotonic()) < started + duration:
        t0 = time.monotonic()
        text = scrape(metrics_url)
        slowest = max(slowest, time.monotonic() - t0)
        scrapes += 1
        if text is None:
            failures += 1
        else:
            last_text = text
        if now >= next_sample:
            figures = sample(pid, status)
            peak = {key: max(peak[key], value) for key, value in figures.items()}
            if now - started >= 60 * len(timeline):
                timeline.append((now - started, figures))
            next_sample += SAMPLE_EVERY
        time.sleep(SCRAPE_EVERY)
    last = sample(pid, status)
    peak = {key: max(peak[key], value) for key, value in last.items()}
    codes, reasons, polls = totals(last_text)
    requests = sum(codes.values())
    failed_requests = requests - codes.get("200", 0)
    print(f"soak: {duration:.0f} s after a {WARMUP:.0f} s warm-up, faults {faults}")
    print(f"{'figure':<16}{'start':>10}{'end':>10}{'peak':>10}")
    for key in first:
        print(f"{key:<16}{first[key]:>10}{last[key]:>10}{peak[key]:>10}")
    print("every minute: " + ", ".join(f"{t / 60:.0f}m " + fmt(f) for t, f in timeline))
    answered = scrapes - failures
    print(f"/metrics: {answered}/{scrapes} scrapes answered, slowest {slowest * 1000:.0f} ms")
    print(f"HTTP requests: {requests}, by code: {dict(sorted(codes.items()))}")
    print(
        f"requests without a 200: {failed_requests} ({failed_requests / max(requests, 1):.0%});"
        " garbage bodies come with 200 and fail as bad_payload"
    )
    errors = sum(reasons.values())
    print(
        f"polls: {polls:.0f}, failed: {errors} ({errors / max(polls, 1):.0%}), "
        f"by reason: {dict(sorted(reasons.items()))}"
    )


def main() -> None:
    """Parse the arguments and run the soak (or, with --daemon, the daemon process)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--duration", type=float, default=600.0, help="seconds (default 600)")
    parser.add_argument("--faults", default=DEFAULT_FAULTS, help="walletwatch simulate --faults")
    parser.add_argument(
        "--tick", type=float, default=3.0, help="seconds per scenario step (3600: data stays put)"
    )
    parser.add_argument("--daemon", nargs=3, metavar=("SIM_URL", "PORT", "WORKDIR"))
    args = parser.parse_args()
    if args.daemon:
        sim_url, port, workdir = args.daemon
        with Path(os.devnull).open("w") as sink:
            asyncio.run(run_daemon(sim_url, int(port), Path(workdir), sink))
        return
    soak(args.duration, args.faults, args.tick)


if __name__ == "__main__":
    main()
