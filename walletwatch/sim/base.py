"""The shell every provider simulation shares: one request pipeline and one control app.

A provider's simulator subclasses ``ApiSim`` and supplies only what is particular to it:
which calls write (``is_write``), which paths it reads (``route``), how a caller proves who
it is (``authenticate``) and the shape of its error answers (``error_body``). ``ApiSim``
runs every API request through the same steps, in this order:

1. a write is refused with 403 and recorded in ``SimContext.write_calls``;
2. ``route`` picks the endpoint, or refuses the call (404, 405...);
3. a public endpoint answers at once; any other one authenticates the caller,
4. takes a token of the caller's rate limit (429 with Retry-After when none is left),
5. and answers. A ``Refusal`` raised on the way is answered in the provider's error shape.

Its control app serves ``POST /accounts`` (``account_fields`` read into ``add_account``),
the push routes of a provider that calls back (``push_kind``), the provider's own
``control_routes``, then ``GET /<snapshot_keys...>`` (``snapshot``). The push routes, under
the account's snapshot keys (``/<api_key>/push``, or ``/<app>/<user>/push``...):

- ``POST .../push`` ``{"url": ..., "delay": s, "duplicate": f, "drop": f}``: send the
  account's callbacks to url from now on (switches optional; see push.py); 404 for an
  unknown account. Setting it again replaces it and enables a disabled one.
- ``GET .../push``: the subscription (the URL's origin only) and its counts;
  ``DELETE .../push`` clears it; both 404 when there is none.
- ``POST .../push/forge``: send a callback for a transfer that does not exist; 202 with it.

A provider that calls back calls ``pushed(item, *keys)`` whenever a transfer moves, with the
transfer as its API lists it.
"""

from __future__ import annotations

import functools
import random
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Generic, Protocol, TypeVar

from aiohttp import web

from walletwatch.sim.common import (
    Clock,
    RateLimiter,
    SimContext,
    as_str,
    control_errors,
    json_response,
    read_fields,
    read_object,
    request_log_middleware,
    to_decimal,
)
from walletwatch.sim.push import PushKind, Switches

AccountT = TypeVar("AccountT")
Reader = Callable[[object], object]


class ProviderSim(Protocol):
    """One simulated provider: its API (mounted at ``/<name>``) and its control endpoints."""

    @property
    def name(self) -> str:
        """The provider's name, as registered."""
        ...

    def api_app(self) -> web.Application:
        """Build the provider's API, to be mounted under ``/<name>``."""
        ...

    def control_app(self) -> web.Application:
        """Build the provider's control endpoints, to be mounted under ``/_sim/<name>``."""
        ...


class Scenario(Protocol):
    """A provider's seeded demo activity: one ``step()`` per simulator advance."""

    def step(self) -> None:
        """Move the demo on by one step."""
        ...


# A scenario is built from its own simulator (the provider's class, hence Any), its own
# random stream and the simulator clock.
ScenarioFactory = Callable[[Any, random.Random, Clock], Scenario]


@dataclass(frozen=True, slots=True)
class Registration:
    """A simulator the Simulator serves: how to build it, and its demo scenario if any."""

    simulator: Callable[[SimContext], ProviderSim]
    scenario: ScenarioFactory | None = None


class Refusal(Exception):
    """An API error answer: its HTTP status and message, shaped by the provider's error_body."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True, slots=True)
class Call:
    """One API request as the pipeline hands it on: path under the provider, raw body."""

    request: web.Request
    path: str
    body: bytes


@dataclass(frozen=True, slots=True)
class Caller(Generic[AccountT]):
    """An authenticated caller: what the endpoint reads, and the key its rate limit counts."""

    account: AccountT
    key: str


@dataclass(frozen=True, slots=True)
class Endpoint(Generic[AccountT]):
    """A read that needs an authenticated caller: its answer from the caller's account."""

    answer: Callable[[AccountT, Call], object]


@dataclass(frozen=True, slots=True)
class Public:
    """A read anyone may make, neither authenticated nor rate-limited."""

    answer: Callable[[Call], object]


class ApiSim(ABC, Generic[AccountT]):
    """A provider simulation served through the shared pipeline and control app."""

    name: ClassVar[str]
    forbidden: ClassVar[str]  # the message refusing a write
    throttled: ClassVar[str] = ""  # the message of a 429
    rate_limited: ClassVar[bool] = True  # per-key limit of SimContext.rate_limit requests/s
    # POST /accounts: each body field and how to read it; None serves no such endpoint.
    account_fields: ClassVar[Mapping[str, Reader] | None] = None
    snapshot_keys: ClassVar[tuple[str, ...]] = ("api_key",)  # GET /{key}... -> snapshot(*keys)
    push_kind: ClassVar[PushKind | None] = None  # how the provider calls back, if it does

    # The provider's Python API, called by the control app with the fields it read.
    add_account: Callable[..., object]
    snapshot: Callable[..., Mapping[str, Any]]

    def __init__(self, ctx: SimContext) -> None:
        self._ctx = ctx
        self._limiter = RateLimiter(ctx.rate_limit, ctx.clock) if self.rate_limited else None

    # -- what a provider supplies ---------------------------------------------------------------

    @abstractmethod
    def is_write(self, method: str, path: str) -> bool:
        """Whether a call creates or moves something: refused with 403 and recorded."""

    @abstractmethod
    def route(self, method: str, path: str) -> Endpoint[AccountT] | Public:
        """The endpoint serving a read; Refusal (404, 405...) when there is none."""

    @abstractmethod
    def authenticate(self, call: Call) -> Caller[AccountT]:
        """The caller a request proves it is; Refusal otherwise."""

    @abstractmethod
    def error_body(self, status: int, message: str) -> object:
        """The body of an error answer, in the provider's shape."""

    def answer_headers(self, _call: Call) -> Mapping[str, str] | None:
        """Headers on every answer to an authenticated read (none unless overridden)."""
        return None

    def control_routes(self, router: web.UrlDispatcher) -> None:
        """Add the provider's own control endpoints (none unless overridden)."""

    def pushed(self, item: Mapping[str, Any], *account: str) -> None:
        """Call back about a transfer that moved (as the API lists it), if the account asked."""
        if self.push_kind is not None:
            self._ctx.pushes.moved(self.name, account, self.push_kind, item)

    # -- the pipeline ---------------------------------------------------------------------------

    def api_app(self) -> web.Application:
        """The provider's API, to be mounted under ``/<name>``."""
        log = request_log_middleware(self._ctx.requests, self.name, "/" + self.name)
        app = web.Application(middlewares=[log])
        app.router.add_route("*", "/{tail:.*}", self._handle)
        return app

    async def _handle(self, request: web.Request) -> web.Response:
        path = "/" + request.match_info["tail"]
        if self.is_write(request.method, path):
            self._ctx.write_calls.append((self.name, path))
            return self._refuse(Refusal(403, self.forbidden))
        try:
            endpoint = self.route(request.method, path)
        except Refusal as err:
            return self._refuse(err)
        call = Call(request, path, await request.read())
        if isinstance(endpoint, Public):
            return json_response(endpoint.answer(call))
        headers = self.answer_headers(call)
        try:
            caller = self.authenticate(call)
            delay = 0.0 if self._limiter is None else self._limiter.take(caller.key)
            if delay > 0:
                return self._ctx.too_many_requests(delay, self.error_body(429, self.throttled))
            return json_response(endpoint.answer(caller.account, call), headers=headers)
        except Refusal as err:
            return self._refuse(err, headers)

    def _refuse(self, err: Refusal, headers: Mapping[str, str] | None = None) -> web.Response:
        body = self.error_body(err.status, err.message)
        return json_response(body, status=err.status, headers=headers)

    # -- the control app ------------------------------------------------------------------------

    def control_app(self) -> web.Application:
        """Unsigned, unlimited endpoints that drive the simulation, under ``/_sim/<name>``."""
        app = web.Application(middlewares=[control_errors])
        if self.account_fields is not None:
            app.router.add_post("/accounts", self._c_add_account)
        keys = "".join(f"/{{{key}}}" for key in self.snapshot_keys)
        kind = self.push_kind
        if kind is not None:
            app.router.add_post(keys + "/push", self._c_subscribe)
            app.router.add_get(keys + "/push", self._c_subscription)
            app.router.add_delete(keys + "/push", self._c_unsubscribe)
            app.router.add_post(keys + "/push/forge", functools.partial(self._c_forge, kind))
        self.control_routes(app.router)
        app.router.add_get(keys, self._c_snapshot)
        return app

    async def _c_add_account(self, request: web.Request) -> web.Response:
        fields = read_fields(await read_object(request), self.account_fields or {})
        self.add_account(**fields)
        return json_response(self.snapshot(fields[self.snapshot_keys[0]]), status=201)

    async def _c_snapshot(self, request: web.Request) -> web.Response:
        keys = (request.match_info[key] for key in self.snapshot_keys)
        return json_response(self.snapshot(*keys))

    def _account(self, request: web.Request) -> tuple[str, ...]:
        """The account a push route names; KeyError (404) when the simulation has none such."""
        account = tuple(request.match_info[key] for key in self.snapshot_keys)
        self.snapshot(*account)
        return account

    async def _c_subscribe(self, request: web.Request) -> web.Response:
        fields = read_fields(await read_object(request), _PUSH_FIELDS)
        account = self._account(request)
        url = fields.pop("url", None)
        if url is None:
            raise ValueError("url is required")
        view = self._ctx.pushes.subscribe(self.name, account, url, Switches(**fields))
        return json_response(view)

    async def _c_subscription(self, request: web.Request) -> web.Response:
        return json_response(self._ctx.pushes.subscription(self.name, self._account(request)))

    async def _c_unsubscribe(self, request: web.Request) -> web.Response:
        self._ctx.pushes.unsubscribe(self.name, self._account(request))
        return json_response({"cleared": True})

    async def _c_forge(self, kind: PushKind, request: web.Request) -> web.Response:
        forged = self._ctx.pushes.forge(self.name, self._account(request), kind)
        return json_response({"forged": forged}, status=202)


def _number(value: object) -> float:
    """A switch: a JSON number or numeric string (seconds, or a fraction)."""
    return float(to_decimal(value))


# POST .../push: each body field and how to read it.
_PUSH_FIELDS: Mapping[str, Reader] = {
    "url": as_str,
    "delay": _number,
    "duplicate": _number,
    "drop": _number,
}
