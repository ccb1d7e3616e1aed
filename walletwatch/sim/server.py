"""The Simulator: every registered provider simulation on one aiohttp app, plus ``/_sim``."""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

from aiohttp import web

# The package's __init__ is the registry and re-exports this module: its SIMULATORS are read
# when a Simulator is built, never at import time.
from walletwatch import sim as registry
from walletwatch.demo import simulator_accounts
from walletwatch.sim.base import ApiSim, ProviderSim, Registration
from walletwatch.sim.common import Clock, RequestLog, SimContext, json_response
from walletwatch.sim.faults import Faults, fault_middleware
from walletwatch.sim.push import Pusher

DEMO_SEED = 20240601


class Simulator:
    """Simulated provider APIs, each under ``/<name>``, and the ``/_sim`` controls.

    It serves every simulator of the registry (``walletwatch.sim.SIMULATORS``), or those
    given as ``simulators``; each is reachable as ``sims[name]`` (or ``sim.<name>``). Its
    ``pushes`` (``pusher`` when given) send the providers' callbacks while it is served.
    """

    def __init__(
        self,
        *,
        seed: int = DEMO_SEED,
        clock: Clock = time.time,
        rate_limit: float = 2.0,
        retry_after_date: bool = False,
        scenario: bool = False,
        faults: Faults | None = None,
        simulators: Mapping[str, Registration] | None = None,
        pusher: Pusher | None = None,
    ) -> None:
        self.clock = clock
        self.faults = faults  # injected into every provider API request when set
        self.steps = 0
        self.pushes = Pusher(clock, seed=seed) if pusher is None else pusher
        self._ctx = SimContext(
            clock=clock,
            rate_limit=rate_limit,
            retry_after_date=retry_after_date,
            pushes=self.pushes,
        )
        self.requests: RequestLog = self._ctx.requests
        self.write_calls: list[tuple[str, str]] = self._ctx.write_calls
        chosen = dict(registry.SIMULATORS if simulators is None else simulators)
        self.sims: dict[str, ProviderSim] = {}
        for name, entry in chosen.items():
            provider = entry.simulator(self._ctx)
            if provider.name != name:
                raise ValueError(f"simulator registered as {name!r} is named {provider.name!r}")
            self.sims[name] = provider
        # One random stream per provider, so adding a provider leaves the others' demo as is.
        self._scenarios: tuple[Callable[[], None], ...] = ()
        if scenario:
            self._scenarios = tuple(
                entry.scenario(self.sims[name], random.Random(f"{seed}/{name}"), clock).step
                for name, entry in chosen.items()
                if entry.scenario is not None
            )

    def __getattr__(self, name: str) -> Any:
        """A served simulator by provider name, as ``sim.<name>`` (typed loosely, for tests)."""
        try:
            return self.__dict__["sims"][name]
        except KeyError:
            raise AttributeError(name) from None

    def advance(self) -> None:
        """Run one scenario step on every provider (no effect without ``scenario=True``)."""
        self.steps += 1
        for step in self._scenarios:
            step()

    def app(self) -> web.Application:
        """An aiohttp app serving every provider under ``/<name>`` and the ``/_sim`` controls."""
        middlewares = [] if self.faults is None else [fault_middleware(self.faults, self.clock)]
        app = web.Application(middlewares=middlewares)
        app.cleanup_ctx.append(lambda _app: self.pushes.running())
        app.router.add_get("/", self._index)
        app.router.add_get("/_sim/requests", self._requests)
        app.router.add_get("/_sim/push", self._push_status)
        app.router.add_post("/_sim/advance", self._advance)
        for provider in self.sims.values():
            mount(app, provider)
        return app

    async def _index(self, request: web.Request) -> web.Response:
        """What ``walletwatch simulate`` prints: the accounts and what a config needs for each."""
        url = str(request.url.origin())
        text = f"walletwatch simulator at {url}\n{simulator_accounts(url)}\n{self.push_help()}\n"
        return web.Response(text=text)

    def push_help(self) -> str:
        """How to point a provider's callbacks at a URL, per provider that calls back."""
        lines = [
            "push: the providers below call back when money moves, to a URL set per account",
            '(POST {"url": ...}; GET shows it, DELETE clears it; GET /_sim/push counts them all):',
        ]
        for name, provider in self.sims.items():
            if isinstance(provider, ApiSim) and provider.push_kind is not None:
                keys = "/".join(f"<{key}>" for key in provider.snapshot_keys)
                lines.append(f"  {name:<12} POST /_sim/{name}/{keys}/push")
        return "\n".join(lines)

    async def _push_status(self, _request: web.Request) -> web.Response:
        return json_response(self.pushes.status())

    async def _requests(self, _request: web.Request) -> web.Response:
        return json_response(
            {
                "requests": self.requests.as_json(),
                "write_calls": [list(call) for call in self.write_calls],
            }
        )

    async def _advance(self, _request: web.Request) -> web.Response:
        self.advance()
        return json_response({"steps": self.steps})


def mount(app: web.Application, provider: ProviderSim) -> None:
    """Serve one provider simulation: its API under ``/<name>``, controls under ``/_sim/<name>``."""
    app.add_subapp(f"/_sim/{provider.name}", provider.control_app())
    app.add_subapp(f"/{provider.name}", provider.api_app())


def provider_app(provider: ProviderSim) -> web.Application:
    """An app serving one provider simulation alone, as its own tests use it."""
    app = web.Application()
    mount(app, provider)
    return app


async def serve(
    app: web.Application, host: str = "127.0.0.1", port: int = 0
) -> tuple[web.AppRunner, int]:
    """Serve an app on host:port (0 = ephemeral); return the runner and the bound port."""
    runner = web.AppRunner(app)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
    except BaseException:
        await runner.cleanup()
        raise
    return runner, runner.addresses[0][1]


async def start(
    sim: Simulator, host: str = "127.0.0.1", port: int = 0, *, tick: float | None = None
) -> tuple[web.AppRunner, int]:
    """Serve sim on host:port (0 = ephemeral) and return the runner and the bound port.

    With tick, a background task calls sim.advance() every tick seconds until
    runner.cleanup().
    """
    if tick is not None and tick < 0:
        raise ValueError(f"tick must not be negative, got {tick!r}")
    app = sim.app()
    if tick is not None:
        app.cleanup_ctx.append(_ticker(sim, tick))
    return await serve(app, host, port)


def _ticker(
    sim: Simulator, tick: float
) -> Callable[[web.Application], contextlib.AbstractAsyncContextManager[None]]:
    @contextlib.asynccontextmanager
    async def ticking(_app: web.Application) -> AsyncIterator[None]:
        task = asyncio.create_task(_tick_forever(sim, tick))
        yield
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    return ticking


async def _tick_forever(sim: Simulator, tick: float) -> None:
    while True:
        await asyncio.sleep(tick)
        sim.advance()
