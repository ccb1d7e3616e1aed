"""Load config.yaml into frozen, validated objects, reporting every problem at once.

Value validators and the providers' contracts live in ``schema.py``; this module walks the
YAML tree, resolves credentials ({env}, {file}, {credential}) and builds the objects.
"""

from __future__ import annotations

import difflib
import functools
import hashlib
import os
import re
import ssl
import stat
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from decimal import Decimal
from importlib import resources
from pathlib import Path
from types import MappingProxyType
from typing import Any, TypeVar
from urllib.parse import urlsplit

import yaml

from walletwatch import schema
from walletwatch.errors import ConfigError
from walletwatch.schema import (
    PROVIDERS,
    Invalid,
    ProviderSchema,
    describe,
    format_duration,
    parse_duration,
)
from walletwatch.shard import Shard, parse_shard, select

__all__ = [
    "PROVIDERS",
    "AccountConfig",
    "Config",
    "Listen",
    "ProviderSchema",
    "ProviderSettings",
    "Secret",
    "WebConfig",
    "WebhookConfig",
    "format_duration",
    "load_config",
    "parse_config",
    "parse_duration",
]

T = TypeVar("T")

DEFAULT_RETENTION = 90 * 86400.0
"""Settled transfers with no news for this long are pruned from the state (``retention``)."""

DEFAULT_FAST_INTERVAL = 15.0
"""How often an endpoint covering withdrawals is polled while one is in flight, unless the
account's ``interval`` is shorter."""

DEFAULT_RATE_MARGIN = 0.05
"""Buckets pace this fraction below a published limit, so network jitter never trips it."""


@dataclass(frozen=True, slots=True)
class Secret:
    """A credential value that never shows itself in repr, str or messages."""

    value: str = field(repr=False)

    def reveal(self) -> str:
        """The credential itself, for signing requests and nothing else."""
        return self.value

    def __repr__(self) -> str:
        return "Secret('***')"

    def __str__(self) -> str:
        return "***"


@dataclass(frozen=True, slots=True)
class Listen:
    """The address the HTTP server (/metrics) listens on."""

    host: str  # an IPv6 address without brackets
    port: int

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


@dataclass(frozen=True, slots=True)
class ProviderSettings:
    """Rate limits, timeouts (seconds) and bounds shared by every account of one provider."""

    rate_limit: float  # requests/s per credential
    host_rate_limit: float | None  # requests/s per provider host; None = unlimited
    connect_timeout: float
    read_timeout: float
    timeout: float  # total per request
    max_backoff: float  # caps failure backoff and Retry-After
    max_pages: int  # history pages fetched per poll at most
    rate_margin: float = DEFAULT_RATE_MARGIN  # buckets pace this fraction below the limits
    poll_timeout: float | None = None  # one poll's whole budget; None = 2 x timeout

    @property
    def poll_budget(self) -> float:
        """Seconds one poll (every page, lookup and rate-limit wait) may take at most."""
        return 2 * self.timeout if self.poll_timeout is None else self.poll_timeout


@dataclass(frozen=True, slots=True)
class AccountConfig:
    """One watched account: where it lives, how to authenticate, what to alert on."""

    name: str
    provider: str
    base_url: str  # no trailing slash
    credentials: Mapping[str, Secret]
    interval: float
    currencies: frozenset[str] | None  # None = every currency
    low_balance: Mapping[str, Decimal]
    withdrawal_stuck_after: float
    deposit_stuck_after: float
    down_after: int  # consecutive failed polls before account.down
    options: Mapping[str, object]  # provider-specific, defaults filled in
    retention: float = DEFAULT_RETENTION  # settled transfers older than this are forgotten
    fast_interval: float = DEFAULT_FAST_INTERVAL  # withdrawals endpoint, while one is in flight
    allow_insecure_http: bool = False  # plain http:// to a host other than loopback

    def stuck_after(self, direction: str) -> float:
        """The in-flight age (seconds) after which a transfer in ``direction`` is stuck."""
        if direction == "deposit":
            return self.deposit_stuck_after
        if direction == "withdrawal":
            return self.withdrawal_stuck_after
        raise ValueError(f"unknown direction {direction!r}")

    @property
    def credential_id(self) -> str:
        """A stable, secret-free id of the account's API key, naming its rate-limit bucket."""
        identity = self.credentials[PROVIDERS[self.provider].identity].reveal()
        return f"{self.provider}:{hashlib.sha256(identity.encode()).hexdigest()[:12]}"


@dataclass(frozen=True, slots=True)
class WebConfig:
    """/metrics protection, in the form of Prometheus exporter-toolkit's web config file."""

    cert_file: Path | None  # tls_server_config.cert_file: HTTPS when set
    key_file: Path | None
    basic_auth_users: Mapping[str, str]  # user -> bcrypt hash; empty: no authentication


@dataclass(frozen=True, slots=True)
class WebhookConfig:
    """A webhook sink: each alert event is POSTed to ``url`` as one JSON object."""

    name: str  # the sink's label and cursor; stable across restarts
    url: Secret  # a webhook URL often carries a token: never shown
    headers: Mapping[str, Secret]
    secret: Secret | None  # HMAC-SHA256 key of the X-Walletwatch-Signature header
    timeout: float  # seconds per request


@dataclass(frozen=True, slots=True)
class Config:
    """The whole validated configuration."""

    listen: Listen
    state_path: Path
    events_file: Path | None
    log_format: str | None  # "json" | "console" | None = console when stderr is a terminal
    providers: Mapping[str, ProviderSettings]  # every provider in PROVIDERS
    accounts: tuple[AccountConfig, ...]
    sinks: tuple[WebhookConfig, ...] = ()  # alert event receivers besides stdout and events_file
    shard: Shard | None = None  # this instance polls only its shard's accounts (see shard.py)
    web: WebConfig | None = None  # TLS and basic auth of the HTTP server

    def account(self, name: str) -> AccountConfig:
        """The account called ``name``; KeyError when there is none."""
        for account in self.accounts:
            if account.name == name:
                return account
        raise KeyError(name)


class _StrictKeys:
    """Refuses a key written twice in one mapping instead of keeping the last (a mixin)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Hashable, Any]:
        """Check the mapping's own keys for duplicates (merged ``<<`` keys may be overridden)."""
        seen: set[Hashable] = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=deep)  # type: ignore[attr-defined]
            if not isinstance(key, Hashable):
                continue  # SafeLoader reports it
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep)  # type: ignore[misc,no-any-return]


class _StrictLoader(_StrictKeys, yaml.SafeLoader):
    """A SafeLoader that refuses a key written twice in one mapping instead of keeping the last."""


class _FastStrictLoader(_StrictKeys, getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # type: ignore[misc]
    """_StrictLoader on libyaml's parser, when PyYAML was built with it.

    The pure-Python parser takes seconds for a config of 10,000 accounts (1.8 MB), holding
    the GIL all along; libyaml's takes a fraction of that for the same data. Its error
    messages are worded differently, so a file it refuses is read again by _StrictLoader
    for the message users and tests know.
    """


def load_config(
    path: Path, *, environ: Mapping[str, str] | None = None, shard: Shard | None = None
) -> Config:
    """Read and validate the YAML config at ``path``; ConfigError lists every problem.

    ``shard`` (``--shard``) overrides the file's ``shard:``.
    """
    return validate_config(path, read_yaml(path), environ=environ, shard=shard)


def read_yaml(path: Path) -> Mapping[Any, object]:
    """The YAML mapping in the file at ``path``, unvalidated; ConfigError if there is none."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise ConfigError([f"{path}: cannot read config: {err.strerror or err}"]) from err
    except UnicodeDecodeError as err:
        raise ConfigError([f"{path}: not UTF-8 text"]) from err
    try:
        data = _parse_yaml(text)
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = ", ".join(part for part in (err.context, err.problem) if part)
        raise ConfigError([f"{path}: invalid YAML{where}: {problem}"]) from err
    except yaml.YAMLError as err:
        raise ConfigError([f"{path}: invalid YAML: {err}"]) from err
    if data is None:
        raise ConfigError([f"{path}: the file is empty"])
    if not isinstance(data, Mapping):
        raise ConfigError([f"{path}: expected a mapping at the top level, got {describe(data)}"])
    return data


def validate_config(
    path: Path,
    data: Mapping[Any, object],
    *,
    environ: Mapping[str, str] | None = None,
    shard: Shard | None = None,
) -> Config:
    """The Config of ``data``, read from the file at ``path``; ConfigError lists every problem."""
    _refuse_exposed_secrets(path, data)
    environ = os.environ if environ is None else environ
    return parse_config(data, base_dir=path.absolute().parent, environ=environ, shard=shard)


def _parse_yaml(text: str) -> object:
    """The YAML document in ``text``, parsed fast; a refusal is worded by the Python parser."""
    try:
        return yaml.load(text, Loader=_FastStrictLoader)  # noqa: S506 (a SafeLoader subclass)
    except yaml.YAMLError:
        return yaml.load(text, Loader=_StrictLoader)  # noqa: S506 (a SafeLoader subclass)


def _refuse_exposed_secrets(path: Path, data: Mapping[Any, object]) -> None:
    """Refuse a config file every user may read that holds credentials written in it."""
    try:
        mode = path.stat().st_mode
    except OSError:
        return  # read a moment ago; the parse reports anything else
    if not mode & stat.S_IROTH:
        return
    literal = _literal_secrets(data)
    if literal:
        more = len(literal) - 3
        shown = ", ".join(literal[:3]) + (f" and {more} more" if more > 0 else "")
        problem = (
            f"{path}: readable by every user (mode {stat.S_IMODE(mode):04o}) but holds "
            f"literal secrets ({shown}): run 'chmod 600 {path}', or take them from "
            f"{_SECRET_FORMS}"
        )
        raise ConfigError([problem])


_NOT_SECRET = ("app_handle", "user_handle")  # Sila's handles name the app and wallet: public


@functools.cache
def _published() -> frozenset[str]:
    """The simulator's demo credentials (walletwatch/demo.yaml, printed by ``simulate``).

    They are public by design, so a world-readable config may hold them: that is what lets
    examples/simulator.yaml run from a fresh checkout.
    """
    text = resources.files("walletwatch").joinpath("demo.yaml").read_text()
    accounts = yaml.safe_load(text)["accounts"]
    return frozenset(
        str(value) for account in accounts for value in account["credentials"].values()
    )


def _literal_secrets(data: Mapping[Any, object]) -> list[str]:
    """Paths of the credential values (and webhook URLs, headers, secrets) written literally."""
    found: list[str] = []
    places: list[tuple[str, object]] = [("defaults", data.get("defaults"))]
    accounts = data.get("accounts")
    if isinstance(accounts, list):
        places.extend((f"accounts[{i}]", item) for i, item in enumerate(accounts))
    for prefix, entry in places:
        credentials = entry.get("credentials") if isinstance(entry, Mapping) else None
        if isinstance(credentials, Mapping):
            found.extend(
                f"{prefix}.credentials.{name}"
                for name, value in credentials.items()
                if isinstance(value, str) and name not in _NOT_SECRET and value not in _published()
            )
    sinks = data.get("sinks")
    for i, sink in enumerate(sinks if isinstance(sinks, list) else ()):
        if not isinstance(sink, Mapping):
            continue
        values = [("url", sink.get("url")), ("secret", sink.get("secret"))]
        headers = sink.get("headers")
        if isinstance(headers, Mapping):
            values.extend((f"headers.{name}", value) for name, value in headers.items())
        # A webhook URL may carry its token; any literal URL counts, to be safe.
        found.extend(f"sinks[{i}].{key}" for key, value in values if isinstance(value, str))
    return found


def parse_config(
    data: object, *, base_dir: Path, environ: Mapping[str, str], shard: Shard | None = None
) -> Config:
    """Validate loaded YAML ``data``; relative paths resolve against ``base_dir``.

    With a shard (``shard``, else the ``shard:`` key), ``accounts`` holds only the accounts
    of that shard, once every account has been validated.
    """
    if not isinstance(data, Mapping):
        raise ConfigError([f"top level: expected a mapping, got {describe(data)}"])
    checker = _Checker(base_dir, environ)
    config = checker.config(data)
    if checker.problems:
        raise ConfigError(checker.problems)
    shard = shard or config.shard
    if shard is None:
        return config
    accounts = select(config.accounts, shard)
    if not accounts:
        raise ConfigError(
            [f"shard: {shard} owns none of the {len(config.accounts)} account(s); use fewer shards"]
        )
    return replace(config, shard=shard, accounts=accounts)


# The YAML keys are the field names of the objects they build.
_TOP_KEYS = (*(item.name for item in fields(Config)), "defaults")
_ACCOUNT_KEYS = tuple(item.name for item in fields(AccountConfig) if item.name != "options")
_PROVIDER_KEYS = tuple(item.name for item in fields(ProviderSettings))
_OPTION_OWNERS = {  # option key -> the providers having it
    key: tuple(spec.name for spec in PROVIDERS.values() if key in spec.options)
    for key in {key: None for spec in PROVIDERS.values() for key in spec.options}
}
_SECRET_FORMS = "{env: NAME}, {file: PATH} or {credential: NAME}"  # noqa: S105 (not a secret)
_FAILED = object()  # an option value that was refused
_EMPTY: Mapping[Any, Any] = MappingProxyType({})
_POSITIVE = schema.duration(0, strict=True)
# Shorter would risk taking a late-listed deposit for pruned history (tracker.prune).
_RETENTION = schema.duration(86400.0)
_WEB_KEYS = ("tls_server_config", "basic_auth_users")
_TLS_KEYS = ("cert_file", "key_file")
_BCRYPT = re.compile(r"\$2[aby]?\$\d\d\$[./A-Za-z0-9]{53}")
_SINK_KEYS = ("type", "name", "url", "headers", "secret", "timeout")
_SINK_NAME = re.compile(r"[A-Za-z0-9_.-]+")
_BUILTIN_SINKS = ("stdout", "events_file")
_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
# Headers the webhook sink sets itself.
_OWN_HEADERS = ("content-type", "content-length", "host", "x-walletwatch-")

Sources = Sequence[tuple[str, Mapping[Any, object]]]  # (path prefix, mapping); first one wins


def _join(prefix: str, key: object) -> str:
    return f"{prefix}.{key}" if prefix else str(key)


def _unknown(key: object, allowed: Sequence[str]) -> str:
    close = difflib.get_close_matches(str(key), allowed, n=1)
    return f"unknown key (did you mean {close[0]!r}?)" if close else "unknown key"


def _kind(value: object) -> str:
    """Name a value's YAML type without showing it (for credentials)."""
    if isinstance(value, bool) or value is None:
        return describe(value)
    if isinstance(value, int | float):
        return "a number (quote it)"
    return "text" if isinstance(value, str) else describe(value)


def _mapping(value: object) -> Mapping[Any, object]:
    if value is None:
        return {}
    if isinstance(value, Mapping):
        return value
    raise Invalid(f"expected a mapping, got {describe(value)}")


def _provider(value: object) -> str:
    if isinstance(value, str) and value in PROVIDERS:
        return value
    raise Invalid(f"unknown provider {describe(value)} (expected {', '.join(PROVIDERS)})")


def _listen(value: object) -> Listen:
    return Listen(*schema.listen_address(value))


def _sink_name(value: object) -> str:
    if isinstance(value, str) and _SINK_NAME.fullmatch(value):
        return value
    raise Invalid(f"invalid sink name {describe(value)}: use letters, digits, '_', '.' and '-'")


class _Checker:
    """Walks the loaded YAML, building config objects and collecting every problem."""

    def __init__(self, base_dir: Path, environ: Mapping[str, str]) -> None:
        self.base_dir = base_dir
        self.environ = environ
        self.problems: list[str] = []

    def add(self, path: str, message: str) -> None:
        """Record one problem once (a shared default can fail for many accounts)."""
        line = f"{path}: {message}"
        if line not in self.problems:
            self.problems.append(line)

    def field(self, sources: Sources, key: str, parse: Callable[[object], T], default: T) -> T:
        """Parse ``key`` from the first source holding it; ``default`` if none does or it fails."""
        for prefix, raw in sources:
            if key in raw:
                path = _join(prefix, key)
                try:
                    return parse(raw[key])
                except Invalid as err:
                    for sub, message in err.problems:
                        self.add(path + sub, message)
                except ValueError as err:  # parse_duration's
                    self.add(path, str(err))
                return default
        return default

    def require(self, sources: Sources, key: str, parse: Callable[[object], T], fail: T) -> T:
        """Like ``field`` for a key the first source must hold."""
        prefix, raw = sources[0]
        if key not in raw:
            self.add(prefix, f"missing required key {key!r}")
        return self.field(sources, key, parse, fail)

    def unknown_keys(self, prefix: str, raw: Mapping[Any, object], allowed: Sequence[str]) -> None:
        """Report every key of ``raw`` not in ``allowed``."""
        for key in raw:
            if key not in allowed:
                self.add(_join(prefix, key), _unknown(key, allowed))

    def config(self, data: Mapping[Any, object]) -> Config:
        """The top level."""
        self.unknown_keys("", data, _TOP_KEYS)
        top = [("", data)]
        listen = self.field(top, "listen", _listen, Listen("127.0.0.1", 10101))
        state_path = self.field(top, "state_path", self.path, self.base_dir / "walletwatch.db")
        events_file = self.field(top, "events_file", schema.nullable(self.path), None)
        log_format = self.field(top, "log_format", schema.choice("json", "console", None), None)
        defaults = self.field(top, "defaults", _mapping, _EMPTY)
        self.check_defaults(defaults)
        providers = self.providers(self.field(top, "providers", _mapping, _EMPTY))
        accounts = self.accounts(data.get("accounts"), defaults)
        sinks = self.sinks(data.get("sinks"))
        shard = self.field(top, "shard", schema.nullable(parse_shard), None)
        web = self.field(top, "web", schema.nullable(self.web), None)
        return Config(
            listen, state_path, events_file, log_format, providers, accounts, sinks, shard, web
        )

    def web(self, value: object) -> WebConfig:
        """The ``web`` block: exporter-toolkit's tls_server_config and basic_auth_users."""
        raw = _mapping(value)
        problems: list[tuple[str, str]] = [
            (f".{key}", _unknown(key, _WEB_KEYS)) for key in raw if key not in _WEB_KEYS
        ]
        tls = raw.get("tls_server_config")
        cert = key = None
        if tls is not None:
            if not isinstance(tls, Mapping):
                tls = {}
                problems.append((".tls_server_config", "expected a mapping"))
            problems += [
                (f".tls_server_config.{k}", _unknown(k, _TLS_KEYS))
                for k in tls
                if k not in _TLS_KEYS
            ]
            paths = {}
            for name in _TLS_KEYS:
                if name not in tls:
                    problems.append((".tls_server_config", f"missing required key {name!r}"))
                    continue
                try:
                    paths[name] = self.path(tls[name])
                except Invalid as err:
                    problems.append((f".tls_server_config.{name}", str(err)))
            cert, key = paths.get("cert_file"), paths.get("key_file")
            if cert is not None and key is not None:
                try:  # refuse an unusable pair now, with the other problems, not at startup
                    ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(cert, key)
                except (OSError, ssl.SSLError) as err:
                    problems.append(
                        (".tls_server_config", f"cannot load cert_file/key_file: {err}")
                    )
        users = raw.get("basic_auth_users") or {}
        if not isinstance(users, Mapping):
            problems.append((".basic_auth_users", "expected a mapping of user: bcrypt hash"))
            users = {}
        for user, hashed in users.items():
            if not isinstance(user, str) or not user or ":" in user:
                problems.append((f".basic_auth_users.{user}", "invalid user name"))
            if not isinstance(hashed, str) or not _BCRYPT.fullmatch(hashed):
                problems.append((f".basic_auth_users.{user}", "expected a bcrypt hash ($2b$...)"))
        if problems:
            raise Invalid(problems=problems)
        return WebConfig(cert, key, MappingProxyType(dict(users)))

    def path(self, value: object) -> Path:
        """A file path, relative to the config file's directory."""
        if isinstance(value, str) and value:
            return self.base_dir / value
        raise Invalid(f"expected a file path, got {describe(value)}")

    def check_defaults(self, defaults: Mapping[Any, object]) -> None:
        """Report keys that cannot be defaults; validate options no account may use."""
        for key in defaults:
            path = _join("defaults", key)
            if key in ("name", "provider"):
                self.add(path, "cannot be a default: set it on each account")
            elif key in _OPTION_OWNERS:
                for owner in _OPTION_OWNERS[key]:  # a default must suit every owner
                    option = PROVIDERS[owner].options[key]
                    self.field([("defaults", defaults)], key, option.parse, None)
            elif key not in _ACCOUNT_KEYS:
                self.add(path, _unknown(key, _ACCOUNT_KEYS[2:] + tuple(_OPTION_OWNERS)))

    def providers(self, raw: Mapping[Any, object]) -> Mapping[str, ProviderSettings]:
        """Settings for every provider, defaults filled in."""
        for name in raw:
            if name not in PROVIDERS:
                self.add(f"providers.{name}", f"unknown provider (expected {', '.join(PROVIDERS)})")
        settings = {}
        for name, spec in PROVIDERS.items():
            prefix = f"providers.{name}"
            value = self.field([("providers", raw)], name, _mapping, _EMPTY)
            self.unknown_keys(prefix, value, _PROVIDER_KEYS)
            here = [(prefix, value)]
            settings[name] = ProviderSettings(
                rate_limit=self.field(here, "rate_limit", schema.rate, spec.rate_limit),
                host_rate_limit=self.field(
                    here, "host_rate_limit", schema.nullable(schema.rate), spec.host_rate_limit
                ),
                connect_timeout=self.field(here, "connect_timeout", _POSITIVE, 5.0),
                read_timeout=self.field(here, "read_timeout", _POSITIVE, 15.0),
                timeout=self.field(here, "timeout", _POSITIVE, 30.0),
                max_backoff=self.field(here, "max_backoff", _POSITIVE, 300.0),
                max_pages=self.field(here, "max_pages", schema.integer_at_least(1), 10),
                rate_margin=self.field(here, "rate_margin", schema.margin, DEFAULT_RATE_MARGIN),
                poll_timeout=self.field(here, "poll_timeout", _POSITIVE, None),
            )
        return MappingProxyType(settings)

    def accounts(self, raw: object, defaults: Mapping[Any, object]) -> tuple[AccountConfig, ...]:
        """Every account, checking that names are unique."""
        if not isinstance(raw, list) or not raw:
            self.add("accounts", f"expected a non-empty list of accounts, got {describe(raw)}")
            return ()
        accounts: list[AccountConfig] = []
        seen: set[str] = set()
        for index, item in enumerate(raw):
            path = f"accounts[{index}]"
            if not isinstance(item, Mapping):
                self.add(path, f"expected a mapping, got {describe(item)}")
                continue
            account = self.account(path, item, defaults)
            if account.name in seen:
                self.add(f"{path}.name", f"duplicate account name {account.name!r}")
            elif account.name:
                seen.add(account.name)
            accounts.append(account)
        return tuple(accounts)

    def sinks(self, raw: object) -> tuple[WebhookConfig, ...]:
        """The ``sinks`` list: webhooks, with unique names."""
        if raw is None:
            return ()
        if not isinstance(raw, list):
            self.add("sinks", f"expected a list of sinks, got {describe(raw)}")
            return ()
        sinks: list[WebhookConfig] = []
        names = set(_BUILTIN_SINKS)
        for index, item in enumerate(raw):
            path = f"sinks[{index}]"
            if not isinstance(item, Mapping):
                self.add(path, f"expected a mapping, got {describe(item)}")
                continue
            sink = self.webhook(path, item)
            if sink is None:
                continue
            if sink.name in names:
                taken = "reserved" if sink.name in _BUILTIN_SINKS else "duplicate"
                self.add(f"{path}.name", f"{taken} sink name {sink.name!r}")
            names.add(sink.name)
            sinks.append(sink)
        return tuple(sinks)

    def webhook(self, path: str, raw: Mapping[Any, object]) -> WebhookConfig | None:
        """One ``type: webhook`` entry; None when it has problems."""
        before = len(self.problems)
        self.unknown_keys(path, raw, _SINK_KEYS)
        here = [(path, raw)]
        self.require(here, "type", schema.choice("webhook"), None)
        url = self.require(here, "url", self.webhook_url, None)
        default = "webhook"
        if url is not None:  # stable across restarts, and shows nothing of the URL
            default += "-" + hashlib.sha256(url.reveal().encode()).hexdigest()[:8]
        name = self.field(here, "name", _sink_name, default)
        headers = self.field(here, "headers", self.headers, _EMPTY)
        secret = self.field(here, "secret", lambda v: Secret(self.secret(v)), None)
        timeout = self.field(here, "timeout", _POSITIVE, 10.0)
        if url is None or len(self.problems) > before:
            return None
        return WebhookConfig(name, url, headers, secret, timeout)

    def webhook_url(self, value: object) -> Secret:
        """An http(s) URL, literal or from a secret source; problems never show it."""
        text = self.secret(value)
        try:
            parts = urlsplit(text)
            _ = parts.port  # raises on a port that is not a number
        except ValueError:
            parts = None
        if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
            raise Invalid("expected an http(s) URL such as 'https://host/hook' (value not shown)")
        return Secret(text)

    def headers(self, value: object) -> Mapping[str, Secret]:
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
                secret = self.secret(text)
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

    def account(
        self, path: str, raw: Mapping[Any, object], defaults: Mapping[Any, object]
    ) -> AccountConfig:
        """One account entry; its own keys win over ``defaults``."""
        here = [(path, raw)]
        name = self.require(here, "name", schema.account_name, "")
        provider = self.require(here, "provider", _provider, "")
        spec = PROVIDERS.get(provider)
        self.account_keys(path, raw, spec)
        sources = [(path, raw), ("defaults", defaults)]
        options = self.options(sources, spec)
        url = spec.base_url if spec else ""
        account = AccountConfig(
            name=name,
            provider=provider,
            base_url=self.field(sources, "base_url", schema.base_url, url),
            credentials=self.credentials(path, sources, spec, options),
            interval=self.field(sources, "interval", schema.duration(1.0), 60.0),
            currencies=self.field(sources, "currencies", schema.currencies, None),
            low_balance=self.field(sources, "low_balance", schema.thresholds, _EMPTY),
            withdrawal_stuck_after=self.field(sources, "withdrawal_stuck_after", _POSITIVE, 3600.0),
            deposit_stuck_after=self.field(sources, "deposit_stuck_after", _POSITIVE, 6 * 3600.0),
            down_after=self.field(sources, "down_after", schema.integer_at_least(1), 3),
            options=MappingProxyType(options),
            retention=self.field(sources, "retention", _RETENTION, DEFAULT_RETENTION),
        )
        account = replace(
            account,
            fast_interval=self.fast_interval(sources, account.interval),
            allow_insecure_http=self.field(sources, "allow_insecure_http", schema.flag, False),
        )
        if schema.insecure_url(account.base_url) and not account.allow_insecure_http:
            # Credentials and signatures would cross the network in clear text.
            prefix = next((prefix for prefix, source in sources if "base_url" in source), path)
            self.add(
                _join(prefix, "base_url"),
                "plain http:// is refused for a host other than loopback: use https:// or set "
                "allow_insecure_http: true on the account",
            )
        if account.currencies is not None and account.low_balance:
            # A threshold on a filtered-out currency could never fire.
            prefix = next(prefix for prefix, source in sources if "low_balance" in source)
            for currency in sorted(account.low_balance.keys() - account.currencies):
                self.add(f"{prefix}.low_balance.{currency}", "not in this account's currencies")
        return account

    def fast_interval(self, sources: Sources, interval: float) -> float:
        """``fast_interval``, no longer than ``interval`` (the default shrinks to fit)."""
        fast = self.field(sources, "fast_interval", schema.duration(1.0), None)
        if fast is None:
            return min(DEFAULT_FAST_INTERVAL, interval)
        if fast > interval:
            prefix = next(prefix for prefix, source in sources if "fast_interval" in source)
            self.add(
                _join(prefix, "fast_interval"),
                f"must not be longer than interval ({format_duration(interval)}), "
                f"got {format_duration(fast)}",
            )
            return interval
        return fast

    def account_keys(
        self, path: str, raw: Mapping[Any, object], spec: ProviderSchema | None
    ) -> None:
        """Report unknown keys and options of a provider other than the account's."""
        own = tuple(spec.options) if spec else ()
        for key in raw:
            if key in _ACCOUNT_KEYS or key in own:
                continue
            owners = _OPTION_OWNERS.get(key)
            if owners is None:
                self.add(_join(path, key), _unknown(key, _ACCOUNT_KEYS + own))
            elif spec is not None:
                owner = " and ".join(owners)
                self.add(_join(path, key), f"not an option of {spec.name} (it is for {owner})")

    def options(self, sources: Sources, spec: ProviderSchema | None) -> dict[str, object]:
        """The provider's option values, defaults filled in, refused ones left out."""
        values: dict[str, object] = {}
        for key, option in (spec.options if spec else {}).items():
            value = self.field(sources, key, option.parse, _FAILED)
            if value is not _FAILED:
                values[key] = value
            elif not any(key in raw for _, raw in sources):
                values[key] = option.default
        return values

    def credentials(
        self,
        path: str,
        sources: Sources,
        spec: ProviderSchema | None,
        options: Mapping[str, object],
    ) -> Mapping[str, Secret]:
        """Resolve every credential value, then check the names against the provider's."""
        origin = next(((prefix, raw) for prefix, raw in sources if "credentials" in raw), None)
        if origin is None:
            self.add(path, "missing required key 'credentials'")
            return _EMPTY
        at = _join(origin[0], "credentials")
        given = origin[1]["credentials"]
        if not isinstance(given, Mapping):
            self.add(at, f"expected a mapping of credential names to values, got {_kind(given)}")
            return _EMPTY
        secrets = {}
        for name, value in given.items():
            try:
                secrets[str(name)] = Secret(self.secret(value))
            except ValueError as err:
                self.add(_join(at, name), str(err))
        for name, message in spec.credential_problems(list(given), options) if spec else ():
            self.add(f"{path}.credentials" if name is None else _join(at, name), message)
        return MappingProxyType(secrets)

    def secret(self, value: object) -> str:
        """A credential's text from a literal, {env}, {file} or {credential}; never echoed."""
        if isinstance(value, str):
            if not value:
                raise Invalid("empty value")
            return value
        if not isinstance(value, Mapping) or len(value) != 1:
            raise Invalid(f"expected text or one of {_SECRET_FORMS}, got {_kind(value)}")
        ((kind, arg),) = value.items()
        if kind not in ("env", "file", "credential"):
            raise Invalid(f"unknown source {describe(kind)}: expected {_SECRET_FORMS}")
        if not isinstance(arg, str) or not arg:
            raise Invalid(f"{kind}: expected a non-empty name, got {describe(arg)}")
        if kind == "env":
            if arg not in self.environ:
                raise Invalid(f"environment variable {arg} is not set")
            if not self.environ[arg]:
                raise Invalid(f"environment variable {arg} is empty")
            return self.environ[arg]
        if kind == "file":
            return _read_secret(self.base_dir / arg)
        directory = self.environ.get("CREDENTIALS_DIRECTORY")
        if not directory:
            raise Invalid(
                f"credential {arg!r}: CREDENTIALS_DIRECTORY is not set "
                "(systemd sets it for LoadCredential=)"
            )
        if "/" in arg or arg in (".", ".."):
            raise Invalid(f"invalid credential name {arg!r}")
        return _read_secret(Path(directory) / arg)


def _read_secret(path: Path) -> str:
    """A secret file's text without its trailing newline."""
    try:
        text = path.read_bytes().decode("utf-8")
    except OSError as err:
        raise Invalid(f"cannot read {path}: {err.strerror or type(err).__name__}") from None
    except UnicodeDecodeError:
        raise Invalid(f"{path} is not UTF-8 text") from None
    text = text.rstrip("\r\n")
    if not text:
        raise Invalid(f"{path} is empty")
    return text
