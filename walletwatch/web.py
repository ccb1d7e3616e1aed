"""The HTTP face of the daemon: /metrics, /healthz, /readyz and a small index page."""

from __future__ import annotations

import asyncio
import html
from collections.abc import Callable, Iterable

from aiohttp import web
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder

from walletwatch import __version__
from walletwatch.watcher import AccountWatcher
from walletwatch.webauth import BasicAuth, middleware


def create_app(
    registry: CollectorRegistry,
    watchers: Callable[[], Iterable[AccountWatcher]],
    auth: BasicAuth | None = None,
) -> web.Application:
    """Build the aiohttp application (every path but /healthz behind ``auth`` when given)."""

    async def metrics(request: web.Request) -> web.Response:
        encoder, content_type = choose_encoder(request.headers.get("Accept", ""))
        # 10,000 accounts take about a second to render: in a thread, so the event loop
        # keeps polling meanwhile. The collector reads state the loop replaces, never
        # mutates in place, and copies the few live dicts in one C-level step (metrics.py).
        body = await asyncio.to_thread(encoder, registry)
        return web.Response(body=body, headers={"Content-Type": content_type})

    async def healthz(_: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def readyz(_: web.Request) -> web.Response:
        waiting = [w.name for w in watchers() if not w.polled]
        if waiting:
            return web.Response(status=503, text=f"waiting for first poll of {len(waiting)}\n")
        return web.Response(text="ready\n")

    async def index(_: web.Request) -> web.Response:
        return web.Response(text=render_index(watchers()), content_type="text/html")

    app = web.Application(middlewares=[] if auth is None else [middleware(auth)])
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/", index)
    return app


def render_index(watchers: Iterable[AccountWatcher]) -> str:
    """The index page: links and one row per account."""
    rows = []
    for w in watchers:
        state = "up" if w.up else ("waiting" if not w.polled else "DOWN")
        balances = ", ".join(
            f"{t.balance.available} {c}" for c, t in sorted(w.state.balances.items())
        )
        in_flight = sum(1 for _ in w.state.in_flight())
        rows.append(
            "<tr>"
            + "".join(
                f"<td>{html.escape(str(cell))}</td>"
                for cell in (w.provider, w.name, state, balances, in_flight)
            )
            + "</tr>"
        )
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>walletwatch</title></head>"
        f"<body><h1>walletwatch {html.escape(__version__)}</h1>"
        "<p><a href='/metrics'>/metrics</a> · <a href='/healthz'>/healthz</a> · "
        "<a href='/readyz'>/readyz</a></p>"
        "<table border='1' cellpadding='4'><tr><th>provider</th><th>account</th>"
        "<th>state</th><th>balances</th><th>in flight</th></tr>"
        + "".join(rows)
        + "</table></body></html>\n"
    )
