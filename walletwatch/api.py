"""The operator API's routes: /api/v1/accounts, /api/v1/transfers and /api/v1/events.

Thin: each parses its parameters, asks the OperatorView, and writes JSON a part at a time so a
long listing never holds the event loop. A bad parameter is a 400 naming it; a state database
that cannot be read is a 503 saying so, and so is a replica that follows (it watches nothing).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Iterable

from aiohttp import web

from walletwatch.collecthold import HOLD
from walletwatch.errors import BadParameter, NotLeading, StoreError
from walletwatch.events import format_ts
from walletwatch.operator import OperatorView, events_query, json_chunks, transfer_query
from walletwatch.types import Clock

JSON = "application/json; charset=utf-8"
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def add_routes(app: web.Application, view: OperatorView, clock: Clock) -> None:
    """Answer the operator API on ``app`` from ``view``."""

    async def accounts(request: web.Request) -> web.StreamResponse:
        if request.query:
            name = next(iter(request.query))
            raise BadParameter(name, f"unknown parameter {name!r}")
        rows = await view.accounts()
        tail = {"generated_at": format_ts(clock.time())}
        return await _stream(request, json_chunks("accounts", rows, tail))

    async def transfers(request: web.Request) -> web.StreamResponse:
        rows, truncated = await view.transfers(transfer_query(request.query))
        return await _stream(request, json_chunks("transfers", rows, {"truncated": truncated}))

    async def events(request: web.Request) -> web.StreamResponse:
        after, limit = events_query(request.query)
        rows = await view.events(after, limit)
        return await _stream(request, json_chunks("events", rows, {}))

    app.router.add_get("/api/v1/accounts", _answered(accounts, view))
    app.router.add_get("/api/v1/transfers", _answered(transfers, view))
    app.router.add_get("/api/v1/events", _answered(events, view))


def _answered(handler: Handler, view: OperatorView) -> Handler:
    """``handler`` with its refusals as JSON: 400 for a bad parameter, 503 for the store or
    on a replica that follows (``"leader": false``)."""

    async def answer(request: web.Request) -> web.StreamResponse:
        try:
            # A listing makes objects by the hundred thousand, in slices: a full collection
            # set off among them would stall the loop for as long as it walks the heap.
            with HOLD.held():
                view.check_leading()
                return await handler(request)
        except NotLeading as err:
            body = {"error": str(err), "leader": False}
            return web.json_response(body, status=503, dumps=json.dumps)
        except BadParameter as err:
            body = {"error": str(err), "parameter": err.parameter}
            return web.json_response(body, status=400, dumps=json.dumps)
        except StoreError as err:
            return web.json_response({"error": str(err)}, status=503, dumps=json.dumps)

    return answer


async def _stream(request: web.Request, chunks: Iterable[bytes]) -> web.StreamResponse:
    """Send ``chunks`` as one JSON body, letting the loop run between them."""
    response = web.StreamResponse(headers={"Content-Type": JSON, "Cache-Control": "no-store"})
    await response.prepare(request)
    if request.method != "HEAD":
        for chunk in chunks:
            await response.write(chunk)
            await asyncio.sleep(0)
    await response.write_eof()
    return response
