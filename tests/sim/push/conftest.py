"""The fixtures every test of the simulator's pushes shares: its clock, a receiver, a session."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest

from tests.sim.pushing import Receiver, SkipClock, receiving


@pytest.fixture(name="clock")
def fixture_clock() -> SkipClock:
    """Simulator time that a push's waits move on at once, each wait recorded."""
    return SkipClock()


@pytest.fixture(name="receiver")
async def fixture_receiver() -> AsyncIterator[Receiver]:
    """A loopback receiver recording the pushes it gets."""
    async with receiving() as receiver:
        yield receiver


@pytest.fixture(name="http")
async def fixture_http() -> AsyncIterator[aiohttp.ClientSession]:
    """A client session for the simulator's control API."""
    async with aiohttp.ClientSession() as session:
        yield session
