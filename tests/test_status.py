"""``walletwatch status`` against an operator API on loopback: exit codes, auth, TLS, safe text.

The API here is a small aiohttp app answering what walletwatch/operator.py answers; the
command runs as the console script does (``cli.main``), in a thread of its own so that its
event loop and the server's do not share one. tests/test_status_daemon.py asks a real daemon.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import pty
import re
import socket
import ssl
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import trustme
import yaml
from aiohttp import web

from walletwatch.cli import main
from walletwatch.statuscmd import ENV_PASSWORD, ENV_USER, base_url
from walletwatch.statusview import COLOURS, LONGEST

NOW = "2026-12-05T12:00:00Z"
USER, PASSWORD = "ops", "s3cret-Pässwörd"
CONTROL = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")
"""What a plain (uncoloured) view must never hold: every control character but the newline,
and the bidirectional overrides and isolates."""


def account_row(name: str, state: str = "up", **extra: Any) -> dict[str, Any]:
    """One account as /api/v1/accounts gives it (walletwatch/operator.py account_row)."""
    failing = state == "down"
    error = {"reason": "auth", "message": "HTTP 401: bad key", "at": "2026-12-05T11:50:00Z"}
    row: dict[str, Any] = {
        "provider": "toy",
        "account": name,
        "state": state,
        "up": state == "up",
        "down_since": "2026-12-05T11:50:00Z" if failing else None,
        "last_success": None if state == "waiting" else "2026-12-05T11:59:30Z",
        "endpoints": {
            "balances": {
                "last_success": "2026-12-05T11:59:30Z",
                "last_error": error if failing else None,
            }
        },
        "balances": [
            {
                "currency": "BTC",
                "available": "1.5",
                "pending": "0",
                "low_threshold": "0.5",
                "low": False,
            }
        ],
        "in_flight": 0,
        "stuck": 0,
    }
    row.update(extra)
    return row


def transfer_row(tid: str, *, stuck: bool = False, **extra: Any) -> dict[str, Any]:
    """One in-flight transfer as /api/v1/transfers gives it (operator.py transfer_row)."""
    row: dict[str, Any] = {
        "provider": "toy",
        "account": "hot",
        "id": tid,
        "direction": "withdrawal",
        "currency": "BTC",
        "amount": "0.25",
        "fee": "0.0001",
        "address": "bc1qaddress",
        "txid": f"{tid:0>64}",
        "status": "pending",
        "state": "pending",
        "created_at": "2026-12-05T09:00:00Z",
        "first_seen": "2026-12-05T09:00:05Z",
        "updated_at": "2026-12-05T09:00:05Z",
        "age_seconds": 10800.0,
        "stuck": stuck,
    }
    row.update(extra)
    return row


@dataclass
class FakeApi:
    """What the fake daemon answers, and the requests it was asked."""

    accounts: list[dict[str, Any]] = field(default_factory=lambda: [account_row("hot")])
    transfers: list[dict[str, Any]] = field(default_factory=list)
    truncated: bool = False
    users: dict[str, str] = field(default_factory=dict)
    answer: str = "api"  # api | hang | html | 503
    url: str = ""
    requests: list[tuple[str, str, str | None]] = field(default_factory=list)
    release: asyncio.Event = field(default_factory=asyncio.Event)

    def app(self) -> web.Application:
        """The aiohttp application answering /api/v1/accounts and /api/v1/transfers."""
        app = web.Application()
        app.router.add_get("/api/v1/accounts", self._handler(self._accounts))
        app.router.add_get("/api/v1/transfers", self._handler(self._transfers))
        return app

    def _handler(
        self, body: Callable[[web.Request], dict[str, Any]]
    ) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        async def handle(request: web.Request) -> web.StreamResponse:
            auth = request.headers.get("Authorization")
            self.requests.append((request.path, request.query_string, auth))
            if self.users and auth not in {_basic(u, p) for u, p in self.users.items()}:
                return web.Response(
                    status=401, headers={"WWW-Authenticate": 'Basic realm="walletwatch"'}
                )
            if self.answer == "hang":
                await self.release.wait()
            if self.answer == "html":
                return web.Response(text="<html><body>It works!</body></html>")
            if self.answer == "503":
                error = {"error": "the state database cannot be read: disk I/O error"}
                return web.json_response(error, status=503)
            return web.json_response(body(request))

        return handle

    def _accounts(self, _: web.Request) -> dict[str, Any]:
        return {"accounts": self.accounts, "generated_at": NOW}

    def _transfers(self, request: web.Request) -> dict[str, Any]:
        assert request.query["state"] == "in_flight"
        return {"transfers": self.transfers, "truncated": self.truncated}


def _basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


async def serve(api: FakeApi, tls: ssl.SSLContext | None = None) -> web.AppRunner:
    """Serve ``api`` on a free loopback port; sets ``api.url``."""
    runner = web.AppRunner(api.app())
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=tls)
    await site.start()
    port = runner.addresses[0][1]
    api.url = f"{'https' if tls else 'http'}://127.0.0.1:{port}"
    return runner


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


@dataclass(frozen=True)
class Result:
    """What a run of ``walletwatch status`` did."""

    code: int
    out: str
    err: str


Run = Callable[..., Awaitable[Result]]


@pytest.fixture(name="run")
def fixture_run(capsys: pytest.CaptureFixture[str]) -> Run:
    """``walletwatch status ARGS...`` through the console script's entry point."""

    async def run(*argv: str) -> Result:
        capsys.readouterr()
        code = await asyncio.to_thread(main, ["status", *argv])
        out, err = capsys.readouterr()
        return Result(code, out, err)

    return run


def credentials(monkeypatch: pytest.MonkeyPatch, user: str = USER, pw: str = PASSWORD) -> None:
    """Set the credentials as an operator would, in the environment."""
    monkeypatch.setenv(ENV_USER, user)
    monkeypatch.setenv(ENV_PASSWORD, pw)


def free_port() -> int:
    """A loopback port nothing listens on (it was free a moment ago)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class TestExitStatus:
    """0 when every account is up and nothing is stuck, 1 for a problem."""

    async def test_all_up_nothing_stuck(self, api: FakeApi, run: Run) -> None:
        """Healthy accounts and a transfer moving within its time: exit 0 and an OK summary."""
        api.accounts = [account_row("hot", in_flight=1), account_row("cold")]
        api.transfers = [transfer_row("7")]
        result = await run("--url", api.url)
        assert result.code == 0, result
        assert result.err == ""
        lines = result.out.splitlines()
        assert lines[-1] == "OK: 2 accounts: 2 up; 1 transfer in flight, 0 stuck"
        assert "IN FLIGHT (1)" in result.out
        assert transfer_row("7")["txid"] in result.out
        assert [path for path, _, _ in api.requests] == ["/api/v1/accounts", "/api/v1/transfers"]

    async def test_a_down_account_says_why_and_since_when(self, api: FakeApi, run: Run) -> None:
        """An account down: exit 1, its endpoint's reason and message, and since when."""
        api.accounts = [account_row("hot"), account_row("cold", "down")]
        result = await run("--url", api.url)
        assert result.code == 1, result
        lines = result.out.splitlines()
        row = next(i for i, line in enumerate(lines) if "toy/cold" in line)
        assert lines[row].split()[0] == "DOWN"
        assert "down since 2026-12-05 11:50:00Z (10m ago)" in lines[row + 1]
        assert "balances failed (auth)" in lines[row + 2]
        assert "HTTP 401: bad key" in lines[row + 2]
        assert lines[-1] == "PROBLEM: 2 accounts: 1 down, 1 up; 0 transfers in flight, 0 stuck"

    async def test_a_stuck_transfer_is_listed_first_with_its_full_txid(
        self, api: FakeApi, run: Run
    ) -> None:
        """A stuck transfer: exit 1, listed above the moving ones, its whole txid shown."""
        txid = "ab" * 32
        api.accounts = [account_row("hot", in_flight=2, stuck=1)]
        api.transfers = [transfer_row("1", stuck=True, txid=txid), transfer_row("2")]
        result = await run("--url", api.url)
        assert result.code == 1, result
        out = result.out
        assert out.index("STUCK TRANSFERS (1)") < out.index(txid) < out.index("IN FLIGHT (1)")
        stuck_line = next(line for line in out.splitlines() if txid in line)
        assert stuck_line.split()[:2] == ["3h00m", "withdrawal"]
        assert stuck_line.endswith(txid)
        assert out.splitlines()[-1].endswith("2 transfers in flight, 1 stuck")

    async def test_an_account_waiting_for_its_first_poll_is_a_problem(
        self, api: FakeApi, run: Run
    ) -> None:
        """Waiting (no poll finished since start or reload) exits 1: it cannot be vouched for."""
        api.accounts = [account_row("hot"), account_row("new", "waiting", balances=[])]
        result = await run("--url", api.url)
        assert result.code == 1, result
        assert any(
            line.split()[:3] == ["waiting", "toy/new", "never"] for line in result.out.splitlines()
        )
        assert "1 waiting" in result.out.splitlines()[-1]

    async def test_a_low_balance_is_marked_but_is_no_failure(self, api: FakeApi, run: Run) -> None:
        """A balance below its threshold is marked LOW; the status stays 0 (its alert pages)."""
        low = {"currency": "USDT", "available": "10", "pending": None, "low_threshold": "1000"}
        api.accounts = [account_row("hot", balances=[{**low, "low": True}])]
        result = await run("--url", api.url)
        assert result.code == 0, result
        assert "USDT  10  LOW (threshold 1000)" in result.out
        assert "1 balance low" in result.out.splitlines()[-1]

    async def test_the_counts_stay_complete_when_the_listing_is_cut(
        self, api: FakeApi, run: Run
    ) -> None:
        """A truncated listing says so, and the accounts' stuck count still decides."""
        api.accounts = [account_row("hot", in_flight=200_000, stuck=3)]
        api.transfers = [transfer_row("1")]
        api.truncated = True
        result = await run("--url", api.url)
        assert result.code == 1, result
        assert "the daemon listed only the oldest 1 transfers in flight" in result.out
        assert result.out.splitlines()[-1].endswith("200,000 transfers in flight, 3 stuck")


class TestUnavailable:
    """Exit 2 with one line on stderr saying what went wrong, never a traceback."""

    async def test_connection_refused(self, run: Run) -> None:
        """Nothing listening: the address and the system's words."""
        port = free_port()
        result = await run("--url", f"http://127.0.0.1:{port}")
        assert (result.code, result.out) == (2, "")
        assert result.err == (
            f"walletwatch status: http://127.0.0.1:{port}: cannot connect: Connection refused"
            " (is the daemon running, and at this address?)\n"
        )

    async def test_a_hung_daemon_is_cut_off_by_the_timeout(self, api: FakeApi, run: Run) -> None:
        """A daemon that accepts and never answers: exit 2 once --timeout has passed."""
        api.answer = "hang"
        started = time.monotonic()
        result = await run("--url", api.url, "--timeout", "0.3")
        assert time.monotonic() - started < 5
        assert result.code == 2, result
        assert result.err == f"walletwatch status: {api.url}: no answer within 0.3 s (--timeout)\n"
        assert api.requests  # it did reach the daemon

    async def test_an_answer_that_is_not_json(self, api: FakeApi, run: Run) -> None:
        """Some other web server on the port: its HTML is refused."""
        api.answer = "html"
        result = await run("--url", api.url)
        assert result.code == 2, result
        assert result.err == (
            f"walletwatch status: {api.url}/api/v1/accounts: the answer is not JSON"
            " (is it walletwatch?)\n"
        )

    async def test_json_that_is_not_the_api(self, api: FakeApi, run: Run) -> None:
        """JSON of another shape names the first thing that is not the API's."""
        api.accounts = [{"provider": "toy", "account": 7}]
        result = await run("--url", api.url)
        assert result.code == 2, result
        assert result.err == (
            "walletwatch status: the answer is not walletwatch's operator API:"
            " accounts[0].account: expected a string\n"
        )

    async def test_a_refusal_gives_the_daemons_reason(self, api: FakeApi, run: Run) -> None:
        """A 503 from the API carries its JSON reason into the line."""
        api.answer = "503"
        result = await run("--url", api.url)
        assert result.code == 2, result
        assert result.err == (
            f"walletwatch status: {api.url}/api/v1/accounts: HTTP 503:"
            " the state database cannot be read: disk I/O error\n"
        )

    async def test_not_walletwatch(self, run: Run, api: FakeApi) -> None:
        """A 404 asks whether it is walletwatch at all."""
        result = await run("--url", api.url + "/elsewhere")
        assert result.code == 2, result
        assert "HTTP 404 (is it walletwatch with the operator API?)" in result.err


class TestCredentials:
    """Basic auth from WALLETWATCH_USER and WALLETWATCH_PASSWORD, the password never shown."""

    async def test_sent_as_basic_auth_in_utf8(
        self, api: FakeApi, run: Run, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """The environment's credentials go in the Authorization header of both requests."""
        api.users = {USER: PASSWORD}
        credentials(monkeypatch)
        result = await run("--url", api.url)
        assert result.code == 0, result
        assert [auth for _, _, auth in api.requests] == [_basic(USER, PASSWORD)] * 2
        assert PASSWORD not in result.out + result.err

    async def test_asked_for_and_none_given(self, api: FakeApi, run: Run) -> None:
        """A 401 without credentials says which variables to set."""
        api.users = {USER: PASSWORD}
        result = await run("--url", api.url)
        assert result.code == 2, result
        assert result.err == (
            f"walletwatch status: {api.url}/api/v1/accounts: HTTP 401, the daemon asks for"
            f" credentials: set {ENV_USER} and {ENV_PASSWORD}\n"
        )

    async def test_refused_names_the_user_never_the_password(
        self, api: FakeApi, run: Run, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Wrong credentials: a 401 naming the user; the password is nowhere in the output."""
        api.users = {USER: "another one"}
        credentials(monkeypatch)
        result = await run("--url", api.url)
        assert result.code == 2, result
        assert result.err == (
            f"walletwatch status: {api.url}/api/v1/accounts: HTTP 401, the credentials of"
            f" {ENV_USER}='ops' were refused\n"
        )
        assert PASSWORD not in result.out + result.err

    @pytest.mark.parametrize("answer", ["hang", "html", "503"])
    async def test_never_in_any_failure(
        self, api: FakeApi, run: Run, monkeypatch: pytest.MonkeyPatch, answer: str
    ) -> None:
        """Whatever goes wrong, neither stdout nor stderr holds the password."""
        api.answer = answer
        credentials(monkeypatch)
        result = await run("--url", api.url, "--timeout", "0.3")
        assert result.code == 2, result
        assert PASSWORD not in result.out + result.err
        assert api.requests[0][2] == _basic(USER, PASSWORD)

    async def test_half_set_is_refused_before_asking(
        self, api: FakeApi, run: Run, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A password without a user is a mistake said at once, without a request."""
        monkeypatch.setenv(ENV_PASSWORD, PASSWORD)
        result = await run("--url", api.url)
        assert result.code == 2, result
        assert result.err == (
            f"walletwatch status: {ENV_USER} is not set: set both {ENV_USER} and {ENV_PASSWORD}\n"
        )
        assert api.requests == []

    async def test_a_url_holding_credentials_is_refused(self, api: FakeApi, run: Run) -> None:
        """user:password@ in --url would sit in shell history: refused, the password unsaid."""
        url = api.url.replace("http://", f"http://{USER}:{PASSWORD}@")
        result = await run("--url", url)
        assert result.code == 2, result
        assert "--url must not hold credentials" in result.err
        assert PASSWORD not in result.out + result.err
        assert api.requests == []


class TestTls:
    """https verifies the daemon's certificate; --cacert trusts a private or self-signed one."""

    async def test_an_untrusted_certificate_is_refused(self, tls_api: FakeApi, run: Run) -> None:
        """Without --cacert the system's CAs do not vouch for it: exit 2, and what to do."""
        result = await run("--url", tls_api.url)
        assert result.code == 2, result
        assert result.err.startswith(
            f"walletwatch status: {tls_api.url}: its TLS certificate is not trusted ("
        )
        assert "--cacert FILE trusts a self-signed one" in result.err
        assert tls_api.requests == []

    async def test_accepted_with_its_cacert(
        self, ca: trustme.CA, tls_api: FakeApi, run: Run, tmp_path: Path
    ) -> None:
        """With --cacert naming the CA, the daemon is asked and answers."""
        ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
        result = await run("--url", tls_api.url, "--cacert", str(tmp_path / "ca.pem"))
        assert result.code == 0, result
        assert len(tls_api.requests) == 2

    async def test_a_cacert_that_cannot_be_read(
        self, tls_api: FakeApi, run: Run, tmp_path: Path
    ) -> None:
        """A missing --cacert file is named, before any request."""
        result = await run("--url", tls_api.url, "--cacert", str(tmp_path / "none.pem"))
        assert result.code == 2, result
        assert f"--cacert {tmp_path / 'none.pem'}: cannot load it" in result.err
        assert tls_api.requests == []


def write_config(path: Path, listen: str | None, *, tls: bool = False) -> Path:
    """A daemon's config with ``listen`` (absent when None) and, with ``tls``, a TLS block."""
    body: dict[str, Any] = {"accounts": [{"name": "hot", "provider": "toy"}]}
    if listen is not None:
        body["listen"] = listen
    if tls:
        body["web"] = {"tls_server_config": {"cert_file": "c.pem", "key_file": "k.pem"}}
    path.write_text(yaml.safe_dump(body))
    return path


class TestWhere:
    """--url, else the config's listen: a wildcard means loopback, TLS means https."""

    @pytest.mark.parametrize(
        ("listen", "tls", "url"),
        [
            ("127.0.0.1:10101", False, "http://127.0.0.1:10101"),
            ("0.0.0.0:9000", False, "http://127.0.0.1:9000"),
            ("[::]:9000", False, "http://[::1]:9000"),
            ("[::1]:9000", True, "https://[::1]:9000"),
            ("10.1.2.3:443", True, "https://10.1.2.3:443"),
            ("walletwatch.internal:10101", False, "http://walletwatch.internal:10101"),
            (None, False, "http://127.0.0.1:10101"),
        ],
    )
    def test_from_the_config(self, tmp_path: Path, listen: str | None, tls: bool, url: str) -> None:
        """Each listen address and TLS setting gives the URL to ask."""
        assert base_url(None, write_config(tmp_path / "c.yaml", listen, tls=tls)) == url

    def test_url_wins_and_loses_its_trailing_slash(self, tmp_path: Path) -> None:
        """--url overrides the config and is used as a base."""
        config = write_config(tmp_path / "c.yaml", "0.0.0.0:9000")
        assert base_url("https://ww.example:8443/", config) == "https://ww.example:8443"

    def test_neither(self) -> None:
        """No --url and no config: the config's default listen address."""
        assert base_url(None, None) == "http://127.0.0.1:10101"

    async def test_a_wildcard_listen_is_asked_on_loopback(
        self, api: FakeApi, run: Run, tmp_path: Path
    ) -> None:
        """A config listening on 0.0.0.0 reaches the daemon at 127.0.0.1."""
        port = api.url.rsplit(":", 1)[1]
        result = await run("-c", str(write_config(tmp_path / "c.yaml", f"0.0.0.0:{port}")))
        assert result.code == 0, result
        assert result.out.startswith(f"walletwatch http://127.0.0.1:{port} at 2026-12-05")

    async def test_a_tls_config_is_asked_over_https(
        self, ca: trustme.CA, tls_api: FakeApi, run: Run, tmp_path: Path
    ) -> None:
        """A config with web.tls_server_config is asked over https, verified by --cacert."""
        ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
        port = tls_api.url.rsplit(":", 1)[1]
        config = write_config(tmp_path / "c.yaml", f"0.0.0.0:{port}", tls=True)
        result = await run("-c", str(config), "--cacert", str(tmp_path / "ca.pem"))
        assert result.code == 0, result
        assert len(tls_api.requests) == 2

    async def test_a_bad_listen_is_a_config_problem(self, run: Run, tmp_path: Path) -> None:
        """An unreadable listen address is exit 2 with the config's path."""
        config = write_config(tmp_path / "c.yaml", "everywhere")
        result = await run("-c", str(config))
        assert result.code == 2, result
        assert f"{config}: listen: expected HOST:PORT" in result.err


class TestJson:
    """--json prints one document: the API's lists as it gave them."""

    async def test_the_document(self, api: FakeApi, run: Run) -> None:
        """{generated_at, accounts, transfers, truncated}, equal to the answers; same exit."""
        api.accounts = [account_row("hot", in_flight=1, stuck=1), account_row("cold", "down")]
        api.transfers = [transfer_row("9", stuck=True, txid="<script>\x1b[2J\u202e")]
        result = await run("--url", api.url, "--json")
        assert result.code == 1, result
        assert json.loads(result.out) == {
            "generated_at": NOW,
            "accounts": api.accounts,
            "transfers": api.transfers,
            "truncated": False,
        }
        assert result.out.isascii()  # a provider's escape stays a JSON escape
        assert CONTROL.search(result.out.replace("\n", "")) is None


HOSTILE = {
    "ansi": "\x1b[2J\x1b]0;pwned\x07",
    "control": "a\rb\x08c\x00d\x9b",
    "newline": "first\nsecond\u2028third",
    "script": "<script>alert(1)</script>",
    "rtl": "abc\u202edef\u2066",
}


class TestHostileStrings:
    """Provider strings are shown as text: escaped, never acted on by the terminal."""

    async def test_every_field_escaped(self, api: FakeApi, run: Run) -> None:
        """Escapes, control characters, separators and bidi overrides appear as \\u escapes."""
        hostile = "".join(HOSTILE.values())
        error = {"reason": hostile, "message": hostile, "at": hostile}
        balance = {"currency": hostile, "available": hostile, "pending": hostile}
        api.accounts = [
            account_row(
                hostile,
                "down",
                provider=hostile,
                down_since=hostile,
                endpoints={hostile: {"last_success": None, "last_error": error}},
                balances=[{**balance, "low_threshold": hostile, "low": True}],
                stuck=1,
            )
        ]
        fields = ("id", "txid", "status", "state", "currency", "amount", "direction", "account")
        api.transfers = [transfer_row("1", stuck=True, **dict.fromkeys(fields, hostile))]
        result = await run("--url", api.url)
        assert result.code == 1, result
        assert CONTROL.search(result.out) is None
        assert "\u2028" not in result.out
        assert "<script>alert(1)</script>" in result.out  # text on a terminal, as it came
        shown = (
            "\\u001b[2J\\u001b]0;pwned\\u0007a\\u000db\\u0008c\\u0000d\\u009b"
            "first\\u000asecond\\u2028third<script>alert(1)</script>abc\\u202edef\\u2066"
        )
        assert result.out.count(shown) >= 10
        # Only the view's own lines: a provider's newline made none.
        assert all(not line.startswith(("second", "third")) for line in result.out.splitlines())

    async def test_a_huge_string_is_cut_and_says_so(self, api: FakeApi, run: Run) -> None:
        """A megabyte error message shows its first LONGEST characters and how many more."""
        huge = "x" * 1_000_000
        error = {"reason": "payload", "message": huge, "at": None}
        api.accounts = [
            account_row("hot", "down", endpoints={"balances": {"last_error": error}}),
        ]
        api.transfers = [transfer_row("1", txid="f" * 200_000)]
        result = await run("--url", api.url)
        assert result.code == 1, result
        assert len(result.out) < 5_000
        assert f"{'x' * LONGEST}...[{1_000_000 - LONGEST:,} more characters]" in result.out
        assert f"{'f' * LONGEST}...[{200_000 - LONGEST:,} more characters]" in result.out


class TestManyAccounts:
    """At 10,000 accounts the view lists the problems and counts the rest."""

    @pytest.fixture(name="crowd")
    def fixture_crowd(self, api: FakeApi) -> FakeApi:
        """10,000 accounts: 3 down, 2 waiting, 4 with a low balance, 1 with a stuck transfer."""
        api.accounts = [account_row(f"acct-{i:05d}", in_flight=1) for i in range(10_000)]
        for i in (17, 4242, 9999):
            api.accounts[i] = account_row(f"acct-{i:05d}", "down")
        for i in (5, 6):
            api.accounts[i] = account_row(f"acct-{i:05d}", "waiting")
        for i in (100, 200, 300, 400):
            api.accounts[i]["balances"][0]["low"] = True
        api.accounts[7000]["stuck"] = 1
        api.transfers = [
            transfer_row(str(i), account=f"acct-{i:05d}", stuck=i == 7000)
            for i in range(10_000)
            if i not in (5, 6, 17, 4242, 9999)
        ]
        return api

    async def test_problems_in_full_the_rest_counted(self, crowd: FakeApi, run: Run) -> None:
        """Each account with a problem is listed; the healthy 9,990 are one line."""
        result = await run("--url", crowd.url)
        assert result.code == 1, result
        lines = result.out.splitlines()
        assert len(lines) < 100, len(lines)
        listed = {m for line in lines for m in re.findall(r"toy/(acct-\d+)", line)}
        problems = {f"acct-{i:05d}" for i in (5, 6, 17, 4242, 9999, 100, 200, 300, 400, 7000)}
        assert problems <= listed
        assert "... and 9,990 more accounts up, no balance low, nothing stuck" in result.out
        assert "... and 9,974 more transfers in flight, none stuck" in result.out
        assert lines[-1] == (
            "PROBLEM: 10,000 accounts: 3 down, 2 waiting, 9,995 up; 4 balances low;"
            " 9,995 transfers in flight, 1 stuck"
        )
        # The down ones first, then waiting, then the up ones with a problem.
        order = [
            lines.index(next(x for x in lines if f"toy/{a} " in x))
            for a in ("acct-00017", "acct-00005", "acct-07000", "acct-00100")
        ]
        assert order == sorted(order)

    async def test_all_lists_every_one(self, crowd: FakeApi, run: Run) -> None:
        """--all lists every account and every transfer."""
        result = await run("--url", crowd.url, "--all")
        assert result.code == 1, result
        listed = set(re.findall(r"^\S+\s+toy/(acct-\d+)", result.out, re.MULTILINE))
        assert len(listed) == 10_000
        assert "more accounts" not in result.out
        assert "more transfers" not in result.out

    async def test_a_reader_that_has_gone(self, crowd: FakeApi) -> None:
        """Piped to a reader that stopped (``| head``): no traceback, the exit status kept."""
        read_end, write_end = os.pipe()
        proc = await asyncio.create_subprocess_exec(
            *COMMAND,
            "--url",
            crowd.url,
            "--all",
            stdout=write_end,
            stderr=asyncio.subprocess.PIPE,
            env=environment(),
        )
        os.close(write_end)
        os.close(read_end)  # before the command writes: its first write meets a closed pipe
        _, err = await asyncio.wait_for(proc.communicate(), 30)
        assert (proc.returncode, err) == (1, b"")


COMMAND = (sys.executable, "-m", "walletwatch", "status")


def environment(**extra: str) -> dict[str, str]:
    """This process's environment without credentials or NO_COLOR, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if k not in (ENV_USER, ENV_PASSWORD, "NO_COLOR")}
    return env | extra


class TestColour:
    """Colour on a terminal only, and never with NO_COLOR."""

    async def test_plain_when_not_a_terminal(self, api: FakeApi, run: Run) -> None:
        """Output to a file or pipe has no escape sequences."""
        api.accounts = [account_row("hot", "down")]
        result = await run("--url", api.url)
        assert "\x1b" not in result.out

    @pytest.mark.parametrize("no_color", [None, "1"])
    async def test_a_terminal(self, api: FakeApi, no_color: str | None) -> None:
        """On a pseudo-terminal the verdict is coloured, unless NO_COLOR is set."""
        api.accounts = [account_row("hot", "down")]
        env = environment() if no_color is None else environment(NO_COLOR=no_color)
        leader, follower = pty.openpty()
        proc = await asyncio.create_subprocess_exec(
            *COMMAND,
            "--url",
            api.url,
            stdout=follower,
            env=env,
        )
        os.close(follower)
        assert await asyncio.wait_for(proc.wait(), 30) == 1
        out = b""
        while True:
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # EIO: the terminal's other side is closed and drained
                break
            if not chunk:
                break
            out += chunk
        os.close(leader)
        text = out.decode()
        assert "PROBLEM: 1 account: 1 down" in text
        if no_color is None:
            assert f"{COLOURS['bad']}DOWN" in text
        else:
            assert "\x1b" not in text
