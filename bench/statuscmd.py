"""Benchmark: ``walletwatch status`` reading a daemon with 10,000 accounts and 100,000 transfers.

Run: .venv/bin/python bench/statuscmd.py [--accounts 10000] [--transfers 100000] [--runs 3]

Serves API-shaped answers from a fake operator API on loopback (the bodies are encoded once,
so the figures are the command's own): ``--accounts`` accounts, one in fifty down and one in
a hundred with a stuck withdrawal, and ``--transfers`` transfers in flight, as many as the API
gives at its largest limit. Runs the command as its own process, as a check would, with each
of the table, ``--all`` and ``--json``, and prints per variant the wall time p50 and max, the
peak resident memory and the size of what it printed. Not a test: nothing is asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
from typing import Any

from aiohttp import web

VARIANTS = ((), ("--all",), ("--json",))


def account(i: int) -> dict[str, Any]:
    """Account ``i``: down every 50th, a stuck withdrawal every 100th."""
    down = i % 50 == 0
    error = {"reason": "connection", "message": "Connection refused", "at": "2026-12-05T11:00:00Z"}
    return {
        "provider": "toy",
        "account": f"acct-{i:05d}",
        "state": "down" if down else "up",
        "up": not down,
        "down_since": "2026-12-05T11:00:00Z" if down else None,
        "last_success": "2026-12-05T11:59:30Z",
        "endpoints": {
            name: {"last_success": "2026-12-05T11:59:30Z", "last_error": error if down else None}
            for name in ("balances", "deposits", "withdrawals")
        },
        "balances": [
            {"currency": c, "available": "12.5", "pending": "0", "low_threshold": "1", "low": False}
            for c in ("BTC", "USDT")
        ],
        "in_flight": 10,
        "stuck": 1 if i % 100 == 1 else 0,
    }


def transfer(n: int, accounts: int) -> dict[str, Any]:
    """Transfer ``n`` of account ``n % accounts``; stuck for the accounts that have one."""
    i = n % accounts
    return {
        "provider": "toy",
        "account": f"acct-{i:05d}",
        "id": f"{n}",
        "direction": "withdrawal",
        "currency": "BTC",
        "amount": "0.125",
        "fee": "0.0001",
        "address": "bc1q" + "a" * 38,
        "txid": f"{n:064x}",
        "status": "pending",
        "state": "pending",
        "created_at": "2026-12-05T09:00:00Z",
        "first_seen": "2026-12-05T09:00:05Z",
        "updated_at": "2026-12-05T09:00:05Z",
        "age_seconds": 10800.0 - n / 1000,
        "stuck": i % 100 == 1 and n < accounts,
    }


async def serve(accounts: int, transfers: int) -> tuple[web.AppRunner, str]:
    """The fake API on a free loopback port, its full bodies encoded once."""
    generated = "2026-12-05T12:00:00Z"
    rows = [transfer(n, accounts) for n in range(transfers)]  # oldest first, as the API
    stuck = [t for t in rows if t["stuck"]]
    full = {
        "accounts": json.dumps(
            {"accounts": [account(i) for i in range(accounts)], "generated_at": generated}
        ).encode(),
        "in_flight": json.dumps({"transfers": rows, "truncated": True}).encode(),
        "stuck": json.dumps({"transfers": stuck, "truncated": False}).encode(),
    }

    async def answer_accounts(_: web.Request) -> web.Response:
        return web.Response(body=full["accounts"], content_type="application/json")

    async def answer_transfers(request: web.Request) -> web.Response:
        state, limit = request.query["state"], int(request.query["limit"])
        if state == "stuck" or limit >= len(rows):
            return web.Response(body=full[state], content_type="application/json")
        body = json.dumps({"transfers": rows[:limit], "truncated": True}).encode()
        return web.Response(body=body, content_type="application/json")

    app = web.Application()
    app.router.add_get("/api/v1/accounts", answer_accounts)
    app.router.add_get("/api/v1/transfers", answer_transfers)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    print(
        f"answers: accounts {len(full['accounts']) / 1e6:.1f} MB, every transfer in flight "
        f"{len(full['in_flight']) / 1e6:.1f} MB, the stuck ones {len(full['stuck']) / 1e3:.0f} kB"
    )
    return runner, f"http://127.0.0.1:{runner.addresses[0][1]}"


def run(url: str, variant: tuple[str, ...]) -> tuple[float, float, int, int]:
    """One run in its own process: seconds, peak resident MB, exit status, bytes printed."""
    started = time.perf_counter()
    command = [sys.executable, "-m", "walletwatch", "status", "--url", url, *variant]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE)  # noqa: S603 - our own command
    assert proc.stdout is not None
    printed = len(proc.stdout.read())
    _, status, usage = os.wait4(proc.pid, 0)  # this child's own peak, not all children's
    proc.returncode = os.waitstatus_to_exitcode(status)
    return time.perf_counter() - started, usage.ru_maxrss / 1024, proc.returncode, printed


async def main() -> None:
    """Serve, run each variant, print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--accounts", type=int, default=10_000)
    parser.add_argument("--transfers", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    runner, url = await serve(args.accounts, args.transfers)
    try:
        for variant in VARIANTS:
            results = [await asyncio.to_thread(run, url, variant) for _ in range(args.runs)]
            times = [seconds for seconds, _, _, _ in results]
            name = " ".join(variant) or "(table)"
            print(
                f"{name:8} p50 {statistics.median(times):.2f} s  max {max(times):.2f} s  "
                f"peak RSS {max(r[1] for r in results):.0f} MB  exit {results[0][2]}  "
                f"printed {results[0][3] / 1e3:,.0f} kB"
            )
    finally:
        await runner.cleanup()


if __name__ == "__main__":
    asyncio.run(main())
