"""Fixtures shared across the suite: the fake clock and a mocked HTTP boundary."""

from __future__ import annotations

import os
import types
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import pytest
from aioresponses import aioresponses
from yarl import URL

from tests.engines import ENGINES, Engine
from tests.fakes import FakeClock
from tests.pgcluster import Cluster, running_cluster


class _MockedResponse(aiohttp.ClientResponse):
    """A ClientResponse that aioresponses 0.7.9 can build under aiohttp 3.14.

    aiohttp 3.14 made ``stream_writer`` a required argument, which aioresponses does not pass
    (https://github.com/pnuckowski/aioresponses/issues/289). A mocked response has already
    been "sent", so only the writer's ``output_size`` is read.
    """

    def __init__(self, method: str, url: URL, **kwargs: Any) -> None:
        kwargs.setdefault("stream_writer", types.SimpleNamespace(output_size=0))
        super().__init__(method, url, **kwargs)


@pytest.fixture(autouse=True, scope="session")
def _private_files() -> Iterator[None]:
    """Files the tests write are private (umask 077), as a deployed config.yaml must be.

    Many test configs hold fake literal credentials, which load_config refuses in a file every
    user may read (tests/hostile/test_config_exposure.py covers that refusal).
    """
    previous = os.umask(0o077)
    yield
    os.umask(previous)


@pytest.fixture(name="clock")
def fixture_clock() -> FakeClock:
    """Virtual time starting at tests.fakes.START."""
    return FakeClock()


@pytest.fixture(name="responses")
def fixture_responses(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """aioresponses: every request any ClientSession makes is answered (or refused) here."""
    # The one name aioresponses builds responses from when no response_class is given.
    monkeypatch.setattr("aioresponses.core.ClientResponse", _MockedResponse)
    with aioresponses() as mocked:
        yield mocked


@pytest.fixture(name="session")
async def fixture_session() -> AsyncIterator[aiohttp.ClientSession]:
    """A real ClientSession (requests go to the ``responses`` mock)."""
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture(name="pg_cluster", scope="session")
def fixture_pg_cluster() -> Iterator[Cluster]:
    """One throwaway PostgreSQL cluster for the whole run (tests.pgcluster)."""
    with running_cluster() as cluster:
        yield cluster


@pytest.fixture(name="pg_url")
def fixture_pg_url(pg_cluster: Cluster) -> Iterator[str]:
    """The URL (no password) of a fresh, empty database for this test alone."""
    url = pg_cluster.create()
    yield url
    pg_cluster.drop(url)


@pytest.fixture(name="engine", params=ENGINES)
def fixture_engine(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Engine]:
    """Each state engine in turn."""
    cluster = request.getfixturevalue("pg_cluster") if request.param == "postgresql" else None
    engine = Engine(request.param, tmp_path_factory.mktemp(request.param), cluster)
    yield engine
    engine.close()
