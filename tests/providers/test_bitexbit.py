"""bitexbit: signing vectors per scheme, pure parsing, and the client against a mocked API."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import hashlib
import hmac
import json
import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlencode

import aiohttp
import pytest
from aioresponses import CallbackResult
from yarl import URL

from tests.fakes import START, FakeClock, make_context, make_http
from walletwatch.config import parse_config
from walletwatch.errors import (
    AuthFailed,
    BadPayload,
    ProviderError,
    RateLimited,
    Rejected,
    Unavailable,
)
from walletwatch.http import Http, parse_json
from walletwatch.model import Balance, Direction, Gauge, Observation, State, Transfer
from walletwatch.providers.bitexbit import (
    Bitexbit,
    follow,
    parse_balances,
    parse_deposit,
    parse_page,
    parse_payment_methods,
    parse_withdrawal,
    v2_balance_url,
)
from walletwatch.providers.bitexbit_auth import (
    SignedAtSend,
    auth_headers,
    sign_gateway,
    sign_v1,
    sign_v2,
)
from walletwatch.tracker import AccountState, TrackedTransfer

T = TypeVar("T")
MakeClient = Callable[..., Bitexbit]

ORIGIN = "https://www.bitexbit.com"
BASE = f"{ORIGIN}/api/gateway"
DEPOSITS = f"{BASE}/wallet/history"
WITHDRAWALS = f"{BASE}/withdraw/history"
METHODS = f"{BASE}/payment-methods"
BALANCE = f"{ORIGIN}/api/v2/private/balance"
READS = {
    "/api/gateway/wallet/history",
    "/api/gateway/withdraw/history",
    "/api/gateway/payment-methods",
    "/api/v2/private/balance",
}
API_KEY = "bx-api-key-7d2c91"
SECRET = "bx-secret-key-e04b5a"
MAX_PAGES = 4

# NOTES.md's gateway vector: key "k", secret "s", timeout 1700000000000, GET wallet/history.
GATEWAY_VECTOR = "28dd3beb048906aa92472a00004a6c23c76ab8e121f31c21c78226732fb6500b"
# Computed with hmac/hashlib from the documented algorithms (see TestSigning), then pinned.
V2_VECTOR = "69b53c4b15b5cacdfd69b1ee49b2a592158d16430a1fc25ba982ad4e752a2c87"
V1_VECTOR = "8c033c40707b6e7bb559170ab76bbf837edb58de673fe946a5bc0b016a5b08e1"
V1_EMPTY_VECTOR = "eff4f79cbd30588f8586e3d777f64bc8ba44d0a03578d55cbc71c9204a4c6f39"


def mac(secret: str, message: str) -> str:
    """Hex HMAC-SHA256, computed here independently of the client."""
    return hmac.new(secret.encode(), message.encode(), hashlib.sha256).hexdigest()


def deposit(n: int, **fields: object) -> dict[str, object]:
    """One /wallet/history item as the doc's sample shows it (no id)."""
    return {
        "address": f"TRaddr{n}",
        "wallet_slug": "529e67dd83f210e727702d15ffbde9548917",
        "date": "2023-11-14T22:13:20.196967Z",
        "amount": "5.00000000",
        "fee": "0.00000000",
        "ticker": "USDT",
        "network": "tron",
        "status": "5",
        "txid": f"tx{n}",
        "actual_confirmations": 41,
        "required_confirmations": 40,
        "aml_success": True,
        "aml_risk": 0,
        "aml_url": None,
        "created_at": "2023-11-14T22:13:20.196967Z",
        **fields,
    }


def withdrawal(n: int, **fields: object) -> dict[str, object]:
    """One /withdraw/history item as the doc's sample shows it."""
    return {
        "id": n,
        "ticker": "USDT",
        "network": "tron",
        "address": "TR4d6N2HoC3Annqt2JK6HhQWuNARMNx5pW",
        "amount": 22,
        "client_order_id": "order_123",
        "fee_payer": 1,
        "status": 10,
        "txid": None,
        "aml_success": None,
        "aml_risk": None,
        "created_at": "2023-11-14T22:13:20.000Z",
        **fields,
    }


def decoded(payload: object) -> Any:
    """``payload`` as the client sees it: JSON text read back with exact decimals."""
    return parse_json(json.dumps(payload).encode())


def known(*ids: tuple[Direction, str, State]) -> AccountState:
    """An account state tracking transfers by (direction, id, state)."""
    transfers = {
        (d, i): TrackedTransfer(
            Transfer(i, d, "USDT", Decimal(1), "x", s, created_at=START), first_seen=START
        )
        for d, i, s in ids
    }
    return AccountState(transfers=transfers)


async def drive(clock: FakeClock, work: Awaitable[T]) -> T:
    """Run ``work``, moving virtual time on while it waits for rate-limit slots."""
    task = asyncio.ensure_future(work)
    for _ in range(200):
        if task.done():
            break
        await clock.advance(0.5)
    assert task.done(), "the poll did not finish"
    return await task


class Api:
    """Serves mocked history pages and records every request with its headers and time."""

    def __init__(self, responses: Any, clock: FakeClock) -> None:
        self.responses = responses
        self.clock = clock
        self.log: list[tuple[URL, dict[str, str], float]] = []

    def pages(self, url: str, pages: Sequence[Sequence[object]], next_base: str = "") -> None:
        """Answer GETs of ``url`` (any query) with ``pages``, by the ``page`` parameter."""

        def answer(requested: URL, **kwargs: Any) -> CallbackResult:
            self.log.append((requested, dict(kwargs["headers"]), self.clock.time()))
            page = int(requested.query.get("page", "1"))
            following = f"{next_base or url}?ordering=-id&limit=50&page={page + 1}"
            body = {
                "count": sum(map(len, pages)),
                "next": " " + following if page < len(pages) else None,
                "previous": None,
                "results": list(pages[page - 1]),
            }
            return CallbackResult(status=200, body=json.dumps(body))

        self.responses.get(re.compile(re.escape(url) + r"(\?.*)?$"), callback=answer, repeat=True)

    def fixed(self, url: str, body: object, status: int = 200, **headers: str) -> None:
        """Answer GETs of ``url`` with ``body``."""

        def answer(requested: URL, **kwargs: Any) -> CallbackResult:
            self.log.append((requested, dict(kwargs["headers"]), self.clock.time()))
            text = body if isinstance(body, str) else json.dumps(body)
            return CallbackResult(status=status, body=text, headers=headers)

        self.responses.get(re.compile(re.escape(url) + r"(\?.*)?$"), callback=answer, repeat=True)

    @property
    def queries(self) -> list[dict[str, str]]:
        """The query of every request, in order."""
        return [dict(url.query) for url, _, _ in self.log]


def assert_signed(scheme: str, url: URL, headers: Mapping[str, str], sent_at: float) -> None:
    """The request carries a valid ``scheme`` signature, checked from the documented formula."""
    if scheme == "gateway":
        timeout = headers["X-Timeout"]
        assert int(timeout) == int(sent_at * 1000) + 500
        assert headers["X-Key"] == API_KEY
        assert headers["X-Sign"] == mac(SECRET, API_KEY + url.path + timeout)
        return
    nonce = headers["X-Nonce"]
    assert headers["X-API-Key"] == API_KEY
    if scheme == "v2":
        assert headers["X-Signature"] == mac(SECRET, url.path + nonce)
    else:
        assert headers["X-Signature"] == mac(SECRET, API_KEY + urlencode(sorted(url.query.items())))


@pytest.fixture(name="api")
def fixture_api(responses: Any, clock: FakeClock) -> Api:
    """The mocked bitexbit API."""
    return Api(responses, clock)


@pytest.fixture(name="http")
def fixture_http(session: aiohttp.ClientSession, clock: FakeClock) -> Http:
    """An Http at bitexbit's 2 requests/s on the fake clock."""
    return make_http(session, "bitexbit", clock, rate=2.0)


@pytest.fixture(name="make_client")
def fixture_make_client(tmp_path: Path, http: Http, clock: FakeClock) -> MakeClient:
    """Build a client for an account with the given options (max_pages 4)."""

    def make(**options: object) -> Bitexbit:
        config = parse_config(
            {
                "accounts": [
                    {
                        "name": "bx",
                        "provider": "bitexbit",
                        "credentials": {"api_key": API_KEY, "secret_key": SECRET},
                        **options,
                    }
                ],
                "providers": {"bitexbit": {"max_pages": MAX_PAGES}},
            },
            base_dir=tmp_path,
            environ={},
        )
        context = make_context(config.providers["bitexbit"], http, clock)
        return Bitexbit(config.accounts[0], context)

    return make


async def poll(
    client: Bitexbit, clock: FakeClock, endpoint: str, state: AccountState | None = None
) -> Observation:
    """Poll to completion on the fake clock; a failure's message must not hold a secret."""
    try:
        return await drive(clock, client.poll(endpoint, state or AccountState()))
    except ProviderError as err:
        assert_secret_free(str(err))
        raise


def assert_secret_free(text: str) -> None:
    """Neither credential appears in ``text``."""
    assert API_KEY not in text
    assert SECRET not in text


class TestSigning:
    """The three schemes against their vectors, and headers built at send time."""

    def test_gateway_vector(self) -> None:
        """sign_gateway reproduces the NOTES.md vector."""
        path = "/api/gateway/wallet/history"
        assert sign_gateway("k", "s", path, 1700000000000) == GATEWAY_VECTOR

    def test_v2_vector(self) -> None:
        """sign_v2 is HMAC-SHA256 over path + nonce + body (pinned from hmac/hashlib)."""
        assert mac("s", "/api/v2/private/balance1700000000000") == V2_VECTOR
        assert sign_v2("s", "/api/v2/private/balance", 1700000000000) == V2_VECTOR

    @pytest.mark.parametrize(
        ("params", "message", "expected"),
        [
            (
                [("page", "2"), ("ordering", "-id"), ("limit", "50")],
                "klimit=50&ordering=-id&page=2",
                V1_VECTOR,
            ),
            ([], "k", V1_EMPTY_VECTOR),
        ],
    )
    def test_v1_vectors(self, params: list[tuple[str, str]], message: str, expected: str) -> None:
        """sign_v1 is HMAC-SHA256 over key + params urlencoded, sorted by name."""
        assert mac("s", message) == expected
        assert sign_v1("k", "s", params) == expected

    @pytest.mark.parametrize(
        ("scheme", "url", "nonce", "expected"),
        [
            (
                "gateway",
                f"{BASE}/wallet/history?ordering=-id&limit=50",
                None,
                {"X-Key": "k", "X-Timeout": "1700000000000", "X-Sign": GATEWAY_VECTOR},
            ),
            (
                "v2",
                BALANCE,
                1700000000000,
                {"X-API-Key": "k", "X-Nonce": "1700000000000", "X-Signature": V2_VECTOR},
            ),
            (
                "v1",
                f"{BASE}/wallet/history?page=2&ordering=-id&limit=50",
                1700000000000,
                {"X-API-Key": "k", "X-Nonce": "1700000000000", "X-Signature": V1_VECTOR},
            ),
        ],
    )
    def test_auth_headers(
        self, scheme: str, url: str, nonce: int | None, expected: dict[str, str]
    ) -> None:
        """Each scheme's headers: gateway signs the path without its query, 500 ms ahead."""
        headers = auth_headers(scheme, "k", "s", url, now=1699999999.5, nonce=nonce)

        assert headers == expected

    @pytest.mark.parametrize(("scheme", "nonce"), [("v2", None), ("v1", None), ("v3", 1)])
    def test_refuses_missing_nonce_or_unknown_scheme(self, scheme: str, nonce: int | None) -> None:
        """A nonce scheme without a nonce, or an unknown scheme, is a programming error."""
        with pytest.raises(ValueError, match=r"nonce|scheme"):
            auth_headers(scheme, "k", "s", BALANCE, now=0.0, nonce=nonce)

    def test_signed_at_send_builds_once_when_read(self) -> None:
        """Headers are built on first read, then fixed; a deep copy is the plain headers."""
        built: list[int] = []

        def build() -> dict[str, str]:
            built.append(1)
            return {"X-Key": f"key-{len(built)}"}

        headers = SignedAtSend(build)
        assert built == []
        assert repr(headers) == "SignedAtSend(unbuilt)"
        assert dict(headers) == {"X-Key": "key-1"}
        assert copy.deepcopy(headers) == {"X-Key": "key-1"}
        assert (len(headers), built, repr(headers)) == (1, [1], "SignedAtSend(X-Key)")


class TestParseDeposit:
    """/wallet/history items."""

    def test_reads_every_field(self) -> None:
        """A doc-shaped item (no id) is named txid:address, with confirmations and AML kept."""
        item = decoded(deposit(1, aml_risk=0.25, actual_confirmations=12))
        transfer = parse_deposit(item, "d")

        assert transfer == Transfer(
            id="tx1:TRaddr1",
            direction=Direction.DEPOSIT,
            currency="USDT",
            amount=Decimal("5.00000000"),
            status="5",
            state=State.OK,
            fee=Decimal("0.00000000"),
            address="TRaddr1",
            txid="tx1",
            confirmations=12,
            created_at=1_700_000_000.196967,
            details=(
                ("status_name", "confirmed"),
                ("required_confirmations", "40"),
                ("network", "tron"),
                ("aml_success", "true"),
                ("aml_risk", "0.25"),
            ),
        )

    def test_an_id_wins(self) -> None:
        """An item that carries an id is named by it; null confirmations are None."""
        transfer = parse_deposit(decoded(deposit(1, id=77, actual_confirmations=None)), "d")

        assert (transfer.id, transfer.confirmations) == ("77", None)

    @pytest.mark.parametrize(
        ("status", "state", "name"),
        [
            ("1", State.PENDING, "pending"),
            ("5", State.OK, "confirmed"),
            ("6", State.FAILED, "rejected"),
            (5, State.OK, "confirmed"),
            ("2", State.UNKNOWN, None),
            ("CONFIRMED", State.UNKNOWN, None),
            ("", State.UNKNOWN, None),
        ],
    )
    def test_status(self, status: object, state: State, name: str | None) -> None:
        """1/5/6 map to pending/ok/failed with their name; anything else is unknown."""
        transfer = parse_deposit(decoded(deposit(1, status=status)), "d")

        assert (transfer.status, transfer.state) == (str(status), state)
        assert dict(transfer.details).get("status_name") == name

    @pytest.mark.parametrize(
        "fields",
        [
            {"amount": "NaN"},
            {"amount": None},
            {"ticker": None},
            {"txid": None},
            {"address": ""},
            {"created_at": "20/05/2021"},
            {"created_at": 1621522570},
            {"actual_confirmations": -1},
            {"required_confirmations": "40"},
            {"aml_risk": {"score": 1}},
            {"status": True},
        ],
        ids=repr,
    )
    def test_bad_payload(self, fields: dict[str, object]) -> None:
        """A malformed field, or no way to name the deposit, is BadPayload."""
        with pytest.raises(BadPayload):
            parse_deposit(decoded(deposit(1, **fields)), "d")


class TestParseWithdrawal:
    """/withdraw/history items."""

    def test_reads_every_field(self) -> None:
        """A doc-shaped item becomes a Transfer with its raw status and the status name."""
        transfer = parse_withdrawal(decoded(withdrawal(9, status=25, txid="ab")), "w")

        assert transfer == Transfer(
            id="9",
            direction=Direction.WITHDRAWAL,
            currency="USDT",
            amount=Decimal(22),
            status="25",
            state=State.PENDING,
            address="TR4d6N2HoC3Annqt2JK6HhQWuNARMNx5pW",
            txid="ab",
            created_at=1_700_000_000.0,
            details=(
                ("status_name", "moderation"),
                ("network", "tron"),
                ("client_order_id", "order_123"),
            ),
        )

    @pytest.mark.parametrize(
        ("status", "state", "name"),
        [
            (10, State.PENDING, "new"),
            (20, State.PENDING, "confirmed"),
            (23, State.PENDING, "verified"),
            (25, State.PENDING, "moderation"),
            (26, State.PENDING, "approved"),
            (27, State.PENDING, "suspended"),
            (30, State.OK, "done"),
            (40, State.FAILED, "refused"),
            (50, State.CANCELED, "cancelled"),
            (0, State.UNKNOWN, None),
            (35, State.UNKNOWN, None),
            (99, State.UNKNOWN, None),
            ("DONE", State.UNKNOWN, None),
        ],
    )
    def test_status(self, status: object, state: State, name: str | None) -> None:
        """The doc's ten statuses map as documented; anything else is unknown, never ok."""
        transfer = parse_withdrawal(decoded(withdrawal(1, status=status)), "w")

        assert (transfer.status, transfer.state) == (str(status), state)
        assert dict(transfer.details).get("status_name") == name

    @pytest.mark.parametrize(
        "fields",
        [{"id": None}, {"amount": "1e400"}, {"status": None}, {"status": 25.0}, {"ticker": 5.5}],
        ids=repr,
    )
    def test_bad_payload(self, fields: dict[str, object]) -> None:
        """A malformed withdrawal is BadPayload."""
        with pytest.raises(BadPayload):
            parse_withdrawal(decoded(withdrawal(1, **fields)), "w")


class TestPaging:
    """Pages and their next URLs."""

    @pytest.mark.parametrize(
        ("following", "expected"),
        [(f" {DEPOSITS}?page=2", f"{DEPOSITS}?page=2"), (None, None), ("  ", None)],
    )
    def test_next_is_trimmed(self, following: str | None, expected: str | None) -> None:
        """The leading space the service writes is dropped; null or blank means last page."""
        body: dict[str, object] = {"count": 1, "next": following, "results": []}

        assert parse_page(body, "p") == ([], expected)

    @pytest.mark.parametrize(
        "body",
        [{"next": None}, {"results": {}, "next": None}, {"results": [], "next": 2}, []],
        ids=repr,
    )
    def test_bad_page(self, body: object) -> None:
        """A page without a results list or with a non-URL next is BadPayload."""
        with pytest.raises(BadPayload):
            parse_page(body, "p")

    @pytest.mark.parametrize(
        "following",
        [
            f"{DEPOSITS}?page=2",
            "https://WWW.bitexbit.com:443/api/gateway/wallet/history?page=2",
        ],
    )
    def test_follows_same_origin_and_path(self, following: str) -> None:
        """A next URL on the same scheme, host, port and path is followed as given."""
        assert follow(f"{DEPOSITS}?ordering=-id", following, "p") == following

    @pytest.mark.parametrize(
        "following",
        [
            "https://evil.example/api/gateway/wallet/history?page=2",
            "http://www.bitexbit.com/api/gateway/wallet/history?page=2",
            "https://www.bitexbit.com:8443/api/gateway/wallet/history?page=2",
            "https://www.bitexbit.com/api/gateway/withdraw/create?page=2",
            "https://user:pw@www.bitexbit.com/api/gateway/wallet/history?page=2",
            "https://www.bitexbit.com:port/api/gateway/wallet/history?page=2",
            "/api/gateway/wallet/history?page=2",
        ],
    )
    def test_refuses_another_place(self, following: str) -> None:
        """A next on another host, scheme, port or path is BadPayload, never followed."""
        with pytest.raises(BadPayload, match="not a page of"):
            follow(f"{DEPOSITS}?ordering=-id", following, "p")


class TestPaymentMethodsAndBalances:
    """Payment-method gauges and the v2 balance."""

    METHODS_BODY = (
        {"ticker": "BTC", "network": "bitcoin", "is_deposit_enabled": True,
         "is_withdraw_enabled": True, "min_deposit": "0.001"},
        {"ticker": "USDT", "network": "tron", "is_deposit_enabled": True,
         "is_withdraw_enabled": False},
    )  # fmt: skip

    def test_gauges(self) -> None:
        """Each method gives a 1/0 gauge per direction labelled by ticker and network."""
        gauges = parse_payment_methods(decoded(list(self.METHODS_BODY)), None)

        def gauge(ticker: str, network: str, direction: str, value: int) -> Gauge:
            labels = (("ticker", ticker), ("network", network), ("direction", direction))
            return Gauge("payment_method_enabled", labels, Decimal(value))

        assert gauges == (
            gauge("BTC", "bitcoin", "deposit", 1),
            gauge("BTC", "bitcoin", "withdrawal", 1),
            gauge("USDT", "tron", "deposit", 1),
            gauge("USDT", "tron", "withdrawal", 0),
        )
        assert [
            g.labels[0][1]
            for g in parse_payment_methods(list(self.METHODS_BODY), frozenset({"USDT"}))
        ] == [
            "USDT",
            "USDT",
        ]

    @pytest.mark.parametrize(
        "change",
        [{"is_withdraw_enabled": "true"}, {"is_deposit_enabled": None}, {"ticker": None}],
        ids=repr,
    )
    def test_bad_methods(self, change: dict[str, object]) -> None:
        """A flag that is not a boolean, or a missing ticker, is BadPayload; so is a repeat."""
        with pytest.raises(BadPayload):
            parse_payment_methods([{**self.METHODS_BODY[0], **change}], None)
        with pytest.raises(BadPayload, match="twice"):
            parse_payment_methods([self.METHODS_BODY[0]] * 2, None)

    def test_balances(self) -> None:
        """available is the balance and reserved the pending amount (None when absent)."""
        body = [
            {"symbol": "USDT", "available": "1500.5", "reserved": "22.00000000"},
            {"symbol": "BTC", "available": 0.1},
        ]
        assert parse_balances(decoded(body)) == (
            Balance("USDT", Decimal("1500.5"), Decimal("22.00000000")),
            Balance("BTC", Decimal("0.1"), None),
        )

    @pytest.mark.parametrize(
        "body",
        [
            {"USDT": "1"},
            [{"symbol": "USDT"}],
            [{"symbol": "USDT", "available": "x"}],
            [{"symbol": "USDT", "available": "1"}, {"symbol": "USDT", "available": "2"}],
        ],
        ids=repr,
    )
    def test_bad_balances(self, body: object) -> None:
        """Not a list of {symbol, available, reserved}, or a symbol twice, is BadPayload."""
        with pytest.raises(BadPayload):
            parse_balances(decoded(body))

    @pytest.mark.parametrize(
        ("base", "expected"),
        [
            (BASE, BALANCE),
            ("http://127.0.0.1:80/bitexbit/api/gateway", "http://127.0.0.1:80/bitexbit/api/v2/private/balance"),
            ("https://gw.example/custom", "https://gw.example/api/v2/private/balance"),
        ],
    )  # fmt: skip
    def test_v2_balance_url(self, base: str, expected: str) -> None:
        """The v2 API sits beside the gateway path, or at the origin for another layout."""
        assert v2_balance_url(base) == expected


class TestPolls:
    """The client against the mocked API: requests, signatures, paging, errors."""

    @pytest.mark.parametrize(
        ("options", "endpoints"),
        [
            ({}, ("deposits", "withdrawals", "payment_methods")),
            ({"balances": "v2"}, ("balances", "deposits", "withdrawals", "payment_methods")),
        ],
    )
    def test_endpoints(
        self, make_client: MakeClient, options: dict[str, str], endpoints: tuple[str, ...]
    ) -> None:
        """Balances are polled only with balances: v2."""
        assert make_client(**options).endpoints == endpoints

    @pytest.mark.parametrize("scheme", ["gateway", "v2", "v1"])
    async def test_pages_signed_and_stops_at_known(
        self, make_client: MakeClient, api: Api, clock: FakeClock, scheme: str
    ) -> None:
        """Pages follow the space-led next, each signed over its own URL, until a known id."""
        api.pages(WITHDRAWALS, [[withdrawal(9), withdrawal(8)], [withdrawal(7)], [withdrawal(6)]])
        state = known((Direction.WITHDRAWAL, "7", State.OK))

        observation = await poll(make_client(auth_scheme=scheme), clock, "withdrawals", state)

        assert api.queries == [
            {"ordering": "-id", "limit": "50"},
            {"ordering": "-id", "limit": "50", "page": "2"},
        ]
        for url, headers, sent_at in api.log:
            assert_signed(scheme, url, headers, sent_at)
        if scheme != "gateway":
            nonces = [int(headers["X-Nonce"]) for _, headers, _ in api.log]
            assert nonces == sorted(set(nonces))
        assert [t.id for t in observation.transfers] == ["9", "8", "7"]
        assert observation.directions == frozenset({Direction.WITHDRAWAL})

    async def test_pages_on_for_an_unseen_in_flight_transfer(
        self, make_client: MakeClient, api: Api, clock: FakeClock
    ) -> None:
        """Past a known transfer, paging goes on until every in-flight one has been seen."""
        api.pages(DEPOSITS, [[deposit(9)], [deposit(8)], [deposit(7)], [deposit(6)]])
        state = known(
            (Direction.DEPOSIT, "tx9:TRaddr9", State.OK),
            (Direction.DEPOSIT, "tx7:TRaddr7", State.PENDING),
            (Direction.WITHDRAWAL, "6", State.PENDING),
        )

        observation = await poll(make_client(), clock, "deposits", state)

        assert len(api.queries) == 3
        assert [t.id for t in observation.transfers][-1] == "tx7:TRaddr7"

    async def test_at_most_max_pages(
        self, make_client: MakeClient, api: Api, clock: FakeClock
    ) -> None:
        """With nothing known, paging stops after max_pages."""
        api.pages(DEPOSITS, [[deposit(n)] for n in range(10, 0, -1)])

        observation = await poll(make_client(), clock, "deposits")

        assert len(api.queries) == MAX_PAGES
        assert len(observation.transfers) == MAX_PAGES

    async def test_foreign_next_is_bad_payload(
        self, make_client: MakeClient, api: Api, clock: FakeClock
    ) -> None:
        """A next on another host fails the poll and is never requested."""
        api.pages(DEPOSITS, [[deposit(2)], [deposit(1)]], next_base="https://evil.example/x")

        with pytest.raises(BadPayload, match=r"deposits page 1\.next"):
            await poll(make_client(), clock, "deposits")

        assert len(api.queries) == 1

    async def test_timeout_is_taken_after_the_rate_limit_wait(
        self, make_client: MakeClient, api: Api, clock: FakeClock
    ) -> None:
        """X-Timeout counts from when the request leaves, not from when it queued."""
        api.pages(DEPOSITS, [[deposit(3)], [deposit(2)], [deposit(1)]])
        started = clock.time()

        await poll(make_client(), clock, "deposits")

        sent = [(int(headers["X-Timeout"]), at) for _, headers, at in api.log]
        assert [at - started for _, at in sent] == [0.0, 0.5, 1.0]
        assert [timeout for timeout, _ in sent] == [int(at * 1000) + 500 for _, at in sent]

    async def test_payment_methods(
        self, make_client: MakeClient, api: Api, clock: FakeClock
    ) -> None:
        """payment_methods returns gauges only, signed with the account's scheme."""
        api.fixed(METHODS, list(TestPaymentMethodsAndBalances.METHODS_BODY))

        observation = await poll(make_client(auth_scheme="v1"), clock, "payment_methods")

        assert len(observation.gauges) == 4
        assert (observation.balances, observation.transfers) == (None, ())
        ((url, headers, at),) = api.log
        assert_signed("v1", url, headers, at)

    @pytest.mark.parametrize("scheme", ["gateway", "v1"])
    async def test_balances_use_v2(
        self, make_client: MakeClient, api: Api, clock: FakeClock, scheme: str
    ) -> None:
        """The v2 balance is signed with the v2 scheme whatever the account's scheme."""
        api.fixed(BALANCE, [{"symbol": "USDT", "available": "10", "reserved": "1"}])

        client = make_client(auth_scheme=scheme, balances="v2")
        observation = await poll(client, clock, "balances")

        assert observation.balances == (Balance("USDT", Decimal(10), Decimal(1)),)
        ((url, headers, at),) = api.log
        assert str(url) == BALANCE
        assert_signed("v2", url, headers, at)

    @pytest.mark.parametrize(
        ("status", "body", "error"),
        [
            (400, '{"detail": "bad ordering"}', Rejected),
            (401, '{"detail": "Invalid signature."}', AuthFailed),
            (403, '{"detail": "forbidden"}', AuthFailed),
            (404, '{"detail": "Invalid page."}', Rejected),
            (429, '{"detail": "throttled"}', RateLimited),
            (500, "", Unavailable),
            (502, "<html>Bad Gateway</html>", Unavailable),
            (200, "<html>maintenance</html>", BadPayload),
            (200, '{"detail": "not a page"}', BadPayload),
        ],
    )
    async def test_errors(
        self, make_client: MakeClient, api: Api, status: int, body: str, error: type[ProviderError]
    ) -> None:
        """HTTP and body failures raise their class, with no credential in the message."""
        api.fixed(DEPOSITS, body, status, **({"Retry-After": "1"} if status == 429 else {}))

        with pytest.raises(ProviderError) as caught:
            await poll(make_client(), api.clock, "deposits")

        assert type(caught.value) is error


class TestReadOnlyAndSecrets:
    """Only reads are ever sent, and no credential shows."""

    @pytest.mark.parametrize("scheme", ["gateway", "v2", "v1"])
    async def test_only_read_endpoints_are_called(
        self, make_client: MakeClient, api: Api, clock: FakeClock, scheme: str
    ) -> None:
        """Every request of every endpoint is a GET of a read path on the API host."""
        api.pages(DEPOSITS, [[deposit(2)], [deposit(1)]])
        api.pages(WITHDRAWALS, [[withdrawal(2)], [withdrawal(1)]])
        api.fixed(METHODS, list(TestPaymentMethodsAndBalances.METHODS_BODY))
        api.fixed(BALANCE, [])
        client = make_client(auth_scheme=scheme, balances="v2")

        for endpoint in client.endpoints:
            with contextlib.suppress(ProviderError):
                await poll(client, clock, endpoint)

        requested = [(method, url) for method, url in api.responses.requests]
        assert len(requested) == 6
        assert {method for method, _ in requested} == {"GET"}
        assert {url.path for _, url in requested} == READS
        assert {url.host for _, url in requested} == {"www.bitexbit.com"}

    def test_repr_has_no_credentials(self, make_client: MakeClient) -> None:
        """repr() of the client shows neither credential."""
        text = repr(make_client())
        assert API_KEY not in text
        assert SECRET not in text
