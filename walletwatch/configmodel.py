"""The configuration as walletwatch uses it: frozen objects, built and validated elsewhere.

``configcheck.py`` builds them from loaded YAML; ``config.py`` is where the rest of
walletwatch gets them and the functions that load them.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

from walletwatch.shard import Shard

DEFAULT_RETENTION = 90 * 86400.0
"""Settled transfers with no news for this long are pruned from the state (``retention``)."""

DEFAULT_FAST_INTERVAL = 15.0
"""How often an endpoint covering withdrawals is polled while one is in flight, unless the
account's ``interval`` is shorter."""

DEFAULT_LEASE = 15.0
"""Seconds a PostgreSQL leader's lease lasts unrenewed: a takeover comes this long after a
leader dies. The leader renews it every third of that."""

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
    identity: str = ""  # the credential naming the API key (its provider's schema.identity)
    push: bool = False  # a push to /push/<name>/<token> makes it poll its transfers now

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
        identity = self.credentials[self.identity].reveal()
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
class AlertmanagerConfig:
    """An Alertmanager sink: one alert per stuck transfer, posted to ``url``/api/v2/alerts."""

    name: str  # the sink's label and cursor; stable across restarts
    url: Secret  # Alertmanager's base URL; it may carry basic-auth credentials: never shown
    headers: Mapping[str, Secret]
    timeout: float  # seconds per request


SinkConfig = WebhookConfig | AlertmanagerConfig
"""One entry of ``sinks``."""


@dataclass(frozen=True, slots=True)
class StoreConfig:
    """A PostgreSQL state that replicas share: where it is, its password, the lease's length."""

    url: str  # postgresql://user@host:port/database, never with a password in it
    password: Secret | None
    lease: float = DEFAULT_LEASE  # seconds


@dataclass(frozen=True, slots=True)
class PushConfig:
    """The push receiver: its own listener, the token of its URLs, its TLS."""

    listen: Listen
    token: Secret  # the last segment of every push URL: never shown
    tls: WebConfig | None = None  # cert_file and key_file; basic_auth_users stays empty

    @property
    def scheme(self) -> str:
        """``https`` when the receiver serves TLS itself, else ``http``."""
        return "https" if self.tls is not None else "http"


@dataclass(frozen=True, slots=True)
class Config:
    """The whole validated configuration."""

    listen: Listen
    state_path: Path
    events_file: Path | None
    log_format: str | None  # "json" | "console" | None = console when stderr is a terminal
    providers: Mapping[str, ProviderSettings]  # every registered provider
    accounts: tuple[AccountConfig, ...]
    sinks: tuple[SinkConfig, ...] = ()  # alert event receivers besides stdout and events_file
    shard: Shard | None = None  # this instance polls only its shard's accounts (see shard.py)
    web: WebConfig | None = None  # TLS and basic auth of the HTTP server
    store: StoreConfig | None = None  # PostgreSQL instead of the SQLite file at state_path
    push: PushConfig | None = None  # the push receiver, when providers call back

    def account(self, name: str) -> AccountConfig:
        """The account called ``name``; KeyError when there is none."""
        for account in self.accounts:
            if account.name == name:
                return account
        raise KeyError(name)
