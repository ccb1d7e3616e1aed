"""WestWallet: signing vectors, pure parsing, and the client against a mocked API."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import pytest
from aioresponses import CallbackResult
from yarl import URL

from tests.fakes import FakeClock, make_context, make_http
from walletwatch.config import AccountConfig, Config, ProviderSettings, parse_config
from walletwatch.errors import AuthFailed, BadPayload, ProviderError, RateLimited, Rejected
from walletwatch.http import Http, parse_json
from walletwatch.model import Balance, Direction, Observation, State, Transfer
from walletwatch.providers import westwallet
from walletwatch.providers.westwallet import (
    WestWallet,
    auth_headers,
    parse_balances,
    parse_transactions,
    sign,
)
from walletwatch.tracker import AccountState, TrackedTransfer

T = TypeVar("T")
Poll = Callable[[str, AccountState], Awaitable[Observation]]

BASE = "https://api.westwallet.io"
BALANCES = f"{BASE}/wallet/balances"
TRANSACTIONS = f"{BASE}/wallet/transactions"
TRANSACTION = f"{BASE}/wallet/transaction"
READ_ENDPOINTS = {
    ("GET", "/wallet/balances"),
    ("POST", "/wallet/transactions"),
    ("POST", "/wallet/transaction"),
}
API_KEY = "ww-api-key-5c1e0b"
SECRET = "ww-secret-key-93fa77"
MAX_PAGES = 3

# NOTES.md vectors: key "k", secret "s", timestamp 1700000000.
VECTOR_SPACED = "c41a7cd87efaf40ff8a1441a88a3fe36e0c2f255ba52e830db97a279904a362c"
VECTOR_COMPACT = "172cb1a147120f7428c4c2effcef73e5642290812e611b6200aec522ab95e9c4"
VECTOR_EMPTY = "1c0b2cfdd15f27ac2679bbc7eba2aef8f882822f798ea6a30fe233887518671b"


def item(tx_id: int, **fields: object) -> dict[str, object]:
    """One transaction as POST /wallet/transactions lists it."""
    return {
        "id": tx_id,
        "created_at": "2023-11-14 22:13:20",
        "updated_at": "2023-11-14 22:13:21",
        "type": "receive",
        "amount": 0.25,
        "fee": "0.0001",
        "address": "bc1qexample",
        "dest_tag": "",
        "label": "",
        "currency": "BTC",
        "status": "pending",
        "description": "",
        "blockchain_confirmations": 1,
        "blockchain_hash": "ab" * 32,
        **fields,
    }


def decoded(payload: object) -> Any:
    """``payload`` as the client sees it: JSON text read back with exact decimals."""
    return parse_json(json.dumps(payload).encode())


def listing(*items: Mapping[str, object]) -> Any:
    """A successful transactions answer."""
    return decoded({"error": "ok", "result": list(items)})


def assert_secret_free(text: str) -> None:
    """Neither credential appears in ``text``."""
    assert API_KEY not in text
    assert SECRET not in text


def tracked(tx_id: int | str, direction: Direction, *, started: float) -> TrackedTransfer:
    """A pending transfer walletwatch already knows about."""
    transfer = Transfer(
        id=str(tx_id),
        direction=direction,
        currency="BTC",
        amount=Decimal("0.25"),
        status="pending",
        state=State.PENDING,
        created_at=started,
    )
    return TrackedTransfer(transfer=transfer, first_seen=started)


def state_with(*transfers: TrackedTransfer) -> AccountState:
    """An account state tracking ``transfers``."""
    return AccountState(transfers={t.transfer.key: t for t in transfers})


async def drive(clock: FakeClock, work: Awaitable[T]) -> T:
    """Run ``work``, moving virtual time on while it waits for rate-limit slots."""
    task = asyncio.ensure_future(work)
    for _ in range(200):
        if task.done():
            break
        await clock.advance(1.0)
    assert task.done(), "the poll did not finish"
    return await task


def assert_signed(call: Any, body: bytes, started: float, finished: float) -> None:
    """The recorded request is signed over its timestamp plus ``body``, taken during the poll."""
    headers = call.kwargs["headers"]
    assert headers["X-API-KEY"] == API_KEY
    assert headers["Content-Type"] == "application/json"
    timestamp = headers["X-ACCESS-TIMESTAMP"]
    assert int(started) <= int(timestamp) <= int(finished)
    expected = hmac.new(SECRET.encode(), timestamp.encode() + body, hashlib.sha256).hexdigest()
    assert headers["X-ACCESS-SIGN"] == expected


def calls(responses: Any, method: str, url: str) -> list[Any]:
    """The requests aioresponses recorded for one method and URL."""
    recorded: list[Any] = responses.requests.get((method, URL(url)), [])
    return recorded


def sent_json(responses: Any, method: str, url: str) -> list[Any]:
    """The JSON bodies sent to one method and URL, in order."""
    return [json.loads(call.kwargs["data"]) for call in calls(responses, method, url)]


def serve_history(responses: Any, items: Sequence[Mapping[str, object]]) -> None:
    """Answer POST /wallet/transactions with the slice of ``items`` its offset and limit ask."""

    def answer(_url: URL, **kwargs: Any) -> CallbackResult:
        params = json.loads(kwargs["data"])
        page = items[params["offset"] : params["offset"] + params["limit"]]
        return CallbackResult(status=200, body=json.dumps({"error": "ok", "result": page}))

    responses.post(TRANSACTIONS, callback=answer, repeat=True)


def serve_lookups(responses: Any, status: str = "pending") -> None:
    """Answer every POST /wallet/transaction with the asked-for transaction in ``status``."""

    def answer(_url: URL, **kwargs: Any) -> CallbackResult:
        tx_id = json.loads(kwargs["data"])["id"]
        body = {**item(tx_id, status=status), "error": "ok"}
        return CallbackResult(status=200, body=json.dumps(body))

    responses.post(TRANSACTION, callback=answer, repeat=True)


@pytest.fixture(name="config")
def fixture_config(tmp_path: Path) -> Config:
    """One WestWallet account with literal credentials; max_pages=3."""
    return parse_config(
        {
            "accounts": [
                {
                    "name": "main",
                    "provider": "westwallet",
                    "credentials": {"api_key": API_KEY, "secret_key": SECRET},
                }
            ],
            "providers": {"westwallet": {"max_pages": MAX_PAGES}},
        },
        base_dir=tmp_path,
        environ={},
    )


@pytest.fixture(name="account")
def fixture_account(config: Config) -> AccountConfig:
    """The WestWallet account."""
    return config.accounts[0]


@pytest.fixture(name="settings")
def fixture_settings(config: Config) -> ProviderSettings:
    """WestWallet's provider settings."""
    return config.providers["westwallet"]


@pytest.fixture(name="http")
def fixture_http(session: aiohttp.ClientSession, clock: FakeClock) -> Http:
    """An Http with a fast bucket on the fake clock."""
    return make_http(session, "westwallet", clock)


@pytest.fixture(name="client")
def fixture_client(
    account: AccountConfig, settings: ProviderSettings, http: Http, clock: FakeClock
) -> WestWallet:
    """The WestWallet client under test."""
    return WestWallet(account, make_context(settings, http, clock))


@pytest.fixture(name="poll")
def fixture_poll(client: WestWallet, clock: FakeClock) -> Poll:
    """Poll one endpoint to completion on the fake clock."""

    async def poll(endpoint: str, state: AccountState) -> Observation:
        try:
            return await drive(clock, client.poll(endpoint, state))
        except ProviderError as err:
            assert_secret_free(str(err))
            raise

    return poll


@pytest.fixture(name="tokyo")
def fixture_tokyo(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The process's local time zone is UTC+9 for the test."""
    monkeypatch.setenv("TZ", "Asia/Tokyo")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


class TestSigning:
    @pytest.mark.parametrize(
        ("body", "expected"),
        [
            ('{"id": 435}', VECTOR_SPACED),
            ('{"id":435}', VECTOR_COMPACT),
            ("", VECTOR_EMPTY),
        ],
    )
    def test_vectors(self, body: str, expected: str) -> None:
        """sign() reproduces the NOTES.md vectors, so the exact body text is what is signed."""
        assert sign("s", 1700000000, body) == expected

    def test_auth_headers(self) -> None:
        """auth_headers gives exactly the four WestWallet headers, the timestamp as a string."""
        headers = auth_headers("k", "s", 1700000000, "")

        assert headers == {
            "X-API-KEY": "k",
            "X-ACCESS-TIMESTAMP": "1700000000",
            "X-ACCESS-SIGN": VECTOR_EMPTY,
            "Content-Type": "application/json",
        }


class TestParseBalances:
    def test_drops_error_and_reads_exact_decimals(self) -> None:
        """Every key but ``error`` is a currency, and JSON numbers keep their exact value."""
        payload = parse_json(b'{"BTC": 0.1, "ETH": 3.22, "USDT": "250.50", "error": "ok"}')

        balances = parse_balances(payload)

        assert balances == (
            Balance("BTC", Decimal("0.1")),
            Balance("ETH", Decimal("3.22")),
            Balance("USDT", Decimal("250.50")),
        )
        assert str(balances[0].available) == "0.1"

    @pytest.mark.parametrize(
        ("payload", "error"),
        [
            ({"error": "account_blocked"}, AuthFailed),
            ({"error": "wrong_credentials"}, AuthFailed),
            ({"error": "not_found"}, Rejected),
            ({"error": "currency_not_found"}, Rejected),
            ({"error": "too_many_requests"}, RateLimited),
            ({"BTC": 1}, BadPayload),
            ({"BTC": 1, "error": None}, BadPayload),
            ([], BadPayload),
            ({"BTC": "NaN", "error": "ok"}, BadPayload),
            ({"BTC": None, "error": "ok"}, BadPayload),
        ],
    )
    def test_errors(self, payload: object, error: type[ProviderError]) -> None:
        """A body-level error, a missing error field or a bad amount raises its class."""
        with pytest.raises(ProviderError) as caught:
            parse_balances(decoded(payload))

        assert type(caught.value) is error


class TestParseTransactions:
    def test_reads_every_field(self) -> None:
        """An item becomes a Transfer with exact amounts, UTC times and the raw status."""
        (transfer,) = parse_transactions(
            listing(item(435, amount=0.1, fee="0.0001", blockchain_confirmations=3)),
            Direction.DEPOSIT,
        )[0]

        assert transfer == Transfer(
            id="435",
            direction=Direction.DEPOSIT,
            currency="BTC",
            amount=Decimal("0.1"),
            status="pending",
            state=State.PENDING,
            fee=Decimal("0.0001"),
            address="bc1qexample",
            txid="ab" * 32,
            confirmations=3,
            created_at=1_700_000_000.0,
            updated_at=1_700_000_001.0,
        )

    @pytest.mark.parametrize(
        ("status", "state"),
        [
            ("pending", State.PENDING),
            ("completed", State.OK),
            ("failed", State.UNKNOWN),
            ("done", State.UNKNOWN),
            ("Completed", State.UNKNOWN),
            ("", State.UNKNOWN),
        ],
    )
    def test_status(self, status: str, state: State) -> None:
        """Only pending and completed are understood; anything else is unknown, status kept."""
        (transfer,) = parse_transactions(listing(item(1, status=status)), Direction.DEPOSIT)[0]

        assert (transfer.state, transfer.status) == (state, status)

    @pytest.mark.usefixtures("tokyo")
    def test_times_are_utc_whatever_the_local_zone(self) -> None:
        """created_at and updated_at are read as UTC even when the local zone is not UTC."""
        (transfer,) = parse_transactions(listing(item(1)), Direction.DEPOSIT)[0]

        assert (transfer.created_at, transfer.updated_at) == (1_700_000_000.0, 1_700_000_001.0)

    @pytest.mark.parametrize(("fee", "expected"), [("0.0001", Decimal("0.0001")), ("", None)])
    def test_fee(self, fee: str, expected: Decimal | None) -> None:
        """The fee string is an exact Decimal, or None when empty."""
        (transfer,) = parse_transactions(listing(item(1, fee=fee)), Direction.DEPOSIT)[0]

        assert transfer.fee == expected

    def test_withdrawals_are_type_send(self) -> None:
        """Items of type send parse as withdrawals."""
        (transfer,) = parse_transactions(
            listing(item(9, type="send", status="completed")), Direction.WITHDRAWAL
        )[0]

        assert (transfer.direction, transfer.state) == (Direction.WITHDRAWAL, State.OK)

    def test_keeps_order(self) -> None:
        """Transfers come back in the order the API listed them (newest first)."""
        transfers, _, _ = parse_transactions(listing(item(3), item(2), item(1)), Direction.DEPOSIT)

        assert [t.id for t in transfers] == ["3", "2", "1"]

    @pytest.mark.parametrize(
        "payload",
        [
            pytest.param({"error": "ok", "result": [item(1, amount="NaN")]}, id="amount-nan"),
            pytest.param({"error": "ok", "result": [item(1, amount="1e400")]}, id="amount-1e400"),
            pytest.param({"error": "ok", "result": [item(1, amount=None)]}, id="amount-null"),
            pytest.param(
                {"error": "ok", "result": [{k: v for k, v in item(1).items() if k != "id"}]},
                id="missing-id",
            ),
            pytest.param({"error": "ok", "result": [item(1, type="send")]}, id="wrong-type"),
            pytest.param(
                {"error": "ok", "result": [item(1, blockchain_confirmations=-1)]},
                id="confirmations-negative",
            ),
            pytest.param(
                {"error": "ok", "result": [item(1, created_at="14/11/2023")]}, id="bad-time"
            ),
            pytest.param({"error": "ok", "result": [item(1, fee="free")]}, id="bad-fee"),
            pytest.param({"error": "ok", "result": ["1"]}, id="item-not-object"),
            pytest.param({"error": "ok", "result": {"0": item(1)}}, id="result-not-list"),
            pytest.param({"error": "ok"}, id="result-missing"),
            pytest.param({"result": []}, id="error-missing"),
        ],
    )
    def test_bad_payload(self, payload: object) -> None:
        """A malformed listing is BadPayload; a malformed item is set aside, never guessed at."""
        try:
            transfers, malformed, _ = parse_transactions(decoded(payload), Direction.DEPOSIT)
        except BadPayload:
            return
        assert (transfers, len(malformed)) == ((), 1)

    @pytest.mark.parametrize(
        ("error", "expected"),
        [("account_blocked", AuthFailed), ("currency_not_found", Rejected)],
    )
    def test_body_error(self, error: str, expected: type[ProviderError]) -> None:
        """A body-level error on the listing raises its class."""
        with pytest.raises(ProviderError) as caught:
            parse_transactions(decoded({"error": error}), Direction.DEPOSIT)

        assert type(caught.value) is expected


class TestBalancesPoll:
    async def test_returns_balances(self, poll: Poll, responses: Any) -> None:
        """A balances poll returns an Observation with every currency but ``error``."""
        responses.get(BALANCES, status=200, body=b'{"BTC": 1.11, "ETH": 3.22, "error": "ok"}')

        observation = await poll("balances", AccountState())

        assert observation == Observation(
            "balances",
            balances=(Balance("BTC", Decimal("1.11")), Balance("ETH", Decimal("3.22"))),
        )

    async def test_signature_verifies(self, poll: Poll, responses: Any, clock: FakeClock) -> None:
        """The GET carries no body and a signature over the timestamp alone."""
        responses.get(BALANCES, status=200, body=b'{"error": "ok"}')
        started = clock.time()

        await poll("balances", AccountState())

        (call,) = calls(responses, "GET", BALANCES)
        assert call.kwargs.get("data") is None
        assert_signed(call, b"", started, clock.time())

    @pytest.mark.parametrize(
        ("status", "body", "error"),
        [
            (401, b'{"error": "wrong_credentials"}', AuthFailed),
            (403, b'{"error": "ip_not_allowed"}', AuthFailed),
            (200, b'{"error": "account_blocked"}', AuthFailed),
            (200, b'{"error": "currency_not_found"}', Rejected),
            (200, b'{"BTC": NaN, "error": "ok"}', BadPayload),
            (429, b'{"error": "too_many_requests"}', RateLimited),
        ],
    )
    async def test_errors(
        self,
        poll: Poll,
        responses: Any,
        status: int,
        body: bytes,
        error: type[ProviderError],
    ) -> None:
        """HTTP and body-level failures raise their class, with no credential in the message."""
        responses.get(BALANCES, status=status, body=body)

        with pytest.raises(ProviderError) as caught:
            await poll("balances", AccountState())

        assert type(caught.value) is error


class TestHistoryPoll:
    @pytest.mark.parametrize(
        ("endpoint", "kind", "direction"),
        [("deposits", "receive", Direction.DEPOSIT), ("withdrawals", "send", Direction.WITHDRAWAL)],
    )
    async def test_first_request(
        self, poll: Poll, responses: Any, endpoint: str, kind: str, direction: Direction
    ) -> None:
        """The history poll POSTs type, limit 50, offset 0, order desc and returns the items."""
        serve_history(responses, [item(2, type=kind), item(1, type=kind)])

        observation = await poll(endpoint, AccountState())

        assert sent_json(responses, "POST", TRANSACTIONS) == [
            {"type": kind, "limit": 50, "offset": 0, "order": "desc"}
        ]
        assert [t.id for t in observation.transfers] == ["2", "1"]
        assert observation.directions == frozenset({direction})
        assert observation.balances is None

    async def test_signature_covers_exact_body(
        self, poll: Poll, responses: Any, clock: FakeClock
    ) -> None:
        """The signature verifies over the timestamp plus the exact bytes sent."""
        serve_history(responses, [])
        started = clock.time()

        await poll("deposits", AccountState())

        (call,) = calls(responses, "POST", TRANSACTIONS)
        body = call.kwargs["data"]
        assert isinstance(body, bytes)
        assert_signed(call, body, started, clock.time())

    async def test_full_page_of_unknown_asks_for_the_next(self, poll: Poll, responses: Any) -> None:
        """A full page of unknown transfers is followed by offset 50, until a short page."""
        serve_history(responses, [item(i) for i in range(1070, 1000, -1)])  # 70 items

        observation = await poll("deposits", AccountState())

        assert [p["offset"] for p in sent_json(responses, "POST", TRANSACTIONS)] == [0, 50]
        assert len(observation.transfers) == 70

    async def test_stops_at_a_page_with_a_known_transfer(self, poll: Poll, responses: Any) -> None:
        """Paging stops at the first page holding a transfer the state already tracks."""
        items = [item(i) for i in range(1200, 1000, -1)]  # 200 items, four full pages
        serve_history(responses, items)
        state = state_with(tracked(1120, Direction.DEPOSIT, started=1_699_990_000.0))

        await poll("deposits", state)

        assert [p["offset"] for p in sent_json(responses, "POST", TRANSACTIONS)] == [0, 50]

    async def test_known_withdrawal_does_not_stop_deposit_paging(
        self, poll: Poll, responses: Any
    ) -> None:
        """A tracked withdrawal with the same id as a deposit does not count as known."""
        serve_history(responses, [item(i) for i in range(1070, 1000, -1)])
        state = state_with(tracked(1060, Direction.WITHDRAWAL, started=1_699_990_000.0))

        await poll("deposits", state)

        assert [p["offset"] for p in sent_json(responses, "POST", TRANSACTIONS)] == [0, 50]

    async def test_never_exceeds_max_pages(self, poll: Poll, responses: Any) -> None:
        """With nothing known and every page full, at most max_pages pages are fetched."""
        serve_history(responses, [item(i) for i in range(2000, 1000, -1)])  # 1000 items

        observation = await poll("deposits", AccountState())

        offsets = [p["offset"] for p in sent_json(responses, "POST", TRANSACTIONS)]
        assert offsets == [0, 50, 100][:MAX_PAGES]
        assert len(observation.transfers) == 50 * MAX_PAGES

    async def test_refreshes_missing_in_flight_transfer(
        self, poll: Poll, responses: Any, clock: FakeClock
    ) -> None:
        """An in-flight transfer absent from the pages is fetched by POST /wallet/transaction."""
        serve_history(responses, [item(1002), item(1001)])
        responses.post(
            TRANSACTION,
            status=200,
            body=json.dumps({**item(7, status="completed"), "error": "ok"}),
        )
        state = state_with(tracked(7, Direction.DEPOSIT, started=1_699_000_000.0))
        started = clock.time()

        observation = await poll("deposits", state)

        (call,) = calls(responses, "POST", TRANSACTION)
        assert call.kwargs["data"] == b'{"id":7}'
        assert_signed(call, b'{"id":7}', started, clock.time())
        refreshed = {t.id: t for t in observation.transfers}["7"]
        assert (refreshed.state, refreshed.status) == (State.OK, "completed")

    @pytest.mark.parametrize("status", [200, 404])
    async def test_not_found_refresh_keeps_poll_successful(
        self, poll: Poll, responses: Any, status: int
    ) -> None:
        """A not_found answer for a refreshed transfer leaves it out and the poll succeeds."""
        serve_history(responses, [item(1002), item(1001)])
        responses.post(TRANSACTION, status=status, body=b'{"error": "not_found"}')
        state = state_with(tracked(7, Direction.DEPOSIT, started=1_699_000_000.0))

        observation = await poll("deposits", state)

        assert [t.id for t in observation.transfers] == ["1002", "1001"]
        assert sent_json(responses, "POST", TRANSACTION) == [{"id": 7}]

    async def test_refresh_only_same_direction_numeric_and_unseen(
        self, poll: Poll, responses: Any
    ) -> None:
        """Only in-flight transfers of the polled direction, absent from the pages, are fetched."""
        serve_history(responses, [item(1002), item(1001)])
        serve_lookups(responses)
        state = state_with(
            tracked(7, Direction.DEPOSIT, started=1_699_000_000.0),
            tracked(1001, Direction.DEPOSIT, started=1_699_000_000.0),  # listed
            tracked(8, Direction.WITHDRAWAL, started=1_699_000_000.0),  # other direction
            tracked("abc", Direction.DEPOSIT, started=1_699_000_000.0),  # not a WestWallet id
        )

        await poll("deposits", state)

        assert sent_json(responses, "POST", TRANSACTION) == [{"id": 7}]

    async def test_refreshes_at_most_ten_oldest_first(self, poll: Poll, responses: Any) -> None:
        """At most MAX_LOOKUPS single-transaction requests per poll, oldest in-flight first."""
        serve_history(responses, [])
        serve_lookups(responses)
        # ids 1..12, id n started n seconds after the epoch of the test: 1 is the oldest.
        state = state_with(
            *(tracked(n, Direction.DEPOSIT, started=1_699_000_000.0 + n) for n in range(12, 0, -1))
        )

        await poll("deposits", state)

        assert westwallet.MAX_LOOKUPS == 10
        assert sent_json(responses, "POST", TRANSACTION) == [{"id": n} for n in range(1, 11)]


class TestReadOnly:
    async def test_only_read_endpoints_are_called(self, poll: Poll, responses: Any) -> None:
        """Every request any poll makes is one of the three read endpoints on the API host."""
        responses.get(BALANCES, status=200, body=b'{"BTC": 1, "error": "ok"}')
        serve_history(responses, [item(i) for i in range(1100, 1000, -1)])
        serve_lookups(responses)
        state = state_with(
            tracked(7, Direction.DEPOSIT, started=1_699_000_000.0),
            tracked(8, Direction.WITHDRAWAL, started=1_699_000_000.0),
        )

        for endpoint in WestWallet.endpoints:
            with contextlib.suppress(ProviderError):  # a failed poll too calls only reads
                await poll(endpoint, state)

        requested = {(method, url.host, url.path) for method, url in responses.requests}
        assert requested
        assert {(m, p) for m, _, p in requested} <= READ_ENDPOINTS
        assert {host for _, host, _ in requested} == {"api.westwallet.io"}


class TestSecrets:
    def test_client_repr_has_no_credentials(self, client: WestWallet) -> None:
        """repr() of the client shows no credential."""
        assert_secret_free(repr(client))

    def test_http_repr_has_no_credentials(self, http: Http) -> None:
        """repr() of the Http object shows no credential."""
        assert_secret_free(repr(http))

    def test_account_repr_has_no_credentials(self, account: AccountConfig) -> None:
        """repr() of the account config (which the client holds) shows no credential."""
        assert_secret_free(repr(account))
