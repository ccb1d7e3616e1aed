"""Fixtures of the status tests: the fake API (plain and TLS), a clean environment, a runner."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator

import pytest
import trustme

from tests.status.fakeapi import FakeApi, Result, Run, serve
from walletwatch.cli import main
from walletwatch.statuscmd import ENV_PASSWORD, ENV_USER


@pytest.fixture(name="api")
async def fixture_api() -> AsyncIterator[FakeApi]:
    """A fake daemon on loopback answering one healthy account."""
    api = FakeApi()
    runner = await serve(api)
    yield api
    api.release.set()
    await runner.cleanup()


@pytest.fixture(name="ca")
def fixture_ca() -> trustme.CA:
    """A throwaway certificate authority."""
    return trustme.CA()


@pytest.fixture(name="tls_api")
async def fixture_tls_api(ca: trustme.CA) -> AsyncIterator[FakeApi]:
    """A fake daemon on loopback speaking TLS with a certificate only ``ca`` vouches for."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    api = FakeApi()
    runner = await serve(api, context)
    yield api
    await runner.cleanup()


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No credentials or NO_COLOR from the environment the tests run in."""
    for name in (ENV_USER, ENV_PASSWORD, "NO_COLOR"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(name="run")
def fixture_run(capsys: pytest.CaptureFixture[str]) -> Run:
    """``walletwatch status ARGS...`` through the console script's entry point."""

    async def run(*argv: str) -> Result:
        capsys.readouterr()
        code = await asyncio.to_thread(main, ["status", *argv])
        out, err = capsys.readouterr()
        return Result(code, out, err)

    return run
