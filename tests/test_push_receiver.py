"""The push receiver: the answer each provider expects, one 404 for every refusal, the body
cap, slow clients cut off, TLS, and the token kept out of everything it could show in."""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import ssl
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import aiohttp
import pytest
import trustme
import yaml
from structlog.testing import capture_logs

from tests.pushrig import MAKERS, TOKEN, PushAccount, push_base, push_config, served
from tests.test_startup import fixture_taken, refused
from walletwatch.app import Daemon
from walletwatch.cli import main
from walletwatch.clock import SystemClock
from walletwatch.config import Config
from walletwatch.push import LINGER, MAX_BODY, NOT_FOUND, PushServer
from walletwatch.sim import Simulator
from walletwatch.telemetry import PushStats

__all__ = ["fixture_taken"]  # the fixture of a port some other program holds

SHORT = 0.2  # seconds a slow client gets in the tests that cut one off
WAIT = 5.0  # real seconds for what takes milliseconds on loopback
REFUSED_UNKNOWN = {"provider": "", "account": "", "result": "refused"}


@pytest.fixture(name="sim")
def fixture_sim() -> Simulator:
    """A simulator with one account at each push provider."""
    return Simulator(rate_limit=100_000)


@pytest.fixture(name="accounts")
def fixture_accounts(sim: Simulator) -> dict[str, PushAccount]:
    """One account per push provider, named after it."""
    return {provider: make(sim, provider) for provider, make in MAKERS.items()}


@pytest.fixture(name="config")
async def fixture_config(
    sim: Simulator, accounts: dict[str, PushAccount], tmp_path: Path
) -> AsyncIterator[Config]:
    """Every account takes pushes but a second WestWallet one (``quiet``), served."""
    quiet = MAKERS["westwallet"](sim, "quiet")
    async with served(sim) as sim_url:
        config = push_config(sim_url, tmp_path, accounts.values())
        extra = push_config(sim_url, tmp_path, [quiet], push=False).accounts
        yield replace(config, accounts=(*config.accounts, *extra))


@pytest.fixture(name="daemon")
async def fixture_daemon(config: Config) -> AsyncIterator[Daemon]:
    """A started daemon (not polling: every hint folds into the first polls, still due)."""
    daemon = Daemon(config, clock=SystemClock())
    await daemon.start()
    yield daemon
    await daemon.close()


@pytest.fixture(name="http")
async def fixture_http() -> AsyncIterator[aiohttp.ClientSession]:
    """A client session."""
    async with aiohttp.ClientSession() as session:
        yield session


def hints(daemon: Daemon, **labels: str) -> float:
    """walletwatch_push_hints_total for ``labels`` (0 when absent)."""
    value = daemon.registry.get_sample_value("walletwatch_push_hints_total", labels)
    return value or 0.0


async def push(
    http: aiohttp.ClientSession, url: str, method: str = "POST", body: bytes = b""
) -> tuple[int, str, dict[str, str]]:
    """One push; its status, body and headers (but Date, which only says when)."""
    async with http.request(method, url, data=body or None) as resp:
        headers = {k: v for k, v in resp.headers.items() if k != "Date"}
        return resp.status, await resp.text(), headers


class TestAnswer:
    """A push to a push account is answered as its provider expects, and counted."""

    @pytest.mark.parametrize("method", ["GET", "POST"])
    @pytest.mark.parametrize("provider", sorted(MAKERS))
    async def test_the_providers_answer(
        self, daemon: Daemon, http: aiohttp.ClientSession, provider: str, method: str
    ) -> None:
        """200 with ``*ok*`` for PotWallet (it repeats its callback until then), else ``ok``."""
        url = f"{push_base(daemon)}/push/{provider}/{TOKEN}?amount=1&txid=abc"
        status, text, _ = await push(http, url, method, b"amount=1" if method == "POST" else b"")
        assert (status, text) == (200, "*ok*" if provider == "potwallet" else "ok")
        labels = {"provider": provider, "account": provider}
        counted = hints(daemon, **labels, result="coalesced") + hints(
            daemon, **labels, result="accepted"
        )
        assert counted == 1


class TestFollower:
    """A replica that follows watches no account, yet keeps providers' URLs working."""

    async def test_answered_as_expected_and_nothing_polled(
        self, daemon: Daemon, config: Config, http: aiohttp.ClientSession
    ) -> None:
        """A good push is answered as its provider expects and counted coalesced; a bad one
        is the same 404 as on the leader."""
        assert config.push is not None
        stats = PushStats()
        follower = SimpleNamespace(config=config, watchers={}, scheduler=daemon.scheduler)
        server = PushServer(config.push, SystemClock(), stats, host=follower)
        await server.bind()
        await server.serve()
        try:
            good = await push(http, f"{server.url}/push/potwallet/{TOKEN}")
            bad = await push(http, f"{server.url}/push/quiet/{TOKEN}")
        finally:
            await server.close()
        assert good[:2] == (200, "*ok*")
        assert bad[:2] == (404, NOT_FOUND)
        assert stats.hints == {
            ("potwallet", "potwallet", "coalesced"): 1,
            ("westwallet", "quiet", "refused"): 1,
        }


class TestReload:
    """An account's ``push`` flag follows a reload."""

    async def test_push_turned_off_and_on(
        self, daemon: Daemon, config: Config, http: aiohttp.ClientSession
    ) -> None:
        """After a reload with ``push: false`` the account's URL is a 404; turned on, 200."""
        url = f"{push_base(daemon)}/push/sila/{TOKEN}"
        off = tuple(replace(a, push=a.name != "sila" and a.push) for a in config.accounts)
        await daemon.reload(replace(config, accounts=off))
        assert (await push(http, url))[:2] == (404, NOT_FOUND)
        await daemon.reload(config)
        assert (await push(http, url))[:2] == (200, "ok")


class TestSeries:
    """The hint counters are there before the first push."""

    async def test_every_result_of_each_push_account_starts_at_zero(self, daemon: Daemon) -> None:
        """Each push account's three results and the refusals of no account are served at 0;
        an account without push has none."""
        for provider in MAKERS:
            for result in ("accepted", "coalesced", "refused"):
                labels = {"provider": provider, "account": provider, "result": result}
                value = daemon.registry.get_sample_value("walletwatch_push_hints_total", labels)
                assert value == 0.0, labels
        assert (
            daemon.registry.get_sample_value("walletwatch_push_hints_total", REFUSED_UNKNOWN) == 0
        )
        quiet = {"provider": "westwallet", "account": "quiet", "result": "refused"}
        assert daemon.registry.get_sample_value("walletwatch_push_hints_total", quiet) is None


class TestNotFound:
    """An unknown account, a wrong token and an account without push look alike."""

    async def test_one_answer_for_every_refusal(
        self, daemon: Daemon, http: aiohttp.ClientSession
    ) -> None:
        """The same status, body and headers, whichever it was; counted as refused."""
        base = f"{push_base(daemon)}/push"
        answers = [
            await push(http, f"{base}/nobody/{TOKEN}"),
            await push(http, f"{base}/westwallet/{TOKEN[:-1]}x"),
            await push(http, f"{base}/quiet/{TOKEN}"),
            await push(http, f"{base}/westwallet"),
            await push(http, f"{base}/westwallet/{TOKEN}", "PUT"),
        ]
        assert answers[0][:2] == (404, NOT_FOUND)
        assert all(answer == answers[0] for answer in answers)
        assert hints(daemon, **REFUSED_UNKNOWN) == 2  # no such account, no such path
        assert hints(daemon, provider="westwallet", account="westwallet", result="refused") == 2
        assert hints(daemon, provider="westwallet", account="quiet", result="refused") == 1
        assert hints(daemon, provider="westwallet", account="westwallet", result="accepted") == 0

    async def test_the_token_is_compared_in_constant_time_whatever_the_account(
        self, daemon: Daemon, http: aiohttp.ClientSession, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Every push, known account or not, compares two 32-byte digests with
        hmac.compare_digest, once: neither the token's length nor the account shows in time."""
        compared: list[tuple[int, int]] = []
        real = hmac.compare_digest

        def compare(a: bytes, b: bytes) -> bool:
            compared.append((len(a), len(b)))
            return real(a, b)

        monkeypatch.setattr("walletwatch.push.hmac.compare_digest", compare)
        base = f"{push_base(daemon)}/push"
        for path in ("nobody/x", f"westwallet/{TOKEN}0", f"quiet/{TOKEN}", f"sila/{TOKEN}"):
            await push(http, f"{base}/{path}")
        assert compared == [(32, 32)] * 4


class TestLimits:
    """Bodies are capped; clients that send too slowly are cut off."""

    async def test_body_at_the_cap_is_taken(
        self, daemon: Daemon, http: aiohttp.ClientSession
    ) -> None:
        """A body of exactly 64 KiB is read and answered."""
        status, text, _ = await push(
            http, f"{push_base(daemon)}/push/sila/{TOKEN}", body=b"x" * MAX_BODY
        )
        assert (status, text) == (200, "ok")

    async def test_body_over_the_cap_is_refused(
        self, daemon: Daemon, http: aiohttp.ClientSession
    ) -> None:
        """One byte more is 413, counted refused under no account, and polls nothing."""
        status, _, _ = await push(
            http, f"{push_base(daemon)}/push/sila/{TOKEN}", body=b"x" * (MAX_BODY + 1)
        )
        assert status == 413
        assert hints(daemon, **REFUSED_UNKNOWN) == 1
        labels = {"provider": "sila", "account": "sila"}
        assert hints(daemon, **labels, result="coalesced") == 0
        assert hints(daemon, **labels, result="accepted") == 0

    async def test_slow_body_is_cut_off(self, daemon: Daemon, config: Config) -> None:
        """A body that stops coming gets 408 after the body deadline, and no hint."""
        stats = PushStats()
        async with receiver(daemon, config, stats, body_timeout=SHORT) as port:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(
                f"POST /push/sila/{TOKEN} HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n"
                "amount=1".encode()
            )
            await writer.drain()
            started = time.monotonic()
            async with asyncio.timeout(WAIT):
                answer = await reader.read()  # to the close
            assert time.monotonic() - started < SHORT + LINGER + 1.0
            assert answer.startswith(b"HTTP/1.1 408 ")
            writer.close()
        assert stats.connections.dropped["body_timeout"] == 1
        assert stats.hints == {("", "", "refused"): 1}

    async def test_slow_headers_are_cut_off(self, daemon: Daemon, config: Config) -> None:
        """A request whose headers do not complete in time has its connection closed."""
        stats = PushStats()
        async with receiver(daemon, config, stats, header_timeout=SHORT) as port:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(f"GET /push/sila/{TOKEN} HTTP/1.1\r\nHost:".encode())
            await writer.drain()
            async with asyncio.timeout(WAIT):
                assert await reader.read() == b""
            writer.close()
        assert stats.connections.dropped["header_timeout"] == 1
        assert not stats.hints


@contextlib.asynccontextmanager
async def receiver(
    daemon: Daemon, config: Config, stats: PushStats, **timeouts: float
) -> AsyncIterator[int]:
    """A push receiver of ``config``'s for ``daemon``, with ``timeouts``, serving: its port."""
    assert config.push is not None
    server = PushServer(config.push, SystemClock(), stats, host=daemon, **timeouts)
    await server.bind()
    await server.serve()
    try:
        assert server.port is not None
        yield server.port
    finally:
        await server.close()


class TestTls:
    """With tls_server_config the push listener speaks only TLS."""

    @pytest.fixture(name="ca")
    def fixture_ca(self) -> trustme.CA:
        """A throwaway certificate authority."""
        return trustme.CA()

    async def test_https(
        self, ca: trustme.CA, sim: Simulator, accounts: dict[str, PushAccount], tmp_path: Path
    ) -> None:
        """A client trusting the CA gets ``ok``; plain HTTP gets no answer."""
        cert = ca.issue_cert("127.0.0.1")
        cert.private_key_pem.write_to_path(str(tmp_path / "key.pem"))
        cert.cert_chain_pems[0].write_to_path(str(tmp_path / "cert.pem"))
        tls = {"cert_file": "cert.pem", "key_file": "key.pem"}
        async with served(sim) as sim_url:
            config = push_config(
                sim_url,
                tmp_path,
                [accounts["bitexbit"]],
                push_section={"listen": "127.0.0.1:0", "token": TOKEN, "tls_server_config": tls},
            )
            daemon = Daemon(config, clock=SystemClock())
            await daemon.start()
            try:
                url = push_base(daemon)
                assert url.startswith("https://")
                context = ssl.create_default_context()
                ca.configure_trust(context)
                async with aiohttp.ClientSession() as http:
                    async with http.post(f"{url}/push/bitexbit/{TOKEN}", ssl=context) as resp:
                        assert (resp.status, await resp.text()) == (200, "ok")
                    with pytest.raises(aiohttp.ClientError):
                        await push(http, url.replace("https://", "http://") + "/push/x/y")
            finally:
                await daemon.close()


def write_config(tmp_path: Path, section: object = None, **account: object) -> Path:
    """A config file with one WestWallet account (never reached), push ``section`` if given."""
    body: dict[str, object] = {
        "listen": "127.0.0.1:0",
        "state_path": "state.db",
        "accounts": [
            {
                "name": "hot",
                "provider": "westwallet",
                "base_url": "http://127.0.0.1:9/westwallet",
                "credentials": {"api_key": "key", "secret_key": "secret"},
                **account,
            }
        ],
    }
    if section is not None:
        body["push"] = section
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(body))
    return path


class TestConfig:
    """The push section and the accounts' push flags, as ``walletwatch check`` sees them."""

    def test_check_shows_each_push_url_without_the_token(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """check names each push account's URL with ``<token>`` in place of the token."""
        path = write_config(tmp_path, {"listen": "0.0.0.0:10102", "token": TOKEN}, push=True)
        assert main(["check", "-c", str(path)]) == 0
        out = capsys.readouterr().out
        assert "  hot (westwallet): http://<this host>:10102/push/hot/<token>" in out
        assert TOKEN not in out

    @pytest.mark.parametrize(
        ("push", "account", "problem"),
        [
            (
                None,
                {"push": True},
                "accounts[0].push: needs a top-level push: section (listen, token)",
            ),
            (
                {"listen": "127.0.0.1:10102", "token": TOKEN[:31]},
                {},
                "push.token: too short (31 characters; at least 32)",
            ),
            (
                {"listen": "127.0.0.1:10102", "token": TOKEN[:-1] + "/"},
                {},
                "push.token: use only letters, digits",
            ),
            (
                {"listen": "127.0.0.1:0", "token": TOKEN, "tokens": 1},
                {},
                "push.tokens: unknown key",
            ),
            ({"token": TOKEN}, {}, "push: missing required key 'listen'"),
        ],
    )
    def test_problems_exit_2_with_the_path(
        self,
        tmp_path: Path,
        capsys: pytest.CaptureFixture[str],
        push: object,
        account: dict[str, object],
        problem: str,
    ) -> None:
        """Each problem is one line led by its path; the token never shows."""
        path = write_config(tmp_path, push, **account)
        assert main(["check", "-c", str(path)]) == 2
        captured = capsys.readouterr()
        assert problem in captured.err
        assert TOKEN[:31] not in captured.err + captured.out

    def test_push_on_a_provider_that_sends_none(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """KredsWallet never calls back: ``push: true`` on it is refused."""
        path = write_config(
            tmp_path,
            {"listen": "127.0.0.1:0", "token": TOKEN},
            provider="kredswallet",
            credentials={"api_key": "key", "api_secret": "secret"},
            push=True,
        )
        assert main(["check", "-c", str(path)]) == 2
        assert "accounts[0].push: kredswallet sends no push" in capsys.readouterr().err


class TestBind:
    """A push listener that cannot bind stops the start like the main listener's."""

    def test_an_address_in_use(self, tmp_path: Path, taken: int) -> None:
        """One line naming push.listen, exit 1, no state file made."""
        path = write_config(tmp_path, {"listen": f"127.0.0.1:{taken}", "token": TOKEN}, push=True)
        result = subprocess.run(
            [sys.executable, "-m", "walletwatch", "run", "-c", str(path)],
            capture_output=True,
            text=True,
            timeout=20,
            check=False,
        )
        line = refused(result)
        assert f"cannot listen on 127.0.0.1:{taken}: the address is in use" in line
        assert "set push.listen to a free port" in line
        assert TOKEN not in result.stderr + result.stdout
        assert not (tmp_path / "state.db").exists()


class TestSecrecy:
    """The token shows in no log line, metric, repr or error."""

    async def test_nowhere(self, config: Config, http: aiohttp.ClientSession) -> None:
        """Pushes right and wrong and an oversized one leave no trace of it: not in the logs,
        /metrics, the index page, the config's or the servers' reprs."""
        assert config.push is not None
        with capture_logs() as logs:
            daemon = Daemon(config, clock=SystemClock())
            await daemon.start()
            try:
                base = f"{push_base(daemon)}/push"
                for path in (f"sila/{TOKEN}", f"nobody/{TOKEN}", f"quiet/{TOKEN}", "sila/x"):
                    await push(http, f"{base}/{path}")
                await push(http, f"{base}/sila/{TOKEN}", body=b"x" * (MAX_BODY + 1))
                async with http.get(f"{daemon.url}/metrics") as resp:
                    metrics = await resp.text()
                async with http.get(f"{daemon.url}/") as resp:
                    page = await resp.text()
            finally:
                await daemon.close()
        shown = [str(logs), metrics, page, repr(config), repr(config.push), repr(daemon)]
        server = PushServer(config.push, SystemClock(), PushStats(), host=daemon)
        shown.append(repr(server))
        assert "walletwatch_push_hints_total" in metrics
        for text in shown:
            assert TOKEN not in text
