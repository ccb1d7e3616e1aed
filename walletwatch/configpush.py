"""Validating the push receiver's config: the ``push:`` section and each account's ``push:``.

Called by configcheck's walk with its problem list, so the problems of both read as one.
The token is checked for length and form, and never appears in a message.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any, Protocol, TypeVar

from walletwatch import schema
from walletwatch.configload import UNREAD
from walletwatch.configmodel import Config, Listen, PushConfig, Secret, WebConfig
from walletwatch.providers import PROVIDERS
from walletwatch.schema import Invalid, describe

T = TypeVar("T")

PUSH_KEYS = ("listen", "token", "tls_server_config")
MIN_TOKEN = 32
"""Characters a push token has at least: 32 random ones are beyond guessing."""
_TOKEN = re.compile(r"[A-Za-z0-9._~-]+")  # unreserved in a URL: it goes in one as it is
_WILDCARDS = ("0.0.0.0", "::")  # noqa: S104 - names of the wildcard addresses, not a bind

Sources = Sequence[tuple[str, Mapping[Any, object]]]


class Checker(Protocol):
    """What this module needs of configcheck's walker."""

    def add(self, path: str, message: str) -> None:
        """Record one problem."""
        ...

    def field(self, sources: Sources, key: str, parse: Callable[[object], T], default: T) -> T:
        """Parse ``key`` from the first source holding it, problems recorded."""
        ...

    def secret(self, value: object) -> str:
        """A secret's text from its reference."""
        ...

    def web(self, value: object) -> WebConfig:
        """A ``web``-form block (tls_server_config)."""
        ...


def with_push(checker: Checker, data: Mapping[Any, object], config: Config) -> Config:
    """``config`` with its ``push`` section and every account's ``push`` flag checked in."""
    push = checker.field([("", data)], "push", lambda value: _push(checker, value), None)
    # Port 0 asks for a free port each: two of those never clash.
    if push is not None and push.listen == config.listen and push.listen.port != 0:
        checker.add("push.listen", f"must differ from listen ({config.listen})")
    raw_accounts = data.get("accounts")
    defaults = data.get("defaults")
    if not isinstance(raw_accounts, list):
        return replace(config, push=push)
    entries = [item for item in raw_accounts if isinstance(item, Mapping)]
    paths = [f"accounts[{i}]" for i, item in enumerate(raw_accounts) if isinstance(item, Mapping)]
    defaults_map = defaults if isinstance(defaults, Mapping) else {}
    accounts = []
    for path, raw, account in zip(paths, entries, config.accounts, strict=False):
        sources = [(path, raw), ("defaults", defaults_map)]
        enabled = checker.field(sources, "push", schema.flag, False)
        if enabled:
            where = next(prefix for prefix, source in sources if "push" in source) + ".push"
            spec = PROVIDERS.get(account.provider)
            if spec is not None and spec.push_answer is None:
                checker.add(where, f"{account.provider} sends no push: leave push out")
            elif push is None and "push" not in data:  # else its own problems are reported
                checker.add(
                    where, "needs a top-level push: section (listen, token) to receive pushes"
                )
        accounts.append(replace(account, push=enabled) if enabled else account)
    return replace(config, push=push, accounts=(*accounts, *config.accounts[len(accounts) :]))


def _push(checker: Checker, value: object) -> PushConfig:
    """The ``push`` section itself; Invalid with every problem of it."""
    if not isinstance(value, Mapping):
        raise Invalid(f"expected a mapping with listen and token, got {describe(value)}")
    problems: list[tuple[str, str]] = [
        (f".{key}", f"unknown key (expected one of {', '.join(PUSH_KEYS)})")
        for key in value
        if key not in PUSH_KEYS
    ]
    problems += [
        ("", f"missing required key {key!r}") for key in ("listen", "token") if key not in value
    ]
    listen, token, tls = None, None, None
    try:
        listen = Listen(*schema.listen_address(value.get("listen")))
    except Invalid as err:
        problems += [(".listen" + sub, message) for sub, message in err.problems]
    try:
        token = _token(checker.secret(value.get("token")))
    except Invalid as err:
        problems += [(".token" + sub, message) for sub, message in err.problems]
    if value.get("tls_server_config") is not None:
        try:
            tls = checker.web({"tls_server_config": value["tls_server_config"]})
        except Invalid as err:
            problems += list(err.problems)
    if problems or listen is None or token is None:
        raise Invalid(problems=problems or [("", "invalid push section")])
    return PushConfig(listen, token, tls)


def _token(text: str) -> Secret:
    """The push token, at least MIN_TOKEN URL-safe characters; messages never show it."""
    if text == UNREAD:  # check --offline: the form of the reference is all there is
        return Secret(text)
    if len(text) < MIN_TOKEN:
        raise Invalid(
            f"too short ({len(text)} characters; at least {MIN_TOKEN}): make one with "
            "`openssl rand -hex 32` (value not shown)"
        )
    if not _TOKEN.fullmatch(text):
        raise Invalid(
            "use only letters, digits and '.', '_', '~', '-': it goes in a URL as it is "
            "(value not shown)"
        )
    return Secret(text)


def push_url(push: PushConfig, account: str) -> str:
    """The URL a provider calls for ``account``, its token left as ``<token>``."""
    host = push.listen.host
    if host in _WILDCARDS:
        host = "<this host>"
    elif ":" in host:
        host = f"[{host}]"
    return f"{push.scheme}://{host}:{push.listen.port}/push/{account}/<token>"


def push_lines(config: Config) -> list[str]:
    """What ``walletwatch check`` says of pushes: each push account's URL, token left out."""
    push = config.push
    if push is None:
        return []
    accounts = [a for a in config.accounts if a.push]
    lines = [f"push: listening on {push.listen}, {len(accounts)} account(s) take pushes"]
    lines += [f"  {a.name} ({a.provider}): {push_url(push, a.name)}" for a in accounts]
    return lines
