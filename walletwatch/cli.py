"""The walletwatch command: run, check, once, status, simulate, demo, migrate-state, --version."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import functools
import json
import logging
import signal
import sys
import tempfile
import time
from collections.abc import Callable, Coroutine, Iterable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

import structlog

from walletwatch import __version__, logs
from walletwatch.app import Daemon
from walletwatch.clock import SystemClock
from walletwatch.config import Config, Listen, load_config
from walletwatch.configpush import push_lines
from walletwatch.configstore import store_argument
from walletwatch.console import event_line
from walletwatch.demo import demo_config, simulator_banner, subscribe_pushes
from walletwatch.errors import (
    ConfigError,
    RateLimited,
    StartupError,
    StateDamaged,
    WalletwatchError,
)
from walletwatch.events import Event
from walletwatch.hostcheck import path_problems
from walletwatch.loader import load_config_apart
from walletwatch.migrate import add_command as add_migrate_command
from walletwatch.model import plain
from walletwatch.notify import notify, watchdog, watchdog_period
from walletwatch.shard import Shard, parse_shard
from walletwatch.sim import Simulator, start
from walletwatch.sim.faults import parse_faults
from walletwatch.sinks import stdout_json
from walletwatch.statuscmd import add_parser as add_status_parser
from walletwatch.store import MEMORY, StateLock, StateLocked, set_aside
from walletwatch.watcher import AccountWatcher

log = structlog.get_logger("walletwatch.cli")

EXIT_OK, EXIT_FAILED, EXIT_CONFIG = 0, 1, 2


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script."""
    args = _parser().parse_args(argv)
    try:
        return int(args.func(args))
    except ConfigError as err:
        print(f"walletwatch: configuration has {len(err.problems)} problem(s):", file=sys.stderr)
        for problem in err.problems:
            print(f"  {problem}", file=sys.stderr)
        return EXIT_CONFIG
    except WalletwatchError as err:
        print(f"walletwatch: {err}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        return EXIT_OK


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="walletwatch",
        description="Watch custodial wallet and payment-gateway accounts for Prometheus.",
    )
    parser.add_argument("--version", action="version", version=f"walletwatch {__version__}")
    sub = parser.add_subparsers(required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="run the daemon")
    run.add_argument("-c", "--config", type=Path, required=True, help=CONFIG_HELP)
    run.add_argument("--shard", type=_shard, default=None, help=SHARD_HELP)
    run.add_argument(
        "--reset-state",
        action="store_true",
        help="move the state file aside (to STATE.reset-TIME) and start afresh with a new baseline",
    )
    run.set_defaults(func=cmd_run)

    check = sub.add_parser("check", help="validate a config file (exit 0, or 2 with problems)")
    check.add_argument("-c", "--config", type=Path, required=True, help=CONFIG_HELP)
    check.add_argument(
        "--offline",
        action="store_true",
        help="check the structure only: secret references ({env}, {file}, {credential}) are "
        "checked for form, not read, and the host's directories are not checked",
    )
    check.add_argument(
        "--shard",
        type=_shard,
        default=None,
        help="check the accounts of shard K of N only (K/N; overrides the config's shard:)",
    )
    check.set_defaults(func=cmd_check)

    once = sub.add_parser("once", help="poll every account once and print the result")
    once.add_argument("-c", "--config", type=Path, required=True, help=CONFIG_HELP)
    once.add_argument("--shard", type=_shard, default=None, help=SHARD_HELP)
    once.add_argument("--json", action="store_true", help="print JSON instead of a table")
    once.set_defaults(func=cmd_once)

    add_status_parser(sub)  # walletwatch status: statuscmd.py

    simulate = sub.add_parser("simulate", help="run the provider simulator alone")
    simulate.add_argument(
        "--listen",
        type=_listen,
        default=Listen("127.0.0.1", 10102),
        help="HOST:PORT to serve every provider on (default 127.0.0.1:10102; port 0 picks one)",
    )
    simulate.add_argument(
        "--seed",
        type=int,
        default=None,
        help="seed of the scenario's random choices, to replay the same run (default: fixed)",
    )
    simulate.add_argument("--tick", type=float, default=5.0, help="seconds per scenario step")
    simulate.add_argument("--no-scenario", action="store_true", help="start with no accounts")
    simulate.add_argument(
        "--faults",
        type=parse_faults,
        default=None,
        help="inject faults, e.g. error=0.1,garbage=0.1,reset=0.1,storm=0.01,latency=0.2,seed=1",
    )
    simulate.set_defaults(func=cmd_simulate)

    demo = sub.add_parser("demo", help="simulator and daemon together on loopback")
    demo.add_argument(
        "--listen",
        type=_listen,
        default=Listen("127.0.0.1", 10101),
        help="HOST:PORT of the daemon's /metrics and status page (default 127.0.0.1:10101)",
    )
    demo.add_argument("--tick", type=float, default=3.0, help="seconds per scenario step")
    demo.add_argument("--store", type=store_argument, default=None, help="a postgresql:// URL")
    demo.set_defaults(func=cmd_demo)
    add_migrate_command(sub)
    return parser


SHARD_HELP = "poll only shard K of N (K/N; overrides the config's shard:)"
CONFIG_HELP = "the YAML config file (config.yaml in the repository is a commented example)"


def _shard(text: str) -> Shard:
    try:
        return parse_shard(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from err


def _listen(text: str) -> Listen:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {text!r}")
    return Listen(host.strip("[]"), int(port))


def cmd_check(args: argparse.Namespace) -> int:
    """Validate the config, and that this host can write its files; problems exit 2."""
    config = load_config(args.config, shard=args.shard, offline=args.offline)
    state_path = MEMORY if config.store is not None else config.state_path  # no file then
    problems = [] if args.offline else path_problems(state_path, config.events_file)
    if problems:
        raise ConfigError(problems)
    print(f"{args.config}: OK, {len(config.accounts)} account(s)", *push_lines(config), sep="\n")
    return EXIT_OK


def cmd_run(args: argparse.Namespace) -> int:
    """Run the daemon until SIGTERM or SIGINT."""
    config = load_config(args.config, shard=args.shard)
    logs.configure(config.log_format, sys.stdout)
    if args.reset_state and config.store is not None:
        raise StartupError("--reset-state moves a state_path aside; this config has a store:")
    if args.reset_state:
        try:
            reset_state(config.state_path)  # any other StoreError: main() prints it, exit 1
        except StateLocked as err:
            return _locked(err)
    try:
        return asyncio.run(_serve(config, sys.stdout, path=args.config, lines=_event_lines(config)))
    except StateLocked as err:
        return _locked(err)
    except StateDamaged as err:
        log.error("store.unusable", error=str(err))  # noqa: TRY400 - the message says it all
        print(
            f"walletwatch: {err}\n"
            "walletwatch: the state file is left as it is. Restore it from a backup, or run "
            "'walletwatch run --reset-state' to move it aside and start afresh (a new "
            "baseline: facts from the downtime are not announced).",
            file=sys.stderr,
        )
        return EXIT_FAILED


def _event_lines(config: Config) -> Callable[[Event], str]:
    """Events on stdout as the logs are: a short line each on a terminal, else JSON lines."""
    if logs.console(config.log_format, sys.stdout):
        return functools.partial(event_line, colour=True)
    return stdout_json


def _locked(err: StateLocked) -> int:
    """Another daemon holds the state: one line, no advice to reset the holder's state."""
    log.error("store.locked", error=str(err))
    print(f"walletwatch: {err}", file=sys.stderr)
    return EXIT_FAILED


def reset_state(path: Path) -> None:
    """Move the state file aside, loudly, so the daemon starts with a fresh one.

    Refused (StateLocked) while another walletwatch holds the state: the file would move
    from under it. The lock is released before the daemon takes it again; a process that
    starts in between owns the new state and this one is refused then.
    """
    stamp = datetime.now(tz=UTC).strftime("%Y%m%dT%H%M%SZ")
    lock = StateLock(path)
    try:
        moved = set_aside(path, stamp)
    finally:
        lock.release()
    if moved is None:
        log.warning("state.reset", path=str(path), moved_to=None, note="no state file to reset")
    else:
        log.warning(
            "state.reset",
            path=str(path),
            moved_to=str(moved),
            note="starting from an empty state: every account takes a new baseline",
        )


async def _serve(
    config: Config,
    stdout: TextIO,
    before: str | None = None,
    path: Path | None = None,
    lines: Callable[[Event], str] = stdout_json,
    *,
    started: Callable[[Daemon], object] = lambda _daemon: None,  # once it listens, not polls
) -> int:
    """Run the daemon until SIGTERM/SIGINT; SIGHUP reloads ``path``; tell systemd how it goes."""
    clock = SystemClock()
    daemon = Daemon(config, clock=clock, stdout=stdout, stdout_lines=lines)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    tasks: set[asyncio.Task[None]] = set()

    def spawn(coro: Coroutine[Any, Any, None]) -> None:
        task = loop.create_task(coro)
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    reloader = Reloader(daemon, path) if path is not None else None
    if reloader is not None:
        loop.add_signal_handler(signal.SIGHUP, reloader.request)
    await daemon.start()
    try:
        started(daemon)
        if before:
            print(before.format(url=daemon.url), file=sys.stderr, flush=True)
        daemon.run_scheduler()
        notify("READY=1")  # the config is loaded and the server listens
        period = watchdog_period()
        if period is not None:
            spawn(watchdog(lambda: not daemon.scheduler.stalled(), period, clock))
        await stop.wait()
        notify("STOPPING=1")
        log.info("walletwatch.stopping")
    finally:
        if reloader is not None:
            await reloader.close()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await daemon.close()
    return EXIT_OK


class Reloader:
    """SIGHUP's handler: one reload at a time; those asked for during one coalesce.

    Any number of SIGHUPs arriving while a reload runs cause exactly one more reload once
    it is done, which reads the file as it is then: a burst of signals (a deploy tool
    sending one per changed file, say) costs two reloads, not one each.
    """

    def __init__(self, daemon: Daemon, path: Path) -> None:
        self._daemon = daemon
        self._path = path
        self._task: asyncio.Task[None] | None = None
        self._again = False
        self.runs = 0  # reloads started, for tests and benchmarks

    def request(self) -> None:
        """Reload now, or once more after the reload under way."""
        if self._task is not None and not self._task.done():
            if not self._again:
                log.info("config.reload_queued", path=str(self._path))
            self._again = True
            return
        self._task = asyncio.get_running_loop().create_task(self._run(), name="reload")

    async def _run(self) -> None:
        again = True
        while again:
            self._again = False
            self.runs += 1
            await reload_config(self._daemon, self._path)
            again = self._again

    async def idle(self) -> None:
        """Return once no reload runs or is queued."""
        if self._task is not None:
            await asyncio.shield(self._task)

    async def close(self) -> None:
        """Cancel a reload under way (the daemon is stopping)."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)


async def reload_config(daemon: Daemon, path: Path) -> None:
    """SIGHUP: apply ``path`` to the running daemon, or log its problems and keep the old one."""
    notify(f"RELOADING=1\nMONOTONIC_USEC={time.monotonic_ns() // 1000}")
    log.info("config.reloading", path=str(path))
    try:
        # Read apart from the loop: at 10,000 accounts that is a second or more of CPU,
        # which on the loop stalled /healthz, the polls and the watchdog as long.
        # The running shard (--shard, or the file's at start) stays until a restart.
        new = await load_config_apart(path, shard=daemon.config.shard)
        restart = await daemon.reload(new)
    except ConfigError as err:
        daemon.failed_reload()
        log.error(  # noqa: TRY400 - the problems are the message; no traceback
            "config.reload_failed", path=str(path), problems=list(err.problems)
        )
    else:
        if restart:
            log.warning("config.restart_needed", keys=list(restart), note="kept the running values")
    finally:
        notify("READY=1")


def cmd_once(args: argparse.Namespace) -> int:
    """Poll each account once with a throwaway state; exit 1 if any account failed."""
    config = load_config(args.config, shard=args.shard)
    logs.configure(config.log_format, sys.stderr, level=logging.ERROR)
    watchers = asyncio.run(_once(config))
    rows = [_summary(w) for w in watchers]
    if args.json:
        json.dump(rows, sys.stdout, indent=2)
        print()
    else:
        print(_table(rows))
    return EXIT_OK if all(r["up"] for r in rows) else EXIT_FAILED


async def _once(config: Config) -> list[AccountWatcher]:
    # A throwaway state would re-announce what the daemon already did: deliver nowhere.
    quiet = dataclasses.replace(config, events_file=None, sinks=())
    daemon = Daemon(quiet, clock=SystemClock(), state_path=Path(":memory:"))
    await daemon.start(serve=False)
    try:
        await daemon.poll_once()
        await _retry_rate_limited(daemon.watchers.values())
    finally:
        await daemon.close()
    return list(daemon.watchers.values())


async def _retry_rate_limited(watchers: Iterable[AccountWatcher]) -> None:
    """Poll once more each endpoint that got HTTP 429, after its Retry-After.

    The 429 paused the key's rate budget for the Retry-After the provider gave (capped at
    the provider's ``max_backoff``), and the new poll waits for it there, inside the poll's
    own time limit: ``once`` run right after another, or beside the daemon, then reports
    the account rather than the provider's rate limit.
    """
    again = {
        w: [e for e, h in sorted(w.health.items()) if h.reason == RateLimited.reason]
        for w in watchers
    }

    async def poll(watcher: AccountWatcher, endpoints: list[str]) -> None:
        for endpoint in endpoints:
            await watcher.poll(endpoint)

    await asyncio.gather(*(poll(w, endpoints) for w, endpoints in again.items() if endpoints))


def _summary(w: AccountWatcher) -> dict[str, Any]:
    failed = [(e, h) for e, h in sorted(w.health.items()) if not h.ok]
    return {
        "provider": w.provider,
        "account": w.name,
        "up": w.up,
        "balances": {
            c: {
                "available": plain(t.balance.available),
                "pending": None if t.balance.pending is None else plain(t.balance.pending),
            }
            for c, t in sorted(w.state.balances.items())
        },
        "in_flight": sum(1 for _ in w.state.in_flight()),
        "errors": {e: h.error for e, h in failed},
        "reasons": {e: h.reason for e, h in failed},
        "unreported": sorted(w.unreported),
    }


def _table(rows: list[dict[str, Any]]) -> str:
    header = ("PROVIDER", "ACCOUNT", "UP", "IN FLIGHT", "BALANCES / ERRORS")
    lines = [header]
    for r in rows:
        reasons = r.get("reasons", {})
        detail = "; ".join(
            f"{e} ({reasons.get(e) or 'failed'}): {msg}" for e, msg in r["errors"].items()
        ) or ", ".join(f"{b['available']} {c}" for c, b in r["balances"].items())
        if r.get("unreported"):
            detail += f"; not reported: {', '.join(r['unreported'])} (check the config's codes)"
        lines.append(
            (r["provider"], r["account"], "yes" if r["up"] else "NO", str(r["in_flight"]), detail)
        )
    widths = [max(len(line[i]) for line in lines) for i in range(len(header) - 1)]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=False)) + "  " + line[-1]
        for line in lines
    )


def cmd_simulate(args: argparse.Namespace) -> int:
    """Serve the simulator until interrupted."""
    logs.configure(None, sys.stderr)
    asyncio.run(_simulate(args))
    return EXIT_OK


async def _simulate(args: argparse.Namespace) -> None:
    kwargs: dict[str, Any] = {"scenario": not args.no_scenario}
    if args.seed is not None:
        kwargs["seed"] = args.seed
    if args.faults is not None:
        kwargs["faults"] = args.faults
    sim = Simulator(**kwargs)
    runner, port = await start(sim, args.listen.host, args.listen.port, tick=args.tick)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    banner = simulator_banner(f"http://{_host(args.listen.host)}:{port}")
    print(f"{banner}\n{sim.push_help()}", file=sys.stderr, flush=True)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


def _host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def cmd_demo(args: argparse.Namespace) -> int:
    """Simulator plus daemon with the built-in demo config."""
    with tempfile.TemporaryDirectory(prefix="walletwatch-demo-") as tmp:
        return asyncio.run(_demo(args, Path(tmp)))


async def _demo(args: argparse.Namespace, workdir: Path) -> int:
    sim = Simulator(scenario=True)
    runner, port = await start(sim, "127.0.0.1", 0, tick=args.tick)
    try:
        config = demo_config(f"http://127.0.0.1:{port}", args.listen, workdir)
        config = dataclasses.replace(config, store=args.store)
        logs.configure(config.log_format, sys.stdout)
        banner = (
            "walletwatch demo: metrics at {url}/metrics, overview at {url}/ ; events in "
            f"{config.events_file} ; Ctrl-C stops"
        )
        lines, started = _event_lines(config), lambda d: subscribe_pushes(sim, config, d.push)
        return await _serve(config, sys.stdout, before=banner, lines=lines, started=started)
    finally:
        await runner.cleanup()
