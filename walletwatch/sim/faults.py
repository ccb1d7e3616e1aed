"""Fault mode of the simulator: errors, latency, garbage, 429 storms and connection resets.

A seeded middleware in front of every provider API (never the ``/_sim`` controls). Each
request draws once from the Faults' random stream, so a run with the same seed and the same
request order fails the same way. ``walletwatch simulate --faults error=0.1,reset=0.1,...``
and ``bench/soak.py`` use it.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from dataclasses import dataclass, fields

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from walletwatch.sim.common import json_response

Clock = Callable[[], float]

# What a garbage answer looks like: each is served with status 200.
GARBAGE: tuple[tuple[str, bytes], ...] = (
    ("text/html", b"<html><body><h1>502 Bad Gateway</h1></body></html>"),
    ("application/json", b'{"balance": "1.0", "error": "ok"'),  # truncated
    ("application/json", b'{"balance": NaN, "error": "ok", "result": [1e400]}'),
    ("application/json", b"[" * 5000 + b"]" * 5000),  # deeper than json.loads recurses
    ("application/json", b'{"success": "maybe", "message": 1' + b"9" * 5000 + b"}"),
    ("text/plain", b"\xff\xfe not even utf-8"),
)


@dataclass(frozen=True, slots=True)
class Faults:
    """How often each fault happens, as a fraction of API requests (0 to 1)."""

    error: float = 0.0  # answered HTTP 500/502/503
    garbage: float = 0.0  # answered 200 with a body that is not the API's
    reset: float = 0.0  # connection closed without an answer
    storm: float = 0.0  # starts a 429 storm: every request of that provider gets 429 ...
    storm_seconds: float = 5.0  # ... for this long
    latency: float = 0.0  # seconds of delay added to every request, uniform from 0 to this
    seed: int = 0

    def __post_init__(self) -> None:
        """Refuse fractions outside 0..1 (together) and negative durations."""
        rates = (self.error, self.garbage, self.reset, self.storm)
        if any(not 0 <= rate <= 1 for rate in rates) or sum(rates) > 1:
            raise ValueError("fault rates must be between 0 and 1 and add up to at most 1")
        if self.storm_seconds < 0 or self.latency < 0:
            raise ValueError("storm_seconds and latency must not be negative")

    @property
    def failing(self) -> float:
        """The fraction of requests that get no usable answer (storms aside)."""
        return self.error + self.garbage + self.reset


def parse_faults(text: str) -> Faults:
    """``error=0.1,garbage=0.05,reset=0.05,storm=0.01,storm_seconds=5,latency=0.2,seed=1``."""
    kinds = {item.name: item.type for item in fields(Faults)}
    values: dict[str, float | int] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, sep, value = part.partition("=")
        if not sep or name not in kinds:
            raise ValueError(f"unknown fault {name!r} (expected {', '.join(kinds)})")
        values[name] = int(value) if name == "seed" else float(value)
    return Faults(**values)  # type: ignore[arg-type]


def fault_middleware(faults: Faults, clock: Clock, prefix: str = "/_sim") -> Middleware:
    """A middleware that injects ``faults`` into every request not under ``prefix``."""
    rng = random.Random(faults.seed)
    storms: dict[str, float] = {}  # provider -> when its 429 storm ends

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path.startswith(prefix):
            return await handler(request)
        provider = request.path.lstrip("/").split("/", 1)[0]
        draw, delay, choice = rng.random(), rng.uniform(0, faults.latency), rng.random()
        if delay:
            await asyncio.sleep(delay)
        now = clock()
        if storms.get(provider, 0.0) > now:
            return _too_many(storms[provider] - now)
        edge = faults.error
        if draw < edge:
            status = (500, 502, 503)[int(choice * 3)]
            return json_response({"error": "simulated failure"}, status=status)
        edge += faults.garbage
        if draw < edge:
            content_type, body = GARBAGE[int(choice * len(GARBAGE))]
            return web.Response(body=body, content_type=content_type)
        edge += faults.reset
        if draw < edge:
            transport = request.transport
            if transport is not None:
                transport.abort()  # no answer at all: the client sees a dropped connection
            return web.Response(status=500)  # never sent: the transport is gone
        edge += faults.storm
        if draw < edge:
            storms[provider] = now + faults.storm_seconds
            return _too_many(faults.storm_seconds)
        return await handler(request)

    return middleware


def _too_many(seconds: float) -> web.Response:
    return json_response(
        {"error": "too_many_requests"},
        status=429,
        headers={"Retry-After": str(max(1, int(seconds)))},
    )
