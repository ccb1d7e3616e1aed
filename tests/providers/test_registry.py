"""The provider registry: one entry makes a provider known to config, clients and metrics."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from walletwatch.config import parse_config
from walletwatch.configmodel import AccountConfig
from walletwatch.context import ProviderContext
from walletwatch.errors import ConfigError
from walletwatch.model import Observation
from walletwatch.providers import PROVIDERS, REGISTRY, SCHEMAS, ProviderSpec, gauge_help
from walletwatch.schema import Option, ProviderSchema, choice
from walletwatch.types import Tracked


class Toy:
    """A client that is never polled here."""

    endpoints = ("balances",)

    def __init__(self, account: AccountConfig, context: ProviderContext) -> None:
        del account, context

    async def poll(self, endpoint: str, tracked: Tracked) -> Observation:
        """Never called."""
        del tracked
        raise AssertionError(endpoint)


TOY = ProviderSpec(
    ProviderSchema(
        name="toy",
        base_url="https://toy.example",
        rate_limit=3.0,
        credentials=("token_id", "token"),
        identity="token_id",
        options={"mode": Option("quiet", choice("quiet", "loud"))},
    ),
    Toy,
    gauges={"toy_level": "how full the toy is"},
)


@pytest.fixture(name="toy")
def fixture_toy(monkeypatch: pytest.MonkeyPatch) -> ProviderSpec:
    """The toy provider, registered for the test."""
    monkeypatch.setitem(PROVIDERS, TOY.name, TOY)
    return TOY


def account(**changes: object) -> dict[str, object]:
    """A toy account."""
    return {
        "name": "t",
        "provider": "toy",
        "credentials": {"token_id": "id-1", "token": "secret-1"},
        **changes,
    }


class TestRegistry:
    def test_views_follow_the_registry(self, toy: ProviderSpec) -> None:
        """A provider added to PROVIDERS is in every view at once."""
        assert REGISTRY["toy"] is Toy
        assert SCHEMAS["toy"] is toy.schema
        assert list(REGISTRY) == list(SCHEMAS) == list(PROVIDERS)
        assert gauge_help("toy_level") == "how full the toy is"

    def test_unknown_gauge_help_is_its_name(self) -> None:
        """A gauge no provider describes gets its name as help."""
        assert gauge_help("no_such_gauge") == "no_such_gauge"

    def test_config_takes_a_registered_provider(self, toy: ProviderSpec, tmp_path: Path) -> None:
        """Config accepts the provider, fills its defaults, and names its key's bucket."""
        config = parse_config({"accounts": [account()]}, base_dir=tmp_path, environ={})

        (parsed,) = config.accounts
        assert parsed.base_url == toy.schema.base_url
        assert parsed.options == {"mode": "quiet"}
        assert config.providers["toy"].rate_limit == 3.0
        assert re.fullmatch(r"toy:[0-9a-f]{12}", parsed.credential_id)

    @pytest.mark.usefixtures("toy")
    def test_config_checks_a_registered_provider(self, tmp_path: Path) -> None:
        """The provider's own options and credentials are validated from its schema."""
        data = {"accounts": [account(mode="shout", credentials={"token_id": "x"})]}

        with pytest.raises(ConfigError) as err:
            parse_config(data, base_dir=tmp_path, environ={})

        assert err.value.problems == (
            "accounts[0].mode: expected one of 'quiet', 'loud'; got 'shout'",
            "accounts[0].credentials: missing credential 'token'",
        )

    def test_unregistered_provider_is_refused(self, tmp_path: Path) -> None:
        """Without the registry entry, the name is an unknown provider."""
        with pytest.raises(ConfigError, match=r"accounts\[0\]\.provider: unknown provider 'toy'"):
            parse_config({"accounts": [account()]}, base_dir=tmp_path, environ={})
