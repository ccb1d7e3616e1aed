"""Validating loaded YAML: walks the tree, builds the config objects, reports every problem.

Value validators live in ``schema.py``; each provider's contract comes from its registry.
"""

from __future__ import annotations

import difflib
import re
import ssl
from collections.abc import Callable, Mapping, Sequence
from dataclasses import fields, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any, TypeVar

from walletwatch import configpush, configsinks, schema
from walletwatch.configload import kind_of, resolve_secret
from walletwatch.configmodel import (
    DEFAULT_FAST_INTERVAL,
    DEFAULT_RATE_MARGIN,
    DEFAULT_RETENTION,
    AccountConfig,
    Config,
    Listen,
    ProviderSettings,
    Secret,
    WebConfig,
)
from walletwatch.configstore import checked_store
from walletwatch.errors import ConfigError
from walletwatch.providers import SCHEMAS
from walletwatch.schema import Invalid, ProviderSchema, describe, format_duration
from walletwatch.shard import Shard, parse_shard, select

T = TypeVar("T")


def parse_config(
    data: object,
    *,
    base_dir: Path,
    environ: Mapping[str, str],
    shard: Shard | None = None,
    offline: bool = False,
) -> Config:
    """Validate loaded YAML ``data``; relative paths resolve against ``base_dir``.

    With a shard (``shard``, else the ``shard:`` key), ``accounts`` holds only the accounts
    of that shard, once every account has been validated. ``offline`` checks the form of
    secret references without reading them (``check --offline``): no client may use the result.
    """
    if not isinstance(data, Mapping):
        raise ConfigError([f"top level: expected a mapping, got {describe(data)}"])
    checker = _Checker(base_dir, environ, offline)
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
_ACCOUNT_KEYS = tuple(
    item.name for item in fields(AccountConfig) if item.name not in ("options", "identity")
)
_PROVIDER_KEYS = tuple(item.name for item in fields(ProviderSettings))
_FAILED = object()  # an option value that was refused
_EMPTY: Mapping[Any, Any] = MappingProxyType({})
_POSITIVE = schema.duration(0, strict=True)
# Shorter would risk taking a late-listed deposit for pruned history (tracker.prune).
_RETENTION = schema.duration(86400.0)
_WEB_KEYS = ("tls_server_config", "basic_auth_users")
_TLS_KEYS = ("cert_file", "key_file")
_BCRYPT = re.compile(r"\$2[aby]?\$\d\d\$[./A-Za-z0-9]{53}")

Sources = Sequence[tuple[str, Mapping[Any, object]]]  # (path prefix, mapping); first one wins


def _join(prefix: str, key: object) -> str:
    return f"{prefix}.{key}" if prefix else str(key)


def _unknown(key: object, allowed: Sequence[str]) -> str:
    close = difflib.get_close_matches(str(key), allowed, n=1)
    return f"unknown key (did you mean {close[0]!r}?)" if close else "unknown key"


def _provider(value: object) -> str:
    if isinstance(value, str) and value in SCHEMAS:
        return value
    raise Invalid(f"unknown provider {describe(value)} (expected {', '.join(SCHEMAS)})")


def _option_owners() -> Mapping[str, tuple[str, ...]]:
    """Each provider option's key -> the providers having it."""
    keys = {key: None for spec in SCHEMAS.values() for key in spec.options}
    return {key: tuple(s.name for s in SCHEMAS.values() if key in s.options) for key in keys}


def _listen(value: object) -> Listen:
    return Listen(*schema.listen_address(value))


class _Checker:
    """Walks the loaded YAML, building config objects and collecting every problem."""

    def __init__(self, base_dir: Path, environ: Mapping[str, str], offline: bool) -> None:
        self.base_dir, self.environ, self.offline = base_dir, environ, offline
        self.problems: list[str] = []
        self.option_owners = _option_owners()  # read once: the registry may grow (tests)

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
        defaults = self.field(top, "defaults", schema.optional_mapping, _EMPTY)
        self.check_defaults(defaults)
        providers = self.providers(self.field(top, "providers", schema.optional_mapping, _EMPTY))
        accounts = self.accounts(data.get("accounts"), defaults)
        sinks = configsinks.sinks(self, data.get("sinks"))
        shard = self.field(top, "shard", schema.nullable(parse_shard), None)
        web = self.field(top, "web", schema.nullable(self.web), None)
        config = Config(listen, state_path, events_file, log_format, providers, accounts, sinks)
        config = replace(config, shard=shard, web=web, store=checked_store(self, data))
        return configpush.with_push(self, data, config)

    def web(self, value: object) -> WebConfig:
        """The ``web`` block: exporter-toolkit's tls_server_config and basic_auth_users."""
        raw = schema.optional_mapping(value)
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
            elif key in self.option_owners:
                for owner in self.option_owners[key]:  # a default must suit every owner
                    option = SCHEMAS[owner].options[key]
                    self.field([("defaults", defaults)], key, option.parse, None)
            elif key not in _ACCOUNT_KEYS:
                self.add(path, _unknown(key, _ACCOUNT_KEYS[2:] + tuple(self.option_owners)))

    def providers(self, raw: Mapping[Any, object]) -> Mapping[str, ProviderSettings]:
        """Settings for every provider, defaults filled in."""
        for name in raw:
            if name not in SCHEMAS:
                self.add(f"providers.{name}", f"unknown provider (expected {', '.join(SCHEMAS)})")
        settings = {}
        for name, spec in SCHEMAS.items():
            prefix = f"providers.{name}"
            value = self.field([("providers", raw)], name, schema.optional_mapping, _EMPTY)
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

    def account(
        self, path: str, raw: Mapping[Any, object], defaults: Mapping[Any, object]
    ) -> AccountConfig:
        """One account entry; its own keys win over ``defaults``."""
        here = [(path, raw)]
        name = self.require(here, "name", schema.account_name, "")
        provider = self.require(here, "provider", _provider, "")
        spec = SCHEMAS.get(provider)
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
            identity=spec.identity if spec else "",
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
            owners = self.option_owners.get(key)
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
            self.add(at, f"expected a mapping of credential names to values, got {kind_of(given)}")
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
        return resolve_secret(value, self.base_dir, self.environ, offline=self.offline)
