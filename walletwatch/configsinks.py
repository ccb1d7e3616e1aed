"""The ``sinks`` section of the config: webhooks and Alertmanagers, checked and built.

``configcheck._Checker`` walks the rest of the tree and hands this module the list; problems
are reported through it, with their paths, beside every other problem of the config.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Mapping, Sequence
from types import MappingProxyType
from typing import Any, Protocol, TypeVar
from urllib.parse import urlsplit

from walletwatch import schema
from walletwatch.configmodel import AlertmanagerConfig, Secret, SinkConfig, WebhookConfig
from walletwatch.schema import Invalid, describe

T = TypeVar("T")

Sources = Sequence[tuple[str, Mapping[Any, object]]]  # (path prefix, mapping); first one wins

TYPES = ("webhook", "alertmanager")
_KEYS: Mapping[str, tuple[str, ...]] = {
    "webhook": ("type", "name", "url", "headers", "secret", "timeout"),
    "alertmanager": ("type", "name", "url", "headers", "timeout"),
}
_SINK_NAME = re.compile(r"[A-Za-z0-9_.-]+")
BUILTIN_SINKS = ("stdout", "events_file")
_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
# Headers the sinks set themselves.
_OWN_HEADERS = ("content-type", "content-length", "host", "x-walletwatch-")
_POSITIVE = schema.duration(0, strict=True)
_EMPTY: Mapping[str, Secret] = MappingProxyType({})


class Checker(Protocol):
    """What this module needs of configcheck's tree walker."""

    problems: list[str]

    def add(self, path: str, message: str) -> None:
        """Record one problem."""
        ...

    def field(self, sources: Sources, key: str, parse: Callable[[object], T], default: T) -> T:
        """Parse ``key`` from the first source holding it."""
        ...

    def require(self, sources: Sources, key: str, parse: Callable[[object], T], fail: T) -> T:
        """Like ``field`` for a key the first source must hold."""
        ...

    def unknown_keys(self, prefix: str, raw: Mapping[Any, object], allowed: Sequence[str]) -> None:
        """Report every key of ``raw`` not in ``allowed``."""
        ...

    def secret(self, value: object) -> str:
        """A secret's text from a literal or a source; never echoed."""
        ...


def sink_name(value: object) -> str:
    """A sink name: the ``sink`` label and the name of its cursor."""
    if isinstance(value, str) and _SINK_NAME.fullmatch(value):
        return value
    raise Invalid(f"invalid sink name {describe(value)}: use letters, digits, '_', '.' and '-'")


def sinks(checker: Checker, raw: object) -> tuple[SinkConfig, ...]:
    """The ``sinks`` list: webhooks and Alertmanagers, with unique names."""
    if raw is None:
        return ()
    if not isinstance(raw, list):
        checker.add("sinks", f"expected a list of sinks, got {describe(raw)}")
        return ()
    found: list[SinkConfig] = []
    names = set(BUILTIN_SINKS)
    for index, item in enumerate(raw):
        path = f"sinks[{index}]"
        if not isinstance(item, Mapping):
            checker.add(path, f"expected a mapping, got {describe(item)}")
            continue
        sink = _sink(checker, path, item)
        if sink is None:
            continue
        if sink.name in names:
            taken = "reserved" if sink.name in BUILTIN_SINKS else "duplicate"
            checker.add(f"{path}.name", f"{taken} sink name {sink.name!r}")
        names.add(sink.name)
        found.append(sink)
    return tuple(found)


def _sink(checker: Checker, path: str, raw: Mapping[Any, object]) -> SinkConfig | None:
    """One entry of either type; None when it has problems."""
    before = len(checker.problems)
    here = [(path, raw)]
    kind = checker.require(here, "type", schema.choice(*TYPES), None)
    checker.unknown_keys(path, raw, _KEYS.get(str(kind), _KEYS["webhook"]))
    if kind == "alertmanager":
        url = checker.require(here, "url", lambda v: _base_url(checker.secret(v)), None)
    else:
        url = checker.require(here, "url", lambda v: _url(checker.secret(v)), None)
    default = str(kind or "webhook")
    if url is not None:  # stable across restarts, and shows nothing of the URL
        default += "-" + hashlib.sha256(url.reveal().encode()).hexdigest()[:8]
    name = checker.field(here, "name", sink_name, default)
    headers = checker.field(here, "headers", lambda v: _headers(checker, v), _EMPTY)
    timeout = checker.field(here, "timeout", _POSITIVE, 10.0)
    if url is not None and urlsplit(url.reveal()).username is not None:
        for header in headers:
            if header.lower() == "authorization":  # aiohttp would refuse every request
                checker.add(
                    f"{path}.headers.{header}",
                    "the url carries a user and password already (Basic credentials): "
                    "use one or the other",
                )
    if kind == "alertmanager":
        sink: SinkConfig | None = AlertmanagerConfig(name, url or Secret(""), headers, timeout)
    else:
        secret = checker.field(here, "secret", lambda v: Secret(checker.secret(v)), None)
        sink = WebhookConfig(name, url or Secret(""), headers, secret, timeout)
    if url is None or kind is None or len(checker.problems) > before:
        return None
    return sink


def _url(text: str) -> Secret:
    """An http(s) URL, literal or from a secret source; problems never show it."""
    try:
        parts = urlsplit(text)
        _ = parts.port  # raises on a port that is not a number
    except ValueError:
        parts = None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
        raise Invalid("expected an http(s) URL such as 'https://host/hook' (value not shown)")
    return Secret(text)


def _base_url(text: str) -> Secret:
    """Alertmanager's base URL: http(s), no query or fragment; the trailing slash dropped."""
    url = _url(text)
    parts = urlsplit(text)
    if parts.query or parts.fragment:
        # /api/v2/alerts is appended to the path: a query or fragment would swallow it.
        raise Invalid(
            "expected Alertmanager's base URL such as 'http://alertmanager:9093', without "
            "a query or fragment (value not shown)"
        )
    return Secret(url.reveal().rstrip("/"))


def _headers(checker: Checker, value: object) -> Mapping[str, Secret]:
    """Extra request headers: name -> literal or secret source."""
    if not isinstance(value, Mapping):
        raise Invalid(f"expected a mapping of header names to values, got {describe(value)}")
    headers, problems = {}, []
    for name, text in value.items():
        if not isinstance(name, str) or not _HEADER_NAME.fullmatch(name):
            problems.append(("", f"invalid header name {describe(name)}"))
            continue
        if name.lower().startswith(_OWN_HEADERS):
            problems.append((f".{name}", "set by walletwatch; cannot be configured"))
            continue
        try:
            secret = checker.secret(text)
        except Invalid as err:
            problems.extend((f".{name}{sub}", message) for sub, message in err.problems)
            continue
        if not (secret.isascii() and secret.isprintable()):  # no header injection
            problems.append((f".{name}", "value must be printable ASCII on one line"))
            continue
        headers[name] = Secret(secret)
    if problems:
        raise Invalid(problems=problems)
    return MappingProxyType(headers)
