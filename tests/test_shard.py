"""Sharding: ``shard: K/N`` and ``--shard K/N`` split accounts like Prometheus' hashmod."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from walletwatch.cli import main
from walletwatch.config import load_config, parse_config
from walletwatch.errors import ConfigError
from walletwatch.shard import Shard, hashmod, parse_shard, select

NAMES = [f"acct-{i}" for i in range(200)]


@dataclass(frozen=True)
class Item:
    """Something with a name."""

    name: str


def accounts(names: list[str]) -> list[dict[str, object]]:
    """westwallet accounts with literal fake credentials."""
    return [
        {"name": n, "provider": "westwallet", "credentials": {"api_key": n, "secret_key": "s"}}
        for n in names
    ]


def write(tmp_path: Path, **top: object) -> Path:
    """A config file with NAMES as accounts and ``top`` besides."""
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({"accounts": accounts(NAMES), **top}))
    return path


class TestHashmod:
    """hashmod is Prometheus' relabel HashMod, bit for bit."""

    @pytest.mark.parametrize(
        ("value", "modulus", "expected"),
        [
            ("baz", 1000, 976),  # Prometheus' model/relabel/relabel_test.go
            ("foo\nbar", 1000, 734),  # ditto
            ("acct-0", 3, 2),
            ("acct-2", 3, 1),
            ("acct-3", 3, 0),
        ],
    )
    def test_known_values(self, value: str, modulus: int, expected: int) -> None:
        """The values Prometheus' own tests pin, and a few of ours."""
        assert hashmod(value, modulus) == expected

    @pytest.mark.parametrize("count", [1, 2, 3, 7])
    def test_shards_partition_the_accounts(self, count: int) -> None:
        """N shards together hold every account exactly once."""
        items = [Item(n) for n in NAMES]
        parts = [select(items, Shard(k, count)) for k in range(count)]
        assert sorted(item.name for part in parts for item in part) == sorted(NAMES)

    def test_no_shard_keeps_everything(self) -> None:
        """Without a shard every item is kept, in order."""
        assert select([Item("b"), Item("a")], None) == (Item("b"), Item("a"))


class TestParse:
    """K/N with 0 <= K < N; anything else is refused."""

    def test_good(self) -> None:
        """'2/4' is shard 2 of 4, written back the same way."""
        assert parse_shard(" 2/4 ") == Shard(2, 4)
        assert str(Shard(2, 4)) == "2/4"

    @pytest.mark.parametrize("value", ["4/4", "1/0", "-1/3", "1", "a/b", "1/2/3", 3, None])
    def test_bad(self, value: object) -> None:
        """Out of range or malformed values raise ValueError."""
        with pytest.raises(ValueError, match="K"):
            parse_shard(value)


class TestConfig:
    """The shard: key and the --shard override select the config's accounts."""

    def test_key_selects_accounts(self, tmp_path: Path) -> None:
        """shard: 1/3 keeps exactly the accounts hashing to 1 mod 3."""
        config = load_config(write(tmp_path, shard="1/3"))
        assert config.shard == Shard(1, 3)
        assert [a.name for a in config.accounts] == [n for n in NAMES if hashmod(n, 3) == 1]

    def test_override_wins(self, tmp_path: Path) -> None:
        """An explicit shard (the CLI's) overrides the file's."""
        config = load_config(write(tmp_path, shard="1/3"), shard=Shard(0, 2))
        assert config.shard == Shard(0, 2)
        assert [a.name for a in config.accounts] == [n for n in NAMES if hashmod(n, 2) == 0]

    def test_no_shard(self, tmp_path: Path) -> None:
        """Without shard: every account is kept."""
        config = load_config(write(tmp_path))
        assert config.shard is None
        assert len(config.accounts) == len(NAMES)

    def test_bad_key(self, tmp_path: Path) -> None:
        """A malformed shard: is a config problem naming the key."""
        with pytest.raises(ConfigError, match="shard"):
            load_config(write(tmp_path, shard="3/3"))

    def test_empty_shard_refused(self, tmp_path: Path) -> None:
        """A shard owning none of the accounts is refused rather than run idle."""
        data = {"accounts": accounts(["acct-3"]), "shard": "1/3"}  # acct-3 is in shard 0
        with pytest.raises(ConfigError, match="owns none"):
            parse_config(data, base_dir=tmp_path, environ={})


class TestCli:
    """walletwatch check --shard."""

    def test_check_counts_the_shard(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """check --shard K/N reports the accounts of that shard."""
        owned = sum(1 for n in NAMES if hashmod(n, 4) == 3)
        assert main(["check", "-c", str(write(tmp_path)), "--shard", "3/4"]) == 0
        assert f"{owned} account(s)" in capsys.readouterr().out

    def test_bad_flag(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """A malformed --shard is a usage error."""
        with pytest.raises(SystemExit) as exc:
            main(["check", "-c", str(write(tmp_path)), "--shard", "5/4"])
        assert exc.value.code == 2
        assert "K < N" in capsys.readouterr().err
