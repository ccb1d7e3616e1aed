"""bitexbit API Gateway: deposits, withdrawals and payment methods; balances from the v2 API.

See shared/providers/NOTES.md (bitexbit) and bitexbit_auth.py for the three signing schemes.
Decisions this module makes:

- Histories (``GET /wallet/history``, ``GET /withdraw/history``) are read newest first
  (``ordering=-id&limit=50``) by following ``next`` (trimmed: the service writes it with a
  leading space) until a page holds a known transfer and every tracked in-flight transfer of
  that direction has been seen again (the gateway has no single-transfer lookup), at most
  ``max_pages`` pages. A ``next`` on another scheme, host, port or path is BadPayload: the
  poll fails visibly rather than sending signed requests elsewhere or quietly missing pages.
- Deposits are named by their ``id`` when the item has one; the doc's items have none, so
  otherwise by ``<txid>:<address>``. ``actual_confirmations`` is Transfer.confirmations;
  ``required_confirmations``, ``aml_success``, ``aml_risk`` and ``network`` are details.
- Raw statuses are kept (``"5"``, ``"25"``) with their doc name in details ``status_name``
  (``"moderation"``); statuses outside the doc's tables are unknown, never ok.
- The gateway has no balance endpoint. With ``balances: v2`` the account also polls the v2
  API's ``GET /api/v2/private/balance`` (v2 scheme): ``available`` is the balance and
  ``reserved`` (held for open orders and withdrawals in progress: owned, not spendable) is
  balance_pending. Without it the account exports no balance.
- ``payment_method_enabled`` gauges, one per ticker, network and direction, follow the
  account's ``currencies`` filter.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any
from urllib.parse import SplitResult, urlencode, urlsplit, urlunsplit

from walletwatch.configmodel import AccountConfig
from walletwatch.context import ProviderContext
from walletwatch.errors import BadPayload
from walletwatch.model import (
    Balance,
    Direction,
    Gauge,
    Malformed,
    Observation,
    State,
    Transfer,
)
from walletwatch.providers import parse
from walletwatch.providers.bitexbit_auth import SignedAtSend, auth_headers
from walletwatch.providers.paging import Page, page_back
from walletwatch.providers.spec import ProviderSpec
from walletwatch.schema import Option, ProviderSchema, choice
from walletwatch.types import Tracked

PAGE_SIZE = 50
FIRST_PAGE = (("ordering", "-id"), ("limit", str(PAGE_SIZE)))
GATEWAY_PATH = "/api/gateway"
V2_BALANCE_PATH = "/api/v2/private/balance"
HISTORY_PATHS: Mapping[Direction, str] = {
    Direction.DEPOSIT: "/wallet/history",
    Direction.WITHDRAWAL: "/withdraw/history",
}
DIRECTIONS: Mapping[str, Direction] = {
    "deposits": Direction.DEPOSIT,
    "withdrawals": Direction.WITHDRAWAL,
}
GAUGE = "payment_method_enabled"

# Raw status -> (state, the doc's name for it).
DEPOSIT_STATUSES: Mapping[str, tuple[State, str]] = {
    "1": (State.PENDING, "pending"),
    "5": (State.OK, "confirmed"),
    "6": (State.FAILED, "rejected"),
}
WITHDRAWAL_STATUSES: Mapping[str, tuple[State, str]] = {
    "10": (State.PENDING, "new"),
    "20": (State.PENDING, "confirmed"),
    "23": (State.PENDING, "verified"),
    "25": (State.PENDING, "moderation"),
    "26": (State.PENDING, "approved"),
    "27": (State.PENDING, "suspended"),
    "30": (State.OK, "done"),
    "40": (State.FAILED, "refused"),
    "50": (State.CANCELED, "cancelled"),
}
_UNKNOWN = (State.UNKNOWN, None)


def iso_time(value: Any, where: str) -> float | None:
    """An ISO 8601 time (``2021-05-20T14:56:10.196967Z``) in epoch seconds; naive is UTC."""
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise BadPayload(f"{where}: expected a time, got {type(value).__name__}")
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError as err:
        raise BadPayload(f"{where}: not an ISO 8601 time: {value[:40]!r}") from err
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.timestamp()


def detail(value: Any, where: str) -> str | None:
    """A scalar kept as text in Transfer.details (booleans as true/false); None when absent."""
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | Decimal | str) and len(str(value)) <= 128:
        return str(value)
    raise BadPayload(f"{where}: expected a short scalar, got {type(value).__name__}")


def flag(value: Any, where: str) -> bool:
    """A JSON boolean."""
    if not isinstance(value, bool):
        raise BadPayload(f"{where}: expected true or false, got {type(value).__name__}")
    return value


def _details(item: Mapping[str, Any], where: str, *names: str) -> tuple[tuple[str, str], ...]:
    found = ((name, detail(item.get(name), f"{where}.{name}")) for name in names)
    return tuple((name, text) for name, text in found if text is not None)


def _optional_count(value: Any, where: str) -> int | None:
    return None if value is None else parse.count(value, where)


def parse_deposit(item: Any, where: str) -> Transfer:
    """One ``/wallet/history`` item."""
    d = parse.mapping(item, where)
    status = parse.status(d.get("status"), f"{where}.status")
    state, name = DEPOSIT_STATUSES.get(status, _UNKNOWN)
    txid = parse.optional_text(d.get("txid"), f"{where}.txid")
    address = parse.optional_text(d.get("address"), f"{where}.address")
    if d.get("id") is not None:
        transfer_id = parse.text(d.get("id"), f"{where}.id")
    elif txid is not None and address is not None:
        transfer_id = f"{txid}:{address}"
    else:
        raise BadPayload(f"{where}: no id, and no txid and address to name it by")
    required = _optional_count(d.get("required_confirmations"), f"{where}.required_confirmations")
    created = d.get("created_at") if d.get("created_at") is not None else d.get("date")
    return Transfer(
        id=transfer_id,
        direction=Direction.DEPOSIT,
        currency=parse.text(d.get("ticker"), f"{where}.ticker"),
        amount=parse.non_negative(d.get("amount"), f"{where}.amount"),
        status=status,
        state=state,
        fee=parse.optional_non_negative(d.get("fee"), f"{where}.fee"),
        address=address,
        txid=txid,
        confirmations=_optional_count(
            d.get("actual_confirmations"), f"{where}.actual_confirmations"
        ),
        created_at=iso_time(created, f"{where}.created_at"),
        details=(
            *(() if name is None else (("status_name", name),)),
            *(() if required is None else (("required_confirmations", str(required)),)),
            *_details(d, where, "network", "aml_success", "aml_risk"),
        ),
    )


def parse_withdrawal(item: Any, where: str) -> Transfer:
    """One ``/withdraw/history`` item."""
    w = parse.mapping(item, where)
    status = parse.status(w.get("status"), f"{where}.status")
    state, name = WITHDRAWAL_STATUSES.get(status, _UNKNOWN)
    return Transfer(
        id=parse.text(w.get("id"), f"{where}.id"),
        direction=Direction.WITHDRAWAL,
        currency=parse.text(w.get("ticker"), f"{where}.ticker"),
        amount=parse.non_negative(w.get("amount"), f"{where}.amount"),
        status=status,
        state=state,
        address=parse.optional_text(w.get("address"), f"{where}.address"),
        txid=parse.optional_text(w.get("txid"), f"{where}.txid"),
        created_at=iso_time(w.get("created_at"), f"{where}.created_at"),
        details=(
            *(() if name is None else (("status_name", name),)),
            *_details(w, where, "network", "client_order_id", "aml_success", "aml_risk"),
        ),
    )


PARSERS: Mapping[Direction, Callable[[Any, str], Transfer]] = {
    Direction.DEPOSIT: parse_deposit,
    Direction.WITHDRAWAL: parse_withdrawal,
}


def parse_page(payload: Any, where: str) -> tuple[list[Any], str | None]:
    """A history page: its ``results`` and its ``next`` URL, trimmed (None on the last page)."""
    body = parse.mapping(payload, where)
    results = parse.items(body.get("results"), f"{where}.results")
    following = body.get("next")
    if following is not None and not isinstance(following, str):
        raise BadPayload(f"{where}.next: expected a URL, got {type(following).__name__}")
    return results, (following.strip() or None) if following is not None else None


def _origin(parts: SplitResult) -> tuple[str, str | None, int | None]:
    default = {"http": 80, "https": 443}.get(parts.scheme.lower())
    return parts.scheme.lower(), parts.hostname, parts.port or default


def follow(current: str, following: str, where: str) -> str:
    """The ``next`` URL to request after ``current``: same origin and path, or BadPayload."""
    here, there = urlsplit(current), urlsplit(following)
    try:
        same = (
            _origin(there) == _origin(here)
            and there.path == here.path
            and there.username is None
            and there.password is None
        )
    except ValueError:  # a port that is not a number
        same = False
    if not same:
        raise BadPayload(f"{where}.next: not a page of {here.scheme}://{here.netloc}{here.path}")
    return urlunsplit((there.scheme, there.netloc, there.path, there.query, ""))


def parse_payment_methods(payload: Any, currencies: frozenset[str] | None) -> tuple[Gauge, ...]:
    """``GET /payment-methods``: 1/0 per ticker, network and direction."""
    gauges: list[Gauge] = []
    seen: set[tuple[str, str]] = set()
    for i, item in enumerate(parse.items(payload, "payment_methods")):
        where = f"payment_methods[{i}]"
        m = parse.mapping(item, where)
        ticker = parse.text(m.get("ticker"), f"{where}.ticker")
        network = parse.text(m.get("network"), f"{where}.network")
        enabled = {
            "deposit": flag(m.get("is_deposit_enabled"), f"{where}.is_deposit_enabled"),
            "withdrawal": flag(m.get("is_withdraw_enabled"), f"{where}.is_withdraw_enabled"),
        }
        if (ticker, network) in seen:
            raise BadPayload(f"{where}: {ticker}/{network} listed twice")
        seen.add((ticker, network))
        if currencies is not None and ticker not in currencies:
            continue
        gauges.extend(
            Gauge(
                GAUGE,
                (("ticker", ticker), ("network", network), ("direction", direction)),
                Decimal(int(on)),
            )
            for direction, on in enabled.items()
        )
    return tuple(gauges)


def parse_balances(payload: Any) -> tuple[Balance, ...]:
    """The v2 ``GET /api/v2/private/balance``: ``[{symbol, available, reserved}]``."""
    balances: dict[str, Balance] = {}
    for i, item in enumerate(parse.items(payload, "balance")):
        where = f"balance[{i}]"
        b = parse.mapping(item, where)
        symbol = parse.text(b.get("symbol"), f"{where}.symbol")
        if symbol in balances:
            raise BadPayload(f"{where}: {symbol} listed twice")
        balances[symbol] = Balance(
            currency=symbol,
            available=parse.amount(b.get("available"), f"{where}.available"),
            pending=parse.optional_amount(b.get("reserved"), f"{where}.reserved"),
        )
    return tuple(balances.values())


def v2_balance_url(base_url: str) -> str:
    """The v2 balance URL beside the gateway: ``.../api/gateway`` becomes ``.../api/v2/...``."""
    parts = urlsplit(base_url)
    prefix = parts.path.removesuffix(GATEWAY_PATH) if parts.path.endswith(GATEWAY_PATH) else ""
    return urlunsplit((parts.scheme, parts.netloc, prefix + V2_BALANCE_PATH, "", ""))


class Bitexbit:
    """Polls one bitexbit account."""

    def __init__(self, account: AccountConfig, context: ProviderContext) -> None:
        self._base = account.base_url
        self._scheme = str(account.options["auth_scheme"])
        self._balance_url = (
            v2_balance_url(self._base) if account.options.get("balances") == "v2" else None
        )
        self.endpoints: tuple[str, ...] = (
            *(() if self._balance_url is None else ("balances",)),
            "deposits",
            "withdrawals",
            "payment_methods",
        )
        self._api_key = account.credentials["api_key"]
        self._secret = account.credentials["secret_key"]
        self._credential_id = account.credential_id
        self._currencies = account.currencies
        self._http = context.http
        self._clock = context.clock
        self._nonces = context.nonces
        self._max_pages = context.settings.max_pages

    def __repr__(self) -> str:
        return f"Bitexbit(base_url={self._base!r}, auth_scheme={self._scheme!r})"

    async def poll(self, endpoint: str, tracked: Tracked) -> Observation:
        """Poll one of ``endpoints``."""
        if endpoint == "balances" and self._balance_url is not None:
            payload = await self._get(self._balance_url, endpoint, "v2")
            return Observation(endpoint, balances=parse_balances(payload))
        if endpoint == "payment_methods":
            payload = await self._get(f"{self._base}/payment-methods", endpoint, self._scheme)
            return Observation(endpoint, gauges=parse_payment_methods(payload, self._currencies))
        direction = DIRECTIONS.get(endpoint)
        if direction is None:
            raise ValueError(f"unknown endpoint {endpoint!r}")
        transfers, malformed = await self._history(direction, tracked, endpoint)
        return Observation(
            endpoint,
            transfers=transfers,
            directions=frozenset({direction}),
            malformed=malformed,
        )

    async def _history(
        self, direction: Direction, tracked: Tracked, endpoint: str
    ) -> tuple[tuple[Transfer, ...], tuple[Malformed, ...]]:
        """Newest first, until a known transfer and every in-flight one have been seen.

        There is no single-transfer lookup: an in-flight transfer is found by paging on.
        """
        url = f"{self._base}{HISTORY_PATHS[direction]}?{urlencode(FIRST_PAGE)}"
        following: tuple[str, str] | None = None  # the last page's next link, and where

        async def fetch(number: int) -> Page:
            nonlocal url, following
            if following is not None:
                url = follow(url, *following)
            where = f"{endpoint} page {number + 1}"
            results, link = parse_page(await self._get(url, endpoint, self._scheme), where)
            batch, bad = parse.records(results, PARSERS[direction], f"{where}.results", "id")
            following = None if link is None else (link, where)
            return Page(batch, bad, last=link is None)

        return await page_back(fetch, direction, tracked, self._max_pages)

    async def _get(self, url: str, endpoint: str, scheme: str) -> Any:
        # The nonce is taken before Http.request queues for a slot (a key's requests leave first
        # come, first served, so nonces reach the server in order); the headers are built
        # after it, so X-Timeout's 500 ms start when the request leaves.
        nonce = None if scheme == "gateway" else await self._nonces.next(self._credential_id)

        def build() -> dict[str, str]:
            signed = auth_headers(
                scheme,
                self._api_key.reveal(),
                self._secret.reveal(),
                url,
                now=self._clock.time(),
                nonce=nonce,
            )
            return {"Accept": "application/json", **signed}

        response = await self._http.request(
            "GET", url, endpoint=endpoint, headers=SignedAtSend(build)
        )
        return response.json()


# The config contract, with the published limits (NOTES.md).
SCHEMA = ProviderSchema(
    name="bitexbit",
    base_url="https://www.bitexbit.com/api/gateway",
    rate_limit=2.0,
    host_rate_limit=100.0,  # the doc's per-IP limit
    credentials=("api_key", "secret_key"),
    identity="api_key",
    options={
        # The doc shows two signing schemes and the latest gateway docs a third.
        "auth_scheme": Option("gateway", choice("gateway", "v2", "v1")),
        # The gateway has no balance endpoint; "v2" reads the v2 API's balance.
        "balances": Option(None, choice(None, "v2")),
    },
)
# A callback_url of an address or a withdrawal takes any 2xx.
PROVIDER = ProviderSpec(
    SCHEMA,
    Bitexbit,
    gauges={GAUGE: "1 if the payment method is enabled (bitexbit)"},
    push_answer="ok",
)
