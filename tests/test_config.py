"""Tests of loading and validating config.yaml (walletwatch.config, walletwatch.schema)."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Mapping
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from walletwatch import schema
from walletwatch.config import (
    Config,
    Listen,
    ProviderSettings,
    Secret,
    format_duration,
    load_config,
    parse_config,
    parse_duration,
)
from walletwatch.errors import ConfigError
from walletwatch.providers import SCHEMAS as PROVIDERS

UNITS = (
    ": a number and a unit (ms, s, m, h, d) with no spaces, or several from the largest unit "
    "down, e.g. '30s', '1h30m'"
)

REPO = Path(__file__).resolve().parent.parent
ENV = {"WW_KEY": "env-api-key-0001", "WW_SECRET": "env-secret-0002"}
SECRETS = {"api_key": {"env": "WW_KEY"}, "secret_key": {"env": "WW_SECRET"}}

# One valid account per provider; tests copy and change them.
ACCOUNTS: dict[str, dict[str, object]] = {
    "westwallet": {"name": "ww", "provider": "westwallet", "credentials": SECRETS},
    "kredswallet": {
        "name": "kreds",
        "provider": "kredswallet",
        "credentials": {"api_key": "kreds-key", "api_secret": "kreds-secret"},
    },
    "potwallet": {
        "name": "pot",
        "provider": "potwallet",
        "credentials": {"public_key": "pot-public", "private_key": "pot-private"},
    },
    "sila": {
        "name": "sila",
        "provider": "sila",
        "credentials": {
            "app_handle": "app.silamoney.eth",
            "user_handle": "user.silamoney.eth",
            "app_private_key": "0xapp-private",
            "user_private_key": "0xuser-private",
        },
    },
    "bitexbit": {
        "name": "bxb",
        "provider": "bitexbit",
        "credentials": {"api_key": "bxb-key", "secret_key": "bxb-secret"},
    },
}


def account(provider: str = "westwallet", /, **changes: object) -> dict[str, object]:
    """A valid account entry of ``provider`` with ``changes`` applied."""
    return {**ACCOUNTS[provider], **changes}


def parse(data: Mapping[str, object], base_dir: Path, environ: Mapping[str, str] = ENV) -> Config:
    """parse_config with the test environment."""
    return parse_config(data, base_dir=base_dir, environ=environ)


def problems(
    data: Mapping[str, object], base_dir: Path, environ: Mapping[str, str] = ENV
) -> list[str]:
    """The problems parse_config reports for ``data`` (failing if it reports none)."""
    with pytest.raises(ConfigError) as caught:
        parse(data, base_dir, environ)
    return list(caught.value.problems)


@pytest.fixture(name="write")
def fixture_write(tmp_path: Path) -> Callable[[str], Path]:
    """Write YAML text to config.yaml in a temporary directory and return its path."""

    def write(text: str) -> Path:
        path = tmp_path / "config.yaml"
        path.write_text(text, encoding="utf-8")
        return path

    return write


@pytest.fixture(name="creds_dir")
def fixture_creds_dir(tmp_path: Path) -> Path:
    """A systemd-style credentials directory holding one credential, ``bxb_secret``."""
    directory = tmp_path / "credentials"
    directory.mkdir()
    (directory / "bxb_secret").write_text("cred-secret-0003\n", encoding="utf-8")
    return directory


class TestDurations:
    """parse_duration and format_duration."""

    @pytest.mark.parametrize(
        ("text", "seconds"),
        [
            ("500ms", 0.5),
            ("30s", 30.0),
            ("5m", 300.0),
            ("1h", 3600.0),
            ("1d", 86400.0),
            ("1h30m", 5400.0),
            ("2m30s500ms", 150.5),
            ("1.5s", 1.5),
            ("0s", 0.0),
        ],
    )
    def test_parses_units_and_compounds(self, text: str, seconds: float) -> None:
        """Every unit and a compound of them parse to seconds."""
        assert parse_duration(text) == seconds

    @pytest.mark.parametrize(
        ("text", "message"),
        [
            ("soon", "invalid duration 'soon'" + UNITS),
            ("30", "invalid duration '30': add a unit, e.g. '30s'"),
            ("1.5", "invalid duration '1.5': add a unit, e.g. '1.5s'"),
            ("", "invalid duration ''" + UNITS),
            ("-5s", "invalid duration '-5s'" + UNITS),
            ("5 s", "invalid duration '5 s'" + UNITS),
            ("1h30", "invalid duration '1h30'" + UNITS),
            ("5S", "invalid duration '5S'" + UNITS),
            ("s", "invalid duration 's'" + UNITS),
            ("5w", "invalid duration '5w'" + UNITS),
            (".5s", "invalid duration '.5s'" + UNITS),
        ],
    )
    def test_refuses_anything_else(self, text: str, message: str) -> None:
        """Text that is not a sequence of number-unit pairs is a ValueError naming it and
        the units ('1hr', '10 s' and '1h30' used to say only that they were invalid)."""
        with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
            parse_duration(text)

    @pytest.mark.parametrize(
        ("seconds", "text"),
        [(5400, "1h30m"), (0.5, "500ms"), (0, "0s"), (90061.001, "1d1h1m1s1ms"), (0.0005, "0.5ms")],
    )
    def test_formats_compound_text(self, seconds: float, text: str) -> None:
        """format_duration writes the largest units first and leaves out zero parts."""
        assert format_duration(seconds) == text

    @pytest.mark.parametrize("seconds", [-1.0, float("nan"), float("inf")])
    def test_format_refuses_impossible_durations(self, seconds: float) -> None:
        """Negative and non-finite durations cannot be formatted."""
        with pytest.raises(ValueError, match="cannot format duration"):
            format_duration(seconds)

    @given(st.integers(min_value=0, max_value=10**13))
    def test_format_then_parse_round_trips(self, milliseconds: int) -> None:
        """Any whole number of milliseconds survives format_duration then parse_duration."""
        assert parse_duration(format_duration(milliseconds / 1000)) == milliseconds / 1000

    @given(
        st.lists(
            st.tuples(st.integers(0, 10**6), st.sampled_from(["d", "h", "m", "s", "ms"])),
            min_size=1,
            max_size=6,
        )
    )
    def test_compound_is_the_sum_of_its_parts(self, parts: list[tuple[int, str]]) -> None:
        """A compound duration is the exact sum of its parts, in any order."""
        unit_ms = {"d": 86_400_000, "h": 3_600_000, "m": 60_000, "s": 1000, "ms": 1}
        text = "".join(f"{count}{unit}" for count, unit in parts)
        total_ms = sum(count * unit_ms[unit] for count, unit in parts)
        assert parse_duration(text) == total_ms / 1000


class TestSecret:
    """The Secret wrapper."""

    def test_hides_its_value(self) -> None:
        """repr, str and f-strings show stars, never the value."""
        secret = Secret("hunter2")
        assert (repr(secret), str(secret), f"{secret}") == ("Secret('***')", "***", "***")

    def test_reveal_returns_the_value(self) -> None:
        """reveal() is the one way to the credential."""
        assert Secret("hunter2").reveal() == "hunter2"

    def test_compares_by_value(self) -> None:
        """Secrets with the same value are equal."""
        assert Secret("a") == Secret("a")
        assert Secret("a") != Secret("b")


class TestLoading:
    """load_config: reading the file and what a minimal config defaults to."""

    def test_minimal_config_gets_every_default(self, write: Callable[[str], Path]) -> None:
        """A config with one bare account gets the documented defaults everywhere."""
        path = write(
            "accounts:\n"
            "  - name: hot\n"
            "    provider: westwallet\n"
            "    credentials: {api_key: {env: WW_KEY}, secret_key: {env: WW_SECRET}}\n"
        )
        config = load_config(path, environ=ENV)
        assert config.listen == Listen("127.0.0.1", 10101)
        assert config.state_path == path.parent / "walletwatch.db"
        assert (config.events_file, config.log_format) == (None, None)
        assert list(config.providers) == list(PROVIDERS)
        assert config.providers["westwallet"] == ProviderSettings(
            rate_limit=2.0,
            host_rate_limit=None,
            connect_timeout=5.0,
            read_timeout=15.0,
            timeout=30.0,
            max_backoff=300.0,
            max_pages=10,
        )
        assert config.providers["potwallet"].rate_limit == 1.0
        assert config.providers["bitexbit"].host_rate_limit == 100.0
        hot = config.account("hot")
        assert hot.base_url == "https://api.westwallet.io"
        assert (hot.interval, hot.withdrawal_stuck_after, hot.deposit_stuck_after) == (
            60.0,
            3600.0,
            21600.0,
        )
        assert (hot.down_after, hot.currencies, dict(hot.low_balance)) == (3, None, {})
        assert hot.credentials == {
            "api_key": Secret("env-api-key-0001"),
            "secret_key": Secret("env-secret-0002"),
        }

    def test_missing_file(self, tmp_path: Path) -> None:
        """A missing config file is one problem naming the file."""
        path = tmp_path / "nope.yaml"
        with pytest.raises(ConfigError) as caught:
            load_config(path, environ={})
        assert caught.value.problems == (f"{path}: cannot read config: No such file or directory",)

    @pytest.mark.parametrize(
        ("text", "problem"),
        [
            (
                "accounts:\n  - name: hot\n   provider: westwallet\n",
                (
                    "invalid YAML at line 3, column 4: while parsing a block collection, "
                    "expected <block end>, but found '<block mapping start>'"
                ),
            ),
            (
                'listen: "127.0.0.1\n',
                (
                    "invalid YAML at line 2, column 1: while scanning a quoted "
                    "scalar, found unexpected end of stream"
                ),
            ),
            (
                "listen: a\nstate_path: b\nlisten: c\n",
                "invalid YAML at line 3, column 1: duplicate key 'listen'",
            ),
            ("", "the file is empty"),
            ("- name: hot\n", "expected a mapping at the top level, got a list"),
            ("just text\n", "expected a mapping at the top level, got 'just text'"),
        ],
    )
    def test_unreadable_yaml(self, write: Callable[[str], Path], text: str, problem: str) -> None:
        """YAML that cannot be read is one problem with the file and, if known, the line."""
        path = write(text)
        with pytest.raises(ConfigError) as caught:
            load_config(path, environ={})
        assert caught.value.problems == (f"{path}: {problem}",)

    def test_yaml_merge_keys_may_override(self, write: Callable[[str], Path]) -> None:
        """A key given beside a `<<` merge overrides the merged one without a duplicate error."""
        text = (
            "accounts:\n"
            "  - &one {name: a, provider: westwallet, interval: 5m,"
            " credentials: {api_key: k, secret_key: s}}\n"
            "  - {<<: *one, name: b, interval: 30s}\n"
        )
        config = load_config(write(text), environ={})
        assert [item.interval for item in config.accounts] == [300.0, 30.0]

    def test_yaml_floats_become_exact_decimals(self, write: Callable[[str], Path]) -> None:
        """Amounts written as YAML numbers are read through their text, never float math."""
        path = write(
            "accounts:\n"
            "  - name: hot\n"
            "    provider: westwallet\n"
            "    credentials: {api_key: k, secret_key: s}\n"
            "    low_balance: {BTC: 0.1, ETH: 3, USDT: '12.345678901234567890', DOGE: 1.0e+3}\n"
        )
        low = load_config(path, environ={}).account("hot").low_balance
        assert dict(low) == {
            "BTC": Decimal("0.1"),
            "ETH": Decimal(3),
            "USDT": Decimal("12.345678901234567890"),
            "DOGE": Decimal(1000),
        }
        assert str(low["BTC"]) == "0.1"

    def test_relative_paths_follow_the_config_file(self, tmp_path: Path) -> None:
        """state_path, events_file and {file} resolve against the config file's directory."""
        (tmp_path / "etc").mkdir()
        (tmp_path / "etc" / "key").write_text("file-key\n", encoding="utf-8")
        path = tmp_path / "etc" / "config.yaml"
        path.write_text(
            "state_path: state/ww.db\n"
            "events_file: /var/log/events.jsonl\n"
            "accounts:\n"
            "  - {name: a, provider: westwallet,"
            " credentials: {api_key: {file: key}, secret_key: s}}\n",
            encoding="utf-8",
        )
        config = load_config(path, environ={})
        assert config.state_path == tmp_path / "etc" / "state" / "ww.db"
        assert config.events_file == Path("/var/log/events.jsonl")
        assert config.account("a").credentials["api_key"].reveal() == "file-key"


class TestTopLevel:
    """listen, state_path, events_file, log_format and the top-level keys."""

    @pytest.mark.parametrize(
        ("text", "host", "port"),
        [
            ("127.0.0.1:10101", "127.0.0.1", 10101),
            ("0.0.0.0:9000", "0.0.0.0", 9000),  # noqa: S104 (parsing, not binding)
            ("[::1]:10101", "::1", 10101),
            ("[::]:80", "::", 80),
            ("localhost:0", "localhost", 0),
        ],
    )
    def test_listen_addresses(self, tmp_path: Path, text: str, host: str, port: int) -> None:
        """IPv4, bracketed IPv6 and host names parse, and print back as written."""
        listen = parse({"listen": text, "accounts": [account()]}, tmp_path).listen
        assert listen == Listen(host, port)
        assert str(listen) == text

    @pytest.mark.parametrize(
        ("key", "value", "problem"),
        [
            (
                "listen",
                "10101",
                (
                    "listen: expected HOST:PORT such as 127.0.0.1:10101, 0.0.0.0:10101 or "
                    "[::1]:10101, got '10101'"
                ),
            ),
            (
                "listen",
                "::1:10101",
                (
                    "listen: expected HOST:PORT such as 127.0.0.1:10101, 0.0.0.0:10101 or "
                    "[::1]:10101, got '::1:10101'"
                ),
            ),
            ("listen", "[::zz]:1", "listen: invalid IPv6 address '::zz'"),
            ("listen", "1.2.3.4:70000", "listen: port 70000 is out of range (0-65535)"),
            ("state_path", "", "state_path: expected a file path, got ''"),
            ("events_file", 5, "events_file: expected a file path, got 5"),
            ("log_format", "xml", "log_format: expected one of 'json', 'console', null; got 'xml'"),
            ("defaults", ["x"], "defaults: expected a mapping, got a list"),
            ("providers", "all", "providers: expected a mapping, got 'all'"),
            ("version", 2, "version: unknown key"),
            ("acount", [], "acount: unknown key (did you mean 'accounts'?)"),
        ],
    )
    def test_bad_values(self, tmp_path: Path, key: str, value: object, problem: str) -> None:
        """Each bad top-level value is reported with its key."""
        assert problems({key: value, "accounts": [account()]}, tmp_path) == [problem]

    def test_log_formats(self, tmp_path: Path) -> None:
        """log_format is json, console, or null for automatic."""
        for value in ("json", "console", None):
            assert parse({"log_format": value, "accounts": [account()]}, tmp_path).log_format == (
                value
            )

    @pytest.mark.parametrize(
        ("data", "problem"),
        [
            ({}, "accounts: expected a non-empty list of accounts, got null"),
            (
                {"accounts": []},
                "accounts: expected a non-empty list of accounts, got an empty list",
            ),
            (
                {"accounts": {"a": 1}},
                "accounts: expected a non-empty list of accounts, got a mapping",
            ),
            ({"accounts": ["hot"]}, "accounts[0]: expected a mapping, got 'hot'"),
        ],
    )
    def test_accounts_must_be_a_list_of_mappings(
        self, tmp_path: Path, data: dict[str, object], problem: str
    ) -> None:
        """A config without accounts watches nothing and is refused."""
        assert problems(data, tmp_path) == [problem]

    def test_top_level_must_be_a_mapping(self, tmp_path: Path) -> None:
        """parse_config refuses data that is not a mapping."""
        assert problems(["x"], tmp_path) == ["top level: expected a mapping, got a list"]  # type: ignore[arg-type]


class TestProviders:
    """The providers section."""

    def test_overrides_every_setting(self, tmp_path: Path) -> None:
        """Every provider setting can be set; the others keep their defaults."""
        settings = {
            "rate_limit": 1.5,
            "host_rate_limit": None,
            "connect_timeout": "2s",
            "read_timeout": "10s",
            "timeout": "20s",
            "max_backoff": "10m",
            "max_pages": 3,
        }
        config = parse(
            {"providers": {"bitexbit": settings, "sila": None}, "accounts": [account()]}, tmp_path
        )
        assert config.providers["bitexbit"] == ProviderSettings(
            1.5, None, 2.0, 10.0, 20.0, 600.0, 3
        )
        assert config.providers["sila"].rate_limit == PROVIDERS["sila"].rate_limit

    @pytest.mark.parametrize(
        ("settings", "problem"),
        [
            (
                {"coinbase": {}},
                (
                    "providers.coinbase: unknown provider "
                    "(expected westwallet, kredswallet, potwallet, sila, bitexbit)"
                ),
            ),
            (
                {"sila": {"rate_limt": 1}},
                "providers.sila.rate_limt: unknown key (did you mean 'rate_limit'?)",
            ),
            (
                {"sila": {"rate_limit": 0}},
                "providers.sila.rate_limit: expected requests per second as a number > 0, got 0",
            ),
            (
                {"sila": {"rate_limit": "fast"}},
                (
                    "providers.sila.rate_limit: expected requests per "
                    "second as a number > 0, got 'fast'"
                ),
            ),
            (
                {"sila": {"rate_limit": True}},
                "providers.sila.rate_limit: expected requests per second as a number > 0, got true",
            ),
            (
                {"sila": {"host_rate_limit": -1}},
                (
                    "providers.sila.host_rate_limit: expected requests "
                    "per second as a number > 0, got -1"
                ),
            ),
            (
                {"sila": {"timeout": "0s"}},
                "providers.sila.timeout: must be greater than 0s, got '0s'",
            ),
            (
                {"sila": {"read_timeout": 30}},
                "providers.sila.read_timeout: invalid duration '30': add a unit, e.g. '30s'",
            ),
            (
                {"sila": {"max_backoff": "never"}},
                "providers.sila.max_backoff: invalid duration 'never'" + UNITS,
            ),
            (
                {"sila": {"max_pages": 0}},
                "providers.sila.max_pages: expected an integer >= 1, got 0",
            ),
            (
                {"sila": {"max_pages": 2.5}},
                "providers.sila.max_pages: expected an integer >= 1, got 2.5",
            ),
            ({"sila": 2}, "providers.sila: expected a mapping, got 2"),
        ],
    )
    def test_bad_settings(self, tmp_path: Path, settings: dict[str, object], problem: str) -> None:
        """Each bad provider setting is reported with its path."""
        assert problems({"providers": settings, "accounts": [account()]}, tmp_path) == [problem]


class TestAccounts:
    """Account entries, defaults and provider options."""

    @pytest.mark.parametrize(
        ("provider", "options"),
        [
            ("westwallet", {}),
            ("kredswallet", {"confirmations_required": 6, "currency": "KREDS"}),
            ("potwallet", {"hash_key": "raw", "price_currency": "USD"}),
            ("sila", {"auth": "ecdsa"}),
            ("bitexbit", {"auth_scheme": "gateway", "balances": None}),
        ],
    )
    def test_option_defaults(
        self, tmp_path: Path, provider: str, options: dict[str, object]
    ) -> None:
        """Every provider's options are filled in with their defaults."""
        config = parse({"accounts": [account(provider)]}, tmp_path)
        assert dict(config.accounts[0].options) == options
        assert config.accounts[0].base_url == PROVIDERS[provider].base_url

    @pytest.mark.parametrize(
        ("provider", "options"),
        [
            ("kredswallet", {"confirmations_required": 12, "currency": "DOGE"}),
            ("potwallet", {"hash_key": "sha1", "price_currency": "CAD"}),
            ("bitexbit", {"auth_scheme": "v1", "balances": "v2"}),
        ],
    )
    def test_options_set(self, tmp_path: Path, provider: str, options: dict[str, object]) -> None:
        """Options given on the account are used."""
        config = parse({"accounts": [account(provider, **options)]}, tmp_path)
        assert dict(config.accounts[0].options) == options

    def test_every_account_key(self, tmp_path: Path) -> None:
        """Every common account key is read into its field."""
        entry = account(
            base_url="http://localhost:8080/api/",
            interval="1m30s",
            currencies=["BTC", "USDT"],
            low_balance={"BTC": "0.5", "USDT": 1000},
            withdrawal_stuck_after="30m",
            deposit_stuck_after="1d",
            down_after=5,
        )
        hot = parse({"accounts": [entry]}, tmp_path).accounts[0]
        assert hot.base_url == "http://localhost:8080/api"
        assert (hot.interval, hot.withdrawal_stuck_after, hot.deposit_stuck_after) == (
            90.0,
            1800.0,
            86400.0,
        )
        assert hot.currencies == frozenset({"BTC", "USDT"})
        assert dict(hot.low_balance) == {"BTC": Decimal("0.5"), "USDT": Decimal(1000)}
        assert (hot.down_after, hot.stuck_after("withdrawal"), hot.stuck_after("deposit")) == (
            5,
            1800.0,
            86400.0,
        )

    def test_stuck_after_refuses_other_directions(self, tmp_path: Path) -> None:
        """stuck_after knows deposit and withdrawal only."""
        hot = parse({"accounts": [account()]}, tmp_path).accounts[0]
        with pytest.raises(ValueError, match="unknown direction 'sideways'"):
            hot.stuck_after("sideways")

    def test_defaults_apply_and_accounts_override(self, tmp_path: Path) -> None:
        """Defaults fill keys an account leaves out; the account's own value wins."""
        data = {
            "defaults": {"interval": "2m", "low_balance": {"BTC": "1"}, "hash_key": "sha1"},
            "accounts": [
                account(name="a"),
                account(name="b", interval="10s", low_balance={"ETH": "2"}),
                account("potwallet"),
            ],
        }
        a, b, pot = parse(data, tmp_path).accounts
        assert (a.interval, dict(a.low_balance)) == (120.0, {"BTC": Decimal(1)})
        assert not a.options
        assert (b.interval, dict(b.low_balance)) == (10.0, {"ETH": Decimal(2)})
        assert pot.options["hash_key"] == "sha1"

    def test_credentials_as_a_default(self, tmp_path: Path) -> None:
        """Default credentials serve accounts without their own, checked for each account."""
        accounts = [
            {"name": "a", "provider": "westwallet"},
            {"name": "b", "provider": "bitexbit"},
            account("sila"),
        ]
        kreds = {"name": "c", "provider": "kredswallet"}
        data = {"defaults": {"credentials": SECRETS}, "accounts": [*accounts, kreds]}
        assert problems(data, tmp_path) == [
            (
                "defaults.credentials.secret_key: unknown credential for kredswallet "
                "(api_key, api_secret)"
            ),
            "accounts[3].credentials: missing credential 'api_secret'",
        ]
        data = {"defaults": {"credentials": SECRETS}, "accounts": accounts}
        a, b, _ = parse(data, tmp_path).accounts
        assert a.credentials == b.credentials
        assert a.credentials["api_key"].reveal() == "env-api-key-0001"

    def test_account_lookup_by_name(self, tmp_path: Path) -> None:
        """Config.account finds an account by name and raises KeyError otherwise."""
        config = parse({"accounts": [account(name="a"), account("sila")]}, tmp_path)
        assert config.account("sila").provider == "sila"
        with pytest.raises(KeyError):
            config.account("b")

    @pytest.mark.parametrize(
        ("changes", "problems_"),
        [
            (
                {"name": "a b"},
                ["name: invalid account name 'a b': use letters, digits, '_', '.' and '-'"],
            ),
            ({"name": 7}, ["name: invalid account name 7: use letters, digits, '_', '.' and '-'"]),
            (
                {"provider": "coinbase"},
                [
                    (
                        "provider: unknown provider 'coinbase' "
                        "(expected westwallet, kredswallet, potwallet, sila, "
                        "bitexbit)"
                    )
                ],
            ),
            ({"interval": "soon"}, ["interval: invalid duration 'soon'" + UNITS]),
            ({"interval": 30}, ["interval: invalid duration '30': add a unit, e.g. '30s'"]),
            ({"interval": "500ms"}, ["interval: must be at least 1s, got '500ms'"]),
            (
                {"withdrawal_stuck_after": "0s"},
                ["withdrawal_stuck_after: must be greater than 0s, got '0s'"],
            ),
            (
                {"deposit_stuck_after": ["1h"]},
                ["deposit_stuck_after: expected a duration such as '30s', got a list"],
            ),
            ({"down_after": 0}, ["down_after: expected an integer >= 1, got 0"]),
            ({"down_after": "3"}, ["down_after: expected an integer >= 1, got '3'"]),
            (
                {"base_url": "ftp://example.com"},
                [
                    (
                        "base_url: expected an http(s) URL such as "
                        "'https://host/api', got 'ftp://example.com'"
                    )
                ],
            ),
            (
                {"base_url": "https://h/api?x=1"},
                [
                    (
                        "base_url: expected an http(s) URL such as "
                        "'https://host/api', got 'https://h/api?x=1'"
                    )
                ],
            ),
            (
                {"base_url": "https://me:hunter2@h"},
                ["base_url: must not contain a user name or password"],
            ),
            (
                {"currencies": []},
                ["currencies: empty list: leave the key out to watch every currency"],
            ),
            ({"currencies": "BTC"}, ["currencies: expected a list of currency codes, got 'BTC'"]),
            (
                {"currencies": ["BTC", True, ""]},
                [
                    "currencies[1]: expected a currency code, got true (quote it)",
                    "currencies[2]: expected a currency code, got ''",
                ],
            ),
            (
                {"low_balance": {"BTC": "-1"}},
                ["low_balance.BTC: amount must not be negative, got '-1'"],
            ),
            (
                {"low_balance": {"BTC": "NaN"}},
                ["low_balance.BTC: amount must be finite, got 'NaN'"],
            ),
            (
                {"low_balance": {"BTC": float("inf")}},
                ["low_balance.BTC: amount must be finite, got inf"],
            ),
            ({"low_balance": {"BTC": "lots"}}, ["low_balance.BTC: invalid amount 'lots'"]),
            ({"low_balance": {"BTC": True}}, ["low_balance.BTC: expected an amount, got true"]),
            (
                {"low_balance": {True: 1}},
                ["low_balance: expected a currency code, got true (quote it)"],
            ),
            (
                {"low_balance": ["BTC"]},
                ["low_balance: expected a mapping of currency to amount, got a list"],
            ),
            (
                {"currencies": ["BTC"], "low_balance": {"ETH": 1, "BTC": 1}},
                ["low_balance.ETH: not in this account's currencies"],
            ),
            ({"hash_key": "raw"}, ["hash_key: not an option of westwallet (it is for potwallet)"]),
            ({"intervall": "5s"}, ["intervall: unknown key (did you mean 'interval'?)"]),
            ({"colour": "red"}, ["colour: unknown key"]),
        ],
    )
    def test_bad_values(
        self, tmp_path: Path, changes: dict[str, object], problems_: list[str]
    ) -> None:
        """Each bad account value is reported with its path under accounts[0]."""
        expected = [f"accounts[0].{line}" for line in problems_]
        assert problems({"accounts": [account(**changes)]}, tmp_path) == expected

    @pytest.mark.parametrize(
        ("provider", "key", "value", "problem"),
        [
            ("kredswallet", "confirmations_required", 0, "expected an integer >= 1, got 0"),
            ("kredswallet", "confirmations_required", True, "expected an integer >= 1, got true"),
            ("kredswallet", "currency", "", "expected a non-empty string, got ''"),
            ("potwallet", "hash_key", "md5", "expected one of 'raw', 'sha1'; got 'md5'"),
            ("potwallet", "price_currency", 5, "expected a non-empty string, got 5"),
            ("sila", "auth", "oauth", "expected one of 'ecdsa', 'token'; got 'oauth'"),
            ("bitexbit", "auth_scheme", "v3", "expected one of 'gateway', 'v2', 'v1'; got 'v3'"),
            ("bitexbit", "balances", "v1", "expected one of null, 'v2'; got 'v1'"),
        ],
    )
    def test_bad_options(
        self, tmp_path: Path, provider: str, key: str, value: object, problem: str
    ) -> None:
        """Each bad provider option is reported with its path."""
        data = {"accounts": [account(provider) | {key: value}]}
        assert problems(data, tmp_path) == [f"accounts[0].{key}: {problem}"]

    def test_required_keys(self, tmp_path: Path) -> None:
        """name, provider and credentials must be given."""
        assert problems({"accounts": [{"interval": "1m"}]}, tmp_path) == [
            "accounts[0]: missing required key 'name'",
            "accounts[0]: missing required key 'provider'",
            "accounts[0]: missing required key 'credentials'",
        ]

    def test_duplicate_names(self, tmp_path: Path) -> None:
        """A name used twice is reported at its second use."""
        data = {
            "accounts": [account(name="hot"), account(name="cold"), account("sila", name="hot")]
        }
        assert problems(data, tmp_path) == ["accounts[2].name: duplicate account name 'hot'"]

    @pytest.mark.parametrize(
        ("defaults", "problem"),
        [
            ({"name": "x"}, "defaults.name: cannot be a default: set it on each account"),
            (
                {"provider": "sila"},
                "defaults.provider: cannot be a default: set it on each account",
            ),
            ({"intervl": "5s"}, "defaults.intervl: unknown key (did you mean 'interval'?)"),
            ({"auth": "oauth"}, "defaults.auth: expected one of 'ecdsa', 'token'; got 'oauth'"),
            ({"interval": "soon"}, "defaults.interval: invalid duration 'soon'" + UNITS),
        ],
    )
    def test_bad_defaults(self, tmp_path: Path, defaults: dict[str, object], problem: str) -> None:
        """Bad defaults are reported once at their own path, even when no account uses them."""
        data = {"defaults": defaults, "accounts": [account(name="a"), account(name="b")]}
        assert problems(data, tmp_path) == [problem]

    def test_credential_id_names_the_key_not_the_secret(self, tmp_path: Path) -> None:
        """Accounts sharing an API key share a credential_id, which shows no credential."""
        shared = {"api_key": "shared-key", "secret_key": "s1"}
        data = {
            "accounts": [
                account(name="a", credentials=shared),
                account(name="b", credentials={**shared, "secret_key": "s2"}),
                account(name="c", credentials={"api_key": "other-key", "secret_key": "s1"}),
                account("sila"),
            ]
        }
        a, b, c, sila = (item.credential_id for item in parse(data, tmp_path).accounts)
        assert a == b != c
        assert re.fullmatch(r"westwallet:[0-9a-f]{12}", a)
        assert "shared-key" not in a
        # Sila's app_handle names the key; the handles and keys stay out of the id.
        assert sila.startswith("sila:")
        assert (
            sila
            == parse(
                {
                    "accounts": [
                        account(
                            "sila",
                            credentials={
                                **ACCOUNTS["sila"]["credentials"],  # type: ignore[dict-item]
                                "user_handle": "someone.else",
                                "user_private_key": "0xother",
                            },
                        )
                    ]
                },
                tmp_path,
            )
            .accounts[0]
            .credential_id
        )


class TestCredentials:
    """Credential values and names."""

    def test_every_source(self, tmp_path: Path, creds_dir: Path) -> None:
        """Literal, {env}, {file} (newline stripped) and {credential} values are resolved."""
        (tmp_path / "key.txt").write_text("file-key-0004\n", encoding="utf-8")
        environ = {**ENV, "CREDENTIALS_DIRECTORY": str(creds_dir)}
        data = {
            "accounts": [
                account(credentials={"api_key": "literal-key", "secret_key": {"env": "WW_SECRET"}}),
                account(
                    "bitexbit",
                    credentials={
                        "api_key": {"file": "key.txt"},
                        "secret_key": {"credential": "bxb_secret"},
                    },
                ),
            ]
        }
        ww, bxb = parse(data, tmp_path, environ).accounts
        assert {name: s.reveal() for name, s in ww.credentials.items()} == {
            "api_key": "literal-key",
            "secret_key": "env-secret-0002",
        }
        assert {name: s.reveal() for name, s in bxb.credentials.items()} == {
            "api_key": "file-key-0004",
            "secret_key": "cred-secret-0003",
        }

    @pytest.mark.parametrize(
        ("value", "environ", "problem"),
        [
            ({"env": "WW_MISSING"}, {}, "environment variable WW_MISSING is not set"),
            ({"env": "WW_EMPTY"}, {"WW_EMPTY": ""}, "environment variable WW_EMPTY is empty"),
            ("", {}, "empty value"),
            (
                987654321,
                {},
                (
                    "expected text or one of {env: NAME}, {file: PATH} or {credential: NAME}, "
                    "got a number (quote it)"
                ),
            ),
            (
                None,
                {},
                "expected text or one of {env: NAME}, {file: PATH} or {credential: NAME}, got null",
            ),
            (
                {"env": "A", "file": "b"},
                {},
                (
                    "expected text or one of {env: NAME}, {file: PATH} or {credential: NAME}, "
                    "got a mapping"
                ),
            ),
            (
                {"vault": "x"},
                {},
                "unknown source 'vault': expected {env: NAME}, {file: PATH} or {credential: NAME}",
            ),
            ({"env": None}, {}, "env: expected a non-empty name, got null"),
            ({"file": ""}, {}, "file: expected a non-empty name, got ''"),
            (
                {"credential": "ww_secret"},
                {},
                (
                    "credential 'ww_secret': CREDENTIALS_DIRECTORY is not set "
                    "(systemd sets it for LoadCredential=)"
                ),
            ),
            (
                {"credential": "../ww_secret"},
                {"CREDENTIALS_DIRECTORY": "/run/credentials/walletwatch.service"},
                "invalid credential name '../ww_secret'",
            ),
        ],
    )
    def test_bad_values(
        self, tmp_path: Path, value: object, environ: dict[str, str], problem: str
    ) -> None:
        """Each unusable credential value is reported at its credential's path."""
        data = {"accounts": [account(credentials={"api_key": value, "secret_key": "s"})]}
        assert problems(data, tmp_path, environ) == [f"accounts[0].credentials.api_key: {problem}"]

    def test_unreadable_files(self, tmp_path: Path, creds_dir: Path) -> None:
        """Missing or empty files are reported with their path."""
        (tmp_path / "empty").write_text("\n", encoding="utf-8")
        (tmp_path / "binary").write_bytes(b"\xff\xfe")
        credentials = {
            "api_key": {"file": "missing"},
            "secret_key": {"credential": "absent"},
        }
        data = {
            "accounts": [
                account(name="a", credentials=credentials),
                account(
                    name="b",
                    credentials={
                        "api_key": {"file": "empty"},
                        "secret_key": {"file": str(tmp_path / "binary")},
                    },
                ),
            ]
        }
        environ = {"CREDENTIALS_DIRECTORY": str(creds_dir)}
        assert problems(data, tmp_path, environ) == [
            (
                f"accounts[0].credentials.api_key: cannot read {tmp_path}/missing: "
                "No such file or directory"
            ),
            (
                f"accounts[0].credentials.secret_key: cannot read {creds_dir}/absent: "
                "No such file or directory"
            ),
            f"accounts[1].credentials.api_key: {tmp_path}/empty is empty",
            f"accounts[1].credentials.secret_key: {tmp_path}/binary is not UTF-8 text",
        ]

    @pytest.mark.parametrize(
        ("credentials", "problems_"),
        [
            ({"api_key": "k"}, [".credentials: missing credential 'secret_key'"]),
            (
                {"api_key": "k", "secret_key": "s", "api_secret": "x"},
                [
                    (
                        ".credentials.api_secret: unknown credential for westwallet "
                        "(api_key, secret_key)"
                    )
                ],
            ),
            (
                {},
                [
                    ".credentials: missing credential 'api_key'",
                    ".credentials: missing credential 'secret_key'",
                ],
            ),
            ("k", [".credentials: expected a mapping of credential names to values, got text"]),
        ],
    )
    def test_names_must_match_the_provider(
        self, tmp_path: Path, credentials: object, problems_: list[str]
    ) -> None:
        """Every required credential must be given and no other."""
        data = {"accounts": [account(credentials=credentials)]}
        assert problems(data, tmp_path) == [f"accounts[0]{line}" for line in problems_]

    @pytest.mark.parametrize(
        ("auth", "names", "problems_"),
        [
            (None, ["app_private_key", "user_private_key"], []),
            ("token", ["client_id", "client_secret"], []),
            (
                "token",
                ["app_private_key", "client_id"],
                [
                    "credentials.app_private_key: not used with auth 'token'",
                    "credentials: missing credential 'client_secret'",
                ],
            ),
            (
                "ecdsa",
                ["client_id"],
                [
                    "credentials.client_id: not used with auth 'ecdsa'",
                    "credentials: missing credential 'app_private_key'",
                    "credentials: missing credential 'user_private_key'",
                ],
            ),
            # A bad auth value is one problem: the variant credentials are not judged.
            ("oauth", ["client_id"], ["auth: expected one of 'ecdsa', 'token'; got 'oauth'"]),
        ],
    )
    def test_sila_auth_selects_credentials(
        self, tmp_path: Path, auth: str | None, names: list[str], problems_: list[str]
    ) -> None:
        """Sila needs private keys with auth ecdsa (the default) and a client with auth token."""
        credentials = {"app_handle": "app", "user_handle": "user"} | dict.fromkeys(names, "x")
        entry = account("sila", credentials=credentials, **({"auth": auth} if auth else {}))
        if not problems_:
            assert parse({"accounts": [entry]}, tmp_path).accounts[0].options["auth"] == (
                auth or "ecdsa"
            )
        else:
            expected = [f"accounts[0].{line}" for line in problems_]
            assert problems({"accounts": [entry]}, tmp_path) == expected

    def test_problems_never_show_secrets(self, tmp_path: Path) -> None:
        """Messages about credentials and URLs name sources, never the secret values."""
        data = {
            "accounts": [
                account(credentials={"api_key": 987654321, "secret_key": {"env": "WW_SECRET"}}),
                account(name="b", base_url="https://me:hunter2@example.com", interval="soon"),
            ]
        }
        text = "\n".join(problems(data, tmp_path))
        for secret in ("987654321", "hunter2", *ENV.values()):
            assert secret not in text


class TestImmutability:
    """Config objects are frozen and their repr shows no secret."""

    @pytest.fixture(name="config")
    def fixture_config(self, tmp_path: Path, creds_dir: Path) -> Config:
        """A config whose credentials come from env, a file, a credential and literals."""
        (tmp_path / "key.txt").write_text("file-key-0004\n", encoding="utf-8")
        environ = {**ENV, "CREDENTIALS_DIRECTORY": str(creds_dir)}
        data = {
            "accounts": [
                account(),
                account(
                    "bitexbit",
                    credentials={
                        "api_key": {"file": "key.txt"},
                        "secret_key": {"credential": "bxb_secret"},
                    },
                ),
                *(account(provider) for provider in ("kredswallet", "potwallet", "sila")),
            ]
        }
        return parse(data, tmp_path, environ)

    def test_repr_shows_no_secret(self, config: Config) -> None:
        """repr and str of a loaded config contain none of its credentials."""
        revealed = {
            secret.reveal() for item in config.accounts for secret in item.credentials.values()
        }
        assert {"env-api-key-0001", "file-key-0004", "cred-secret-0003", "pot-private"} <= revealed
        for text in (repr(config), str(config), repr(config.accounts)):
            for secret in revealed:
                assert secret not in text

    def test_objects_are_frozen(self, config: Config) -> None:
        """Assigning to any config object's field fails."""
        hot = config.accounts[0]
        with pytest.raises(dataclasses.FrozenInstanceError):
            config.listen = Listen("::1", 1)  # type: ignore[misc]
        with pytest.raises(dataclasses.FrozenInstanceError):
            hot.interval = 1.0  # type: ignore[misc]
        with pytest.raises(dataclasses.FrozenInstanceError):
            config.providers["sila"].rate_limit = 9.0  # type: ignore[misc]
        with pytest.raises(dataclasses.FrozenInstanceError):
            hot.credentials["api_key"].value = "x"  # type: ignore[misc]

    def test_mappings_are_read_only(self, config: Config) -> None:
        """The mappings inside config objects cannot be changed."""
        hot = config.accounts[0]
        with pytest.raises(TypeError):
            hot.credentials["api_key"] = Secret("x")  # type: ignore[index]
        with pytest.raises(TypeError):
            hot.low_balance["BTC"] = Decimal(1)  # type: ignore[index]
        with pytest.raises(TypeError):
            config.accounts[1].options["auth_scheme"] = "v1"  # type: ignore[index]
        with pytest.raises(TypeError):
            config.providers["sila"] = config.providers["bitexbit"]  # type: ignore[index]


class TestAllAtOnce:
    """Every problem of a config is reported in one ConfigError."""

    def test_one_file_many_problems(self, write: Callable[[str], Path]) -> None:
        """A file with problems in many places reports each of them once."""
        path = write(
            "listen: localhost\n"
            "log_format: xml\n"
            "defaults:\n"
            "  interval: soon\n"
            "providers:\n"
            "  bitexbit: {rate_limit: 0}\n"
            "accounts:\n"
            "  - name: hot\n"
            "    provider: westwallet\n"
            "    credentials: {api_key: {env: WW_MISSING}, secret_key: {env: WW_SECRET}}\n"
            "  - name: hot\n"
            "    provider: potwallet\n"
            "    hash_key: md5\n"
            "    credentials: {public_key: pub}\n"
            "  - name: cold\n"
            "    provider: kredswallet\n"
            "    interval: 5m\n"
            "    low_balance: {KREDS: '-1'}\n"
            "    credentials: {api_key: k, api_secret: s}\n"
            "    colour: blue\n"
        )
        with pytest.raises(ConfigError) as caught:
            load_config(path, environ=ENV)
        assert caught.value.problems == (
            (
                "listen: expected HOST:PORT such as 127.0.0.1:10101, 0.0.0.0:10101 or [::1]:10101, "
                "got 'localhost'"
            ),
            "log_format: expected one of 'json', 'console', null; got 'xml'",
            "providers.bitexbit.rate_limit: expected requests per second as a number > 0, got 0",
            "accounts[0].credentials.api_key: environment variable WW_MISSING is not set",
            "defaults.interval: invalid duration 'soon'" + UNITS,
            "accounts[1].hash_key: expected one of 'raw', 'sha1'; got 'md5'",
            "accounts[1].credentials: missing credential 'private_key'",
            "accounts[1].name: duplicate account name 'hot'",
            "accounts[2].colour: unknown key",
            "accounts[2].low_balance.KREDS: amount must not be negative, got '-1'",
        )
        assert str(caught.value) == "\n".join(caught.value.problems)


class TestExampleConfig:
    """The commented config.yaml at the top of the repository."""

    ENV_VARS = ("WESTWALLET_API_KEY", "KREDS_API_KEY", "POTWALLET_PUBLIC_KEY", "BITEXBIT_API_KEY")
    CREDENTIALS = (
        "westwallet_secret",
        "kreds_api_secret",
        "potwallet_private_key",
        "sila_app_private_key",
        "sila_user_private_key",
        "bitexbit_secret",
    )

    def test_loads_with_every_provider(self, tmp_path: Path) -> None:
        """config.yaml parses with its env variables and systemd credentials, covering all five."""
        for name in self.CREDENTIALS:
            (tmp_path / name).write_text(f"example-{name}\n", encoding="utf-8")
        environ = {name: f"example-{name}" for name in self.ENV_VARS}
        environ["CREDENTIALS_DIRECTORY"] = str(tmp_path)
        config = load_config(REPO / "config.yaml", environ=environ)
        assert {item.provider for item in config.accounts} == set(PROVIDERS)
        revealed = {s.reveal() for item in config.accounts for s in item.credentials.values()}
        assert {f"example-{name}" for name in (*self.ENV_VARS, *self.CREDENTIALS)} <= revealed
        assert config.state_path == REPO / "walletwatch.db"

    def test_names_what_it_needs(self) -> None:
        """Without its environment, config.yaml reports every missing variable and credential."""
        with pytest.raises(ConfigError) as caught:
            load_config(REPO / "config.yaml", environ={})
        text = "\n".join(caught.value.problems)
        assert len(caught.value.problems) == len(self.ENV_VARS) + len(self.CREDENTIALS)
        for name in (*self.ENV_VARS, *self.CREDENTIALS):
            assert name in text


class TestBudgetKeys:
    """rate_margin (per provider) and fast_interval (per account)."""

    @pytest.mark.parametrize(("given", "expected"), [(None, 0.05), (0, 0.0), (0.2, 0.2)])
    def test_rate_margin(self, tmp_path: Path, given: float | None, expected: float) -> None:
        """rate_margin defaults to 5% below the published limit and may be set per provider."""
        settings = {} if given is None else {"rate_margin": given}
        config = parse({"providers": {"bitexbit": settings}, "accounts": [account()]}, tmp_path)
        assert config.providers["bitexbit"].rate_margin == expected
        assert config.providers["sila"].rate_margin == 0.05

    @pytest.mark.parametrize(
        ("value", "shown"),
        [(-0.01, "-0.01"), (0.5, "0.5"), (1, "1"), ("5%", "'5%'"), (True, "true"), (None, "null")],
    )
    def test_bad_rate_margin(self, tmp_path: Path, value: object, shown: str) -> None:
        """A margin must be a fraction from 0 up to, not including, 0.5."""
        data = {"providers": {"sila": {"rate_margin": value}}, "accounts": [account()]}
        expected = "expected a fraction >= 0 and < 0.5 (0.05 = 5%)"
        assert problems(data, tmp_path) == [f"providers.sila.rate_margin: {expected}, got {shown}"]

    @pytest.mark.parametrize(
        ("keys", "defaults", "expected"),
        [
            ({}, {}, 15.0),
            ({"fast_interval": "5s"}, {}, 5.0),
            ({"interval": "10s"}, {}, 10.0),  # the default shrinks to a shorter interval
            ({"fast_interval": "30s", "interval": "30s"}, {}, 30.0),
            ({}, {"fast_interval": "20s"}, 20.0),
        ],
    )
    def test_fast_interval(
        self,
        tmp_path: Path,
        keys: dict[str, object],
        defaults: dict[str, object],
        expected: float,
    ) -> None:
        """fast_interval defaults to 15s (or the interval, when shorter) and may be a default."""
        config = parse({"defaults": defaults, "accounts": [account(**keys)]}, tmp_path)
        assert config.accounts[0].fast_interval == expected

    @pytest.mark.parametrize(
        ("keys", "defaults", "problem"),
        [
            (
                {"fast_interval": "2m"},
                {},
                "accounts[0].fast_interval: must not be longer than interval (1m), got 2m",
            ),
            (
                {"interval": "10s"},
                {"fast_interval": "15s"},
                "defaults.fast_interval: must not be longer than interval (10s), got 15s",
            ),
            (
                {"fast_interval": "500ms"},
                {},
                "accounts[0].fast_interval: must be at least 1s, got '500ms'",
            ),
            (
                {"fast_interval": 5},
                {},
                "accounts[0].fast_interval: invalid duration '5': add a unit, e.g. '5s'",
            ),
        ],
    )
    def test_bad_fast_interval(
        self,
        tmp_path: Path,
        keys: dict[str, object],
        defaults: dict[str, object],
        problem: str,
    ) -> None:
        """fast_interval is a duration of at least 1s and no longer than the interval."""
        data = {"defaults": defaults, "accounts": [account(**keys)]}
        assert problems(data, tmp_path) == [problem]


class TestCurrencyCodes:
    """Currency codes in the config are compared without case: normalized at load."""

    def test_low_balance_and_currencies_are_upper_cased(self) -> None:
        """``low_balance: {usdt: ...}`` and ``currencies: [usdt]`` watch USDT."""
        assert schema.thresholds({"usdt": "1000"}) == {"USDT": Decimal(1000)}
        assert schema.currencies(["usdt", "BTC"]) == frozenset({"USDT", "BTC"})

    def test_the_same_currency_twice_is_a_problem(self) -> None:
        """usdt and USDT in one low_balance are one currency given twice."""
        with pytest.raises(schema.Invalid) as raised:
            schema.thresholds({"USDT": "1", "usdt": "2"})
        assert raised.value.problems == ((".usdt", "the same currency as USDT"),)
