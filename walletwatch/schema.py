"""What a valid config looks like: value validators and the shape of a provider's contract.

Validators are pure functions of one loaded YAML value. They return the parsed value or raise
``Invalid`` carrying one or more ``(sub-path, message)`` problems; ``configcheck.py``
prefixes the path and collects them. Messages show offending values, so no validator sees a
credential. Each provider's contract (a ProviderSchema) lives in its own module.
"""

from __future__ import annotations

import ipaddress
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from types import MappingProxyType
from typing import Any, TypeVar
from urllib.parse import urlsplit

__all__ = [
    "Invalid",
    "Option",
    "ProviderSchema",
    "format_duration",
    "parse_duration",
]

T = TypeVar("T")


class Invalid(ValueError):
    """A config value is refused; ``problems`` are ``(sub-path, message)`` pairs."""

    def __init__(self, message: str = "", *, problems: Sequence[tuple[str, str]] = ()) -> None:
        self.problems = tuple(problems) or (("", message),)
        super().__init__("; ".join(text for _, text in self.problems))


def describe(value: object) -> str:
    """Show a config value in a message: short scalars as written, containers by YAML kind."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return repr(value if len(value) <= 40 else value[:37] + "...")
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list | tuple):
        return "a list" if value else "an empty list"
    return f"a {type(value).__name__}"


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


# Durations ----------------------------------------------------------------------------------

_DURATION_PART = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ms|s|m|h|d)")
_BARE_NUMBER = re.compile(r"[0-9]+(?:\.[0-9]+)?")
_UNIT_MS = {"d": 86_400_000, "h": 3_600_000, "m": 60_000, "s": 1000, "ms": 1}


def optional_mapping(value: object) -> Mapping[Any, object]:
    """A mapping as given, or an empty one for a key left empty (``null``)."""
    if value is None:
        return {}
    if isinstance(value, Mapping):
        return value
    raise Invalid(f"expected a mapping, got {describe(value)}")


def parse_duration(text: str) -> float:
    """Seconds in ``500ms``, ``30s``, ``5m``, ``1h``, ``1d`` or a compound like ``1h30m``."""
    if _BARE_NUMBER.fullmatch(text):
        raise ValueError(f"invalid duration {text!r}: add a unit, e.g. '{text}s'")
    total_ms, end = Decimal(0), 0
    for match in _DURATION_PART.finditer(text):
        if match.start() != end:
            break
        total_ms += Decimal(match[1]) * _UNIT_MS[match[2]]
        end = match.end()
    if end == 0 or end != len(text):
        raise ValueError(
            f"invalid duration {text!r}: a number and a unit (ms, s, m, h, d) with no spaces, "
            "or several from the largest unit down, e.g. '30s', '1h30m'"
        )
    return float(total_ms / 1000)  # exact decimal arithmetic, rounded once


def format_duration(seconds: float) -> str:
    """The duration text of ``seconds`` (5400 -> ``1h30m``), which parse_duration reads back."""
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"cannot format duration {seconds!r}")
    rest = Decimal(repr(float(seconds))) * 1000  # milliseconds, exactly as the float prints
    parts = []
    for unit, size in list(_UNIT_MS.items())[:-1]:
        count, rest = divmod(rest, size)
        if count:
            parts.append(f"{int(count)}{unit}")
    if rest:
        parts.append(f"{rest.normalize():f}ms")
    return "".join(parts) or "0s"


def duration(minimum: float, *, strict: bool = False) -> Callable[[object], float]:
    """A validator of duration text no shorter than ``minimum`` (or longer, when ``strict``)."""

    def parse(value: object) -> float:
        if not isinstance(value, str) and not _is_number(value):
            raise Invalid(f"expected a duration such as '30s', got {describe(value)}")
        seconds = parse_duration(str(value))
        if seconds < minimum or (strict and seconds == minimum):
            bound = "greater than" if strict else "at least"
            raise Invalid(f"must be {bound} {format_duration(minimum)}, got {describe(value)}")
        return seconds

    return parse


# Scalars --------------------------------------------------------------------------------


def choice(*allowed: str | None) -> Callable[[object], str | None]:
    """A validator accepting exactly one of ``allowed`` (``None`` meaning YAML null)."""
    shown = ", ".join("null" if item is None else repr(item) for item in allowed)

    def parse(value: object) -> str | None:
        if (value is None or isinstance(value, str)) and value in allowed:
            return value
        raise Invalid(f"expected one of {shown}; got {describe(value)}")

    return parse


def integer_at_least(minimum: int) -> Callable[[object], int]:
    """A validator accepting an integer no smaller than ``minimum``."""

    def parse(value: object) -> int:
        if isinstance(value, int) and not isinstance(value, bool) and value >= minimum:
            return value
        raise Invalid(f"expected an integer >= {minimum}, got {describe(value)}")

    return parse


def nonempty_string(value: object) -> str:
    """A validator accepting any non-empty string."""
    if isinstance(value, str) and value:
        return value
    raise Invalid(f"expected a non-empty string, got {describe(value)}")


def nullable(parse: Callable[[object], T]) -> Callable[[object], T | None]:
    """A validator accepting null or what ``parse`` accepts."""
    return lambda value: None if value is None else parse(value)


def rate(value: object) -> float:
    """Requests per second: a finite number above zero."""
    if isinstance(value, int | float) and not isinstance(value, bool) and 0 < value < math.inf:
        return float(value)
    raise Invalid(f"expected requests per second as a number > 0, got {describe(value)}")


def margin(value: object) -> float:
    """A safety margin below a published rate limit: a fraction from 0 up to (not) 0.5."""
    if isinstance(value, int | float) and not isinstance(value, bool) and 0 <= value < 0.5:
        return float(value)
    raise Invalid(f"expected a fraction >= 0 and < 0.5 (0.05 = 5%), got {describe(value)}")


def amount(value: object) -> Decimal:
    """A non-negative finite Decimal from text or a YAML number (via str, never float math)."""
    if not isinstance(value, str) and not _is_number(value):
        raise Invalid(f"expected an amount, got {describe(value)}")
    try:
        number = Decimal(str(value))
    except InvalidOperation:
        raise Invalid(f"invalid amount {describe(value)}") from None
    if not number.is_finite():
        raise Invalid(f"amount must be finite, got {describe(value)}")
    if number < 0:
        raise Invalid(f"amount must not be negative, got {describe(value)}")
    return number


def account_name(value: object) -> str:
    """An account name, which becomes the ``account`` label."""
    if isinstance(value, str) and re.fullmatch(r"[A-Za-z0-9_.-]+", value):
        return value
    raise Invalid(f"invalid account name {describe(value)}: use letters, digits, '_', '.' and '-'")


def base_url(value: object) -> str:
    """An http(s) URL without query, fragment or user info; the trailing slash dropped."""
    if isinstance(value, str):
        try:
            parts = urlsplit(value)
            _ = parts.port  # raises on a port that is not a number
        except ValueError:
            pass
        else:
            if parts.username is not None or parts.password is not None:
                raise Invalid("must not contain a user name or password")  # never echo those
            web = parts.scheme in ("http", "https") and parts.hostname
            if web and not parts.query and not parts.fragment:
                return value.rstrip("/")
    raise Invalid(f"expected an http(s) URL such as 'https://host/api', got {describe(value)}")


def insecure_url(url: str) -> bool:
    """True for a plain http:// URL whose host is not loopback (127.0.0.0/8, ::1, localhost)."""
    parts = urlsplit(url)
    if parts.scheme != "http":
        return False
    host = (parts.hostname or "").rstrip(".").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return False
    try:
        return not ipaddress.ip_address(host).is_loopback
    except ValueError:
        return True


def flag(value: object) -> bool:
    """A YAML boolean."""
    if isinstance(value, bool):
        return value
    raise Invalid(f"expected true or false, got {describe(value)}")


_LISTEN = re.compile(r"\[(?P<v6>[^\]]+)\]:(?P<p6>[0-9]+)|(?P<host>[^:\[\]/\s]+):(?P<port>[0-9]+)")


def listen_address(value: object) -> tuple[str, int]:
    """``HOST:PORT`` or ``[IPv6]:PORT`` as (host without brackets, port)."""
    match = _LISTEN.fullmatch(value) if isinstance(value, str) else None
    if match is None:
        raise Invalid(
            "expected HOST:PORT such as 127.0.0.1:10101, 0.0.0.0:10101 or [::1]:10101, "
            f"got {describe(value)}"
        )
    host, port = match["v6"] or match["host"], int(match["p6"] or match["port"])
    if match["v6"]:
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise Invalid(f"invalid IPv6 address {host!r}") from None
    if port > 65535:
        raise Invalid(f"port {port} is out of range (0-65535)")
    return host, port


# Collections ------------------------------------------------------------------------------


def _currency_problem(code: object) -> str:
    hint = " (quote it)" if isinstance(code, bool | int | float) else ""
    return f"expected a currency code, got {describe(code)}{hint}"


def currencies(value: object) -> frozenset[str] | None:
    """A currency filter: null for every currency, else a non-empty list of codes."""
    if value is None:
        return None
    if value == []:
        raise Invalid("empty list: leave the key out to watch every currency")
    if not isinstance(value, list):
        raise Invalid(f"expected a list of currency codes, got {describe(value)}")
    problems = [
        (f"[{index}]", _currency_problem(code))
        for index, code in enumerate(value)
        if not isinstance(code, str) or not code
    ]
    if problems:
        raise Invalid(problems=problems)
    return frozenset(code.upper() for code in value)  # compared case-insensitively


def thresholds(value: object) -> Mapping[str, Decimal]:
    """``low_balance``: currency code -> Decimal amount."""
    if value is None:
        return MappingProxyType({})
    if not isinstance(value, Mapping):
        raise Invalid(f"expected a mapping of currency to amount, got {describe(value)}")
    parsed, problems = {}, []
    for code, number in value.items():
        if not isinstance(code, str) or not code:
            problems.append(("", _currency_problem(code)))
            continue
        if code.upper() in parsed:
            problems.append((f".{code}", f"the same currency as {code.upper()}"))
            continue
        try:
            parsed[code.upper()] = amount(number)  # compared case-insensitively
        except Invalid as err:
            problems.extend((f".{code}{sub}", text) for sub, text in err.problems)
    if problems:
        raise Invalid(problems=problems)
    return MappingProxyType(parsed)


# Providers --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Option:
    """A provider-specific account key: its default and its validator."""

    default: object
    parse: Callable[[object], object]


@dataclass(frozen=True, slots=True)
class ProviderSchema:
    """What an account of one provider may and must configure."""

    name: str
    base_url: str
    rate_limit: float  # requests/s per credential
    credentials: tuple[str, ...]  # always required
    identity: str  # the credential naming the API key, hashed into credential_id
    host_rate_limit: float | None = None
    options: Mapping[str, Option] = field(default_factory=lambda: MappingProxyType({}))
    # An option whose value selects further required credentials (an `auth` mode, say).
    credential_option: str | None = None
    credential_variants: Mapping[str, tuple[str, ...]] = field(
        default_factory=lambda: MappingProxyType({})
    )
    # Credentials that name rather than authenticate: a config may show them to every user.
    public_credentials: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        """Refuse an inconsistent schema: a programming error, caught at import."""
        if self.identity not in self.credentials:
            raise ValueError(f"{self.name}: identity {self.identity!r} is not a credential")
        if self.credential_option is not None and self.credential_option not in self.options:
            raise ValueError(f"{self.name}: credential_option is not an option")
        if not set(self.public_credentials) <= set(self.known_credentials):
            raise ValueError(f"{self.name}: a public credential is not a credential")
        # Read-only whatever the provider module passed: the schema is shared by every account.
        object.__setattr__(self, "options", MappingProxyType(dict(self.options)))
        variants = MappingProxyType(dict(self.credential_variants))
        object.__setattr__(self, "credential_variants", variants)

    def required_credentials(self, options: Mapping[str, object]) -> tuple[str, ...] | None:
        """The credentials these option values require; None when the selecting option is bad."""
        if self.credential_option is None:
            return self.credentials
        selected = options.get(self.credential_option)
        if not isinstance(selected, str) or selected not in self.credential_variants:
            return None
        return self.credentials + self.credential_variants[selected]

    @property
    def known_credentials(self) -> tuple[str, ...]:
        """Every credential name this provider uses under any option value."""
        names = list(self.credentials)
        for variant in self.credential_variants.values():
            names.extend(name for name in variant if name not in names)
        return tuple(names)

    def credential_problems(
        self, given: Sequence[object], options: Mapping[str, object]
    ) -> list[tuple[object, str]]:
        """(name, message) for unknown or unused names ``given``; name None for missing ones."""
        required = self.required_credentials(options)
        problems: list[tuple[object, str]] = []
        for name in given:
            if name not in self.known_credentials:
                expected = ", ".join(required or self.known_credentials)
                problems.append((name, f"unknown credential for {self.name} ({expected})"))
            elif required is not None and name not in required:
                option = self.credential_option or ""
                problems.append((name, f"not used with {option} {options.get(option)!r}"))
        problems.extend(
            (None, f"missing credential {name!r}")
            for name in required or self.credentials
            if name not in given
        )
        return problems
