"""Config safety: plain http only to loopback, no literal secrets in a world-readable file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from walletwatch.config import load_config, parse_config
from walletwatch.errors import ConfigError

CREDENTIALS = {"api_key": {"env": "K"}, "secret_key": {"env": "S"}}
ENV = {"K": "key-from-env", "S": "secret-from-env"}
INSECURE = (
    "plain http:// is refused for a host other than loopback: use https:// or set "
    "allow_insecure_http: true on the account"
)


def parse(account: dict[str, Any], defaults: dict[str, Any] | None = None) -> Any:
    """Parse a config with one westwallet account."""
    entry = {"name": "a", "provider": "westwallet", "credentials": CREDENTIALS, **account}
    data: dict[str, Any] = {"accounts": [entry]}
    if defaults is not None:
        data["defaults"] = defaults
    return parse_config(data, base_dir=Path("/tmp"), environ=ENV)  # noqa: S108 - never written


class TestPlainHttp:
    """http:// is for loopback; elsewhere only with allow_insecure_http."""

    @pytest.mark.parametrize(
        "url",
        [
            "https://api.westwallet.io",
            "http://127.0.0.1:8080",
            "http://127.1.2.3",
            "http://[::1]:9000/api",
            "http://localhost:8080",
            "http://wallet.localhost",
        ],
    )
    def test_allowed(self, url: str) -> None:
        """HTTPS anywhere and plain http to loopback need nothing more."""
        assert parse({"base_url": url}).accounts[0].base_url == url

    @pytest.mark.parametrize(
        "url",
        ["http://api.westwallet.io", "http://10.0.0.5", "http://[2001:db8::1]", "http://0.0.0.0"],
    )
    def test_refused_with_its_path(self, url: str) -> None:
        """Plain http to any other host is a config error naming the key."""
        with pytest.raises(ConfigError) as raised:
            parse({"base_url": url})
        assert raised.value.problems == (f"accounts[0].base_url: {INSECURE}",)

    def test_refused_from_defaults_names_the_default(self) -> None:
        """A base_url from defaults is reported where it is written."""
        with pytest.raises(ConfigError) as raised:
            parse({}, defaults={"base_url": "http://wallet.internal"})
        assert raised.value.problems == (f"defaults.base_url: {INSECURE}",)

    def test_allowed_explicitly(self) -> None:
        """allow_insecure_http: true lets an account use plain http to another host."""
        account = parse({"base_url": "http://wallet.internal", "allow_insecure_http": True})
        assert account.accounts[0].allow_insecure_http is True
        assert account.accounts[0].base_url == "http://wallet.internal"

    def test_flag_must_be_a_boolean(self) -> None:
        """allow_insecure_http takes true or false, not text."""
        with pytest.raises(ConfigError) as raised:
            parse({"base_url": "https://x.test", "allow_insecure_http": "yes"})
        assert raised.value.problems == (
            "accounts[0].allow_insecure_http: expected true or false, got 'yes'",
        )


def write(tmp_path: Path, credentials: dict[str, Any], mode: int, **top: Any) -> Path:
    """A config file with one westwallet account, at ``mode``."""
    path = tmp_path / "config.yaml"
    account = {"name": "a", "provider": "westwallet", "credentials": credentials}
    path.write_text(yaml.safe_dump({"accounts": [account], **top}))
    path.chmod(mode)
    return path


class TestWorldReadable:
    """A config every user may read must not hold literal secrets."""

    @pytest.mark.parametrize("mode", [0o644, 0o604, 0o666])
    def test_literal_secrets_refused(self, tmp_path: Path, mode: int) -> None:
        """Literal credentials in a world-readable file: a clear refusal, values not shown."""
        path = write(tmp_path, {"api_key": "literal-key", "secret_key": "literal-secret"}, mode)
        with pytest.raises(ConfigError) as raised:
            load_config(path, environ=ENV)
        (problem,) = raised.value.problems
        assert problem == (
            f"{path}: readable by every user (mode {mode:04o}) but holds literal secrets "
            "(accounts[0].credentials.api_key, accounts[0].credentials.secret_key): "
            f"run 'chmod 600 {path}', or take them from {{env: NAME}}, {{file: PATH}} or "
            "{credential: NAME}"
        )

    def test_a_secret_file_every_user_may_read_is_refused(self, tmp_path: Path) -> None:
        """The same rule for {file:}: a world-readable secret file is refused, by path and
        mode, its text never shown; at 0600 it is read."""
        secret = tmp_path / "secret.txt"
        secret.write_text("file-secret-0009\n")
        secret.chmod(0o644)
        credentials = {"api_key": {"file": "secret.txt"}, "secret_key": {"env": "S"}}
        path = write(tmp_path, credentials, 0o600)
        with pytest.raises(ConfigError) as raised:
            load_config(path, environ={"S": "x"})
        expected = (
            f"accounts[0].credentials.api_key: {secret}: readable by every user (mode 0644): "
            f"run 'chmod 600 {secret}'"
        )
        assert raised.value.problems == (expected,)
        assert "file-secret-0009" not in str(raised.value)
        secret.chmod(0o600)
        assert load_config(path, environ={"S": "x"}).accounts

    def test_reported_with_every_other_problem(self, tmp_path: Path) -> None:
        """A world-readable file with literal secrets and other faults: every problem at once
        (the refusal used to hide the rest)."""
        path = write(
            tmp_path, {"api_key": "literal-key", "secret_key": "literal-secret"}, 0o644, listen=5
        )
        with pytest.raises(ConfigError) as raised:
            load_config(path, environ=ENV)
        problems = raised.value.problems
        assert problems[0].startswith(f"{path}: readable by every user")
        assert any(p.startswith("listen:") for p in problems[1:]), problems

    def test_the_simulators_published_keys_are_not_secrets(self, tmp_path: Path) -> None:
        """The simulator's demo keys (walletwatch simulate prints them) may be literal in a
        world-readable file; a real secret beside them is still refused."""
        demo = {"api_key": "demo-hot-key", "secret_key": "demo-hot-secret"}
        assert load_config(write(tmp_path, demo, 0o644), environ=ENV).accounts
        mixed = {"api_key": "demo-hot-key", "secret_key": "real-secret"}
        with pytest.raises(ConfigError, match=r"\(accounts\[0\]\.credentials\.secret_key\)"):
            load_config(write(tmp_path, mixed, 0o644), environ=ENV)

    @pytest.mark.parametrize("mode", [0o600, 0o640, 0o400])
    def test_private_file_may_hold_literals(self, tmp_path: Path, mode: int) -> None:
        """Readable by owner (and group) only, literal secrets are accepted."""
        path = write(tmp_path, {"api_key": "literal-key", "secret_key": "literal-secret"}, mode)
        assert load_config(path, environ=ENV).accounts[0].credentials["api_key"].reveal()

    def test_secret_sources_in_a_readable_file(self, tmp_path: Path) -> None:
        """{env}, {file} and {credential} references are not secrets: 0644 is fine."""
        path = write(tmp_path, CREDENTIALS, 0o644)
        assert load_config(path, environ=ENV).accounts[0].credentials["api_key"].reveal()

    def test_webhook_literals_count(self, tmp_path: Path) -> None:
        """A literal webhook URL (it may carry a token) or secret counts as a secret too."""
        sinks = [{"type": "webhook", "url": "https://hooks.test/T0KEN", "secret": "hmac-key"}]
        path = write(tmp_path, CREDENTIALS, 0o644, sinks=sinks)
        with pytest.raises(ConfigError, match=r"sinks\[0\]\.url, sinks\[0\]\.secret"):
            load_config(path, environ=ENV)

    def test_sila_handles_are_not_secrets(self, tmp_path: Path) -> None:
        """Sila's app and user handles are public names, fine as literals in a 0644 file."""
        path = tmp_path / "config.yaml"
        credentials = {
            "app_handle": "app.silamoney.eth",
            "user_handle": "wallet-1",
            "app_private_key": {"env": "K"},
            "user_private_key": {"env": "S"},
        }
        account = {"name": "s", "provider": "sila", "credentials": credentials}
        path.write_text(yaml.safe_dump({"accounts": [account]}))
        path.chmod(0o644)
        assert load_config(path, environ=ENV).accounts[0].provider == "sila"
