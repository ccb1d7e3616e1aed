"""Soak benchmark: the daemon against a faulty simulator, watching for resource growth.

Run: .venv/bin/python bench/soak.py [--duration 600] [--faults SPEC] [--tick 3]
        [--no-sink-faults] [--no-disk-faults]

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

Sink faults (unless ``--no-sink-faults``): the daemon also delivers to a webhook receiver in
this process that answers slowly (up to 2 s), or 503, or 400 (parked), or past the sink's 5 s
timeout, or drops the connection. Disk faults (unless ``--no-disk-faults``): every
DISK_CYCLE seconds the daemon process's RLIMIT_FSIZE is lowered for DISK_FULL seconds, then
lifted (SIGXFSZ ignored: writes fail with EFBIG as on a full disk). The events file starts
with PAD bytes of earlier lines, so it is the largest file: in odd periods the limit is
DISK_ROOM bytes above its size (only the events file fills up), in even ones DISK_ROOM (the
whole disk is full: commits fail too). At the end the daemon is
stopped with SIGTERM (timed), and the events file, the outbox and the receiver are checked
against each other: every event of the outbox once in the file as a whole line, and the
webhook's repeats.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import os
import random
import resource
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, TextIO

from walletwatch import logs
from walletwatch.app import Daemon
from walletwatch.clock import SystemClock
from walletwatch.config import Listen, Secret, WebhookConfig
from walletwatch.demo import demo_config

DEFAULT_FAULTS = (
    "error=0.14,garbage=0.11,reset=0.09,storm=0.003,storm_seconds=3,latency=0.05,seed=7"
)
SAMPLE_EVERY = 5.0  # seconds between /proc samples
SCRAPE_EVERY = 2.0  # seconds between /metrics scrapes
WARMUP = 20.0  # seconds before the "start" sample: imports, first polls, pools filling
HOOK_TIMEOUT = 5.0  # the soak webhook's timeout; some answers come later than that
DISK_CYCLE = 60.0  # seconds between the starts of two "disk full" periods
DISK_FULL = 20.0  # seconds each lasts
DISK_ROOM = 2048  # bytes a file may still grow by while the disk is "full"
PAD = 16 * 1024 * 1024  # earlier lines at the start of the events file, above any state size


def free_port() -> int:
    """A loopback port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# The daemon process ------------------------------------------------------------------------


async def run_daemon(
    sim_url: str, port: int, workdir: Path, sink: TextIO, *, hook: str | None, disk: bool
) -> None:
    """The demo config against ``sim_url``; writes ``{"tasks": n}`` to a file every second."""
    status = workdir / "status.json"
    config = demo_config(sim_url, Listen("127.0.0.1", port), workdir)
    if hook is not None:
        webhook = WebhookConfig("soak", Secret(hook), {}, None, HOOK_TIMEOUT)
        config = dataclasses.replace(config, sinks=(webhook,))
    logs.configure("json", sink)
    daemon = Daemon(config, clock=SystemClock(), stdout=sink)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    if disk and config.events_file is not None:
        pad(config.events_file)
    await daemon.start()
    daemon.run_scheduler()
    filling = None
    if disk and config.events_file is not None:
        filling = asyncio.create_task(fill_and_free(config.events_file, workdir / "disk.json"))
    try:
        while not stop.is_set():
            tmp = status.with_suffix(".tmp")
            tmp.write_text(json.dumps({"tasks": len(asyncio.all_tasks())}))
            tmp.replace(status)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 1.0)
    finally:
        if filling is not None:
            filling.cancel()
            await asyncio.gather(filling, return_exceptions=True)
        await daemon.close()


async def fill_and_free(events_file: Path, record: Path) -> None:
    """Make the disk "full" for DISK_FULL seconds every DISK_CYCLE, through RLIMIT_FSIZE."""
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG
    _, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    periods = 0
    try:
        while True:
            await asyncio.sleep(DISK_CYCLE - DISK_FULL)
            periods += 1
            fill(events_file, record, periods, hard)
            await asyncio.sleep(DISK_FULL)
            resource.setrlimit(resource.RLIMIT_FSIZE, (hard, hard))
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (hard, hard))


def pad(events_file: Path) -> None:
    """Put PAD bytes of earlier (made-up) event lines at the start of the events file."""
    line = json.dumps({"event": "soak.padding", "event_id": "pad", "fields": "x" * 200}) + "\n"
    chunk = line * (1024 * 1024 // len(line))  # a MiB at a time: no peak RSS of its own
    with events_file.open("a", encoding="utf-8") as fh:
        for _ in range(PAD // len(chunk)):
            fh.write(chunk)


def fill(events_file: Path, record: Path, periods: int, hard: int) -> None:
    """Leave the events file DISK_ROOM bytes (odd periods), or no file any (even); note it."""
    # RLIMIT_FSIZE refuses a write past the offset, however large the file already is: at
    # DISK_ROOM bytes the state file and its WAL cannot be written either.
    size = events_file.stat().st_size if periods % 2 and events_file.exists() else 0
    resource.setrlimit(resource.RLIMIT_FSIZE, (size + DISK_ROOM, hard))
    with contextlib.suppress(OSError):  # the record may not fit on the "full" disk: fine
        record.write_text(json.dumps({"full_periods": periods}))


# The webhook receiver ----------------------------------------------------------------------


class Receiver(ThreadingHTTPServer):
    """A webhook receiver with faults; records every event_id it answered 2xx."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Hook)
        self.rng = random.Random(11)
        self.lock = threading.Lock()
        self.accepted: list[str] = []
        self.outcomes: Counter[str] = Counter()

    def outcome(self) -> str:
        """This request's fate, drawn from a seeded mix."""
        with self.lock:
            roll = self.rng.random()
        if roll < 0.70:
            return "ok"
        if roll < 0.82:
            return "503"
        if roll < 0.85:
            return "400"
        if roll < 0.93:
            return "too_slow"
        return "drop"


class _Hook(BaseHTTPRequestHandler):
    server: Receiver

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        fate = self.server.outcome()
        with self.server.lock:
            self.server.outcomes[fate] += 1
        if fate == "drop":
            self.close_connection = True
            return
        time.sleep(random.uniform(0, 2.0) if fate == "ok" else 0)
        if fate == "too_slow":
            time.sleep(HOOK_TIMEOUT + 1)
        status = {"ok": 200, "503": 503, "400": 400, "too_slow": 200}[fate]
        with contextlib.suppress(OSError):
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()
            if status == 200 and fate == "ok":
                with self.server.lock:
                    self.server.accepted.append(json.loads(body)["event_id"])

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base's name
        """Quiet."""


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


def sink_failures(text: str) -> Counter[str]:
    """walletwatch_delivery_failures_total by sink, and failed commits as "store", from /metrics."""
    found: Counter[str] = Counter()
    for line in text.splitlines():
        if line.startswith("walletwatch_delivery_failures_total{"):
            sink = line.split('sink="', 1)[1].split('"', 1)[0]
            found[sink] += int(float(line.rsplit(" ", 1)[1]))
        elif line.startswith("walletwatch_store_errors_total{"):
            found["store"] += int(float(line.rsplit(" ", 1)[1]))
    return found


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


def soak(
    duration: float, faults: str, tick: float = 3.0, *, sink_faults: bool = True, disk: bool = True
) -> None:
    """Run the soak and print the report."""
    receiver = None
    extra: list[str] = []
    if sink_faults:
        receiver = Receiver()
        threading.Thread(target=receiver.serve_forever, daemon=True).start()
        extra += ["--hook", f"http://127.0.0.1:{receiver.server_address[1]}/hook"]
    if disk:
        extra.append("--disk-faults")
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
                [sys.executable, __file__, "--daemon", sim_url, str(port), str(workdir), *extra],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            wait_until(lambda: scrape(metrics_url) is not None, "the daemon")
            report(daemon.pid, status, metrics_url, duration, faults)
        finally:
            stopped = None
            if daemon is not None:
                t0 = time.monotonic()
                daemon.terminate()
                daemon.wait(timeout=60)
                stopped = time.monotonic() - t0
            sim.terminate()
            sim.wait(timeout=30)
            if daemon is not None:
                print(f"daemon exit code after SIGTERM: {daemon.returncode}, in {stopped:.2f} s")
        delivery(workdir, receiver, disk)
        if receiver is not None:
            receiver.shutdown()
            receiver.server_close()


def delivery(workdir: Path, receiver: Receiver | None, disk: bool) -> None:
    """Check the events file, the outbox and the receiver against each other; print it."""
    with contextlib.closing(sqlite3.connect(workdir / "demo.db")) as db:
        outbox = [row[0] for row in db.execute("SELECT event_id FROM outbox ORDER BY seq")]
        cursors = dict(db.execute("SELECT sink, seq FROM cursors").fetchall())
        pending = {
            sink: db.execute("SELECT COUNT(*) FROM outbox WHERE seq > ?", (seq,)).fetchone()[0]
            for sink, seq in cursors.items()
        }
        parked = db.execute("SELECT COUNT(*) FROM parked").fetchone()[0]
    raw = (workdir / "events.jsonl").read_bytes() if (workdir / "events.jsonl").exists() else b""
    ids, unparseable = [], 0
    for line in raw.splitlines():
        try:
            event_id = json.loads(line)["event_id"]
        except (ValueError, KeyError, TypeError):
            unparseable += 1
        else:
            if event_id != "pad":
                ids.append(event_id)
    written = Counter(ids)
    expected = outbox[: len(outbox) - pending.get("events_file", 0)]
    if disk and (workdir / "disk.json").exists():
        periods = json.loads((workdir / "disk.json").read_text())["full_periods"]
        print(
            f"disk: {periods} full periods of {DISK_FULL:.0f} s (RLIMIT_FSIZE, EFBIG), odd ones"
            " the events file only, even ones the whole disk"
        )
    print(
        f"events: {len(outbox)} in the outbox, pending at stop {dict(sorted(pending.items()))},"
        f" parked {parked}"
    )
    whole = not raw or raw.endswith(b"\n")
    print(
        f"events file: {len(ids)} event lines (after the padding), unparseable {unparseable},"
        f" ends with a newline {whole}, repeated {sum(n - 1 for n in written.values())},"
        f" missing {len(set(expected) - set(written))}, in outbox order {ids == expected}"
    )
    if receiver is not None:
        got = Counter(receiver.accepted)
        print(
            f"webhook: {sum(receiver.outcomes.values())} requests "
            f"{dict(sorted(receiver.outcomes.items()))}, {len(got)} events accepted, "
            f"{sum(n - 1 for n in got.values())} accepted twice"
        )


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
    failed = dict(sorted(sink_failures(last_text).items()))
    print(f"failed deliveries by sink, failed commits: {failed}")
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
    parser.add_argument("--no-sink-faults", action="store_true", help="no faulty webhook receiver")
    parser.add_argument("--no-disk-faults", action="store_true", help="no full-disk periods")
    parser.add_argument("--daemon", nargs=3, metavar=("SIM_URL", "PORT", "WORKDIR"))
    parser.add_argument("--hook", help=argparse.SUPPRESS)
    parser.add_argument("--disk-faults", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.daemon:
        sim_url, port, workdir = args.daemon
        with Path(os.devnull).open("w") as sink:
            asyncio.run(
                run_daemon(
                    sim_url, int(port), Path(workdir), sink, hook=args.hook, disk=args.disk_faults
                )
            )
        return
    soak(
        args.duration,
        args.faults,
        args.tick,
        sink_faults=not args.no_sink_faults,
        disk=not args.no_disk_faults,
    )


if __name__ == "__main__":
    main()
