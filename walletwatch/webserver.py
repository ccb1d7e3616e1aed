"""The daemon's web server: its address taken first, served once the accounts exist.

Binding comes before anything else a start does, so an address in use fails the start before
a state file is created. The open files limit is raised first, and the web server gets what it
leaves beside a reserve for polling (listener.py); repeating event loop errors, accept
failures and malformed requests are logged once per interval with a count.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable

import structlog
from aiohttp import web

from walletwatch.configmodel import Config
from walletwatch.listener import (
    HEADER_TIMEOUT,
    KEEPALIVE_TIMEOUT,
    MIN_CONNECTIONS,
    Listener,
    OpenFiles,
    raise_open_files,
)
from walletwatch.metrics import WalletwatchCollector
from walletwatch.operator import OperatorView
from walletwatch.push import PUSH_CONNECTIONS, PushServer
from walletwatch.telemetry import WebConnections
from walletwatch.throttle import Throttle, exception_handler, throttled_logger
from walletwatch.types import Clock
from walletwatch.watcher import AccountWatcher
from walletwatch.web import create_app
from walletwatch.webauth import BasicAuth, server_context

log = structlog.get_logger("walletwatch.app")

LOG_INTERVAL = 60.0
"""Seconds between two lines of the same repeating error (each line counts the others)."""
WEB_GRACE = 3.0
"""Seconds requests being answered get on SIGTERM (aiohttp's default is 60 s). With the polls'
SHUTDOWN_GRACE and the sinks' DELIVERY_GRACE, a stop takes at most 18 s and some cleanup,
inside the unit's TimeoutStopSec=30s."""


class WebServer:
    """``/metrics``, the health checks, the operator API and the status page on ``listen``."""

    def __init__(
        self, config: Config, clock: Clock, stats: WebConnections, push: PushServer | None = None
    ) -> None:
        """``push``: the push receiver, bound, served and closed with it; its connections come
        out of the web server's share of descriptors, so polling keeps its reserve."""
        self._config = config
        self._push = push
        self._clock = clock
        self._throttle = Throttle(clock.monotonic, LOG_INTERVAL)
        self._stats = stats
        self._files: OpenFiles | None = None
        self._listener: Listener | None = None
        self._runner: web.AppRunner | None = None
        self.port: int | None = None

    async def bind(self) -> None:
        """Take the ``listen`` address (StartupError, one line, if this host cannot give it)."""
        web_config = self._config.web
        tls = server_context(web_config) if web_config else None
        asyncio.get_running_loop().set_exception_handler(exception_handler(self._throttle))
        self._files = raise_open_files()
        reserve = PUSH_CONNECTIONS if self._push is not None else 0
        self._stats.limit = max(self._files.connections - reserve, MIN_CONNECTIONS)
        self._listener = Listener(self._stats, tls=tls, throttle=self._throttle)
        listen = self._config.listen
        await self._listener.bind(listen.host, listen.port)
        self.port = self._listener.port
        if self._push is not None:
            await self._push.bind()

    async def serve(
        self,
        collector: WalletwatchCollector,
        watchers: Callable[[], Iterable[AccountWatcher]],
        on_render: Callable[[], None],
        view: OperatorView | None = None,
    ) -> None:
        """Answer on the bound address, connections capped and cut off when idle."""
        listener, files = self._listener, self._files
        if listener is None or files is None:
            raise RuntimeError("serve() needs bind() first")
        web_config = self._config.web
        users = web_config.basic_auth_users if web_config else None
        app = create_app(
            collector,
            watchers,
            BasicAuth(users) if users else None,
            on_render=on_render,
            first=[listener.middleware],
            view=view,
            clock=self._clock,
        )
        self._runner = runner = web.AppRunner(
            app,
            access_log=None,
            handle_signals=False,
            keepalive_timeout=KEEPALIVE_TIMEOUT,
            shutdown_timeout=WEB_GRACE,
            # aiohttp logs each malformed request with its traceback: a flood of them would
            # flood the log.
            logger=throttled_logger("walletwatch.web.server", self._throttle, "web.request_error"),
        )
        await runner.setup()
        server = runner.server
        if server is None:
            raise RuntimeError("aiohttp runner set up without a server")
        listener.serve(server)
        log.info(
            "web.listening",
            open_files=files.limit,
            open_files_at_start=files.found,
            connections=files.connections,
            header_timeout=HEADER_TIMEOUT,
            keepalive_timeout=KEEPALIVE_TIMEOUT,
        )
        if self._push is not None:
            await self._push.serve()

    @property
    def url(self) -> str:
        """The base URL of the web server."""
        host = self._config.listen.host
        host = f"[{host}]" if ":" in host else host
        web_config = self._config.web
        scheme = "https" if web_config and web_config.cert_file else "http"
        return f"{scheme}://{host}:{self.port}"

    async def close(self) -> None:
        """Stop accepting, then give requests being answered WEB_GRACE to finish."""
        if self._listener is not None:
            self._listener.close()
        if self._runner is not None:
            await self._runner.cleanup()
        if self._push is not None:
            await self._push.close()
