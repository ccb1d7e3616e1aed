"""Pieces every provider simulation shares: rate limiting, exact JSON, request and write logs."""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from email.utils import formatdate
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from walletwatch.sim.push import Pusher

Clock = Callable[[], float]


class RateLimiter:
    """Per-key token bucket that holds at most one token (no burst), refilled at ``rate``/s."""

    __slots__ = ("_clock", "_interval", "_next")

    def __init__(self, rate: float, clock: Clock) -> None:
        if not rate > 0:
            raise ValueError(f"rate must be positive, got {rate!r}")
        self._interval = 1.0 / rate
        self._clock = clock
        self._next: dict[str, float] = {}

    def take(self, key: str) -> float:
        """Take the key's token: 0.0 when admitted, else the seconds until the next one."""
        now = self._clock()
        due = self._next.get(key, -math.inf)
        if now >= due:
            self._next[key] = now + self._interval
            return 0.0
        return due - now


def retry_after_value(delay: float, now: float, *, http_date: bool) -> str:
    """Format a Retry-After header: whole seconds (at least 1), or the HTTP-date to wait for."""
    if http_date:
        return formatdate(math.ceil(now + delay), usegmt=True)
    return str(max(1, math.ceil(delay)))


class RequestLog:
    """Counts of API responses per (provider, path, status)."""

    __slots__ = ("_counts",)

    def __init__(self) -> None:
        self._counts: Counter[tuple[str, str, int]] = Counter()

    def record(self, provider: str, path: str, status: int) -> None:
        """Count one response."""
        self._counts[(provider, path, status)] += 1

    def count(
        self, *, provider: str | None = None, path: str | None = None, status: int | None = None
    ) -> int:
        """Number of responses matching every filter given."""
        return sum(
            n
            for (p, pa, s), n in self._counts.items()
            if (provider is None or p == provider)
            and (path is None or pa == path)
            and (status is None or s == status)
        )

    def as_json(self) -> list[dict[str, object]]:
        """Every counter as a JSON-able row, sorted."""
        return [
            {"provider": p, "path": pa, "status": s, "count": n}
            for (p, pa, s), n in sorted(self._counts.items())
        ]


@dataclass(frozen=True, slots=True)
class SimContext:
    """What the Simulator hands every provider simulation."""

    clock: Clock
    rate_limit: float
    retry_after_date: bool
    requests: RequestLog = field(default_factory=RequestLog)
    write_calls: list[tuple[str, str]] = field(default_factory=list)
    pushes: Pusher = field(default_factory=Pusher)  # the Simulator's runs on its own clock

    def too_many_requests(self, delay: float, body: object) -> web.Response:
        """An HTTP 429 answer with Retry-After in the form the Simulator was told to use."""
        value = retry_after_value(delay, self.clock(), http_date=self.retry_after_date)
        return json_response(body, status=429, headers={"Retry-After": value})


def dump_json(value: object) -> str:
    """Serialize to JSON text, writing ``Decimal`` values as exact JSON numbers."""
    parts: list[str] = []
    _encode(value, parts)
    return "".join(parts)


def _encode(value: object, out: list[str]) -> None:
    if isinstance(value, Decimal):
        if not value.is_finite():
            raise ValueError(f"JSON has no number for {value}")
        out.append(format(value, "f"))
    elif isinstance(value, Mapping):
        out.append("{")
        for i, (key, item) in enumerate(value.items()):
            if not isinstance(key, str):
                raise TypeError(f"JSON object keys must be str, got {key!r}")
            out.append(", " if i else "")
            out.append(json.dumps(key) + ": ")
            _encode(item, out)
        out.append("}")
    elif isinstance(value, list | tuple):
        out.append("[")
        for i, item in enumerate(value):
            out.append(", " if i else "")
            _encode(item, out)
        out.append("]")
    elif value is None or isinstance(value, str | int | float):
        out.append(json.dumps(value, allow_nan=False))
    else:
        raise TypeError(f"cannot write {type(value).__name__} as JSON")


def json_response(
    data: object, *, status: int = 200, headers: Mapping[str, str] | None = None
) -> web.Response:
    """A JSON response whose Decimal values are exact numbers."""
    return web.Response(
        text=dump_json(data), status=status, headers=headers, content_type="application/json"
    )


def _reject_constant(name: str) -> object:
    raise ValueError(f"{name} is not a number")


def load_json(raw: bytes) -> object:
    """Parse JSON, reading fractional numbers as Decimal and refusing NaN/Infinity."""
    return json.loads(raw, parse_float=Decimal, parse_constant=_reject_constant)


def to_decimal(value: object) -> Decimal:
    """Read an amount given as a JSON number or numeric string."""
    if isinstance(value, bool) or not isinstance(value, str | int | Decimal):
        raise TypeError(f"not an amount: {value!r}")
    try:
        amount = Decimal(value)
    except InvalidOperation as err:
        raise ValueError(f"not an amount: {value!r}") from err
    if not amount.is_finite():
        raise ValueError(f"not an amount: {value!r}")
    return amount


def request_log_middleware(log: RequestLog, provider: str, prefix: str) -> Middleware:
    """Middleware that counts every response of a provider's API by path relative to prefix."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        path = request.path.removeprefix(prefix) or "/"
        try:
            response = await handler(request)
        except web.HTTPException as exc:
            log.record(provider, path, exc.status)
            raise
        except Exception:
            log.record(provider, path, 500)
            raise
        log.record(provider, path, response.status)
        return response

    return middleware


# Control endpoints answer errors by exception type, in one table.
_CONTROL_ERRORS: tuple[tuple[type[Exception], int, str], ...] = (
    (KeyError, 404, "not_found"),
    (ValueError, 400, "bad_request"),
    (TypeError, 400, "bad_request"),
)


@web.middleware
async def control_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Turn the Python API's KeyError/ValueError into JSON 404/400 answers for control calls."""
    try:
        return await handler(request)
    except (KeyError, ValueError, TypeError) as exc:
        for kind, status, error in _CONTROL_ERRORS:
            if isinstance(exc, kind):
                return json_response({"error": error, "detail": str(exc)}, status=status)
        raise  # pragma: no cover - every caught type is in the table


async def read_object(request: web.Request) -> dict[str, object]:
    """The request body as a JSON object (an empty body is ``{}``)."""
    raw = await request.read()
    if not raw.strip():
        return {}
    data = load_json(raw)
    if not isinstance(data, dict):
        raise TypeError("body must be a JSON object")
    return data


def as_str(value: object) -> str:
    """A control field that must be a string."""
    if not isinstance(value, str):
        raise TypeError(f"expected a string, got {value!r}")
    return value


def as_int(value: object) -> int:
    """A control field that must be a JSON integer."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"expected an integer, got {value!r}")
    return value


def as_bool(value: object) -> bool:
    """A control field that must be a JSON boolean."""
    if not isinstance(value, bool):
        raise TypeError(f"expected true or false, got {value!r}")
    return value


def as_time(value: object) -> float:
    """A control field holding a Unix time in seconds."""
    return float(to_decimal(value))


def as_amounts(value: object) -> dict[str, Decimal]:
    """A control field mapping currency codes to amounts."""
    if not isinstance(value, dict):
        raise TypeError(f"expected an object of amounts, got {value!r}")
    return {as_str(currency): to_decimal(amount) for currency, amount in value.items()}


def read_fields(
    data: Mapping[str, object], fields: Mapping[str, Callable[[object], object]]
) -> dict[str, Any]:
    """Convert a control body field by field; unknown fields are refused, nulls left out."""
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ValueError(f"unknown fields {unknown}")
    return {key: fields[key](value) for key, value in data.items() if value is not None}
