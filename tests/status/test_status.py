"""``walletwatch status`` against a fake operator API: exit status, failures, credentials, TLS.

The command runs as the console script does (``cli.main``), in a thread of its own so that
its event loop and the server's do not share one.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
import trustme
import yaml

from tests.status.fakeapi import (
    PASSWORD,
    USER,
    FakeApi,
    Run,
    account_row,
    basic,
    credentials,
    free_port,
    transfer_row,
)
from walletwatch.errors import StatusUnavailable
from walletwatch.statuscmd import ENV_PASSWORD, ENV_USER, base_url
from walletwatch.statusdoc import read_snapshot, stuck_total, with_stuck


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
        assert [path for path, _, _ in api.requests] == [
            "/api/v1/accounts",
            "/api/v1/transfers",
            "/api/v1/transfers",
        ]

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

    async def test_no_account_vouches_for_nothing(self, api: FakeApi, run: Run) -> None:
        """An answer with no accounts (a follower's, before it answered 503) is exit 1."""
        api.accounts = []
        result = await run("--url", api.url)
        assert result.code == 1, result
        assert "no accounts: this daemon watches none, so it vouches for none" in result.out
        assert result.out.splitlines()[-1] == (
            "PROBLEM: 0 accounts; 0 transfers in flight, 0 stuck"
        )

    async def test_the_table_asks_only_for_what_it_shows(self, api: FakeApi, run: Run) -> None:
        """Every stuck transfer and the oldest 20 others; the accounts count the rest."""
        api.accounts = [account_row("hot", in_flight=200_000, stuck=3)]
        api.transfers = [
            transfer_row(str(n), stuck=n % 10 == 0, age_seconds=10_000.0 - n) for n in range(30)
        ]
        result = await run("--url", api.url)
        assert result.code == 1, result
        assert [query for _, query, _ in api.requests] == [
            "",
            "state=stuck&limit=100000",
            "state=in_flight&limit=23",
        ]
        out = result.out
        assert "STUCK TRANSFERS (3)" in out
        assert "IN FLIGHT (199,997)" in out
        assert "... and 199,977 more transfers in flight, none stuck (--all lists them)" in out
        assert out.splitlines()[-1].endswith("200,000 transfers in flight, 3 stuck")

    async def test_a_listing_cut_by_the_daemon_says_so(self, api: FakeApi, run: Run) -> None:
        """--all lists what the daemon gave, says it stopped there; the counts stay complete."""
        api.accounts = [account_row("hot", in_flight=200_000, stuck=3)]
        api.transfers = [transfer_row("1")]
        api.truncated = True
        result = await run("--url", api.url, "--all")
        assert result.code == 1, result
        assert [query for _, query, _ in api.requests] == ["", "state=in_flight&limit=100000"]
        assert "(the daemon's listing stopped at 1 transfers; the counts above are complete)" in (
            result.out
        )
        assert "more transfers" not in result.out
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
        assert [auth for _, _, auth in api.requests] == [basic(USER, PASSWORD)] * 3
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
        assert api.requests[0][2] == basic(USER, PASSWORD)

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
        assert len(tls_api.requests) == 3

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
        assert len(tls_api.requests) == 3

    async def test_a_bad_listen_is_a_config_problem(self, run: Run, tmp_path: Path) -> None:
        """An unreadable listen address is exit 2 with the config's path."""
        config = write_config(tmp_path / "c.yaml", "everywhere")
        result = await run("-c", str(config))
        assert result.code == 2, result
        assert f"{config}: listen: expected HOST:PORT" in result.err


class TestTableAnswer:
    """The table's transfers: every stuck one, then the oldest of the rest."""

    def test_the_stuck_listed_once(self) -> None:
        """A stuck transfer among the oldest is not listed twice."""
        stuck = {"transfers": [transfer_row("1", stuck=True)], "truncated": False}
        oldest = {"transfers": [transfer_row("1", stuck=True), transfer_row("2")]}
        assert with_stuck(stuck, oldest) == {
            "transfers": [transfer_row("1", stuck=True), transfer_row("2")],
            "truncated": False,
        }

    @pytest.mark.parametrize(
        ("stuck", "oldest", "kept"),
        [
            ("<html>", {"transfers": []}, "<html>"),
            ({"transfers": {}}, {"transfers": []}, {"transfers": {}}),
            ({"transfers": []}, [], []),
            ({"transfers": []}, {"transfers": None}, {"transfers": None}),
        ],
    )
    def test_another_shape_is_left_for_the_reader_to_name(
        self, stuck: object, oldest: object, kept: object
    ) -> None:
        """An answer that is not the API's is passed on as it is, for read_snapshot to refuse."""
        assert with_stuck(stuck, oldest) == kept
        with pytest.raises(StatusUnavailable, match="not walletwatch's operator API"):
            read_snapshot({"accounts": []}, kept)

    @pytest.mark.parametrize(
        ("accounts", "total"),
        [
            ({"accounts": [{"stuck": 2}, {"stuck": 3}, {}]}, 5),
            ({"accounts": [{"stuck": True}, {"stuck": -1}, {"stuck": "9"}, 7]}, 0),
            ({"accounts": "none"}, 0),
            ([], 0),
        ],
    )
    def test_the_stuck_count_sizes_the_request(self, accounts: object, total: int) -> None:
        """The accounts' stuck counts, whatever else the answer holds."""
        assert stuck_total(accounts) == total
