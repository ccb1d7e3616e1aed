"""The HTTP face of the daemon: /metrics, /healthz, /readyz, the operator API, the status page."""

from __future__ import annotations

import asyncio
import html
import ipaddress
import zlib
from collections.abc import Awaitable, Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from aiohttp import web
from aiohttp.typedefs import Middleware
from prometheus_client.exposition import choose_encoder, gzip_accepted
from prometheus_client.openmetrics.exposition import UNDERSCORES

from walletwatch.api import add_routes
from walletwatch.clock import SystemClock
from walletwatch.collecthold import HOLD
from walletwatch.errors import NotLeading
from walletwatch.metrics import WalletwatchCollector
from walletwatch.operator import OperatorView
from walletwatch.statuspage import status_page
from walletwatch.statusstyle import HEADERS
from walletwatch.types import Clock
from walletwatch.watcher import AccountWatcher
from walletwatch.webauth import BasicAuth, middleware

SLICE_SECONDS = 0.005
"""How long a /metrics render runs before it lets the event loop run other tasks."""


def create_app(
    collector: WalletwatchCollector,
    watchers: Callable[[], Iterable[AccountWatcher]],
    auth: BasicAuth | None = None,
    *,
    on_render: Callable[[], None] = lambda: None,
    first: Sequence[Middleware] = (),
    view: OperatorView | None = None,
    clock: Clock | None = None,
) -> web.Application:
    """Build the aiohttp application (every path but /healthz behind ``auth`` when given).

    ``view`` answers the operator API (walletwatch.api) on ``clock``'s time, when given.

    ``on_render`` is called after each /metrics render, once the renderer's caches hold it.
    ``first`` are middlewares that see every request before the others (the listener's).
    """
    renders = Renders()

    async def metrics(request: web.Request) -> web.StreamResponse:
        accept = request.headers.get("Accept", "")
        body = negotiate(accept, request.headers.get("Accept-Encoding", ""), request.remote)
        # The collector stays off through on_render: a freeze there takes what the render
        # made as it is, instead of a young-generation pass over all of it right after.
        with HOLD.held():
            parts = await renders.body(collector, body)
            on_render()
        response = web.StreamResponse(headers={"Content-Type": body.content_type})
        if body.gzip:
            response.headers["Content-Encoding"] = "gzip"
        response.content_length = sum(len(part) for part in parts)
        await response.prepare(request)
        if request.method != "HEAD":
            for part in parts:  # as they are: joining 20 MiB first would stall the loop 20 ms
                await response.write(part)
        await response.write_eof()
        return response

    async def healthz(_: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def readyz(_: web.Request) -> web.Response:
        waiting = [w.name for w in watchers() if not w.polled]
        if waiting:
            return web.Response(status=503, text=f"waiting for first poll of {len(waiting)}\n")
        return web.Response(text="ready\n")

    app = web.Application(middlewares=[*first, *([] if auth is None else [middleware(auth)])])
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    if view is not None:
        wall = clock if clock is not None else SystemClock()
        app.router.add_get("/", _index(view, wall))
        add_routes(app, view, wall)
    return app


FOLLOWER_PAGE = (
    '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
    '<meta http-equiv="refresh" content="30"><title>walletwatch: a follower</title></head>'
    "<body><h1>walletwatch: this replica follows</h1><p>{message}.</p></body></html>\n"
)
"""The status page of a replica that does not lead."""


def _index(view: OperatorView, clock: Clock) -> Callable[[web.Request], Awaitable[web.Response]]:
    """The status page's handler, from ``view`` at ``clock``'s wall time."""

    async def index(request: web.Request) -> web.Response:
        try:
            view.check_leading()
        except NotLeading as err:
            # An empty page would read as "all well": say why there is nothing, and look
            # again in 30 s, when this replica may lead.
            page = FOLLOWER_PAGE.format(message=html.escape(str(err)))
            return web.Response(text=page, status=503, content_type="text/html", headers=HEADERS)
        # The collector off, as for /metrics: 10,000 accounts' views are some 200,000 young
        # objects, without a cycle among them, that would set off full passes mid-page.
        with HOLD.held():
            page = await status_page(view, request.query, clock.time())
        return web.Response(text=page, content_type="text/html", headers=HEADERS)

    return index


@dataclass(frozen=True, slots=True)
class Body:
    """What a scrape gets: the format and its Content-Type, the names' escaping, gzip or not."""

    openmetrics: bool
    escaping: str
    gzip: bool
    content_type: str


def negotiate(accept: str, accept_encoding: str, remote: str | None = None) -> Body:
    """The body for a scrape's headers, chosen as prometheus_client's exposition does.

    Gzipped when accepted (Prometheus always asks) unless ``remote``, the scraper's address,
    is a loopback one: over loopback the bytes cost nothing to send, and compressing 20 MiB
    added some 50 ms to a scrape (zlib lets go of the GIL, but the render keeps it).
    """
    _, content_type = choose_encoder(accept)
    media, *params = (param.strip() for param in content_type.split(";"))
    escaping = dict(param.split("=", 1) for param in params).get("escaping", UNDERSCORES)
    return Body(
        openmetrics=media == "application/openmetrics-text",
        escaping=escaping,
        gzip=gzip_accepted(accept_encoding) and not _loopback(remote),
        content_type=content_type,
    )


def _loopback(address: str | None) -> bool:
    """Whether ``address`` is an IP address of this host's loopback."""
    try:
        return address is not None and ipaddress.ip_address(address).is_loopback
    except ValueError:  # not an IP address
        return False


async def render(
    collector: WalletwatchCollector, body: Body, slice_seconds: float = SLICE_SECONDS
) -> list[bytes]:
    """The exposition, rendered on the event loop a slice at a time: the body in parts.

    At 10,000 accounts a render takes a couple of hundred milliseconds of CPU.
    prometheus_client's encoder in a worker thread held the GIL for all of it, stalling the
    loop as long; here other tasks run between slices of ``slice_seconds``, and watcher state
    is read on the loop. A gzip stream is compressed in a thread as the parts come.
    """
    loop = asyncio.get_running_loop()
    parts: list[bytes] = []
    compressor = Gzip() if body.gzip else None
    try:
        deadline = loop.time() + slice_seconds
        with HOLD.held():
            for part in collector.steps(body.openmetrics, body.escaping):
                if part is not None:
                    if compressor is None:
                        parts.append(part)
                    else:
                        compressor.feed(part)
                if loop.time() >= deadline:
                    await asyncio.sleep(0)
                    deadline = loop.time() + slice_seconds
        return parts if compressor is None else await compressor.finish()
    finally:
        if compressor is not None:
            compressor.close()


class Gzip:
    """A gzip stream compressed in order in a thread of its own, while the loop goes on.

    zlib lets go of the GIL while it compresses. Level 1: a 20 MiB exposition shrinks about
    fifteenfold for some 50 ms; prometheus_client's level 9 would halve the size again for
    three times the CPU.
    """

    def __init__(self) -> None:
        self._compressor = zlib.compressobj(1, zlib.DEFLATED, 31)  # wbits 31: gzip's container
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="walletwatch-gzip")
        self._chunks: list[asyncio.Future[bytes]] = []

    def feed(self, data: bytes) -> None:
        """Compress ``data`` after what was fed before."""
        loop = asyncio.get_running_loop()
        self._chunks.append(loop.run_in_executor(self._thread, self._compressor.compress, data))

    async def finish(self) -> list[bytes]:
        """The stream in chunks, once everything fed is compressed."""
        loop = asyncio.get_running_loop()
        self._chunks.append(loop.run_in_executor(self._thread, self._compressor.flush))
        return list(await asyncio.gather(*self._chunks))

    def close(self) -> None:
        """Let the thread go, dropping what it has not started (if the render was cancelled)."""
        self._thread.shutdown(wait=False, cancel_futures=True)


class Renders:
    """The /metrics renders under way: a scrape arriving during one gets its body too."""

    def __init__(self, slice_seconds: float = SLICE_SECONDS) -> None:
        self._slice = slice_seconds
        self._running: dict[tuple[WalletwatchCollector, Body], asyncio.Task[list[bytes]]] = {}

    async def body(self, collector: WalletwatchCollector, body: Body) -> list[bytes]:
        """The body in parts, from the render under way for the same body or from a new one."""
        key = (collector, body)
        task = self._running.get(key)
        if task is None:
            task = asyncio.create_task(render(collector, body, self._slice))
            self._running[key] = task
            task.add_done_callback(lambda _: self._running.pop(key, None))
        # Shielded: a scraper that hangs up does not cancel the render others wait for.
        return await asyncio.shield(task)
