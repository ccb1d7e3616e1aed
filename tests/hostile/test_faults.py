"""The simulator's fault mode: errors, garbage, resets, 429 storms and latency, seeded."""

from __future__ import annotations

import time

import aiohttp
import pytest

from tests.hostile.harness import serve
from walletwatch.cli import main
from walletwatch.errors import BadPayload
from walletwatch.http import parse_json
from walletwatch.sim import Simulator
from walletwatch.sim.faults import Faults, parse_faults

API = "/westwallet/wallet/balances"  # any provider API path: the faults come first


async def statuses(sim: Simulator, n: int, path: str = API) -> list[int | str]:
    """The status of ``n`` requests to ``path`` ("reset" for a dropped connection)."""
    seen: list[int | str] = []
    async for url in serve(sim.app()):
        # A fresh connection per request: a reset one is not retried on the next.
        connector = aiohttp.TCPConnector(force_close=True)
        async with aiohttp.ClientSession(connector=connector) as session:
            for _ in range(n):
                try:
                    async with session.get(url + path) as resp:
                        await resp.read()
                        seen.append(resp.status)
                except aiohttp.ClientConnectionError:
                    seen.append("reset")
    return seen


class TestParse:
    """``--faults`` text."""

    def test_every_field(self) -> None:
        """Each name=value sets one field."""
        text = "error=0.1,garbage=0.05,reset=0.05,storm=0.01,storm_seconds=3,latency=0.2,seed=9"
        assert parse_faults(text) == Faults(0.1, 0.05, 0.05, 0.01, 3.0, 0.2, 9)
        assert parse_faults(text).failing == pytest.approx(0.2)

    @pytest.mark.parametrize(
        "text", ["boom=1", "error", "error=x", "error=0.7,reset=0.7", "error=-0.1", "latency=-1"]
    )
    def test_refused(self, text: str) -> None:
        """Unknown names, bad numbers and rates adding up past 1 are refused."""
        with pytest.raises(ValueError, match=r"."):
            parse_faults(text)

    def test_cli_refuses_a_bad_spec(self, capsys: pytest.CaptureFixture[str]) -> None:
        """``walletwatch simulate --faults`` with a bad spec is a usage error (exit 2)."""
        with pytest.raises(SystemExit) as raised:
            main(["simulate", "--faults", "boom=1"])
        assert raised.value.code == 2
        assert "--faults" in capsys.readouterr().err


class TestFaults:
    """What each fault looks like to a client."""

    async def test_errors(self) -> None:
        """error=1: every API request is a 5xx."""
        seen = await statuses(Simulator(faults=Faults(error=1.0)), 20)
        assert set(seen) <= {500, 502, 503}
        assert len(set(seen)) > 1

    async def test_controls_are_never_faulted(self) -> None:
        """The /_sim controls answer normally whatever the faults."""
        faults = Faults(error=0.5, reset=0.5)
        assert await statuses(Simulator(faults=faults), 10, "/_sim/requests") == [200] * 10

    async def test_garbage(self) -> None:
        """garbage=1: 200 answers that walletwatch cannot read."""
        sim = Simulator(faults=Faults(garbage=1.0))
        bodies: list[bytes] = []
        async for url in serve(sim.app()):
            async with aiohttp.ClientSession() as session:
                for _ in range(20):
                    async with session.get(url + API) as resp:
                        assert resp.status == 200
                        bodies.append(await resp.read())
        assert len(set(bodies)) > 2
        for body in bodies:
            with pytest.raises(BadPayload):
                parse_json(body)

    async def test_resets(self) -> None:
        """reset=1: the connection drops without an answer."""
        assert await statuses(Simulator(faults=Faults(reset=1.0)), 5) == ["reset"] * 5

    async def test_storm(self) -> None:
        """A 429 storm answers every request of that provider with 429 until it ends."""
        sim = Simulator(clock=lambda: 1000.0, faults=Faults(storm=0.5, storm_seconds=30, seed=1))
        seen = await statuses(sim, 10)
        first = seen.index(429)
        assert seen[first:] == [429] * (10 - first)  # the clock stands still: it never ends

    async def test_latency(self) -> None:
        """latency=0.1: requests take up to 0.1 s longer."""
        started = time.monotonic()
        await statuses(Simulator(faults=Faults(latency=0.1)), 5, "/westwallet/nowhere")
        assert 0.0 < time.monotonic() - started < 1.5

    async def test_seeded(self) -> None:
        """The same seed fails the same requests."""
        faults = Faults(error=0.3, reset=0.3, seed=5)
        first = await statuses(Simulator(faults=faults), 30)
        assert first == await statuses(Simulator(faults=faults), 30)
        assert first != await statuses(Simulator(faults=Faults(error=0.3, reset=0.3, seed=6)), 30)
        assert "reset" in first
        assert any(isinstance(status, int) and status >= 500 for status in first)


class TestWithoutFaults:
    """No faults, no middleware."""

    async def test_plain_simulator_answers(self) -> None:
        """A Simulator without faults answers its API as before."""
        seen = await statuses(Simulator(), 3)
        assert all(isinstance(status, int) and status < 500 for status in seen)
