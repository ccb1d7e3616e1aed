"""KredsWallet: the NOTES.md vector, nonces, error mapping, parsing, and polls against a mock."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import json
import re
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import pytest
from aioresponses import CallbackResult
from yarl import URL

from tests.fakes import START, FakeClock, make_context, make_http, settle
from walletwatch.config import AccountConfig, Config, ProviderSettings, parse_config
from walletwatch.context import ProviderContext
from walletwatch.errors import (
    AuthFailed,
    BadPayload,
    ProviderError,
    RateLimited,
    Rejected,
    Unavailable,
)
from walletwatch.http import Http, Response, parse_json
from walletwatch.model import Balance, Direction, Gauge, Observation, State, Transfer
from walletwatch.providers import REGISTRY, kredswallet
from walletwatch.providers.kredswallet import (
    KredsWallet,
    NonceRefused,
    classify,
    merge_outputs,
    parse_balance,
    parse_status,
    parse_transfers,
    read_response,
    transfer_state,
)
from walletwatch.providers.kredswallet_auth import auth_headers, payload, sign
from walletwatch.telemetry import Telemetry
from walletwatch.tracker import AccountState, TrackedTransfer

T = TypeVar("T")
Poll = Callable[[str, AccountState], Awaitable[Observation]]

BASE = "https://kredswallet.com/api"
API_KEY = "783d5a36-07b2-4619-a27a-b9bb0ffaca2d"
SECRET = "fTiTF2aHoWX97mO6hlWUykXpAoZbw0gy13It9j14BO98bD0LrdgacLYERgtkLUe6"
MAX_PAGES = 3
READ_PATHS = re.compile(
    r"/status|/user/(balance|summary|transaction/[0-9a-f]{64}|(deposits|withdraws)/\d+/100)"
)

# NOTES.md vector: secret "s", nonce 1700000000000.
VECTOR_PAYLOAD = "eyJub25jZSI6IjE3MDAwMDAwMDAwMDAifQ=="
VECTOR_SIGNATURE = (
    "b33f46a7d3cddf9e087b4708b72ec360a1e9488df666f77a5a3b2d7eccb7150d"
    "71ccd20037323e357526d8ce8755a1b145debf1ae15f8e7e84e9057f8f1eec6a"
)
START_MS = int(START * 1000)


def txid(n: int) -> str:
    """A 64-hex-digit transaction id."""
    return f"{n:064x}"


def deposit(n: int, **fields: object) -> dict[str, object]:
    """One entry of GET /user/deposits, as the doc shows it."""
    return {
        "txid": txid(n),
        "blockhash": "50cb85a31d24034dbf4e27b8c2a25f0174dfb7f20c90f439d9b204feff8cd669",
        "blockindex": 75444,
        "amount": "1.00000000",
        "confirmations": 622,
        "label": "",
        "blocktime": "2023-11-14 22:13:20",
        "address": "KBzaYw1EfnPXpTVq31oSLfMk2rzfUfyJ5h",
        **fields,
    }


def withdraw(n: int, **fields: object) -> dict[str, object]:
    """One entry of GET /user/withdraws, as the doc shows it."""
    return {
        "address_to": "KKtoiacbJCzMEDJ4qqWRfdbpZu7VFmoUtG",
        "txid": txid(n),
        "blockhash": "0000000000def0ae3faf9bc803cfc490ab228ad82de4539817d6bfb75632d199",
        "blockindex": 75457,
        "amount": "-0.10000000",
        "total": "-0.11000000",
        "confirmations": 617,
        "label": "",
        "blocktime": "2023-11-14 22:13:20",
        **fields,
    }


def decoded(body: object) -> Any:
    """``body`` as the client sees it: JSON text read back with exact decimals."""
    return parse_json(json.dumps(body).encode())


def verified_nonce(headers: Mapping[str, str], secret: str = SECRET) -> int:
    """Check a signed request the way the wallet does, on its own, and return its nonce."""
    assert headers["Accept"] == "application/json"
    assert headers["X-WWT-APIKEY"] == API_KEY
    text = headers["X-WWT-PAYLOAD"]
    expected = hmac.new(secret.encode(), text.encode(), hashlib.sha512).hexdigest()
    assert headers["X-WWT-SIGNATURE"] == expected
    raw = base64.b64decode(text, validate=True)
    body = json.loads(raw)
    assert raw == json.dumps(body, separators=(",", ":")).encode()  # compact, as PHP sends it
    assert list(body) == ["nonce"]
    assert isinstance(body["nonce"], str)
    assert body["nonce"].isdigit()
    return int(body["nonce"])


Answer = tuple[int, object]


@dataclass
class FakeWallet:
    """Answers every GET under BASE from its routes, verifying each signed request itself."""

    routes: dict[str, Answer | Callable[[], Answer]] = field(default_factory=dict)
    lists: dict[str, Sequence[Mapping[str, object]]] = field(default_factory=dict)
    seen: list[tuple[str, int | None]] = field(default_factory=list)
    echo: Callable[[int], str | None] = str
    transit: Callable[[int], Awaitable[None]] | None = None  # delays a request on its way

    def install(self, responses: Any, base: str = BASE) -> None:
        """Route every request under ``base`` here."""
        prefix = URL(base).path

        async def answer(url: URL, **kwargs: Any) -> CallbackResult:
            path = url.path.removeprefix(prefix)
            headers = kwargs["headers"]
            if path == "/status":
                assert "X-WWT-PAYLOAD" not in headers  # public: no auth, no nonce
                self.seen.append((path, None))
                status, body = self._route(path)
                return CallbackResult(status=status, body=json.dumps(body))
            nonce = verified_nonce(headers)
            if self.transit is not None:
                await self.transit(nonce)
            self.seen.append((path, nonce))
            status, body = self._route(path)
            echo = self.echo(nonce)
            extra = {} if echo is None else {"X-WWT-NONCE": echo}
            return CallbackResult(status=status, body=json.dumps(body), headers=extra)

        responses.get(re.compile(re.escape(base) + r"/.*"), callback=answer, repeat=True)

    def _route(self, path: str) -> Answer:
        found = self.routes.get(path)
        if found is not None:
            return found() if callable(found) else found
        for name, items in self.lists.items():
            match = re.fullmatch(re.escape(name) + r"/(\d+)/(\d+)", path)
            if match:
                page, size = int(match[1]), int(match[2])
                return 200, list(items[(page - 1) * size : page * size])
        return 404, {"error": True, "code": 404, "message": "Not found"}

    def nonces(self) -> list[int]:
        """The nonces of the signed requests, in the order they arrived."""
        return [nonce for _, nonce in self.seen if nonce is not None]

    def pages(self, name: str) -> list[int]:
        """The pages of listing ``name`` that were asked for, in order."""
        return [int(path.split("/")[3]) for path, _ in self.seen if path.startswith(name + "/")]


def tracked(n: int | str, direction: Direction, *, started: float, confirmations: int = 1) -> Any:
    """A pending transfer walletwatch already knows about."""
    tid = txid(n) if isinstance(n, int) else n
    status, state = transfer_state(confirmations, 6)
    transfer = Transfer(
        id=tid,
        direction=direction,
        currency="KREDS",
        amount=Decimal("1.00000000"),
        status=status,
        state=state,
        txid=tid,
        confirmations=confirmations,
        details=(("confirmations_required", "6"),),
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


def assert_secret_free(text: str) -> None:
    """Neither credential appears in ``text``."""
    assert API_KEY not in text
    assert SECRET not in text


def make_account(tmp_path: Path, **extra: object) -> AccountConfig:
    """One KredsWallet account with literal credentials; ``extra`` keys go on the entry."""
    config = parse_config(
        {
            "accounts": [
                {
                    "name": "kreds",
                    "provider": "kredswallet",
                    "credentials": {"api_key": API_KEY, "api_secret": SECRET},
                    **extra,
                }
            ],
            "providers": {"kredswallet": {"max_pages": MAX_PAGES}},
        },
        base_dir=tmp_path,
        environ={},
    )
    return config.accounts[0]


@pytest.fixture(name="config")
def fixture_config(tmp_path: Path) -> Config:
    """Provider settings with max_pages=3."""
    return parse_config(
        {
            "accounts": [
                {
                    "name": "kreds",
                    "provider": "kredswallet",
                    "credentials": {"api_key": API_KEY, "api_secret": SECRET},
                }
            ],
            "providers": {"kredswallet": {"max_pages": MAX_PAGES}},
        },
        base_dir=tmp_path,
        environ={},
    )


@pytest.fixture(name="account")
def fixture_account(config: Config) -> AccountConfig:
    """The KredsWallet account, every option at its default."""
    return config.accounts[0]


@pytest.fixture(name="settings")
def fixture_settings(config: Config) -> ProviderSettings:
    """KredsWallet's provider settings."""
    return config.providers["kredswallet"]


@pytest.fixture(name="http")
def fixture_http(session: aiohttp.ClientSession, clock: FakeClock) -> Http:
    """An Http with a fast bucket on the fake clock."""
    return make_http(session, "kredswallet", clock)


@pytest.fixture(name="context")
def fixture_context(settings: ProviderSettings, http: Http, clock: FakeClock) -> ProviderContext:
    """One context, as app.py builds it: nonces and shared objects common to all accounts."""
    return make_context(settings, http, clock)


@pytest.fixture(name="unpaced")
def fixture_unpaced(
    settings: ProviderSettings, session: aiohttp.ClientSession, clock: FakeClock
) -> ProviderContext:
    """A context whose Http has no rate-limit bucket: no request waits, the clock stands still."""
    http = Http(
        session,
        provider="kredswallet",
        buckets=[],
        telemetry=Telemetry(),
        clock=clock,
        timeout=aiohttp.ClientTimeout(total=30),
        max_backoff=300.0,
    )
    return make_context(settings, http, clock)


@pytest.fixture(name="client")
def fixture_client(account: AccountConfig, context: ProviderContext) -> KredsWallet:
    """The KredsWallet client under test."""
    return KredsWallet(account, context)


@pytest.fixture(name="poll")
def fixture_poll(client: KredsWallet, clock: FakeClock) -> Poll:
    """Poll one endpoint to completion on the fake clock."""

    async def poll(endpoint: str, state: AccountState) -> Observation:
        try:
            return await drive(clock, client.poll(endpoint, state))
        except ProviderError as err:
            assert_secret_free(str(err))
            raise

    return poll


@pytest.fixture(name="wallet")
def fixture_wallet(responses: Any) -> FakeWallet:
    """A fake wallet answering at BASE: balance, summary, status and empty listings."""
    wallet = FakeWallet(
        routes={
            "/status": (200, {"apiEnabled": True}),
            "/user/balance": (200, {"balance": "1.66000000"}),
            "/user/summary": (
                200,
                {
                    "balance": "1.66000000",
                    "balance_pending": "0.33000000",
                    "received": "8.10000000",
                    "received_pending": "0.00000000",
                    "sent": "7.38000000",
                    "sent_pending": "-0.30000000",
                    "transactions": 14,
                    "transactions_pending": 3,
                },
            ),
        },
        lists={"/user/deposits": [], "/user/withdraws": []},
    )
    wallet.install(responses)
    return wallet


@pytest.fixture(name="tokyo")
def fixture_tokyo(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The process's local time zone is UTC+9 for the test."""
    monkeypatch.setenv("TZ", "Asia/Tokyo")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


class TestSigning:
    def test_vector(self) -> None:
        """payload() and sign() reproduce the NOTES.md vector exactly."""
        assert payload(1_700_000_000_000) == VECTOR_PAYLOAD
        assert sign("s", VECTOR_PAYLOAD) == VECTOR_SIGNATURE

    def test_payload_is_compact_json_with_the_nonce_as_text(self) -> None:
        """The payload decodes to compact JSON whose nonce is a string, as PHP's strval."""
        assert base64.b64decode(payload(1_700_000_000_000)) == b'{"nonce":"1700000000000"}'

    def test_auth_headers(self) -> None:
        """auth_headers gives Accept and the three X-WWT headers, nothing else."""
        assert auth_headers("k", "s", 1_700_000_000_000) == {
            "Accept": "application/json",
            "X-WWT-APIKEY": "k",
            "X-WWT-PAYLOAD": VECTOR_PAYLOAD,
            "X-WWT-SIGNATURE": VECTOR_SIGNATURE,
        }

    def test_registered(self) -> None:
        """The provider is in the registry under its config name."""
        assert REGISTRY["kredswallet"] is KredsWallet


class TestClassify:
    @pytest.mark.parametrize(
        ("status", "body", "error", "reason"),
        [
            (401, {"error": True, "code": 401, "message": "Unauthorized"}, AuthFailed, "auth"),
            (401, None, AuthFailed, "auth"),
            (
                400,
                {"error": "Bad Request", "code": 400, "message": "Invalid signature"},
                AuthFailed,
                "auth",
            ),
            (400, {"error": True, "code": "403", "message": "Not allowed"}, AuthFailed, "auth"),
            (400, {"error": True, "code": 400, "message": "Unknown API key"}, AuthFailed, "auth"),
            (
                400,
                {"error": "invalid_nonce", "code": 400, "message": "Too small"},
                NonceRefused,
                "http_4xx",
            ),
            (
                401,
                {"error": True, "code": 401, "message": "Nonce already used"},
                NonceRefused,
                "http_4xx",
            ),
            (
                400,
                {"error": True, "code": 400, "message": "Invalid page size"},
                Rejected,
                "http_4xx",
            ),
            (400, None, Rejected, "http_4xx"),
            (404, None, Rejected, "http_4xx"),
            (
                500,
                {"error": True, "code": 500, "message": "Wallet offline"},
                Unavailable,
                "http_5xx",
            ),
            (
                500,
                {"error": True, "code": 500, "message": "nonce table locked"},
                Unavailable,
                "http_5xx",
            ),
            (None, {"error": True, "code": 401, "message": "Unauthorized"}, AuthFailed, "auth"),
            (None, {"error": "Bad Request", "message": "Invalid txid"}, Rejected, "http_4xx"),
        ],
    )
    def test_table(
        self, status: int | None, body: object, error: type[ProviderError], reason: str
    ) -> None:
        """Status, code and message pick the error class and the poll_errors_total reason."""
        err = classify(status, decoded(body), "GET /user/balance")

        assert (type(err), err.reason) == (error, reason)

    def test_nonce_refusal_tells_the_operator_what_to_do(self) -> None:
        """A nonce refusal says the key is fine and that another client signs with it."""
        body = {"error": True, "code": 400, "message": "Invalid nonce"}

        err = classify(400, body, "GET /user/balance")

        assert isinstance(err, Rejected)
        assert not isinstance(err, AuthFailed)
        assert "GET /user/balance: HTTP 400" in str(err)
        assert "'Invalid nonce'" in str(err)
        assert "not the key" in str(err)
        assert "its own API key" in str(err)

    def test_not_found_points_at_base_url(self) -> None:
        """A 404 suggests checking base_url (self-hosted instances have their own root)."""
        assert "base_url" in str(classify(404, None, "GET /user/balance"))

    def test_credentials_never_repeated(self) -> None:
        """A message echoing the API key or secret shows *** instead."""
        body = {"error": True, "code": 401, "message": f"bad key {API_KEY} / {SECRET}"}

        err = classify(401, body, "GET /user/balance", (API_KEY, SECRET))

        assert_secret_free(str(err))
        assert "bad key *** / ***" in str(err)

    @pytest.mark.parametrize(
        ("headers", "expected"),
        [({}, "ok"), ({"X-WWT-NONCE": "7"}, "ok"), ({"x-wwt-nonce": "6"}, "mismatch")],
    )
    def test_nonce_echo(self, headers: dict[str, str], expected: str) -> None:
        """A reply echoing another request's nonce is BadPayload; no echo is accepted."""
        response = Response(200, headers, b'{"balance": "1"}')

        if expected == "ok":
            assert read_response(response, 7, "GET /user/balance") == {"balance": "1"}
        else:
            with pytest.raises(BadPayload, match="nonce"):
                read_response(response, 7, "GET /user/balance")

    def test_html_error_page(self) -> None:
        """An error status whose body is not JSON (a proxy's page) is classified by status."""
        with pytest.raises(Unavailable):
            read_response(Response(500, {}, b"<html>Bad Gateway</html>"), 1, "GET /status")


class TestParse:
    @pytest.mark.parametrize(
        ("body", "value"), [({"apiEnabled": True}, 1), ({"apiEnabled": False}, 0)]
    )
    def test_status(self, body: object, value: int) -> None:
        """apiEnabled becomes the api_enabled gauge with no extra labels."""
        assert parse_status(decoded(body)) == Gauge("api_enabled", (), Decimal(value))

    @pytest.mark.parametrize("body", [{"apiEnabled": "true"}, {"apiEnabled": 1}, {}, []])
    def test_status_not_a_boolean(self, body: object) -> None:
        """Anything but a JSON boolean is BadPayload."""
        with pytest.raises(BadPayload):
            parse_status(decoded(body))

    def test_balance(self) -> None:
        """Available from /user/balance, pending from the summary, exact, in the currency."""
        balance = parse_balance(
            decoded({"balance": "1.66000000"}),
            decoded({"balance": "1.66000000", "balance_pending": "0.33000000"}),
            "KREDS",
        )

        assert balance == Balance("KREDS", Decimal("1.66000000"), Decimal("0.33000000"))
        assert str(balance.available) == "1.66000000"

    def test_balance_without_pending(self) -> None:
        """A summary without balance_pending gives no pending figure rather than a guess."""
        balance = parse_balance(decoded({"balance": "2"}), decoded({"balance": "2"}), "KREDS")

        assert balance.pending is None

    @pytest.mark.parametrize(
        ("balance", "summary"),
        [
            ({"balance": "NaN"}, {}),
            ({}, {}),
            ({"balance": "1"}, {"balance_pending": "lots"}),
            ([], {}),
            ({"balance": "1"}, []),
        ],
    )
    def test_balance_bad(self, balance: object, summary: object) -> None:
        """A missing or unreadable amount is BadPayload."""
        with pytest.raises(BadPayload):
            parse_balance(decoded(balance), decoded(summary), "KREDS")

    def test_deposit(self) -> None:
        """A deposit entry becomes a Transfer: txid as id, exact amount, UTC block time."""
        (transfer,) = parse_transfers(decoded([deposit(1)]), Direction.DEPOSIT, "KREDS", 6)[0]

        assert transfer == Transfer(
            id=txid(1),
            direction=Direction.DEPOSIT,
            currency="KREDS",
            amount=Decimal("1.00000000"),
            status="confirmed",
            state=State.OK,
            address="KBzaYw1EfnPXpTVq31oSLfMk2rzfUfyJ5h",
            txid=txid(1),
            confirmations=622,
            created_at=1_700_000_000.0,
            details=(("confirmations_required", "6"),),
        )

    def test_withdraw_amount_positive_fee_apart(self) -> None:
        """A withdraw's negative amount is reported positive; total minus amount is the fee."""
        (transfer,) = parse_transfers(decoded([withdraw(2)]), Direction.WITHDRAWAL, "KREDS", 6)[0]

        assert (transfer.amount, transfer.fee) == (Decimal("0.10000000"), Decimal("0.01000000"))
        assert transfer.address == "KKtoiacbJCzMEDJ4qqWRfdbpZu7VFmoUtG"
        assert (transfer.direction, transfer.state) == (Direction.WITHDRAWAL, State.OK)

    def test_withdraw_without_total_has_no_fee(self) -> None:
        """Without ``total`` the fee is unknown, not zero."""
        item = {k: v for k, v in withdraw(2).items() if k != "total"}

        (transfer,) = parse_transfers(decoded([item]), Direction.WITHDRAWAL, "KREDS", 6)[0]

        assert transfer.fee is None

    @pytest.mark.parametrize(
        ("confirmations", "required", "status", "state"),
        [
            (0, 6, "unconfirmed", State.PENDING),
            (1, 6, "confirming", State.PENDING),
            (5, 6, "confirming", State.PENDING),
            (6, 6, "confirmed", State.OK),
            (622, 6, "confirmed", State.OK),
            (-1, 6, "conflicted", State.FAILED),
            (0, 1, "unconfirmed", State.PENDING),
            (1, 1, "confirmed", State.OK),
            (11, 12, "confirming", State.PENDING),
        ],
    )
    def test_state_follows_confirmations(
        self, confirmations: int, required: int, status: str, state: State
    ) -> None:
        """Pending below the required confirmations, ok at them, failed when conflicted."""
        body = decoded([deposit(1, confirmations=confirmations)])

        (transfer,) = parse_transfers(body, Direction.DEPOSIT, "KREDS", required)[0]

        assert (transfer.status, transfer.state, transfer.confirmations) == (
            status,
            state,
            confirmations,
        )

    def test_unconfirmed_has_no_block(self) -> None:
        """An unconfirmed entry without block fields parses, with no created_at."""
        item = {k: v for k, v in deposit(1, confirmations=0).items() if not k.startswith("block")}

        (transfer,) = parse_transfers(decoded([item]), Direction.DEPOSIT, "KREDS", 6)[0]

        assert (transfer.created_at, transfer.state) == (None, State.PENDING)

    @pytest.mark.usefixtures("tokyo")
    def test_block_time_is_utc_whatever_the_local_zone(self) -> None:
        """blocktime is read as UTC even when the local zone is not UTC."""
        (transfer,) = parse_transfers(decoded([deposit(1)]), Direction.DEPOSIT, "KREDS", 6)[0]

        assert transfer.created_at == 1_700_000_000.0

    def test_currency_is_the_accounts(self) -> None:
        """Transfers carry the currency they are parsed for."""
        (transfer,) = parse_transfers(decoded([deposit(1)]), Direction.DEPOSIT, "DOGE", 6)[0]

        assert transfer.currency == "DOGE"

    @pytest.mark.parametrize(
        ("items", "direction"),
        [
            pytest.param([deposit(1, amount="-1.0")], Direction.DEPOSIT, id="negative-deposit"),
            pytest.param([withdraw(1, amount="0.1")], Direction.WITHDRAWAL, id="positive-withdraw"),
            pytest.param([withdraw(1, total="-0.05")], Direction.WITHDRAWAL, id="total-too-small"),
            pytest.param([deposit(1, amount="NaN")], Direction.DEPOSIT, id="amount-nan"),
            pytest.param([deposit(1, amount=None)], Direction.DEPOSIT, id="amount-null"),
            pytest.param(
                [deposit(1, confirmations=None)], Direction.DEPOSIT, id="no-confirmations"
            ),
            pytest.param(
                [deposit(1, confirmations="6")], Direction.DEPOSIT, id="confirmations-text"
            ),
            pytest.param([deposit(1, txid="")], Direction.DEPOSIT, id="empty-txid"),
            pytest.param([deposit(1, blocktime="05/06/2018")], Direction.DEPOSIT, id="bad-time"),
            pytest.param(["x"], Direction.DEPOSIT, id="item-not-object"),
            pytest.param({"0": deposit(1)}, Direction.DEPOSIT, id="not-a-list"),
        ],
    )
    def test_bad_payload(self, items: object, direction: Direction) -> None:
        """A malformed listing is BadPayload; a malformed entry is set aside, never guessed at."""
        try:
            transfers, malformed, _ = parse_transfers(decoded(items), direction, "KREDS", 6)
        except BadPayload:
            return
        assert (transfers, len(malformed)) == ((), 1)

    def test_outputs_of_one_transaction_merge(self) -> None:
        """Two outputs of one txid are one transfer: amounts summed, fee once."""
        entries = [
            withdraw(1, amount="-1.0", total="-1.01", address_to="Ka"),
            withdraw(1, amount="-2.0", total="-2.01", address_to="Kb"),
            withdraw(2),
        ]
        transfers, _, _ = parse_transfers(decoded(entries), Direction.WITHDRAWAL, "KREDS", 6)

        first, second = merge_outputs(transfers)

        assert (first.id, first.amount, first.fee, first.address) == (
            txid(1),
            Decimal("3.0"),
            Decimal("0.01"),
            None,
        )
        assert second.id == txid(2)


class TestStatusPoll:
    @pytest.mark.parametrize("enabled", [True, False])
    async def test_gauge(self, poll: Poll, wallet: FakeWallet, enabled: bool) -> None:
        """GET /status, unsigned, gives the api_enabled gauge and nothing else."""
        wallet.routes["/status"] = (200, {"apiEnabled": enabled})

        observation = await poll("status", AccountState())

        assert observation == Observation(
            "status", gauges=(Gauge("api_enabled", (), Decimal(int(enabled))),)
        )
        assert wallet.seen == [("/status", None)]


class TestBalancesPoll:
    async def test_balance_and_pending(self, poll: Poll, wallet: FakeWallet) -> None:
        """/user/balance and /user/summary give one KREDS balance with its pending part."""
        observation = await poll("balances", AccountState())

        assert observation == Observation(
            "balances",
            balances=(Balance("KREDS", Decimal("1.66000000"), Decimal("0.33000000")),),
        )
        assert [path for path, _ in wallet.seen] == ["/user/balance", "/user/summary"]

    async def test_same_millisecond_nonces_differ_and_increase(
        self, account: AccountConfig, unpaced: ProviderContext, clock: FakeClock, wallet: FakeWallet
    ) -> None:
        """Two requests in one millisecond carry different, increasing nonces from the clock."""
        client = KredsWallet(account, unpaced)
        before = clock.time()

        await client.poll("balances", AccountState())

        assert clock.time() == before
        assert wallet.nonces() == [START_MS, START_MS + 1]

    async def test_nonces_increase_across_polls(
        self, poll: Poll, wallet: FakeWallet, clock: FakeClock
    ) -> None:
        """Later polls keep increasing, following the clock when it has moved on."""
        await poll("balances", AccountState())
        first = wallet.nonces()
        clock.wall += 3600

        await poll("balances", AccountState())

        later = wallet.nonces()[len(first) :]
        assert first[0] < first[1] < later[0] < later[1]
        assert later[0] >= int(clock.time() * 1000) - 60_000  # following the clock again

    async def test_accounts_sharing_a_key_never_share_a_nonce(
        self,
        account: AccountConfig,
        context: ProviderContext,
        clock: FakeClock,
        wallet: FakeWallet,
        tmp_path: Path,
    ) -> None:
        """Concurrent polls of accounts on one key reach the wallet with increasing nonces."""
        other = make_account(tmp_path, name="kreds-2", currency="DOGE")
        clients = [KredsWallet(account, context), KredsWallet(other, context)]
        polls = [c.poll(e, AccountState()) for c in clients for e in ("balances", "deposits")]

        await drive(clock, asyncio.gather(*polls))

        nonces = wallet.nonces()
        assert len(nonces) == 6
        assert nonces == sorted(set(nonces))  # distinct, and increasing in arrival order

    async def test_a_slow_request_cannot_be_overtaken(
        self, account: AccountConfig, unpaced: ProviderContext, wallet: FakeWallet, tmp_path: Path
    ) -> None:
        """While one request on a key is on its way, no later nonce of that key is sent."""
        released = asyncio.Event()

        async def slow_first(nonce: int) -> None:
            if nonce == START_MS:
                await released.wait()

        wallet.transit = slow_first
        first = asyncio.ensure_future(
            KredsWallet(account, unpaced).poll("deposits", AccountState())
        )
        await settle()
        other = KredsWallet(make_account(tmp_path, name="kreds-2"), unpaced)
        second = asyncio.ensure_future(other.poll("deposits", AccountState()))
        await settle()
        released.set()
        await asyncio.gather(first, second)

        assert wallet.nonces() == [START_MS, START_MS + 1]

    @pytest.mark.usefixtures("wallet")
    async def test_currency_option(
        self, context: ProviderContext, clock: FakeClock, tmp_path: Path
    ) -> None:
        """The account's currency option names the balance."""
        client = KredsWallet(make_account(tmp_path, currency="DOGE"), context)

        observation = await drive(clock, client.poll("balances", AccountState()))

        assert observation.balances is not None
        assert [b.currency for b in observation.balances] == ["DOGE"]

    @pytest.mark.parametrize(
        ("status", "body", "error"),
        [
            (401, {"error": True, "code": 401, "message": "Unauthorized"}, AuthFailed),
            (400, {"error": True, "code": 400, "message": "Invalid signature"}, AuthFailed),
            (400, {"error": True, "code": 400, "message": "Invalid nonce"}, NonceRefused),
            (400, {"error": True, "code": 400, "message": "Bad parameter"}, Rejected),
            (500, {"error": True, "code": 500, "message": "Internal error"}, Unavailable),
            (404, "<html>", Rejected),
            (403, {}, AuthFailed),
            (429, {}, RateLimited),
            (200, {"error": True, "code": 401, "message": "Unauthorized"}, AuthFailed),
            (200, {"balance": "NaN"}, BadPayload),
        ],
    )
    async def test_errors(
        self,
        poll: Poll,
        wallet: FakeWallet,
        status: int,
        body: object,
        error: type[ProviderError],
    ) -> None:
        """HTTP and body-level failures raise their class, with no credential in the message."""
        wallet.routes["/user/balance"] = (status, body)

        with pytest.raises(ProviderError) as caught:
            await poll("balances", AccountState())

        assert type(caught.value) is error

    async def test_server_error_reason(self, poll: Poll, wallet: FakeWallet) -> None:
        """HTTP 500 counts as http_5xx."""
        wallet.routes["/user/summary"] = (500, {"error": True, "code": 500, "message": "down"})

        with pytest.raises(Unavailable) as caught:
            await poll("balances", AccountState())

        assert caught.value.reason == "http_5xx"

    async def test_reply_for_another_nonce(self, poll: Poll, wallet: FakeWallet) -> None:
        """A reply whose X-WWT-NONCE is not the request's is refused as BadPayload."""
        wallet.echo = lambda nonce: str(nonce - 1)

        with pytest.raises(BadPayload, match="nonce"):
            await poll("balances", AccountState())

    async def test_reply_without_echo(self, poll: Poll, wallet: FakeWallet) -> None:
        """A reply without X-WWT-NONCE (a proxy dropped it) is accepted."""
        wallet.echo = lambda _nonce: None

        observation = await poll("balances", AccountState())

        assert observation.balances is not None


class TestBaseUrl:
    async def test_path_prefix_is_kept(
        self, responses: Any, context: ProviderContext, clock: FakeClock, tmp_path: Path
    ) -> None:
        """A self-hosted base_url with a path prefix (and a trailing slash) prefixes every call."""
        base = "https://wallet.example.com/webwallet/api"
        wallet = FakeWallet(
            routes={
                "/status": (200, {"apiEnabled": True}),
                "/user/balance": (200, {"balance": "5"}),
                "/user/summary": (200, {"balance_pending": "0"}),
            },
            lists={"/user/deposits": [deposit(1)], "/user/withdraws": []},
        )
        wallet.install(responses, base)
        client = KredsWallet(make_account(tmp_path, base_url=base + "/"), context)

        for endpoint in KredsWallet.endpoints:
            await drive(clock, client.poll(endpoint, AccountState()))

        urls = {str(url) for _, url in responses.requests}
        assert urls == {
            f"{base}/status",
            f"{base}/user/balance",
            f"{base}/user/summary",
            f"{base}/user/deposits/1/100",
            f"{base}/user/withdraws/1/100",
        }


class TestHistoryPoll:
    @pytest.mark.parametrize(
        ("endpoint", "path", "direction"),
        [
            ("deposits", "/user/deposits", Direction.DEPOSIT),
            ("withdrawals", "/user/withdraws", Direction.WITHDRAWAL),
        ],
    )
    async def test_first_page(
        self, poll: Poll, wallet: FakeWallet, endpoint: str, path: str, direction: Direction
    ) -> None:
        """A history poll asks for page 1 of 100 and returns the entries, newest first."""
        make = deposit if direction is Direction.DEPOSIT else withdraw
        wallet.lists[path] = [make(2), make(1)]

        observation = await poll(endpoint, AccountState())

        assert [p for p, _ in wallet.seen] == [f"{path}/1/100"]
        assert [t.id for t in observation.transfers] == [txid(2), txid(1)]
        assert {t.direction for t in observation.transfers} == {direction}
        assert observation.directions == frozenset({direction})
        assert observation.balances is None

    async def test_withdrawals_positive_with_fee(self, poll: Poll, wallet: FakeWallet) -> None:
        """Polled withdrawals carry positive amounts and the fee separately."""
        wallet.lists["/user/withdraws"] = [withdraw(1, amount="-25.5", total="-25.51")]

        (transfer,) = (await poll("withdrawals", AccountState())).transfers

        assert (transfer.amount, transfer.fee) == (Decimal("25.5"), Decimal("0.01"))

    async def test_required_confirmations_option(
        self, context: ProviderContext, clock: FakeClock, wallet: FakeWallet, tmp_path: Path
    ) -> None:
        """confirmations_required decides when a deposit is ok."""
        client = KredsWallet(make_account(tmp_path, confirmations_required=2), context)
        wallet.lists["/user/deposits"] = [deposit(2, confirmations=2), deposit(1, confirmations=1)]

        observation = await drive(clock, client.poll("deposits", AccountState()))

        assert [t.state for t in observation.transfers] == [State.OK, State.PENDING]
        assert observation.transfers[0].details == (("confirmations_required", "2"),)

    async def test_full_page_of_unknown_asks_for_the_next(
        self, poll: Poll, wallet: FakeWallet
    ) -> None:
        """A full page of unknown transfers is followed by page 2, until a short page."""
        wallet.lists["/user/deposits"] = [deposit(n) for n in range(170, 0, -1)]

        observation = await poll("deposits", AccountState())

        assert wallet.pages("/user/deposits") == [1, 2]
        assert len(observation.transfers) == 170

    async def test_stops_at_a_page_with_a_known_transfer(
        self, poll: Poll, wallet: FakeWallet
    ) -> None:
        """Paging stops at the first page holding a transfer the state already tracks."""
        wallet.lists["/user/deposits"] = [deposit(n) for n in range(400, 0, -1)]
        state = state_with(tracked(250, Direction.DEPOSIT, started=START, confirmations=622))

        await poll("deposits", state)

        assert wallet.pages("/user/deposits") == [1, 2]

    async def test_known_withdrawal_does_not_stop_deposit_paging(
        self, poll: Poll, wallet: FakeWallet
    ) -> None:
        """A tracked withdrawal with the same txid as a deposit does not count as known."""
        wallet.lists["/user/deposits"] = [deposit(n) for n in range(170, 0, -1)]
        state = state_with(tracked(160, Direction.WITHDRAWAL, started=START, confirmations=622))

        await poll("deposits", state)

        assert wallet.pages("/user/deposits") == [1, 2]

    async def test_never_exceeds_max_pages(self, poll: Poll, wallet: FakeWallet) -> None:
        """With nothing known and every page full, at most max_pages pages are fetched."""
        wallet.lists["/user/deposits"] = [deposit(n) for n in range(1000, 0, -1)]

        observation = await poll("deposits", AccountState())

        assert wallet.pages("/user/deposits") == [1, 2, 3][:MAX_PAGES]
        assert len(observation.transfers) == 100 * MAX_PAGES

    async def test_outputs_split_across_pages_merge(self, poll: Poll, wallet: FakeWallet) -> None:
        """Outputs of one transaction on both sides of a page boundary become one transfer."""
        items = [deposit(n) for n in range(200, 101, -1)]  # 99 entries, then one txid twice
        items += [deposit(101, amount="1"), deposit(101, amount="2"), deposit(100)]
        wallet.lists["/user/deposits"] = items

        observation = await poll("deposits", AccountState())

        merged = {t.id: t for t in observation.transfers}[txid(101)]
        assert merged.amount == Decimal(3)
        assert len(observation.transfers) == 101

    async def test_refreshes_missing_in_flight_transfer(
        self, poll: Poll, wallet: FakeWallet
    ) -> None:
        """An in-flight transfer absent from the pages is refreshed by GET /user/transaction."""
        wallet.lists["/user/deposits"] = [deposit(1002), deposit(1001)]
        wallet.routes[f"/user/transaction/{txid(7)}"] = (
            200,
            {
                "txid": txid(7),
                "amount": "1.0",
                "confirmations": 9,
                "blocktime": "2023-11-14 22:13:20",
            },
        )
        state = state_with(tracked(7, Direction.DEPOSIT, started=1_699_000_000.0))

        observation = await poll("deposits", state)

        refreshed = {t.id: t for t in observation.transfers}[txid(7)]
        assert (refreshed.state, refreshed.status, refreshed.confirmations) == (
            State.OK,
            "confirmed",
            9,
        )
        assert refreshed.amount == Decimal("1.00000000")  # the listed amount is kept
        assert refreshed.created_at == 1_700_000_000.0

    @pytest.mark.parametrize("status", [400, 404])
    async def test_not_found_refresh_keeps_poll_successful(
        self, poll: Poll, wallet: FakeWallet, status: int
    ) -> None:
        """A refused lookup leaves the transfer out and the poll succeeds."""
        wallet.lists["/user/deposits"] = [deposit(1002)]
        wallet.routes[f"/user/transaction/{txid(7)}"] = (
            status,
            {"error": True, "code": status, "message": "Transaction not found"},
        )
        state = state_with(tracked(7, Direction.DEPOSIT, started=1_699_000_000.0))

        observation = await poll("deposits", state)

        assert [t.id for t in observation.transfers] == [txid(1002)]

    async def test_nonce_refusal_on_a_lookup_fails_the_poll(
        self, poll: Poll, wallet: FakeWallet
    ) -> None:
        """A nonce refusal is never mistaken for a missing transaction."""
        wallet.routes[f"/user/transaction/{txid(7)}"] = (
            400,
            {"error": True, "code": 400, "message": "Invalid nonce"},
        )
        state = state_with(tracked(7, Direction.DEPOSIT, started=1_699_000_000.0))

        with pytest.raises(NonceRefused):
            await poll("deposits", state)

    async def test_refresh_only_same_direction_txid_and_unseen(
        self, poll: Poll, wallet: FakeWallet
    ) -> None:
        """Only unlisted in-flight transfers of the polled direction with a txid are looked up."""
        wallet.lists["/user/deposits"] = [deposit(1002), deposit(1001, confirmations=1)]
        state = state_with(
            tracked(7, Direction.DEPOSIT, started=1_699_000_000.0),
            tracked(1001, Direction.DEPOSIT, started=1_699_000_000.0),  # listed
            tracked(8, Direction.WITHDRAWAL, started=1_699_000_000.0),  # other direction
            tracked("not-a-txid", Direction.DEPOSIT, started=1_699_000_000.0),
            tracked(9, Direction.DEPOSIT, started=1_699_000_000.0, confirmations=622),  # settled
        )

        await poll("deposits", state)

        lookups = [p for p, _ in wallet.seen if p.startswith("/user/transaction/")]
        assert lookups == [f"/user/transaction/{txid(7)}"]

    async def test_refreshes_at_most_ten_oldest_first(self, poll: Poll, wallet: FakeWallet) -> None:
        """At most MAX_LOOKUPS lookups per poll, oldest in-flight first."""
        for n in range(1, 13):
            wallet.routes[f"/user/transaction/{txid(n)}"] = (200, {"confirmations": 1})
        state = state_with(
            *(tracked(n, Direction.DEPOSIT, started=1_699_000_000.0 + n) for n in range(12, 0, -1))
        )

        await poll("deposits", state)

        lookups = [p for p, _ in wallet.seen if p.startswith("/user/transaction/")]
        assert kredswallet.MAX_LOOKUPS == 10
        assert lookups == [f"/user/transaction/{txid(n)}" for n in range(1, 11)]


class TestReadOnly:
    async def test_only_read_endpoints_are_called(
        self, poll: Poll, wallet: FakeWallet, responses: Any
    ) -> None:
        """Every request any poll makes is a GET of a read endpoint on the API root."""
        wallet.lists["/user/deposits"] = [deposit(n) for n in range(150, 0, -1)]
        wallet.lists["/user/withdraws"] = [withdraw(1, confirmations=0)]
        for n in (7, 8):
            wallet.routes[f"/user/transaction/{txid(n)}"] = (200, {"confirmations": 1})
        state = state_with(
            tracked(7, Direction.DEPOSIT, started=1_699_000_000.0),
            tracked(8, Direction.WITHDRAWAL, started=1_699_000_000.0),
        )

        for endpoint in KredsWallet.endpoints:
            with contextlib.suppress(ProviderError):  # a failed poll too calls only reads
                await poll(endpoint, state)

        assert {method for method, _ in responses.requests} == {"GET"}
        assert {url.host for _, url in responses.requests} == {"kredswallet.com"}
        assert wallet.seen
        for path, _ in wallet.seen:
            assert READ_PATHS.fullmatch(path), path


class TestSecrets:
    def test_client_repr_has_no_credentials(self, client: KredsWallet) -> None:
        """repr() of the client shows no credential."""
        assert_secret_free(repr(client))

    def test_account_repr_has_no_credentials(self, account: AccountConfig) -> None:
        """repr() of the account config (which the client holds) shows no credential."""
        assert_secret_free(repr(account))
