"""Shared by the benchmarks: ``walletwatch simulate`` in its own process, driven over HTTP,
and what they measure the daemon's process with (event-loop stalls, collector pauses).

The simulator runs as a separate process, as a provider is a separate service: its clock and
its 429 decisions share neither an event loop nor the GIL with the daemon being measured. It
enforces every provider's per-key limit strictly (the Simulator default of 2 requests/s, one
token, no burst): a request less than 0.5 s after the last one admitted for its key gets 429.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import math
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp


@dataclass(frozen=True, slots=True)
class Kind:
    """How a benchmark sets up accounts of one provider in the simulator."""

    api: str  # base_url path under the simulator
    key_field: str  # the credential naming the key, also the control field
    secret_field: str

    def credentials(self, key: str) -> dict[str, str]:
        """The account's credentials in config.yaml (literal strings: these are fakes)."""
        return {self.key_field: key, self.secret_field: f"secret-{key}"}


KINDS: Mapping[str, Kind] = {
    "westwallet": Kind("/westwallet", "api_key", "secret_key"),
    "bitexbit": Kind("/bitexbit/api/gateway", "api_key", "secret_key"),
    "kredswallet": Kind("/kredswallet/api", "api_key", "api_secret"),
    "potwallet": Kind("/potwallet", "public_key", "private_key"),
}


def percentile(values: Sequence[float], q: float) -> float:
    """The nearest-rank ``q`` quantile (0 < q <= 1) of ``values``."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def free_port() -> int:
    """A loopback port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class SimProcess:
    """A running ``walletwatch simulate --no-scenario`` and an HTTP client for its controls."""

    def __init__(self, url: str, session: aiohttp.ClientSession) -> None:
        self.url = url
        self._session = session

    def base_url(self, provider: str) -> str:
        """The base_url of an account of ``provider`` in the simulator."""
        return self.url + KINDS[provider].api

    async def post(self, path: str, body: Mapping[str, Any], method: str = "POST") -> Any:
        """Send a control call (``/_sim/...``) and return its JSON answer."""
        async with self._session.request(method, self.url + path, json=body) as resp:
            data = await resp.json()
            if resp.status >= 300:
                raise RuntimeError(f"{path}: HTTP {resp.status}: {data}")
            return data

    async def add_account(self, provider: str, key: str) -> None:
        """Create the simulated account behind ``key`` (and what its polls need besides)."""
        await self.post(f"/_sim/{provider}/accounts", KINDS[provider].credentials(key))
        if provider == "potwallet":  # the price endpoint answers only for known currencies
            await self.post("/_sim/potwallet/prices", {"USD": "0.0125"}, method="PUT")

    async def responses(self) -> list[dict[str, Any]]:
        """Every API response the simulator gave, counted by provider, path and status."""
        async with self._session.get(self.url + "/_sim/requests") as resp:
            rows: list[dict[str, Any]] = (await resp.json())["requests"]
            return rows


# The simulator with another per-key limit, which ``walletwatch simulate`` does not offer.
_FAST = """
import asyncio, sys
from walletwatch.sim import Simulator, start

async def main():
    await start(Simulator(rate_limit=float(sys.argv[2])), "127.0.0.1", int(sys.argv[1]))
    await asyncio.Event().wait()

asyncio.run(main())
"""


@contextlib.asynccontextmanager
async def simulator(rate_limit: float | None = None) -> AsyncIterator[SimProcess]:
    """Start the simulator process, wait until it answers, stop it afterwards.

    ``rate_limit`` replaces the per-key limit of 2 requests/s.
    """
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    if rate_limit is None:
        command = [sys.executable, "-m", "walletwatch", "simulate", "--no-scenario"]
        command += ["--listen", f"127.0.0.1:{port}", "--tick", "3600"]
    else:
        command = [sys.executable, "-c", _FAST, str(port), str(rate_limit)]
    process = subprocess.Popen(  # noqa: ASYNC220, S603 - our own code, started once
        command,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        async with aiohttp.ClientSession() as session:
            for _ in range(200):
                with contextlib.suppress(aiohttp.ClientError):
                    async with session.get(url + "/_sim/requests") as resp:
                        if resp.status == 200:
                            break
                await asyncio.sleep(0.05)
            else:
                raise RuntimeError("the simulator did not start")
            yield SimProcess(url, session)
    finally:
        process.terminate()
        process.wait(timeout=10)


async def ticker(stalls: list[float], stop: asyncio.Event) -> None:
    """Record how late each 5 ms sleep wakes: the event loop's stalls."""
    loop = asyncio.get_running_loop()
    while not stop.is_set():
        before = loop.time()
        await asyncio.sleep(0.005)
        stalls.append(loop.time() - before - 0.005)


class GcPauses:
    """The cyclic garbage collector's pauses, by generation, while installed."""

    def __init__(self) -> None:
        self.pauses: dict[int, list[float]] = {0: [], 1: [], 2: []}
        self._started = 0.0

    def __enter__(self) -> GcPauses:
        gc.callbacks.append(self._callback)
        return self

    def __exit__(self, *_: object) -> None:
        gc.callbacks.remove(self._callback)

    def _callback(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        else:
            self.pauses[info["generation"]].append(time.perf_counter() - self._started)

    def longest(self) -> tuple[float, int]:
        """The longest pause and its generation ((0.0, -1) if none)."""
        return max(((p, g) for g, pauses in self.pauses.items() for p in pauses), default=(0.0, -1))


async def curl(url: str, *options: str) -> tuple[float, int]:
    """One request by curl in its own process (a scraper): (seconds, bytes received)."""
    proc = await asyncio.create_subprocess_exec(
        "curl", "-sf", "-o", "/dev/null", "-w", "%{time_total} %{size_download}", *options, url,
        stdout=subprocess.PIPE,
    )  # fmt: skip
    out, _ = await proc.communicate()
    seconds, size = out.decode().split()
    return float(seconds), int(size)
