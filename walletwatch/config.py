"""Load config.yaml into frozen, validated objects, reporting every problem at once.

This is where the rest of walletwatch gets its configuration: the objects (``configmodel``),
read by ``configload`` (YAML, secrets) and validated by ``configcheck``. Modules a provider
client imports take the objects from ``configmodel`` instead, since validating needs the
provider registry.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from walletwatch.configcheck import parse_config
from walletwatch.configload import read_yaml, refuse_exposed_secrets
from walletwatch.configmodel import (
    DEFAULT_FAST_INTERVAL,
    DEFAULT_RATE_MARGIN,
    DEFAULT_RETENTION,
    AccountConfig,
    AlertmanagerConfig,
    Config,
    Listen,
    ProviderSettings,
    Secret,
    SinkConfig,
    WebConfig,
    WebhookConfig,
)
from walletwatch.errors import ConfigError
from walletwatch.providers import SCHEMAS
from walletwatch.schema import format_duration, parse_duration
from walletwatch.shard import Shard

__all__ = [
    "DEFAULT_FAST_INTERVAL",
    "DEFAULT_RATE_MARGIN",
    "DEFAULT_RETENTION",
    "AccountConfig",
    "AlertmanagerConfig",
    "Config",
    "Listen",
    "ProviderSettings",
    "Secret",
    "SinkConfig",
    "WebConfig",
    "WebhookConfig",
    "format_duration",
    "load_config",
    "parse_config",
    "parse_duration",
    "read_yaml",
    "validate_config",
]


def load_config(
    path: Path,
    *,
    environ: Mapping[str, str] | None = None,
    shard: Shard | None = None,
    offline: bool = False,
) -> Config:
    """Read and validate the YAML config at ``path``; ConfigError lists every problem.

    ``shard`` (``--shard``) overrides the file's ``shard:``; ``offline`` reads no secret
    (``check --offline``: the result is for checking only).
    """
    return validate_config(path, read_yaml(path), environ=environ, shard=shard, offline=offline)


def validate_config(
    path: Path,
    data: Mapping[Any, object],
    *,
    environ: Mapping[str, str] | None = None,
    shard: Shard | None = None,
    offline: bool = False,
) -> Config:
    """The Config of ``data``, read from the file at ``path``; ConfigError lists every problem."""
    public = {name for spec in SCHEMAS.values() for name in spec.public_credentials}
    try:
        refuse_exposed_secrets(path, data, public)
    except ConfigError as exposed:  # reported with every other problem of the file
        refused: tuple[str, ...] = exposed.problems
    else:
        refused = ()
    environ = os.environ if environ is None else environ
    try:
        config = parse_config(
            data, base_dir=path.absolute().parent, environ=environ, shard=shard, offline=offline
        )
    except ConfigError as err:
        raise ConfigError([*refused, *err.problems]) from None
    if refused:
        raise ConfigError(refused)
    return config
