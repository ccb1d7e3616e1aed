"""Validating the ``store:`` block: a PostgreSQL URL, its password, the lease.

``store:`` and ``state_path`` name two different states, so both together is a problem; so is
a URL that carries a password (it would show wherever the URL does: the password comes from
a secret reference instead).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol, TypeVar
from urllib.parse import urlsplit

from walletwatch import schema
from walletwatch.configmodel import DEFAULT_LEASE, Secret, StoreConfig
from walletwatch.schema import Invalid, describe

T = TypeVar("T")

STORE_KEYS = ("url", "password", "lease")
MIN_LEASE = 3.0
"""Seconds: renewed every third of the lease, a shorter one leaves a busy leader no margin."""

_SCHEMES = ("postgresql", "postgres")


class Checks(Protocol):
    """What of the config checker (walletwatch.configcheck) this module uses."""

    def field(
        self, sources: Sequence[tuple[str, Mapping[Any, object]]], key: str,
        parse: Callable[[object], T], default: T,
    ) -> T: ...  # fmt: skip
    def add(self, path: str, message: str) -> None: ...
    def secret(self, value: object) -> str: ...


def checked_store(checks: Checks, data: Mapping[Any, object]) -> StoreConfig | None:
    """The top level's ``store:`` block, its problems reported through ``checks``."""
    if data.get("store") is None:
        return None
    if "state_path" in data:
        checks.add("store", "store and state_path name two states: keep only one of them")
    return checks.field([("", data)], "store", lambda value: _store(checks, value), None)


def _store(checks: Checks, value: object) -> StoreConfig:
    if not isinstance(value, Mapping):
        raise Invalid(f"expected a mapping with url, password and lease, got {describe(value)}")
    problems = [(f".{key}", _unknown(key)) for key in value if key not in STORE_KEYS]
    url = password = None
    lease = DEFAULT_LEASE
    if "url" not in value:
        problems.append(("", "missing required key 'url'"))
    else:
        try:
            url = database_url(value["url"])
        except Invalid as err:
            problems += [(".url" + sub, message) for sub, message in err.problems]
    if value.get("password") is not None:
        try:
            password = Secret(checks.secret(value["password"]))
        except ValueError as err:
            problems.append((".password", str(err)))
    if "lease" in value:
        try:
            lease = schema.duration(MIN_LEASE)(value["lease"])
        except Invalid as err:
            problems += [(".lease" + sub, message) for sub, message in err.problems]
        except ValueError as err:
            problems.append((".lease", str(err)))
    if problems or url is None:
        raise Invalid(problems=problems)
    return StoreConfig(url, password, lease)


def store_argument(text: str) -> StoreConfig:
    """A ``demo --store`` URL as a store; the password comes from PGPASSWORD or ~/.pgpass."""
    try:
        return StoreConfig(database_url(text), None)
    except Invalid as err:
        raise argparse.ArgumentTypeError("; ".join(m for _, m in err.problems)) from None


def database_url(value: object) -> str:
    """A postgresql:// URL naming a host and a database, without a password."""
    if not isinstance(value, str):
        raise Invalid(f"expected a postgresql:// URL, got {describe(value)}")
    try:
        parts = urlsplit(value)
        _ = parts.port  # raises on a port that is not a number
    except ValueError:
        parts = None
    if parts is None or parts.scheme not in _SCHEMES:
        raise Invalid("expected a URL such as 'postgresql://walletwatch@db:5432/walletwatch'")
    if parts.password is not None:
        # Not echoed: the value holds the password.
        raise Invalid("the URL must not hold a password: give it as store.password (a secret)")
    if not parts.hostname or parts.path.strip("/") == "":
        raise Invalid(f"expected a host and a database name, as in {_EXAMPLE}, got {value!r}")
    return value


_EXAMPLE = "'postgresql://walletwatch@db:5432/walletwatch'"


def _unknown(key: object) -> str:
    return f"unknown key {key!r} (expected one of: {', '.join(STORE_KEYS)})"
