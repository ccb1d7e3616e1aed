"""The ``store:`` block: a PostgreSQL URL without a password, a secret password, a lease."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog
import yaml

from tests.test_config import account, parse, problems
from walletwatch.cli import main
from walletwatch.configmodel import DEFAULT_LEASE, StoreConfig

URL = "postgresql://walletwatch@db.example:5432/walletwatch"
ENV = {"WW_KEY": "env-api-key-0001", "WW_SECRET": "env-secret-0002", "PG_PW": "pg-pass-31337"}


class TestStore:
    """What a store block may say, and every way it can be wrong."""

    def test_full_block(self, tmp_path: Path) -> None:
        """URL, password from a secret reference and lease make a StoreConfig."""
        store = {"url": URL, "password": {"env": "PG_PW"}, "lease": "20s"}
        config = parse({"store": store, "accounts": [account()]}, tmp_path, ENV)
        assert config.store is not None
        assert (config.store.url, config.store.lease) == (URL, 20.0)
        assert config.store.password is not None
        assert config.store.password.reveal() == "pg-pass-31337"
        assert "pg-pass-31337" not in repr(config)

    def test_defaults(self, tmp_path: Path) -> None:
        """Without password or lease: none, and the default lease; no store: SQLite."""
        config = parse({"store": {"url": URL}, "accounts": [account()]}, tmp_path)
        assert config.store == StoreConfig(URL, None, DEFAULT_LEASE)
        assert parse({"accounts": [account()]}, tmp_path).store is None

    @pytest.mark.parametrize(
        ("store", "expected"),
        [
            ({"url": "postgresql://u:hunter2@db/w"}, "store.url: the URL must not hold a pass"),
            ({"url": "mysql://db/w"}, "store.url: expected a URL such as "),
            ({"url": "postgresql://db"}, "store.url: expected a host and a database name"),
            ({"url": 5}, "store.url: expected a postgresql:// URL, got 5"),
            ({}, "store: missing required key 'url'"),
            ({"url": URL, "lease": "1s"}, "store.lease: must be at least 3s, got '1s'"),
            ({"url": URL, "lease": "soon"}, "store.lease: "),
            ({"url": URL, "pasword": "x"}, "store.pasword: unknown key 'pasword'"),
            ({"url": URL, "password": {"env": "MISSING"}}, "store.password: "),
            ("postgresql://db/w", "store: expected a mapping with url, password and lease"),
        ],
    )
    def test_problems(self, tmp_path: Path, store: object, expected: str) -> None:
        """Each wrong store block is reported with its path; a password never shows."""
        found = problems({"store": store, "accounts": [account()]}, tmp_path, ENV)
        assert any(p.startswith(expected) for p in found), found
        assert not any("hunter2" in p for p in found)

    def test_store_and_state_path_together(self, tmp_path: Path) -> None:
        """store: and state_path name two states: a config error."""
        data = {"store": {"url": URL}, "state_path": "x.db", "accounts": [account()]}
        assert problems(data, tmp_path) == [
            "store: store and state_path name two states: keep only one of them"
        ]


class TestCommands:
    """check, run and demo with a store."""

    @pytest.fixture(autouse=True)
    def _logs_reset(self) -> Iterator[None]:
        """run configures logging to the captured stdout: later tests must not log there."""
        yield
        structlog.reset_defaults()

    def write(self, tmp_path: Path, store: dict[str, object]) -> Path:
        """A config file with one account and ``store``."""
        path = tmp_path / "config.yaml"
        path.write_text(yaml.safe_dump({"store": store, "accounts": [account()]}))
        return path

    def test_check_passes_without_a_state_file(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """check passes with a store, and makes no state file."""
        monkeypatch.setenv("WW_KEY", "k")
        monkeypatch.setenv("WW_SECRET", "s")
        path = self.write(tmp_path, {"url": URL})
        assert main(["check", "-c", str(path)]) == 0
        assert not (tmp_path / "walletwatch.db").exists()

    def test_reset_state_is_refused(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """--reset-state moves a SQLite file aside: with a store it is refused, exit 1."""
        monkeypatch.setenv("WW_KEY", "k")
        monkeypatch.setenv("WW_SECRET", "s")
        path = self.write(tmp_path, {"url": URL})
        assert main(["run", "-c", str(path), "--reset-state"]) == 1
        assert "--reset-state moves a state_path aside" in capsys.readouterr().err

    def test_demo_store_url_is_checked(self, capsys: pytest.CaptureFixture[str]) -> None:
        """demo --store refuses a URL with a password, without showing it."""
        with pytest.raises(SystemExit) as caught:
            main(["demo", "--store", "postgresql://u:hunter2@db/w"])
        assert caught.value.code == 2
        err = capsys.readouterr().err
        assert "must not hold a password" in err
        assert "hunter2" not in err
