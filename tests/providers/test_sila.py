"""Sila: the NOTES.md signing vector, pure parsing, and both auth modes against a mocked API."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import uuid
from collections.abc import Awaitable, Callable, Iterator, Mapping, MutableMapping
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import pytest
import structlog
from aioresponses import CallbackResult
from structlog.testing import capture_logs
from yarl import URL

from tests.fakes import FakeClock, make_context, make_http, settle
from walletwatch.config import Config, parse_config
from walletwatch.context import ProviderContext
from walletwatch.errors import (
    AuthFailed,
    BadPayload,
    ConfigError,
    ProviderError,
    RateLimited,
    Rejected,
    Unavailable,
)
from walletwatch.http import Http, parse_json
from walletwatch.model import Balance, Direction, Gauge, Observation, State, Transfer
from walletwatch.providers.sila import (
    Sila,
    parse_token,
    parse_transactions,
    parse_wallet,
    request_body,
)
from walletwatch.providers.sila_auth import (
    AccessToken,
    TokenCache,
    basic_authorization,
    keccak256,
    load_private_key,
    sign,
)
from walletwatch.sim.sila_auth import address_of_key, recover_address
from walletwatch.tracker import AccountState, TrackedTransfer

T = TypeVar("T")
BASE = "https://sandbox.silamoney.com/0.2"
WALLET, HISTORY, AUTH = f"{BASE}/get_wallet", f"{BASE}/get_transactions", f"{BASE}/auth_token"
READ_PATHS = {"/0.2/get_wallet", "/0.2/get_transactions", "/0.2/auth_token"}
# NOTES.md vector.
VECTOR_KEY = "0x4c0883a69102937d6231471b5dbb6204fe5129617082792ae468d01a3f362318"
VECTOR_BODY = (
    b'{"header": {"created": 1700000000, "app_handle": "app_handle", "user_handle": '
    b'"user_handle", "version": "0.2", "reference": "ref"}}'
)
VECTOR_KECCAK = "53e17300ebc155361b5ced6474aeceba0cc2e339e392f3afffe8c5c4e8685d24"
VECTOR_SIGNATURE = (
    "7bfddff72fbe5a23c5b997c9588f7cd792e126a2b43d7abbd5188b107946f86b"
    "2ad936ec4c60f57a2744b0cff011b13c5061471a6034e64e851de41b36f5edad1b"
)
VECTOR_ADDRESS = "0x2c7536E3605D9C16a7a3D7b1898e529396a65c23"
USER_KEY = hashlib.sha256(b"sila test user").hexdigest()
CLIENT_ID, CLIENT_SECRET = "sila-client-7f3a", "sila-client-secret-91bc"
TOKEN_A, TOKEN_B = "token-aaaa-5d2e-first", "token-bbbb-8c1f-second"
SECRETS = (VECTOR_KEY.removeprefix("0x"), USER_KEY, CLIENT_SECRET, TOKEN_A, TOKEN_B)
MAX_PAGES = 3


def assert_secret_free(text: str) -> None:
    """No key, client secret or token appears in ``text``."""
    assert not [secret for secret in SECRETS if secret in text]


def item(tx_id: str, **fields: object) -> dict[str, object]:
    """One /get_transactions item."""
    return {
        "transaction_id": tx_id,
        "transaction_type": "issue",
        "sila_amount": 1500,
        "status": "pending",
        "transaction_hash": "0xabc",
        "created_epoch": 1_700_000_000,
        "last_update_epoch": 1_700_000_060,
        "usd_status": "pending",
        "processing_type": "STANDARD_ACH",
        **fields,
    }


def ok(**fields: object) -> str:
    """A successful answer's JSON text."""
    return json.dumps({"success": True, "status": "SUCCESS", **fields})


def wallet(**fields: object) -> str:
    """A /get_wallet answer in the doc's field family."""
    return ok(is_whitelisted=True, available_balance=300, pending_balance=25, **fields)


def token_answer(token: str, expiration: float) -> str:
    """An /auth_token answer."""
    return ok(access_token={"token": token, "expiration": int(expiration)})


def token_form(token: str, expiration: float, form: str) -> str:
    """An /auth_token answer with the expiry written in ``form``, or in the OAuth2 shape."""
    now = 1_700_000_000.0  # the fake clock's start, for expires_in
    written: dict[str, object] = {
        "seconds": int(expiration),
        "milliseconds": int(expiration * 1000),
        "iso": datetime.fromtimestamp(expiration, UTC).isoformat().replace("+00:00", "Z"),
        "iso_unzoned": datetime.fromtimestamp(expiration, UTC).replace(tzinfo=None).isoformat(),
    }
    if form == "oauth2":
        return json.dumps({"access_token": token, "expires_in": int(expiration - now)})
    return ok(access_token={"token": token, "expiration": written[form]})


@contextlib.contextmanager
def captured_logs() -> Iterator[list[MutableMapping[str, Any]]]:
    """Every log entry of the block, whatever level an earlier in-process CLI test set."""
    structlog.reset_defaults()
    with capture_logs() as logs:
        yield logs


def decoded(payload: object) -> Any:
    """``payload`` as the client reads it (exact decimals)."""
    return parse_json(json.dumps(payload).encode())


def calls(responses: Any, url: str) -> list[Any]:
    """The POSTs aioresponses recorded for one URL."""
    recorded: list[Any] = responses.requests.get(("POST", URL(url)), [])
    return recorded


def sent(responses: Any, url: str) -> list[Any]:
    """The JSON bodies POSTed to one URL, in order."""
    return [json.loads(call.kwargs["data"]) for call in calls(responses, url)]


def serve_history(responses: Any, items: list[dict[str, object]]) -> None:
    """Answer /get_transactions with the page its search_filters ask for."""

    def answer(_url: URL, **kwargs: Any) -> CallbackResult:
        filters = json.loads(kwargs["data"])["search_filters"]
        kinds = filters["transaction_types"]
        typed = [i for i in items if i["transaction_type"] in kinds]
        if "transaction_id" in filters:
            page = [i for i in typed if i["transaction_id"] == filters["transaction_id"]]
        else:
            start = (filters["page"] - 1) * filters["per_page"]
            page = typed[start : start + filters["per_page"]]
        return CallbackResult(status=200, body=ok(transactions=page))

    responses.post(HISTORY, callback=answer, repeat=True)


def pending_state(*ids: str, direction: Direction = Direction.DEPOSIT) -> AccountState:
    """An account state tracking pending transfers with ``ids``, oldest first."""
    tracked = [
        TrackedTransfer(
            Transfer(tx_id, direction, "SILA", Decimal(1), "pending", State.PENDING, created_at=n),
            first_seen=float(n),
        )
        for n, tx_id in enumerate(ids)
    ]
    return AccountState(transfers={t.transfer.key: t for t in tracked})


async def drive(clock: FakeClock, work: Awaitable[T]) -> T:
    """Run ``work``, moving virtual time on while it waits for rate-limit slots."""
    task = asyncio.ensure_future(work)
    for _ in range(200):
        if task.done():
            break
        await clock.advance(1.0)
    assert task.done(), "the poll did not finish"
    return await task


def make_config(tmp_path: Path, *accounts: Mapping[str, object]) -> Config:
    """A config of Sila accounts (ECDSA unless ``auth: token``) with literal credentials."""
    return parse_config(
        {
            "accounts": [
                {"provider": "sila", "name": f"s{i}", **account}
                for i, account in enumerate(accounts)
            ],
            "providers": {"sila": {"max_pages": MAX_PAGES}},
        },
        base_dir=tmp_path,
        environ={},
    )


ECDSA = {
    "credentials": {
        "app_handle": "app.silamoney.eth",
        "user_handle": "user.silamoney.eth",
        "app_private_key": VECTOR_KEY,
        "user_private_key": USER_KEY,
    }
}
TOKEN = {
    "auth": "token",
    "credentials": {
        "app_handle": "app.silamoney.eth",
        "user_handle": "user.silamoney.eth",
        "client_id": CLIENT_ID,
        "client_secret": CLIENT_SECRET,
    },
}


@pytest.fixture(name="http")
def fixture_http(session: aiohttp.ClientSession, clock: FakeClock) -> Http:
    """An Http with a fast bucket on the fake clock."""
    return make_http(session, "sila", clock)


@pytest.fixture(name="context")
def fixture_context(tmp_path: Path, http: Http, clock: FakeClock) -> ProviderContext:
    """One provider context (one shared-object store) for every client of a test."""
    return make_context(make_config(tmp_path, ECDSA).providers["sila"], http, clock)


Build = Callable[[Mapping[str, object]], Sila]
Poll = Callable[[Sila, str, AccountState], Awaitable[Observation]]


@pytest.fixture(name="build")
def fixture_build(tmp_path: Path, context: ProviderContext) -> Build:
    """Build a Sila client for an account entry, sharing the test's context."""
    return lambda account: Sila(make_config(tmp_path, account).accounts[0], context)


@pytest.fixture(name="poll")
def fixture_poll(clock: FakeClock) -> Poll:
    """Poll to completion on the fake clock; any error message must be free of secrets."""

    async def poll(client: Sila, endpoint: str, state: AccountState) -> Observation:
        try:
            return await drive(clock, client.poll(endpoint, state))
        except ProviderError as err:
            assert_secret_free(str(err))
            raise

    return poll


@pytest.fixture(autouse=True)
def fixture_read_only(responses: Any) -> Iterator[None]:
    """After every test: each request the client made was a POST to one of the read paths."""
    yield
    for method, url in responses.requests:
        assert (method, url.host, url.path) in {
            ("POST", "sandbox.silamoney.com", p) for p in READ_PATHS
        }


class TestSigning:
    def test_notes_vector(self) -> None:
        """request_body writes the NOTES.md body; keccak and signature match its vector."""
        body = request_body("app_handle", "user_handle", 1700000000, "ref")

        assert body == VECTOR_BODY
        assert keccak256(body).hex() == VECTOR_KECCAK
        assert sign(load_private_key(VECTOR_KEY), body) == VECTOR_SIGNATURE
        assert recover_address(body, VECTOR_SIGNATURE) == VECTOR_ADDRESS

    @pytest.mark.parametrize("body", [b"", b"{}", VECTOR_BODY, b'{"a": 1}' * 50])
    def test_deterministic_65_bytes_v_27_or_28(self, body: bytes) -> None:
        """Signing twice gives the same 130 hex chars, no 0x, ending in v = 27 or 28."""
        key = load_private_key(USER_KEY)
        first, second = sign(key, body), sign(key, body)

        assert first == second
        assert len(first) == 130
        assert int(first[-2:], 16) in (27, 28)
        assert recover_address(body, first) == address_of_key(USER_KEY)

    @pytest.mark.parametrize(
        "text", ["", "0x12", "zz" * 32, "00" * 32, "ff" * 32, VECTOR_KEY + "00"]
    )
    def test_bad_private_keys(self, text: str) -> None:
        """Keys that are not 32 bytes of hex below the curve order are refused."""
        with pytest.raises(ValueError, match=r"hex|private key"):
            load_private_key(text)

    def test_basic_authorization(self) -> None:
        """The Basic credentials are base64 of client_id:client_secret (Sila's doc example)."""
        expected = "Basic bXlfYXBwX2NsaWVudF9pZDpteV9hcHBfY2xpZW50X3NlY3JldA=="
        assert basic_authorization("my_app_client_id", "my_app_client_secret") == expected

    def test_token_request_header_has_no_user(self) -> None:
        """The /auth_token header names the app only."""
        body = json.loads(request_body("app", None, 1, "r"))

        assert body == {
            "header": {"created": 1, "app_handle": "app", "version": "0.2", "reference": "r"}
        }


class TestParseWallet:
    @pytest.mark.parametrize(
        ("fields", "expected"),
        [
            (
                {"available_balance": 300, "pending_balance": 25},
                Balance("SILA", Decimal(300), Decimal(25)),
            ),
            (
                {"sila_balance": 300, "sila_available_balance": 280.5, "sila_pending_balance": 20},
                Balance("SILA", Decimal("280.5"), Decimal(20)),
            ),
            ({"sila_balance": "300"}, Balance("SILA", Decimal(300), None)),
        ],
        ids=["doc", "sdk", "sdk-balance-only"],
    )
    def test_field_families(self, fields: dict[str, object], expected: Balance) -> None:
        """Both the doc's and the SDKs' balance fields are read, exactly."""
        balance, _ = parse_wallet(decoded({"success": True, **fields}))

        assert balance == expected

    @pytest.mark.parametrize(
        ("value", "gauges"),
        [
            (True, (Gauge("wallet_whitelisted", (), Decimal(1)),)),
            (False, (Gauge("wallet_whitelisted", (), Decimal(0)),)),
            (None, ()),
        ],
    )
    def test_whitelisted_gauge(self, value: bool | None, gauges: tuple[Gauge, ...]) -> None:
        """is_whitelisted becomes the wallet_whitelisted gauge, 1 or 0, with no extra labels."""
        payload = {"success": True, "available_balance": 1, "is_whitelisted": value}

        assert parse_wallet(decoded(payload))[1] == gauges

    @pytest.mark.parametrize(
        ("payload", "error"),
        [
            ({"success": False, "message": "Failed to authenticate app signature."}, AuthFailed),
            ({"success": False, "message": "Invalid access token"}, AuthFailed),
            ({"success": False, "message": "Wallet not found."}, Rejected),
            ({"success": False}, Rejected),
            ({"success": "true", "available_balance": 1}, BadPayload),
            ({"available_balance": 1}, BadPayload),
            ({"success": True, "pending_balance": 1}, BadPayload),
            ({"success": True, "available_balance": "NaN"}, BadPayload),
            ({"success": True, "available_balance": 1, "is_whitelisted": "yes"}, BadPayload),
            ([], BadPayload),
        ],
    )
    def test_errors(self, payload: object, error: type[ProviderError]) -> None:
        """A refusal, a missing success flag or a malformed balance raises its class."""
        with pytest.raises(ProviderError) as caught:
            parse_wallet(decoded(payload))

        assert type(caught.value) is error


class TestParseTransactions:
    def test_reads_every_field(self) -> None:
        """An item becomes a Transfer in SILA with exact amount, epoch times and details."""
        (transfer,) = parse_transactions(
            decoded({"success": True, "transactions": [item("t1")]}), Direction.DEPOSIT
        )[0]

        assert transfer == Transfer(
            id="t1",
            direction=Direction.DEPOSIT,
            currency="SILA",
            amount=Decimal(1500),
            status="pending",
            state=State.PENDING,
            txid="0xabc",
            created_at=1_700_000_000.0,
            updated_at=1_700_000_060.0,
            details=(("usd_status", "pending"), ("processing_type", "STANDARD_ACH")),
        )

    @pytest.mark.parametrize(
        ("status", "state"),
        [
            ("queued", State.PENDING),
            ("pending", State.PENDING),
            ("review", State.PENDING),
            ("success", State.OK),
            ("failed", State.FAILED),
            ("rollback", State.FAILED),
            ("SUCCESS", State.UNKNOWN),
            ("completed", State.UNKNOWN),
            ("", State.UNKNOWN),
        ],
    )
    def test_status(self, status: str, state: State) -> None:
        """Sila's six statuses map to their states; anything else is unknown, status kept."""
        payload = decoded({"success": True, "transactions": [item("t", status=status)]})
        (transfer,) = parse_transactions(payload, Direction.DEPOSIT)[0]

        assert (transfer.state, transfer.status) == (state, status)

    def test_iso_times_when_no_epoch(self) -> None:
        """Without *_epoch fields, the ISO 8601 created/last_update are read as UTC."""
        tx = item("t", created_epoch=None, last_update_epoch=None)
        tx |= {"created": "2023-11-14T22:13:20.000Z", "last_update": "2023-11-14T22:13:21"}
        (transfer,) = parse_transactions(
            decoded({"success": True, "transactions": [tx]}), Direction.DEPOSIT
        )[0]

        assert (transfer.created_at, transfer.updated_at) == (1_700_000_000.0, 1_700_000_001.0)

    @pytest.mark.parametrize(
        "tx",
        [
            item("t", transaction_type=None),
            item("t", transaction_type=7),
            item("t", transaction_id=None),
            item("t", sila_amount=None),
            item("t", created_epoch=1_700_000_000_000),
            item("t", created_epoch="1700000000"),
            item("t", created_epoch=None, created="14/11/2023"),
            item("t", status=None),
            "t",
        ],
    )
    def test_bad_items(self, tx: object) -> None:
        """No type, missing id or amount, or a bad time sets the item aside as malformed."""
        transfers, malformed, listed, skipped = parse_transactions(
            decoded({"success": True, "transactions": [tx]}), Direction.DEPOSIT
        )
        assert (transfers, len(malformed), listed, skipped) == ((), 1, 1, ())

    @pytest.mark.parametrize(
        ("direction", "other"),
        [
            (Direction.DEPOSIT, "redeem"),
            (Direction.DEPOSIT, "transfer"),
            (Direction.WITHDRAWAL, "issue"),
            (Direction.WITHDRAWAL, "instant_settlement"),
        ],
    )
    def test_other_types_skipped(self, direction: Direction, other: str) -> None:
        """An item of another type than asked is skipped, not malformed; the rest is read."""
        asked = "issue" if direction is Direction.DEPOSIT else "redeem"
        items = [
            item("a", transaction_type=asked),
            item("x", transaction_type=other, sila_amount=None),
            item("b", transaction_type=asked),
        ]
        transfers, malformed, listed, skipped = parse_transactions(
            decoded({"success": True, "transactions": items}), direction
        )
        assert ([t.id for t in transfers], malformed, listed) == (["a", "b"], (), 3)
        assert skipped == (("x", other),)

    def test_transactions_must_be_a_list(self) -> None:
        """A successful answer without a transactions list is BadPayload."""
        with pytest.raises(BadPayload):
            parse_transactions(decoded({"success": True}), Direction.WITHDRAWAL)


class TestParseToken:
    @pytest.mark.parametrize(
        ("access", "expires_at"),
        [
            ({"token": "t", "expiration": 1_700_003_600}, 1_700_003_600.0),
            ({"token": "t"}, 1_700_028_800.0),
            ({"token": "t", "expiration": 1_700_003_600_000}, 1_700_003_600.0),
            ({"token": "t", "expiration": 1_700_003_600_500}, 1_700_003_600.5),
            ({"token": "t", "expiration": "1700003600"}, 1_700_003_600.0),
            ({"token": "t", "expiration": "2023-11-14T23:13:20Z"}, 1_700_003_600.0),
            ({"token": "t", "expiration": "2023-11-14T23:13:20.000Z"}, 1_700_003_600.0),
            ({"token": "t", "expiration": "2023-11-15T00:13:20+01:00"}, 1_700_003_600.0),
            ({"token": "t", "expiration": "2023-11-14T23:13:20"}, 1_700_003_600.0),
            ({"token": "t", "expiration": "2023-11-14 23:13:20"}, 1_700_003_600.0),
        ],
    )
    def test_reads_token(self, access: object, expires_at: float) -> None:
        """Seconds, milliseconds and ISO 8601 (UTC when unzoned) are read; none is 8 hours."""
        token = parse_token(decoded({"success": True, "access_token": access}), 1_700_000_000.0)

        assert token == AccessToken("t", expires_at)
        assert "'t'" not in repr(token)

    @pytest.mark.parametrize(
        ("answer", "expires_at"),
        [
            ({"access_token": "t", "token_type": "Bearer", "expires_in": 3600}, 1_700_003_600.0),
            ({"access_token": "t", "expires_in": "3600"}, 1_700_003_600.0),
            ({"success": True, "access_token": "t", "expires_in": 1800}, 1_700_001_800.0),
            ({"access_token": "t"}, 1_700_028_800.0),
        ],
    )
    def test_reads_oauth2_shape(self, answer: object, expires_at: float) -> None:
        """A standard OAuth2 answer: the token string in access_token, expires_in from now."""
        token = parse_token(decoded(answer), 1_700_000_000.0)

        assert (token.value, token.expires_at) == ("t", expires_at)

    @pytest.mark.parametrize(
        ("answer", "assumed"),
        [
            ({"success": True, "access_token": {"token": "t"}}, "no expiration"),
            ({"access_token": {"token": "t", "expiration": None}, "success": True}, "no expir"),
            ({"access_token": "t"}, "no expiration"),
            ({"success": True, "access_token": {"token": "t", "expiration": "soon"}}, "unreadable"),
            ({"success": True, "access_token": {"token": "t", "expiration": True}}, "unreadable"),
            ({"success": True, "access_token": {"token": "t", "expiration": {}}}, "unreadable"),
            ({"success": True, "access_token": {"token": "t", "expiration": "NaN"}}, "unreadable"),
            ({"access_token": "t", "expires_in": "8h"}, "unreadable"),
            ({"access_token": "t", "expires_in": [28800]}, "unreadable"),
            ({"success": True, "access_token": {"token": "t", "expiration": 28800}}, "range"),
            ({"success": True, "access_token": {"token": "t", "expiration": 1e15}}, "range"),
            ({"access_token": "t", "expires_in": 0}, "range"),
            ({"access_token": "t", "expires_in": 10**9}, "range"),
        ],
    )
    def test_unusable_expiration_is_eight_hours(self, answer: object, assumed: str) -> None:
        """A missing, unreadable or implausible expiration stands in as 8 hours, never fails."""
        token = parse_token(decoded(answer), 1_700_000_000.0)

        assert (token.value, token.expires_at) == ("t", 1_700_028_800.0)
        assert token.assumed is not None
        assert assumed in token.assumed

    @pytest.mark.parametrize(
        ("payload", "error"),
        [
            ({"success": False, "message": "bad request"}, AuthFailed),
            ({"success": True}, BadPayload),
            ({"success": True, "access_token": {"token": ""}}, BadPayload),
            ({"success": True, "access_token": ""}, BadPayload),
            ({"access_token": {"token": "t"}}, BadPayload),
            ({"success": False, "access_token": "t"}, AuthFailed),
        ],
    )
    def test_errors(self, payload: object, error: type[ProviderError]) -> None:
        """Any refusal of the token request is AuthFailed; a malformed token BadPayload."""
        with pytest.raises(ProviderError) as caught:
            parse_token(decoded(payload), 0.0)

        assert type(caught.value) is error


class TestEcdsaPoll:
    async def test_balances(self, build: Build, poll: Poll, responses: Any) -> None:
        """A balances poll returns the SILA balance and the whitelisted gauge."""
        responses.post(WALLET, body=wallet())

        observation = await poll(build(ECDSA), "balances", AccountState())

        assert observation == Observation(
            "balances",
            balances=(Balance("SILA", Decimal(300), Decimal(25)),),
            gauges=(Gauge("wallet_whitelisted", (), Decimal(1)),),
        )

    async def test_signed_header(
        self, build: Build, poll: Poll, responses: Any, clock: FakeClock
    ) -> None:
        """Both signatures recover to the app's and user's addresses over the bytes sent."""
        responses.post(WALLET, body=wallet())
        started = clock.time()

        await poll(build(ECDSA), "balances", AccountState())

        (call,) = calls(responses, WALLET)
        body, headers = call.kwargs["data"], call.kwargs["headers"]
        assert recover_address(body, headers["authsignature"]) == VECTOR_ADDRESS
        assert recover_address(body, headers["usersignature"]) == address_of_key(USER_KEY)
        assert "Authorization" not in headers
        header = json.loads(body)["header"]
        assert int(started) <= header.pop("created") <= clock.time()
        assert uuid.UUID(header.pop("reference")).version == 4
        assert header == {
            "app_handle": "app.silamoney.eth",
            "user_handle": "user.silamoney.eth",
            "version": "0.2",
        }

    @pytest.mark.parametrize(
        ("status", "body", "error", "reason"),
        [
            (400, '{"success": false, "message": "Bad request format."}', Rejected, "http_4xx"),
            (401, '{"success": false}', AuthFailed, "auth"),
            (403, '{"success": false, "message": "derived address"}', AuthFailed, "auth"),
            (500, '{"success": false, "message": "try later"}', Unavailable, "http_5xx"),
            (429, '{"success": false}', RateLimited, "rate_limited"),
            (200, '{"success": false, "message": "Failed to authenticate."}', AuthFailed, "auth"),
            (200, '{"success": false, "message": "Wallet not found."}', Rejected, "http_4xx"),
            (200, '{"success": true}', BadPayload, "bad_payload"),
            (200, "<html>", BadPayload, "bad_payload"),
        ],
    )
    async def test_errors(
        self,
        build: Build,
        poll: Poll,
        responses: Any,
        *,
        status: int,
        body: str,
        error: type[ProviderError],
        reason: str,
    ) -> None:
        """HTTP and body-level failures raise their class with the right poll-error reason."""
        responses.post(WALLET, status=status, body=body)

        with pytest.raises(ProviderError) as caught:
            await poll(build(ECDSA), "balances", AccountState())

        assert (type(caught.value), caught.value.reason) == (error, reason)

    def test_bad_key_is_a_config_error(self, build: Build) -> None:
        """A private key that is not one fails at construction, naming the credential only."""
        account = {"credentials": {**ECDSA["credentials"], "user_private_key": "0xnothex"}}

        with pytest.raises(ConfigError, match="user_private_key") as caught:
            build(account)

        assert "nothex" not in str(caught.value)


class TestHistory:
    @pytest.mark.parametrize(
        ("endpoint", "kind", "direction"),
        [("deposits", "issue", Direction.DEPOSIT), ("withdrawals", "redeem", Direction.WITHDRAWAL)],
    )
    async def test_first_request(
        self,
        build: Build,
        poll: Poll,
        responses: Any,
        *,
        endpoint: str,
        kind: str,
        direction: Direction,
    ) -> None:
        """History asks for one type, page 1 of 100, newest first, and returns its items."""
        serve_history(
            responses, [item("b", transaction_type=kind), item("a", transaction_type=kind)]
        )

        observation = await poll(build(ECDSA), endpoint, AccountState())

        (request,) = sent(responses, HISTORY)
        assert request["search_filters"] == {
            "transaction_types": [kind],
            "page": 1,
            "per_page": 100,
            "sort_ascending": False,
        }
        assert [t.id for t in observation.transfers] == ["b", "a"]
        assert observation.directions == frozenset({direction})

    @pytest.mark.parametrize(
        ("count", "known", "pages"),
        [
            (150, None, [1, 2]),
            (100, None, [1, 2]),
            (99, None, [1]),
            (500, "t350", [1, 2]),
            (1000, None, [1, 2, 3]),
        ],
    )
    async def test_paging(
        self,
        build: Build,
        poll: Poll,
        responses: Any,
        *,
        count: int,
        known: str | None,
        pages: list[int],
    ) -> None:
        """Pages follow while full and unknown, stop at a known transfer, never past max_pages."""
        serve_history(responses, [item(f"t{n}") for n in range(count, 0, -1)])
        state = pending_state(known) if known else AccountState()

        await poll(build(ECDSA), "deposits", state)

        got = [
            r["search_filters"]["page"]
            for r in sent(responses, HISTORY)
            if "page" in r["search_filters"]
        ]
        assert got == pages

    async def test_refreshes_unlisted_in_flight(
        self, build: Build, poll: Poll, responses: Any
    ) -> None:
        """In-flight transfers missing from the pages are looked up by id, oldest first."""
        serve_history(responses, [item("new"), item("old", status="success")])
        state = pending_state("old", "gone", "new")

        observation = await poll(build(ECDSA), "deposits", state)

        lookups = [r["search_filters"] for r in sent(responses, HISTORY)][1:]
        assert lookups == [{"transaction_id": "gone", "transaction_types": ["issue"]}]
        assert {t.id: t.state for t in observation.transfers} == {
            "new": State.PENDING,
            "old": State.OK,
        }


class TestMixedTypes:
    @pytest.mark.parametrize(
        ("endpoint", "asked", "other"),
        [("deposits", "issue", "redeem"), ("withdrawals", "redeem", "issue")],
    )
    async def test_page_with_other_types(
        self, build: Build, poll: Poll, responses: Any, *, endpoint: str, asked: str, other: str
    ) -> None:
        """A page ignoring the type filter: other types skipped, logged at debug, counted."""
        page = [
            item("n1", transaction_type=asked),
            item("x1", transaction_type=other),
            item("x2", transaction_type="card_settlement"),
            item("n2", transaction_type=asked),
        ]
        responses.post(HISTORY, body=ok(transactions=page), repeat=True)

        with captured_logs() as logs:
            observation = await poll(build(ECDSA), endpoint, AccountState())

        assert [t.id for t in observation.transfers] == ["n1", "n2"]
        assert (observation.skipped, observation.malformed) == (2, ())
        skipped = [e for e in logs if e["event"] == "poll.record_skipped"]
        assert [(e["log_level"], e["transaction_id"], e["transaction_type"]) for e in skipped] == [
            ("debug", "x1", other),
            ("debug", "x2", "card_settlement"),
        ]
        assert {(e["account"], e["endpoint"], e["asked"]) for e in skipped} == {
            ("s0", endpoint, asked)
        }

    async def test_lookup_of_other_type_is_skipped(
        self, build: Build, poll: Poll, responses: Any
    ) -> None:
        """A lookup answered with a transaction of another type skips it and keeps the rest."""
        responses.post(HISTORY, body=ok(transactions=[item("new")]))
        responses.post(HISTORY, body=ok(transactions=[item("gone", transaction_type="redeem")]))

        observation = await poll(build(ECDSA), "deposits", pending_state("gone", "new"))

        assert ([t.id for t in observation.transfers], observation.skipped) == (["new"], 1)


class TestTokenAuth:
    async def test_fetch_once_then_bearer(
        self, build: Build, poll: Poll, responses: Any, clock: FakeClock
    ) -> None:
        """One Basic-authenticated /auth_token, then every read carries Bearer <token>."""
        responses.post(AUTH, body=token_answer(TOKEN_A, clock.time() + 8 * 3600))
        responses.post(WALLET, body=wallet(), repeat=True)
        client = build(TOKEN)

        await poll(client, "balances", AccountState())
        await poll(client, "balances", AccountState())

        (auth,) = calls(responses, AUTH)
        assert auth.kwargs["headers"]["Authorization"] == basic_authorization(
            CLIENT_ID, CLIENT_SECRET
        )
        assert "user_handle" not in json.loads(auth.kwargs["data"])["header"]
        bearers = [c.kwargs["headers"]["Authorization"] for c in calls(responses, WALLET)]
        assert bearers == [f"Bearer {TOKEN_A}"] * 2
        assert all("authsignature" not in c.kwargs["headers"] for c in calls(responses, WALLET))

    @pytest.mark.parametrize(("left", "fetches"), [(330.0, 1), (270.0, 2)])
    async def test_refresh_before_expiry(
        self,
        build: Build,
        poll: Poll,
        responses: Any,
        clock: FakeClock,
        *,
        left: float,
        fetches: int,
    ) -> None:
        """A token is replaced once fewer than five minutes of it remain, not before."""
        expiry = clock.time() + 3600
        responses.post(AUTH, body=token_answer(TOKEN_A, expiry))
        responses.post(AUTH, body=token_answer(TOKEN_B, clock.time() + 8 * 3600))
        responses.post(WALLET, body=wallet(), repeat=True)
        client = build(TOKEN)
        await poll(client, "balances", AccountState())

        await clock.advance(expiry - left - clock.time())
        await poll(client, "balances", AccountState())

        assert len(calls(responses, AUTH)) == fetches
        last = calls(responses, WALLET)[-1].kwargs["headers"]["Authorization"]
        assert last == f"Bearer {TOKEN_A if fetches == 1 else TOKEN_B}"

    @pytest.mark.parametrize("form", ["milliseconds", "iso", "iso_unzoned", "oauth2"])
    @pytest.mark.parametrize(("left", "fetches"), [(330.0, 1), (270.0, 2)])
    async def test_refresh_with_each_expiry_form(
        self,
        build: Build,
        poll: Poll,
        responses: Any,
        clock: FakeClock,
        *,
        form: str,
        left: float,
        fetches: int,
    ) -> None:
        """Every expiry form is honoured: the token is replaced under five minutes, not before."""
        assert clock.time() == 1_700_000_000.0  # token_form's expires_in counts from here
        expiry = clock.time() + 3600
        responses.post(AUTH, body=token_form(TOKEN_A, expiry, form))
        responses.post(AUTH, body=token_answer(TOKEN_B, clock.time() + 8 * 3600))
        responses.post(WALLET, body=wallet(), repeat=True)
        client = build(TOKEN)
        await poll(client, "balances", AccountState())

        await clock.advance(expiry - left - clock.time())
        await poll(client, "balances", AccountState())

        assert len(calls(responses, AUTH)) == fetches
        bearers = [c.kwargs["headers"]["Authorization"] for c in calls(responses, WALLET)]
        assert bearers == [f"Bearer {TOKEN_A}", f"Bearer {TOKEN_A if fetches == 1 else TOKEN_B}"]

    @pytest.mark.parametrize(
        "answer",
        [
            ok(access_token={"token": TOKEN_A}),
            ok(access_token={"token": TOKEN_A, "expiration": "tomorrow-ish"}),
            json.dumps({"access_token": TOKEN_A, "token_type": "Bearer"}),
        ],
    )
    async def test_unusable_expiry_warns_once_per_client(
        self, build: Build, poll: Poll, responses: Any, clock: FakeClock, answer: str
    ) -> None:
        """No usable expiry: 8 hours assumed, polls succeed, one warning per client id."""
        responses.post(AUTH, body=answer, repeat=True)
        responses.post(WALLET, body=wallet(), repeat=True)
        other = {**TOKEN, "credentials": {**TOKEN["credentials"], "client_id": "another"}}  # type: ignore[dict-item]
        first, again, second = build(TOKEN), build(TOKEN), build(other)

        with captured_logs() as logs:
            for client in (first, again, second):
                await poll(client, "balances", AccountState())
            await clock.advance(8 * 3600 - 270)  # the assumed expiry is near: a new fetch
            for client in (first, again, second):
                observation = await poll(client, "balances", AccountState())

        assert observation.balances == (Balance("SILA", Decimal(300), Decimal(25)),)
        assert len(calls(responses, AUTH)) == 4
        warnings = [e for e in logs if e["event"] == "sila.token_expiry_assumed"]
        assert [(w["log_level"], w["assumed_seconds"]) for w in warnings] == [
            ("warning", 8 * 3600.0)
        ] * 2
        assert_secret_free(repr(warnings))

    async def test_one_retry_on_401(
        self, build: Build, poll: Poll, responses: Any, clock: FakeClock
    ) -> None:
        """A 401 fetches a fresh token and retries once, with a fresh reference."""
        responses.post(AUTH, body=token_answer(TOKEN_A, clock.time() + 8 * 3600))
        responses.post(AUTH, body=token_answer(TOKEN_B, clock.time() + 8 * 3600))
        responses.post(WALLET, status=401, body='{"success": false, "message": "expired"}')
        responses.post(WALLET, body=wallet())

        observation = await poll(build(TOKEN), "balances", AccountState())

        assert observation.balances == (Balance("SILA", Decimal(300), Decimal(25)),)
        bearers = [c.kwargs["headers"]["Authorization"] for c in calls(responses, WALLET)]
        assert bearers == [f"Bearer {TOKEN_A}", f"Bearer {TOKEN_B}"]
        references = [r["header"]["reference"] for r in sent(responses, WALLET)]
        assert len(set(references)) == 2

    async def test_second_401_is_auth_failed(
        self, build: Build, poll: Poll, responses: Any, clock: FakeClock
    ) -> None:
        """Exactly one retry: a second 401 is AuthFailed, with two reads and two token fetches."""
        responses.post(AUTH, body=token_answer(TOKEN_A, clock.time() + 8 * 3600), repeat=True)
        responses.post(
            WALLET, status=401, body=f'{{"success": false, "message": "{TOKEN_A}"}}', repeat=True
        )

        with pytest.raises(AuthFailed):
            await poll(build(TOKEN), "balances", AccountState())

        assert (len(calls(responses, AUTH)), len(calls(responses, WALLET))) == (2, 2)

    @pytest.mark.parametrize(
        ("status", "body"),
        [(401, '{"success": false}'), (200, '{"success": false, "message": "bad client"}')],
    )
    async def test_token_refused(
        self, build: Build, poll: Poll, responses: Any, status: int, body: str
    ) -> None:
        """A refused /auth_token is AuthFailed and no read is sent."""
        responses.post(AUTH, status=status, body=body)

        with pytest.raises(AuthFailed):
            await poll(build(TOKEN), "balances", AccountState())

        assert calls(responses, WALLET) == []

    @pytest.mark.parametrize(("other_client", "fetches"), [(CLIENT_ID, 1), ("another-client", 2)])
    async def test_shared_per_client_id(
        self, build: Build, responses: Any, clock: FakeClock, other_client: str, fetches: int
    ) -> None:
        """Concurrent polls of accounts on one client id fetch one token; other ids their own."""
        expiry = clock.time() + 8 * 3600

        async def slow_token(_url: URL, **_kwargs: Any) -> CallbackResult:
            await settle()  # the token request is in flight while the other polls start
            return CallbackResult(status=200, body=token_answer(TOKEN_A, expiry))

        responses.post(AUTH, callback=slow_token, repeat=True)
        responses.post(WALLET, body=wallet(), repeat=True)
        other = {**TOKEN, "credentials": {**TOKEN["credentials"], "client_id": other_client}}  # type: ignore[dict-item]
        first, second = build(TOKEN), build(other)

        await drive(
            clock,
            asyncio.gather(*(c.poll("balances", AccountState()) for c in (first, second, first))),
        )

        assert len(calls(responses, AUTH)) == fetches


class TestRequests:
    async def test_fresh_reference_every_request(
        self, build: Build, poll: Poll, responses: Any, clock: FakeClock
    ) -> None:
        """Every request, token fetch included, carries its own non-null uuid4 reference."""
        responses.post(AUTH, body=token_answer(TOKEN_A, clock.time() + 8 * 3600))
        responses.post(WALLET, body=wallet(), repeat=True)
        serve_history(responses, [item("t1")])
        clients = (build(ECDSA), build(TOKEN))

        for client in clients:
            for endpoint in Sila.endpoints:
                await poll(client, endpoint, AccountState())

        references = [
            json.loads(call.kwargs["data"])["header"]["reference"]
            for url in (AUTH, WALLET, HISTORY)
            for call in calls(responses, url)
        ]
        assert len(references) == 7
        assert len(set(references)) == len(references)
        assert all(uuid.UUID(r).version == 4 for r in references)

    async def test_only_read_endpoints(
        self, build: Build, poll: Poll, responses: Any, clock: FakeClock
    ) -> None:
        """Polling every endpoint in both modes calls only the three read paths, all POST."""
        responses.post(AUTH, body=token_answer(TOKEN_A, clock.time() + 8 * 3600))
        responses.post(WALLET, body=wallet(), repeat=True)
        serve_history(responses, [item(f"t{n}") for n in range(120)])

        for client in (build(ECDSA), build(TOKEN)):
            for endpoint in Sila.endpoints:
                with contextlib.suppress(ProviderError):  # failed polls too call only reads
                    await poll(client, endpoint, pending_state("t1", "lost"))

        requested = {(method, url.path) for method, url in responses.requests}
        assert requested == {("POST", path) for path in READ_PATHS}


class TestSecrets:
    @pytest.mark.parametrize("account", [ECDSA, TOKEN], ids=["ecdsa", "token"])
    def test_repr_has_no_credentials(self, build: Build, account: Mapping[str, object]) -> None:
        """repr() of the client shows neither keys nor client secret."""
        text = repr(build(account))

        assert not any(secret in text for secret in SECRETS)
        assert "Sila(" in text

    async def test_provider_message_echoing_token_is_redacted(
        self, build: Build, poll: Poll, responses: Any, clock: FakeClock
    ) -> None:
        """A refusal that quotes our token or secret reaches the error message redacted."""
        responses.post(AUTH, body=token_answer(TOKEN_A, clock.time() + 8 * 3600))
        message = f"token {TOKEN_A} of {CLIENT_SECRET} lacks scope"
        responses.post(WALLET, body=json.dumps({"success": False, "message": message}))

        with pytest.raises(AuthFailed, match=r"token \*\*\* of \*\*\* lacks"):
            await poll(build(TOKEN), "balances", AccountState())

    async def test_token_cache_repr(self, clock: FakeClock) -> None:
        """The shared cache never shows its token."""
        cache = TokenCache()

        async def fetch() -> AccessToken:
            return AccessToken(TOKEN_A, clock.time() + 60)

        await cache.get(fetch, clock)
        assert TOKEN_A not in repr(cache)
