"""PotWallet: signing vectors, pure parsing, and the client against a mocked API."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
from collections.abc import Awaitable, Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import pytest
from yarl import URL

from tests.fakes import FakeClock, make_context
from walletwatch.budget import TokenBucket
from walletwatch.config import Config, ProviderSettings, parse_config
from walletwatch.context import ProviderContext
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
from walletwatch.providers.potwallet import (
    PotWallet,
    auth_headers,
    check_success,
    failure,
    parse_balance,
    parse_price,
    parse_transactions,
    request_url,
    sign,
    signing_key,
)
from walletwatch.sim.potwallet import verify
from walletwatch.telemetry import Telemetry
from walletwatch.tracker import AccountState

T = TypeVar("T")
Poll = Callable[..., Awaitable[Observation]]

BASE = "https://api.potwallet.com/v1"
BALANCE = f"{BASE}/balance"
RECEIVE = f"{BASE}/transactions/receive"
SEND = f"{BASE}/transactions/send"
PRICE_USD = f"{BASE}/price?currency=USD"
READ_PATHS = {"/v1/balance", "/v1/transactions/receive", "/v1/transactions/send", "/v1/price"}
PUBLIC = "pw-public-7d1c2e"
PRIVATE = "pw-private-4b9a0f"
SHA1_PRIVATE = hashlib.sha1(PRIVATE.encode()).hexdigest()  # noqa: S324 - the protocol's choice

# NOTES.md vectors: private "s", nonce "abc1234", URL https://api.potwallet.com/v1/balance.
VECTOR_RAW = "7a1d994562a6ffb314f9b2eb9faf39f895448322fc16b7237f3ef8192d0aa807"
VECTOR_SHA1 = "94e727105e507f7815fe989cd8ad596ffec99076ca488cf3bc602c0d82f6c0e9"

# The first item of the doc's /transactions/receive example.
ADDRESS = "PEi4CUaAquMJyQ7X3J9P2C13X6dUgghs1N"
BLOCKHASH = "a2fec8569b68a5c274d1a288ec257b30fcbecf3566f9b93032cc35b8c87b27eb"
TXID = "408b5949e53eed536bff3c1fb3d00ba165bc7f9d839fc4c2f0f9be4f5ba81cd9"
DOC_ITEM = {
    "date": "2015-06-03 10:23:53",
    "amount": 5000,
    "category": "receive",
    "address": ADDRESS,
    "blockhash": BLOCKHASH,
    "txid": TXID,
    "label": None,
}


BAD_ENVELOPES = [
    *({"success": success, "message": "1"} for success in ("True", "yes", 1, 0, None)),
    *({"message": "1"}, {"success": "true"}, ["success", "true"]),
]
AUTH = ("Invalid access hash", "Invalid public key", "Nonce already used", "Unauthorized")
REFUSALS: list[tuple[object, type[ProviderError]]] = [
    *((message, AuthFailed) for message in (*AUTH, "Access denied", "Invalid API key")),
    *((message, RateLimited) for message in ("Too many requests", "Rate limit exceeded")),
    *((message, Rejected) for message in ("Unsupported currency", "Maintenance", None, {"e": 7})),
]


def item(**fields: object) -> dict[str, object]:
    """The doc's receive item with ``fields`` replaced."""
    return {**DOC_ITEM, **fields}


def ok(message: object) -> Any:
    """A successful answer as the client decodes it (exact decimals)."""
    return parse_json(json.dumps({"success": "true", "message": message}).encode())


def body(message: object, success: object = "true") -> str:
    """The JSON text of an answer."""
    return json.dumps({"success": success, "message": message})


def assert_secret_free(text: str) -> None:
    """No credential (nor the sha1-derived HMAC key) appears in ``text``."""
    for secret in (PUBLIC, PRIVATE, SHA1_PRIVATE):
        assert secret not in text


async def drive(clock: FakeClock, work: Awaitable[T]) -> T:
    """Run ``work``, moving virtual time on while it waits for rate-limit slots."""
    task = asyncio.ensure_future(work)
    for _ in range(200):
        if task.done():
            break
        await clock.advance(1.0)
    assert task.done(), "the poll did not finish"
    return await task


def requests_made(responses: Any) -> list[tuple[str, URL, dict[str, str]]]:
    """Every request aioresponses saw: method, URL (query included) and headers."""
    return [
        (method, url, call.kwargs["headers"])
        for (method, url), calls in responses.requests.items()
        for call in calls
    ]


def config_for(tmp_path: Path, **options: object) -> Config:
    """A config with one PotWallet account: literal credentials and the given options."""
    credentials = {"public_key": PUBLIC, "private_key": PRIVATE}
    entry = {"name": "pot", "provider": "potwallet", "credentials": credentials, **options}
    return parse_config({"accounts": [entry]}, base_dir=tmp_path, environ={})


@pytest.fixture(autouse=True)
def fixture_only_reads(responses: Any) -> Iterator[None]:
    """After every test, each request any client made was a GET of a read endpoint."""
    yield
    for method, url, _ in requests_made(responses):
        assert (method, url.path) in {("GET", path) for path in READ_PATHS}


@pytest.fixture(name="settings")
def fixture_settings(tmp_path: Path) -> ProviderSettings:
    """PotWallet's default provider settings."""
    return config_for(tmp_path).providers["potwallet"]


@pytest.fixture(name="context")
def fixture_context(
    session: aiohttp.ClientSession, clock: FakeClock, settings: ProviderSettings
) -> ProviderContext:
    """A context with a fast bucket on the fake clock and in-memory nonces."""
    http = Http(
        session,
        provider="potwallet",
        buckets=[TokenBucket(100.0, clock)],
        telemetry=Telemetry(),
        clock=clock,
        timeout=aiohttp.ClientTimeout(total=30),
        max_backoff=300.0,
    )
    return make_context(settings, http, clock)


@pytest.fixture(name="make_client")
def fixture_make_client(tmp_path: Path, context: ProviderContext) -> Callable[..., PotWallet]:
    """Build a client for an account with the given options, sharing one context."""
    return lambda **options: PotWallet(config_for(tmp_path, **options).accounts[0], context)


@pytest.fixture(name="client")
def fixture_client(make_client: Callable[..., PotWallet]) -> PotWallet:
    """The client under test, with default options (raw key, USD)."""
    return make_client()


@pytest.fixture(name="poll")
def fixture_poll(clock: FakeClock, client: PotWallet) -> Poll:
    """Poll an endpoint (of ``client``, default the default one) to completion on the fake
    clock; no error message may leak a secret."""

    async def poll(endpoint: str, other: PotWallet | None = None) -> Observation:
        try:
            return await drive(clock, (other or client).poll(endpoint, AccountState()))
        except ProviderError as err:
            assert_secret_free(str(err))
            raise

    return poll


class TestSigning:
    @pytest.mark.parametrize(("hash_key", "expected"), [("raw", VECTOR_RAW), ("sha1", VECTOR_SHA1)])
    def test_vectors(self, hash_key: str, expected: str) -> None:
        """sign() reproduces both NOTES.md vectors, and the simulator's verifier agrees."""
        assert sign("s", BALANCE, "abc1234", hash_key=hash_key) == expected
        assert verify("s", BALANCE, "abc1234", expected, (hash_key,)) == hash_key

    def test_url_comes_before_nonce(self) -> None:
        """The message is URL then nonce, not the doc prose's nonce then URL."""
        swapped = hmac.new(b"s", f"abc1234{BALANCE}".encode(), hashlib.sha256).hexdigest()
        assert sign("s", BALANCE, "abc1234") != swapped

    def test_signing_key(self) -> None:
        """raw keys the HMAC with the key, sha1 with its hex digest (the PHP sample), no other."""
        assert signing_key("s", "raw") == b"s"
        assert signing_key("s", "sha1") == b"a0f1490a20d0211c997b44bc357e1972deab8ae3"
        with pytest.raises(ValueError, match="hash_key"):
            signing_key("s", "md5")

    def test_auth_headers(self) -> None:
        """The three Access-* headers use hyphens and carry key, hash and nonce."""
        assert auth_headers("k", "s", BALANCE, "abc1234") == {
            "Accept": "application/json",
            "Content-Type": "application/json",
            "Access-Public": "k",
            "Access-Hash": VECTOR_RAW,
            "Access-Nonce": "abc1234",
        }

    @pytest.mark.parametrize(
        ("base", "path", "query", "expected"),
        [
            (BASE, "/balance", None, BALANCE),
            (BASE, "/price", {"currency": "USD"}, PRICE_USD),
            (BASE, "/price", {"currency": "C D+"}, f"{BASE}/price?currency=C%20D%2B"),
            ("https://API.PotWallet.com:443/v1", "/balance", None, BALANCE),
            ("http://[::1]:80/pw", "/balance", None, "http://[::1]/pw/balance"),
        ],
    )
    def test_request_url(
        self, base: str, path: str, query: dict[str, str] | None, expected: str
    ) -> None:
        """The signed URL is the one aiohttp sends: query encoded, host and port normalized."""
        assert request_url(base, path, query) == expected
        assert str(URL(expected)) == expected


class TestEnvelope:
    @pytest.mark.parametrize("success", ["true", True])
    def test_success(self, success: object) -> None:
        """success "true" (or JSON true) gives the message."""
        assert check_success({"success": success, "message": "1"}, "balance") == "1"

    @pytest.mark.parametrize("payload", BAD_ENVELOPES)
    def test_bad_envelope(self, payload: object) -> None:
        """Anything but success "true"/"false" (or a success without message) is BadPayload."""
        with pytest.raises(BadPayload):
            check_success(payload, "balance")

    @pytest.mark.parametrize(("message", "expected"), REFUSALS)
    @pytest.mark.parametrize("success", ["false", False])
    def test_refusals(
        self, message: object, expected: type[ProviderError], success: object
    ) -> None:
        """success "false" is never a success: its message picks auth, rate or refusal."""
        with pytest.raises(ProviderError) as caught:
            check_success({"success": success, "message": message}, "balance")
        assert type(caught.value) is expected

    def test_refusal_message_is_redacted(self) -> None:
        """A refusal echoing a credential shows *** in its place."""
        err = failure(f"Invalid public key {PUBLIC}", "balances", (PUBLIC, PRIVATE))
        assert PUBLIC not in str(err)
        assert "***" in str(err)


class TestParseBalance:
    @pytest.mark.parametrize(
        ("raw", "expected"), [(b'"2002.002"', "2002.002"), (b"2000.099", "2000.099")]
    )
    def test_reads_exact_decimal(self, raw: bytes, expected: str) -> None:
        """The message, a numeric string (or number), is the POT balance as an exact Decimal."""
        payload = parse_json(b'{"success": "true", "message": ' + raw + b"}")
        assert parse_balance(payload) == (Balance("POT", Decimal(expected)),)

    @pytest.mark.parametrize("message", ["abc", None, [], "NaN", "", True])
    def test_bad_balance(self, message: object) -> None:
        """A message that is not an amount is BadPayload."""
        with pytest.raises(BadPayload):
            parse_balance(ok(message))


class TestParseTransactions:
    def test_reads_every_field(self) -> None:
        """The doc's item becomes a settled deposit keyed by txid, UTC date, exact amount."""
        (transfer,) = parse_transactions(ok([item(amount=5000.5)]), Direction.DEPOSIT)[0]
        assert transfer == Transfer(
            id=TXID,
            direction=Direction.DEPOSIT,
            currency="POT",
            amount=Decimal("5000.5"),
            status="receive",
            state=State.OK,
            address=ADDRESS,
            txid=TXID,
            created_at=1_433_327_033.0,
            details=(("blockhash", BLOCKHASH),),
        )

    @pytest.mark.parametrize(("amount", "fee"), [("-12.5", "-0.001"), ("12.5", "0.001")])
    def test_send_amounts_are_positive(self, amount: str, fee: str) -> None:
        """A send is a completed withdrawal; negative amounts and fees (bitcoind) turn positive."""
        payload = ok([item(category="send", amount=amount, fee=fee, label="payout")])
        (transfer,) = parse_transactions(payload, Direction.WITHDRAWAL)[0]
        assert (transfer.direction, transfer.state, transfer.status) == (
            Direction.WITHDRAWAL,
            State.OK,
            "send",
        )
        assert (transfer.amount, transfer.fee) == (Decimal("12.5"), Decimal("0.001"))
        assert dict(transfer.details)["label"] == "payout"

    @pytest.mark.parametrize("category", ["immature", "generate", "orphan", "", "Receive"])
    def test_other_category_is_unknown(self, category: str) -> None:
        """A category other than the list's own is unknown, kept verbatim, never ok."""
        (transfer,) = parse_transactions(ok([item(category=category)]), Direction.DEPOSIT)[0]
        assert (transfer.state, transfer.status) == (State.UNKNOWN, category)

    def test_duplicate_txid_is_one_transfer(self) -> None:
        """Entries sharing a txid (one per output) merge into one transfer with their sum."""
        payload = ok([item(amount=1), item(txid="other"), item(amount="2.5", address="P2")])
        (first, other), _ = parse_transactions(payload, Direction.DEPOSIT)
        assert (first.amount, first.address, first.state) == (Decimal("3.5"), None, State.OK)
        assert dict(first.details)["outputs"] == "2"
        assert (other.id, other.amount) == ("other", Decimal(5000))

    def test_duplicate_with_odd_category_is_unknown(self) -> None:
        """A merged transfer is ok only if every entry is."""
        payload = ok([item(), item(category="immature")])
        (transfer,) = parse_transactions(payload, Direction.DEPOSIT)[0]
        assert (transfer.state, transfer.status) == (State.UNKNOWN, "immature")

    @pytest.mark.parametrize(
        "message",
        [
            pytest.param([item(category="send")], id="send-in-receive-list"),
            pytest.param([item(amount="-1")], id="negative-receive"),
            pytest.param([item(amount="NaN")], id="amount-nan"),
            pytest.param([item(amount=None)], id="amount-null"),
            pytest.param([item(txid=None)], id="txid-missing"),
            pytest.param([item(date="03/06/2015")], id="bad-date"),
            pytest.param([item(date=None)], id="date-missing"),
            pytest.param([item(category=None)], id="category-missing"),
            pytest.param([item(address=7.5)], id="address-not-text"),
            pytest.param([item(blockhash=["x"])], id="blockhash-not-text"),
            pytest.param([item(fee="free")], id="bad-fee"),
            pytest.param(["x"], id="item-not-object"),
            pytest.param({"0": item()}, id="message-not-list"),
            pytest.param("no transactions", id="message-text"),
        ],
    )
    def test_bad_payload(self, message: object) -> None:
        """A malformed listing is BadPayload; a malformed item is set aside, never guessed at."""
        try:
            transfers, malformed = parse_transactions(ok(message), Direction.DEPOSIT)
        except BadPayload:
            return
        assert (transfers, len(malformed)) == ((), 1)


class TestParsePrice:
    @pytest.mark.parametrize("quote", ["USD", "usd"])
    def test_reads_price(self, quote: str) -> None:
        """The price becomes the gauge price{currency=POT, quote=<asked>}, matched caselessly."""
        gauge = parse_price(ok({"price": "0.00142", "currency": "USD"}), quote)
        assert gauge == Gauge("price", (("currency", "POT"), ("quote", quote)), Decimal("0.00142"))

    @pytest.mark.parametrize(
        "message",
        [
            {"price": "0.00142", "currency": "CAD"},
            {"price": "-0.1", "currency": "USD"},
            {"price": None, "currency": "USD"},
            {"price": "0.00142"},
            "0.00142",
        ],
    )
    def test_bad_price(self, message: object) -> None:
        """A price in another currency, negative, or missing is BadPayload."""
        with pytest.raises(BadPayload):
            parse_price(ok(message), "USD")


class TestClient:
    async def test_balances(self, poll: Poll, responses: Any) -> None:
        """A balances poll returns the complete set: POT."""
        responses.get(BALANCE, body=body("2002.002"))
        assert await poll("balances") == Observation(
            "balances", balances=(Balance("POT", Decimal("2002.002")),)
        )

    @pytest.mark.parametrize(
        ("endpoint", "url", "direction"),
        [("deposits", RECEIVE, Direction.DEPOSIT), ("withdrawals", SEND, Direction.WITHDRAWAL)],
    )
    async def test_history(
        self, poll: Poll, responses: Any, endpoint: str, url: str, direction: Direction
    ) -> None:
        """Each history poll GETs its list once (no paging) and covers its direction."""
        category = "receive" if direction is Direction.DEPOSIT else "send"
        responses.get(url, body=body([item(category=category)]))
        observation = await poll(endpoint)
        assert [t.id for t in observation.transfers] == [TXID]
        assert (observation.directions, observation.balances) == (frozenset({direction}), None)
        assert [u for _, u, _ in requests_made(responses)] == [URL(url)]

    @pytest.mark.parametrize(
        ("options", "quote"), [({}, "USD"), ({"price_currency": "CAD"}, "CAD")]
    )
    async def test_price(
        self,
        make_client: Callable[..., PotWallet],
        poll: Poll,
        responses: Any,
        options: dict[str, str],
        quote: str,
    ) -> None:
        """The price poll asks /price?currency=<quote> and exports the gauge with that quote."""
        responses.get(f"{BASE}/price?currency={quote}", body=body({"price": 2, "currency": quote}))
        observation = await poll("price", make_client(**options))
        assert observation == Observation(
            "price", gauges=(Gauge("price", (("currency", "POT"), ("quote", quote)), Decimal(2)),)
        )

    @pytest.mark.parametrize("variant", [("raw", PRIVATE), ("sha1", SHA1_PRIVATE)], ids=str)
    @pytest.mark.parametrize("quote", ["USD", "C D+"])
    async def test_signs_the_url_sent(
        self,
        make_client: Callable[..., PotWallet],
        poll: Poll,
        responses: Any,
        variant: tuple[str, str],
        quote: str,
    ) -> None:
        """Access-Hash is HMAC(key variant, full URL with its query, + nonce)."""
        hash_key, key = variant
        sent = request_url(BASE, "/price", {"currency": quote})  # on the wire: see integration
        responses.get(sent, body=body("x"))
        client = make_client(hash_key=hash_key, price_currency=quote)
        with pytest.raises(BadPayload):  # "x" is not a price object; the request is what counts
            await poll("price", client)
        ((method, url, headers),) = requests_made(responses)
        assert (method, url.path, url.query["currency"]) == ("GET", "/v1/price", quote)
        assert headers["Access-Public"] == PUBLIC
        message = f"{sent}{headers['Access-Nonce']}".encode()
        assert headers["Access-Hash"] == hmac.new(key.encode(), message, hashlib.sha256).hexdigest()
        assert verify(PRIVATE, sent, headers["Access-Nonce"], headers["Access-Hash"]) == hash_key

    async def test_nonces_unique_across_accounts_on_one_key(
        self, make_client: Callable[..., PotWallet], poll: Poll, responses: Any
    ) -> None:
        """Two accounts sharing a public key never send the same nonce."""
        responses.get(BALANCE, body=body("1"), repeat=True)
        first, second = make_client(), make_client(hash_key="sha1")
        await asyncio.gather(*(poll("balances", c) for c in (first, second, first, second)))
        nonces = [int(h["Access-Nonce"]) for _, _, h in requests_made(responses)]
        assert len(nonces) == len(set(nonces)) == 4

    @pytest.mark.parametrize(
        ("status", "answer", "error"),
        [
            (200, body("Invalid access hash", "false"), AuthFailed),
            (200, body("Invalid public key", False), AuthFailed),
            (200, body(f"Invalid public key {PUBLIC} / {PRIVATE}", "false"), AuthFailed),
            (200, body("Too many requests", "false"), RateLimited),
            (200, body("Wallet maintenance", "false"), Rejected),
            (200, body("2", "maybe"), BadPayload),
            (200, "<html>oops</html>", BadPayload),
            (400, body("Invalid access hash", "false"), AuthFailed),
            (400, body("Missing field", "false"), Rejected),
            (400, "<html>Bad Request</html>", Rejected),
            (400, body("1"), Rejected),
            (401, body("Unauthorized", "false"), AuthFailed),
            (403, "", AuthFailed),
            (404, body("Not found", "false"), Rejected),
            (429, body("Too many requests", "false"), RateLimited),
            (500, "", Unavailable),
            (503, body("down", "false"), Unavailable),
        ],
    )
    async def test_errors(
        self, poll: Poll, responses: Any, status: int, answer: str, error: type[ProviderError]
    ) -> None:
        """HTTP and body-level failures raise their class, with no credential in the message."""
        responses.get(BALANCE, status=status, body=answer)
        with pytest.raises(ProviderError) as caught:
            await poll("balances")
        assert type(caught.value) is error

    async def test_unknown_endpoint(self, client: PotWallet) -> None:
        """An endpoint the client does not declare is a programming error, not a request."""
        with pytest.raises(KeyError):
            await client.poll("send", AccountState())


class TestReadOnly:
    @pytest.mark.parametrize("hash_key", ["raw", "sha1"])
    async def test_only_read_endpoints_are_called(
        self, make_client: Callable[..., PotWallet], poll: Poll, responses: Any, hash_key: str
    ) -> None:
        """Every request of every endpoint, good answers or bad, is a GET of a read path."""
        for url in (BALANCE, RECEIVE, SEND, PRICE_USD):
            responses.get(url, body=body([]))  # a wrong shape for some: errors are fine here
            responses.get(url, body=body("Invalid access hash", "false"))
        client = make_client(hash_key=hash_key)
        for _ in range(2):
            for endpoint in PotWallet.endpoints:
                with contextlib.suppress(ProviderError):
                    await poll(endpoint, client)
        requested = [(method, url.host, url.path) for method, url, _ in requests_made(responses)]
        assert len(requested) == 8
        assert {m for m, _, _ in requested} == {"GET"}
        assert {p for _, _, p in requested} == READ_PATHS
        assert {h for _, h, _ in requested} == {"api.potwallet.com"}


class TestSecrets:
    @pytest.mark.parametrize("hash_key", ["raw", "sha1"])
    def test_repr_has_no_credentials(
        self, make_client: Callable[..., PotWallet], tmp_path: Path, hash_key: str
    ) -> None:
        """repr() of the client and of its account config show no credential."""
        assert_secret_free(repr(make_client(hash_key=hash_key)))
        assert_secret_free(repr(config_for(tmp_path, hash_key=hash_key).accounts[0]))
