"""The walletwatch command: exit codes, output, signals, and the demo's promise."""

from __future__ import annotations

import argparse
import json
import os
import pty
import select
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path

import pytest
import yaml

from tests.simthread import serve_in_thread
from walletwatch import __version__
from walletwatch.app import Daemon
from walletwatch.cli import _parser, main
from walletwatch.clock import SystemClock
from walletwatch.config import Listen, load_config
from walletwatch.console import COLOURS
from walletwatch.demo import demo_yaml, simulator_banner
from walletwatch.sim import Simulator

KEY, SECRET = "cli-key", "cli-secret"
DEADLINE = 20.0  # seconds a subprocess gets to come up; generous for a loaded CI machine


@pytest.fixture(name="sim_url")
def fixture_sim_url() -> Iterator[str]:
    """A simulator with one funded account, served from a thread."""
    sim = Simulator(rate_limit=100_000)
    sim.westwallet.add_account(KEY, SECRET, {"BTC": Decimal("1.5")})
    sim.westwallet.add_transaction(KEY, type="send", currency="BTC", amount=Decimal("0.1"))
    with serve_in_thread(sim) as url:
        yield url


def write_config(tmp_path: Path, sim_url: str, secret: str = SECRET, **extra: object) -> Path:
    """A config file for one account at the simulator."""
    path = tmp_path / "config.yaml"
    body = {
        "listen": "127.0.0.1:0",
        "state_path": "state.db",
        "events_file": "events.jsonl",
        "providers": {"westwallet": {"rate_limit": 1000}},
        "accounts": [
            {
                "name": "hot",
                "provider": "westwallet",
                "base_url": f"{sim_url}/westwallet",
                "credentials": {"api_key": KEY, "secret_key": secret},
                "interval": "1s",
            }
        ],
        **extra,
    }
    path.write_text(yaml.safe_dump(body))
    return path


def free_port() -> int:
    """A loopback port that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(
    url: str, predicate: Callable[[str], bool] = lambda _: True, deadline: float = DEADLINE
) -> str:
    """GET url until it answers 200 (and the body satisfies predicate); return the body."""
    end = time.monotonic() + deadline
    last = ""
    while time.monotonic() < end:
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:  # noqa: S310 - loopback only
                last = str(resp.read().decode())
                if predicate(last):
                    return last
        except OSError:
            pass
        time.sleep(0.1)  # waiting on a real subprocess: there is no clock to fake
    raise AssertionError(f"{url} not ready in {deadline}s; last body: {last[:500]}")


class TestCheck:
    """walletwatch check: 0 for a good file, 2 with every problem for a bad one."""

    def test_good_config(
        self, tmp_path: Path, sim_url: str, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """A valid file exits 0 and says how many accounts it has."""
        assert main(["check", "-c", str(write_config(tmp_path, sim_url))]) == 0
        assert "1 account" in capsys.readouterr().out

    def test_bad_config_lists_every_problem(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """Two problems in one file are both reported, with paths, and no traceback."""
        path = tmp_path / "config.yaml"
        path.write_text(
            "accounts:\n"
            "  - name: a\n    provider: westwallet\n    interval: soon\n"
            "    credentials: {api_key: {env: NOPE_KEY}, secret_key: x}\n"
        )
        assert main(["check", "-c", str(path)]) == 2
        err = capsys.readouterr().err
        assert "accounts[0].interval" in err
        assert "NOPE_KEY" in err
        assert "Traceback" not in err

    def test_missing_file(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """A missing file exits 2 with its path."""
        assert main(["check", "-c", str(tmp_path / "nope.yaml")]) == 2
        assert "nope.yaml" in capsys.readouterr().err

    def test_version(self, capsys: pytest.CaptureFixture[str]) -> None:
        """--version prints the version."""
        with pytest.raises(SystemExit) as exit_info:
            main(["--version"])
        assert exit_info.value.code == 0
        assert __version__ in capsys.readouterr().out


class TestOnce:
    """walletwatch once: one poll of everything, as a table or JSON."""

    def test_json(self, tmp_path: Path, sim_url: str, capsys: pytest.CaptureFixture[str]) -> None:
        """--json prints balances and in-flight counts and exits 0 when all is well."""
        assert main(["once", "-c", str(write_config(tmp_path, sim_url)), "--json"]) == 0
        (row,) = json.loads(capsys.readouterr().out)
        assert row["account"] == "hot"
        assert row["up"] is True
        assert row["balances"]["BTC"]["available"] == str(Decimal("1.5") - Decimal("0.1"))
        assert row["in_flight"] == 1
        assert not (tmp_path / "state.db").exists()

    def test_table_and_failure(
        self, tmp_path: Path, sim_url: str, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """A refused key exits 1 and the table names the error without the secret."""
        path = write_config(tmp_path, sim_url, secret="wrong-secret")
        assert main(["once", "-c", str(path)]) == 1
        out = capsys.readouterr().out
        assert "NO" in out
        assert "HTTP 401" in out
        assert "wrong-secret" not in out


class TestRun:
    """walletwatch run as a real process."""

    def test_serves_and_stops_cleanly(self, tmp_path: Path, sim_url: str) -> None:
        """run becomes ready, serves metrics, and exits 0 on SIGTERM with state committed."""
        port = free_port()
        path = write_config(tmp_path, sim_url, listen=f"127.0.0.1:{port}")
        proc = subprocess.Popen(
            [sys.executable, "-m", "walletwatch", "run", "-c", str(path)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        try:
            wait_for(f"http://127.0.0.1:{port}/readyz")
            metrics = wait_for(f"http://127.0.0.1:{port}/metrics")
            assert 'walletwatch_up{account="hot",provider="westwallet"} 1.0' in metrics
        finally:
            proc.send_signal(signal.SIGTERM)
            out, err = proc.communicate(timeout=DEADLINE)
        assert proc.returncode == 0, err
        logs = [json.loads(line) for line in out.splitlines()]
        assert [e["event"] for e in logs if e.get("level")][-1] == "walletwatch.stopped"
        assert (tmp_path / "state.db").exists()


class TestDemo:
    """walletwatch demo keeps every promise the README makes about it."""

    def test_what_the_readme_promises(self) -> None:
        """Seven accounts at five providers up within 10 s; three stuck withdrawals (WestWallet
        pending, bitexbit in moderation, Sila in review); ww-exchange-hot's USDT runs low;
        piped, events and logs are JSON lines told apart by their kind."""
        port = free_port()
        proc = subprocess.Popen(
            [sys.executable, "-m", "walletwatch", "demo", "--listen", f"127.0.0.1:{port}"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        lines: list[str] = []
        stdout = proc.stdout
        assert stdout is not None
        reader = threading.Thread(target=lambda: lines.extend(iter(stdout.readline, "")))
        reader.start()

        def complete(body: str) -> bool:
            ups = [line for line in body.splitlines() if line.startswith("walletwatch_up{")]
            wanted = ("walletwatch_balance{", "walletwatch_transfers_in_flight{")
            return (
                len(ups) == 7
                and all(w in body for w in wanted)
                and all(line.endswith(" 1.0") for line in ups)
            )

        def story() -> set[tuple[str, str, str]]:
            events = [
                json.loads(line) for line in list(lines) if line.startswith('{"kind":"event"')
            ]
            return {
                (
                    e["event"],
                    e["account"],
                    str(e.get("status_name") or e.get("status") or e["currency"]),
                )
                for e in events
                if e["event"] in ("withdrawal.stuck", "balance.low")
            }

        wanted = {
            ("withdrawal.stuck", "ww-exchange-hot", "pending"),
            ("withdrawal.stuck", "bx-gateway", "moderation"),
            ("withdrawal.stuck", "sila-ecdsa", "review"),
            ("balance.low", "ww-exchange-hot", "USDT"),
        }
        try:
            metrics = wait_for(f"http://127.0.0.1:{port}/metrics", complete, deadline=10.0)
            end = time.monotonic() + 45
            while not wanted <= story() and time.monotonic() < end:
                time.sleep(0.2)  # a real subprocess: there is no clock to fake
        finally:
            proc.send_signal(signal.SIGINT)
            _, err = proc.communicate(timeout=DEADLINE)
            reader.join(timeout=DEADLINE)
        assert proc.returncode == 0, err
        assert f"http://127.0.0.1:{port}/metrics" in err
        providers = {
            line.split('provider="')[1].split('"')[0]
            for line in metrics.splitlines()
            if line.startswith("walletwatch_up{")
        }
        assert providers == {"westwallet", "kredswallet", "potwallet", "sila", "bitexbit"}
        assert wanted <= story(), story()
        records = []
        for i, line in enumerate(lines):  # every line whole: logs and events never mix
            try:
                records.append(json.loads(line))
            except ValueError:
                mixed = lines[max(i - 1, 0) : i + 1]
                raise AssertionError(f"not one JSON object: {mixed}") from None
        assert {r["kind"] for r in records} == {"event", "log"}
        assert all(("event_id" in r) == (r["kind"] == "event") for r in records)

    def test_a_terminal_gets_one_short_coloured_line_per_event(self) -> None:
        """On a terminal, events are short lines coloured by severity, not JSON."""
        port = free_port()
        leader, follower = pty.openpty()
        proc = subprocess.Popen(
            [sys.executable, "-m", "walletwatch", "demo", "--listen", f"127.0.0.1:{port}"],
            stdout=follower,
            stderr=subprocess.PIPE,
        )
        os.close(follower)
        try:
            wait_for(f"http://127.0.0.1:{port}/metrics", lambda body: "walletwatch_up{" in body)
            out = b""
            end = time.monotonic() + DEADLINE
            while b"deposit.detected" not in out and time.monotonic() < end:
                ready, _, _ = select.select([leader], [], [], 0.5)
                if ready:
                    out += os.read(leader, 65536)
        finally:
            proc.send_signal(signal.SIGINT)
            proc.communicate(timeout=DEADLINE)
            os.close(leader)
        events = [
            line
            for line in out.decode().splitlines()
            if "deposit.detected" in line and "event_id" not in line
        ]
        assert events, out[-2000:]
        for line in events:
            assert line.startswith(COLOURS["info"]), line
            assert len(line) < 160, line


class TestHelp:
    def test_every_option_says_what_it_does(self) -> None:
        """Every option of every command has help text; check's --shard does not say poll."""
        parser = _parser()
        (commands,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        for name, sub in commands.choices.items():
            for action in sub._actions:
                assert action.help, f"walletwatch {name} {'/'.join(action.option_strings)}"
        check = commands.choices["check"]
        (shard,) = [a for a in check._actions if "--shard" in a.option_strings]
        assert "poll" not in str(shard.help)


class TestSimulateBanner:
    def test_names_every_account_with_its_base_url_and_credentials(self) -> None:
        """The banner gives, per account of the simulator, what a config needs."""
        banner = simulator_banner("http://127.0.0.1:10102")
        lines = banner.splitlines()
        assert lines[0] == "simulator listening on http://127.0.0.1:10102"
        for provider, path, credential in (
            ("westwallet", "/westwallet", "api_key=demo-hot-key"),
            ("kredswallet", "/kredswallet/api", "api_secret=demo-kreds-secret"),
            ("potwallet", "/potwallet", "public_key=demo-pot-public"),
            ("sila", "/sila", "client_id=walletwatch-demo-client"),
            ("bitexbit", "/bitexbit/api/gateway", "secret_key=demo-bitexbit-secret"),
        ):
            (line,) = [line for line in lines if credential in line]
            assert line.split()[0] == provider
            assert f"base_url=http://127.0.0.1:10102{path} " in line


class TestSimulatorIndex:
    def test_says_what_simulate_prints(self) -> None:
        """The simulator's / lists the same accounts, with base URLs on its own address, and
        how to set a push URL."""
        sim = Simulator()
        with serve_in_thread(sim) as url:
            page = wait_for(url + "/")
        assert page.startswith(f"walletwatch simulator at {url}\n")
        said = f"{simulator_banner(url)}\n{sim.push_help()}"
        assert page.splitlines()[1:] == said.splitlines()[1:]
        assert f"base_url={url}/bitexbit/api/gateway " in page


class TestOnceRetries:
    def test_waits_out_one_retry_after(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """Run twice in a row on a key's 1 request/s, once meets the provider's 429 (the
        first run's requests still count there), waits it out and reports the account up."""
        sim = Simulator(rate_limit=1)
        sim.westwallet.add_account(KEY, SECRET, {"BTC": Decimal("1.5")})
        limits = {"westwallet": {"rate_limit": 1}}
        with serve_in_thread(sim) as url:
            path = write_config(tmp_path, url, providers=limits)
            for _ in range(2):
                assert main(["once", "-c", str(path), "--json"]) == 0
                (row,) = json.loads(capsys.readouterr().out)
                assert row["up"] is True, row["errors"]
        assert sim.requests.count(status=429) >= 1, "no 429 was answered: the test proves nothing"

    def test_the_table_gives_each_failure_its_reason(
        self, tmp_path: Path, sim_url: str, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """A refused key shows as ``(auth)`` beside each endpoint's error."""
        path = write_config(tmp_path, sim_url, secret="wrong-secret")
        assert main(["once", "-c", str(path)]) == 1
        assert "balances (auth): " in capsys.readouterr().out


class TestSimulatorExample:
    """examples/simulator.yaml: every provider against the simulator, usable as it is."""

    EXAMPLE = Path(__file__).parent.parent / "examples" / "simulator.yaml"

    def test_holds_the_simulators_accounts(self) -> None:
        """Its accounts are the demo's, pointed at simulate's default address."""
        example = yaml.safe_load(self.EXAMPLE.read_text())
        demo = demo_yaml("http://127.0.0.1:10102", Listen("127.0.0.1", 10101))
        assert example["accounts"] == demo["accounts"]
        assert example["listen"] == "127.0.0.1:10101"

    def test_check_takes_it_as_it_is(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """check accepts it at the mode a checkout gives it (world-readable)."""
        copy = tmp_path / "simulator.yaml"
        copy.write_text(self.EXAMPLE.read_text())
        copy.chmod(0o644)
        assert main(["check", "-c", str(copy)]) == 0
        assert "OK, 7 account(s)" in capsys.readouterr().out

    def test_every_account_is_up_against_the_simulator(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """once with it (only the simulator's address changed) sees every account up."""
        with serve_in_thread(Simulator(scenario=True, rate_limit=100_000)) as url:
            copy = tmp_path / "simulator.yaml"
            copy.write_text(self.EXAMPLE.read_text().replace("http://127.0.0.1:10102", url))
            assert main(["once", "-c", str(copy), "--json"]) == 0
        rows = json.loads(capsys.readouterr().out)
        assert len(rows) == 7
        assert all(row["up"] for row in rows), [r["errors"] for r in rows if not r["up"]]


class TestCheckOffline:
    REPO = Path(__file__).parent.parent

    def test_the_shipped_example_passes_offline(
        self, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """config.yaml on a fresh clone: its unset variables and credentials fail a full check,
        and check --offline validates its structure without them."""
        for name in list(os.environ):
            if name.endswith(("_KEY", "_SECRET")) or name == "CREDENTIALS_DIRECTORY":
                monkeypatch.delenv(name)
        example = str(self.REPO / "config.yaml")
        assert main(["check", "-c", example]) == 2
        assert "CREDENTIALS_DIRECTORY is not set" in capsys.readouterr().err
        assert main(["check", "-c", example, "--offline"]) == 0
        assert "OK, 5 account(s)" in capsys.readouterr().out

    def test_offline_still_checks_the_form_of_references(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """A malformed reference is a problem offline too; a well-formed one is not read."""
        path = write_config(tmp_path, "http://127.0.0.1:9")
        body = yaml.safe_load(path.read_text())
        body["accounts"][0]["credentials"] = {"api_key": {"env": ""}, "secret_key": {"file": "x"}}
        path.write_text(yaml.safe_dump(body))
        path.chmod(0o600)
        assert main(["check", "-c", str(path), "--offline"]) == 2
        err = capsys.readouterr().err
        assert "accounts[0].credentials.api_key: env: expected a non-empty name" in err
        assert "secret_key" not in err  # {file: x} is well formed; offline, it is not read


class TestUnreportedCurrencies:
    def test_a_typo_is_shown_logged_and_exported(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """low_balance in lower case still watches USDT; a code the provider never reports
        (USTD) is named by once's table and JSON, after the first successful poll."""
        sim = Simulator(rate_limit=100_000)
        sim.westwallet.add_account(KEY, SECRET, {"USDT": Decimal("0.11"), "BTC": Decimal(1)})
        with serve_in_thread(sim) as url:
            path = write_config(
                tmp_path,
                url,
                defaults={
                    "low_balance": {"usdt": "1000", "ustd": "5"},
                    "currencies": ["usdt", "ustd"],
                },
            )
            assert main(["once", "-c", str(path), "--json"]) == 0
            (row,) = json.loads(capsys.readouterr().out)
            assert set(row["balances"]) == {"USDT"}
            assert row["unreported"] == ["USTD"]
            assert main(["once", "-c", str(path)]) == 0
        assert "not reported: USTD (check the config's codes)" in capsys.readouterr().out

    async def test_the_metric_follows_the_answers(self, tmp_path: Path) -> None:
        """walletwatch_currency_unreported is 1 while an answer lacks the code, gone once one
        has it, and gone with an account a reload removes."""
        sim = Simulator(rate_limit=100_000)
        sim.westwallet.add_account(KEY, SECRET, {"USDT": Decimal(5)})
        with serve_in_thread(sim) as url:
            path = write_config(tmp_path, url, defaults={"low_balance": {"BTC": "1", "XYZ": "1"}})
            config = load_config(path)
            daemon = Daemon(config, clock=SystemClock())
            await daemon.start(serve=False)
            try:
                watcher = daemon.watchers["hot"]
                assert (await watcher.poll("balances")).ok
                sample = {"provider": "westwallet", "account": "hot", "currency": "BTC"}
                name = "walletwatch_currency_unreported"
                assert daemon.registry.get_sample_value(name, sample) == 1.0
                sim.westwallet.set_balance(KEY, "BTC", Decimal(2))
                assert (await watcher.poll("balances")).ok
                assert daemon.registry.get_sample_value(name, sample) is None
                typo = {**sample, "currency": "XYZ"}
                assert daemon.registry.get_sample_value(name, typo) == 1.0
                body = yaml.safe_load(path.read_text())
                body["accounts"][0]["name"] = "renamed"
                path.write_text(yaml.safe_dump(body))
                await daemon.reload(load_config(path))  # "hot" is gone, and so is its series
                assert daemon.registry.get_sample_value(name, typo) is None
            finally:
                await daemon.close()


class TestErrorsInWords:
    def test_a_refusal_in_a_200_answer_names_the_request(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """PotWallet refuses a wrong key in a 200 answer's body: once's error names the method
        and URL it came from (no query), once, with what the provider said."""
        with serve_in_thread(Simulator(scenario=True, rate_limit=100_000)) as url:
            path = tmp_path / "config.yaml"
            account = {
                "name": "pot",
                "provider": "potwallet",
                "base_url": f"{url}/potwallet",
                "credentials": {"public_key": "demo-pot-public", "private_key": "wrong"},
            }
            body = {"listen": "127.0.0.1:0", "state_path": "s.db", "accounts": [account]}
            path.write_text(yaml.safe_dump(body))
            assert main(["once", "-c", str(path), "--json"]) == 1
        (row,) = json.loads(capsys.readouterr().out)
        error = row["errors"]["balances"]
        assert error.startswith(f"GET {url}/potwallet/balance: "), error
        assert "balances: " not in error
        assert row["reasons"]["balances"] == "auth"
