"""The push receiver: providers' callbacks on a listener of their own, each only a hint.

``GET|POST /push/<account>/<token>`` answers what the account's provider expects (its
ProviderSpec's ``push_answer``) and asks the scheduler to poll the account's transfers now.
Nothing a push says is believed: its body is read (a provider waits for the answer) and
dropped, so a forged push costs one poll through the signed API and announces nothing.
An unknown account, a wrong token and an account without ``push: true`` get the same 404,
after the same work: the token is compared as a fixed-length digest in constant time, and the
account looked up whatever the token was. The listener is the web server's (listener.py):
connections capped, a complete request within HEADER_TIMEOUT, idle ones closed.

The accounts are those of the config in force (reloads included). A replica that follows
(docs/ha.md) watches none of them: it answers a good push as the provider expects, counts it
``coalesced`` and polls nothing, so no provider gives up on a URL for reaching a follower.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
from collections.abc import Mapping
from typing import Protocol

import structlog
from aiohttp import web

from walletwatch.configmodel import AccountConfig, Config, PushConfig, Secret
from walletwatch.listener import HEADER_TIMEOUT, KEEPALIVE_TIMEOUT, Listener
from walletwatch.providers import PROVIDERS
from walletwatch.scheduler import Scheduler
from walletwatch.telemetry import PushStats
from walletwatch.throttle import Throttle, throttled_logger
from walletwatch.types import Clock
from walletwatch.watcher import AccountWatcher
from walletwatch.webauth import server_context

log = structlog.get_logger("walletwatch.push")

MAX_BODY = 64 * 1024
"""Bytes a push body may have: the callbacks are a few hundred; more is refused with 413."""
BODY_TIMEOUT = 5.0
"""Seconds a push's body may take to arrive once its headers have (slow clients are cut off)."""
LINGER = 1.0
"""Seconds the rest of a refused body may take to be read and dropped after the answer, so
the client reads the answer before the close (aiohttp's default gives a slow client 10)."""
PUSH_CONNECTIONS = 64
"""Connections the push listener keeps open at most, taken from the web server's share of
descriptors: providers call one at a time, a reverse proxy keeps a few."""
LOG_INTERVAL = 60.0
"""Seconds between two lines of the same repeating refusal or error (each line counts)."""
GRACE = 1.0
"""Seconds a push being answered gets on stop (the answer is a word; the poll is the daemon's)."""
NOT_FOUND = "not found\n"


class Gate:
    """Says whether a push's token is the push token, in constant time; never shows it."""

    def __init__(self, token: Secret) -> None:
        self._digest = hashlib.sha256(token.reveal().encode()).digest()

    def __repr__(self) -> str:
        return "Gate(token='***')"

    def opens(self, token: str) -> bool:
        """True for the push token: digests of equal length compared in constant time."""
        given = hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()
        return hmac.compare_digest(given, self._digest)


def target(path: str) -> tuple[str, str]:
    """``(account, token)`` of a ``/push/<account>/<token>`` path; empty strings otherwise."""
    parts = path.split("/")
    if len(parts) == 4 and parts[0] == "" and parts[1] == "push":
        return parts[2], parts[3]
    return "", ""


class Host(Protocol):
    """What the receiver reads of the daemon, as its reloads keep it: the config in force,
    the accounts it watches (none on a replica that follows), the schedule of their polls."""

    @property
    def config(self) -> Config:
        """The config in force."""
        ...

    @property
    def watchers(self) -> Mapping[str, AccountWatcher]:
        """The watched accounts by name."""
        ...

    @property
    def scheduler(self) -> Scheduler:
        """The polls' schedule."""
        ...


class Directory:
    """The configured accounts by name, rebuilt when the config in force is another one."""

    def __init__(self) -> None:
        self._config: Config | None = None
        self._accounts: dict[str, AccountConfig] = {}

    def accounts(self, config: Config) -> Mapping[str, AccountConfig]:
        """``config``'s accounts by name."""
        if config is not self._config:
            self._accounts = {account.name: account for account in config.accounts}
            self._config = config
        return self._accounts


def verdict(
    gate: Gate, accounts: Mapping[str, AccountConfig], path: str
) -> tuple[AccountConfig | None, str, str]:
    """The push account a push names (None: refuse it), and the labels to count it under.

    Every step is taken for every push, whatever an earlier one found: no early return tells
    an unknown account from a wrong token or an account without push.
    """
    name, token = target(path)
    opens = gate.opens(token)
    account = accounts.get(name)
    enabled = account is not None and account.push
    labels = (account.provider, account.name) if account is not None else ("", "")
    return (account if opens and enabled else None), *labels


def push_server(
    config: PushConfig | None, clock: Clock, stats: PushStats, host: Host
) -> PushServer | None:
    """The push receiver of a ``push:`` section (None without one)."""
    return None if config is None else PushServer(config, clock, stats, host=host)


class PushServer:
    """The push listener: ``/push/<account>/<token>`` wakes the account's transfer polls."""

    def __init__(
        self,
        config: PushConfig,
        clock: Clock,
        stats: PushStats,
        *,
        host: Host,
        header_timeout: float = HEADER_TIMEOUT,
        body_timeout: float = BODY_TIMEOUT,
    ) -> None:
        """``header_timeout`` and ``body_timeout``: the seconds a client gets for each."""
        self._config = config
        self._header_timeout = header_timeout
        self._body_timeout = body_timeout
        self._stats = stats
        self._host = host
        self._directory = Directory()
        self._gate = Gate(config.token)
        self._throttle = Throttle(clock.monotonic, LOG_INTERVAL)
        self._listener: Listener | None = None
        self._runner: web.AppRunner | None = None
        self.port: int | None = None

    def __repr__(self) -> str:
        return f"PushServer(listen={self._config.listen})"

    async def bind(self) -> None:
        """Take ``push.listen`` (StartupError, one line, if this host cannot give it)."""
        tls = server_context(self._config.tls) if self._config.tls else None
        self._stats.enabled = True
        self._stats.connections.limit = PUSH_CONNECTIONS
        self._listener = Listener(
            self._stats.connections,
            tls=tls,
            throttle=self._throttle,
            header_timeout=self._header_timeout,
        )
        listen = self._config.listen
        await self._listener.bind(listen.host, listen.port, setting="push.listen")
        self.port = self._listener.port

    async def serve(self) -> None:
        """Answer pushes on the bound address."""
        listener = self._listener
        if listener is None:
            raise RuntimeError("serve() needs bind() first")
        app = web.Application(middlewares=[listener.middleware], client_max_size=MAX_BODY)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = runner = web.AppRunner(
            app,
            access_log=None,  # the path holds the token
            handle_signals=False,
            keepalive_timeout=KEEPALIVE_TIMEOUT,
            lingering_time=LINGER,
            shutdown_timeout=GRACE,
            logger=throttled_logger("walletwatch.push.server", self._throttle, "push.error"),
        )
        await runner.setup()
        if runner.server is None:
            raise RuntimeError("aiohttp runner set up without a server")
        listener.serve(runner.server)
        log.info(
            "push.listening",
            listen=str(self._config.listen),
            connections=PUSH_CONNECTIONS,
            header_timeout=self._header_timeout,
            max_body=MAX_BODY,
        )

    @property
    def url(self) -> str:
        """The base URL of the push listener (the port as bound)."""
        host = self._config.listen.host
        host = f"[{host}]" if ":" in host else host
        return f"{self._config.scheme}://{host}:{self.port}"

    async def close(self) -> None:
        """Stop accepting, then give pushes being answered GRACE to finish."""
        if self._listener is not None:
            self._listener.close()
        if self._runner is not None:
            await self._runner.cleanup()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        """Read the body (capped, in time), then answer and hint, or refuse alike."""
        try:
            async with asyncio.timeout(self._body_timeout):
                await request.read()  # dropped: nothing of it is believed
        except web.HTTPRequestEntityTooLarge:
            self._refused("", "", "too_large")
            return web.Response(status=413, text="too large\n", headers={"Connection": "close"})
        except TimeoutError:
            self._stats.connections.dropped["body_timeout"] += 1
            self._refused("", "", "body_timeout")
            return web.Response(status=408, text="too slow\n", headers={"Connection": "close"})
        host = self._host
        accounts = self._directory.accounts(host.config)
        taken, provider, account = verdict(self._gate, accounts, request.path)
        if taken is None or request.method not in ("GET", "POST"):
            self._refused(provider, account, "not_found")
            return web.Response(status=404, text=NOT_FOUND)
        # A replica that follows watches nothing: it answers as the provider expects (a 404
        # would count against the URL) and polls nothing; the leader polls at its interval.
        watcher = host.watchers.get(account)
        scheduled = watcher is not None and host.scheduler.hint(account, watcher.transfer_endpoints)
        result = "accepted" if scheduled else "coalesced"
        self._stats.hints[(provider, account, result)] += 1
        log.debug("push.hint", provider=provider, account=account, result=result)
        answer = PROVIDERS[provider].push_answer if provider in PROVIDERS else None
        return web.Response(text=answer or "ok")

    def _refused(self, provider: str, account: str, why: str) -> None:
        self._stats.hints[(provider, account, "refused")] += 1
        count = self._throttle.hit(("push.refused", why))
        if count is not None:
            log.warning(
                "push.refused",
                reason=why,
                count=count,
                interval=self._throttle.interval,
                note="a push to an unknown account or with a wrong token, or one too large "
                "or too slow: check the URL given to the provider",
            )
