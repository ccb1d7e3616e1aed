"""Tests of metrics.py: the collector read through a real registry, after real watcher polls,
and its exposition against prometheus_client's encoders."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from decimal import Decimal
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.openmetrics import exposition as openmetrics
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as parse_openmetrics,
)
from structlog.testing import capture_logs

from tests.fakes import START, FakeClock, ScriptedProvider
from walletwatch import __version__, exposition, render, series
from walletwatch.asyncstore import AsyncStore
from walletwatch.config import AccountConfig, ProviderSettings
from walletwatch.errors import (
    AuthFailed,
    BadPayload,
    Internal,
    ProviderError,
    RateLimited,
    Rejected,
    Unavailable,
)
from walletwatch.events import EVENT_NAMES
from walletwatch.families import CLOCK_OFFSET, DAEMON_FAMILIES, RELOAD_FAMILIES
from walletwatch.health import EndpointHealth
from walletwatch.metrics import WalletwatchCollector
from walletwatch.model import Balance, Direction, Gauge, Observation, State, Transfer
from walletwatch.render import ReloadStatus, SortedKeys
from walletwatch.store import Store
from walletwatch.telemetry import Telemetry
from walletwatch.tracker import AccountState, Total, TrackedBalance, TrackedTransfer
from walletwatch.watcher import AccountWatcher

SETTINGS = ProviderSettings(
    rate_limit=1.0,
    host_rate_limit=None,
    connect_timeout=5.0,
    read_timeout=10.0,
    timeout=30.0,
    max_backoff=300.0,
    max_pages=10,
)
WITHDRAWALS = frozenset({Direction.WITHDRAWAL})
DEPOSITS = frozenset({Direction.DEPOSIT})


def account_config(name: str = "hot", provider: str = "westwallet") -> AccountConfig:
    """An account with low-balance thresholds and a one-hour withdrawal stuck threshold."""
    return AccountConfig(
        name=name,
        provider=provider,
        base_url="https://api.example.test",
        credentials={},
        interval=30.0,
        currencies=None,
        low_balance={"BTC": Decimal("0.5"), "USDT": Decimal(1000)},
        withdrawal_stuck_after=3600.0,
        deposit_stuck_after=6 * 3600.0,
        down_after=3,
        options={},
    )


def balances(*pairs: tuple[str, str]) -> Observation:
    """A balances answer with the given (currency, available) pairs."""
    return Observation(
        "balances", balances=tuple(Balance(c, Decimal(amount)) for c, amount in pairs)
    )


def transfer(
    transfer_id: str,
    state: State,
    amount: str = "0.3",
    *,
    direction: Direction = Direction.WITHDRAWAL,
    currency: str = "BTC",
    created_at: float | None = None,
) -> Transfer:
    """One transfer as a provider would report it."""
    return Transfer(
        id=transfer_id,
        direction=direction,
        currency=currency,
        amount=Decimal(amount),
        status=str(state),
        state=state,
        created_at=created_at,
    )


def withdrawals(*transfers: Transfer) -> Observation:
    """A withdrawals answer listing the given transfers."""
    return Observation("withdrawals", transfers=transfers, directions=WITHDRAWALS)


def deposits(*transfers: Transfer) -> Observation:
    """A deposits answer listing the given transfers."""
    return Observation("deposits", transfers=transfers, directions=DEPOSITS)


@dataclass
class Rig:
    """Watchers on a real store and a fresh registry with the collector registered."""

    clock: FakeClock
    store: AsyncStore
    telemetry: Telemetry = field(default_factory=Telemetry)
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)
    watchers: list[AccountWatcher] = field(default_factory=list)
    providers: dict[str, ScriptedProvider] = field(default_factory=dict)

    def __post_init__(self) -> None:
        collector = WalletwatchCollector(lambda: self.watchers, self.telemetry, self.clock)
        self.registry.register(collector)

    def add(
        self,
        config: AccountConfig | None = None,
        endpoints: tuple[str, ...] = ("balances", "withdrawals"),
    ) -> AccountWatcher:
        """Watch one more account."""
        config = config or account_config()
        provider = self.providers[config.name] = ScriptedProvider(endpoints)
        watcher = AccountWatcher(
            config,
            SETTINGS,
            provider,
            AccountState(),
            store=self.store,
            telemetry=self.telemetry,
            clock=self.clock,
        )
        self.watchers.append(watcher)
        return watcher

    async def poll(self, watcher: AccountWatcher, answer: Observation | Exception) -> None:
        """Poll the endpoint the answer belongs to (an Observation's, else the first)."""
        endpoint = answer.endpoint if isinstance(answer, Observation) else watcher.endpoints[0]
        await self.poll_endpoint(watcher, endpoint, answer)

    async def poll_endpoint(
        self, watcher: AccountWatcher, endpoint: str, answer: Observation | Exception
    ) -> None:
        """Have the watcher poll ``endpoint`` and receive ``answer``."""
        self.providers[watcher.name].answers[endpoint].append(answer)
        with capture_logs():
            await watcher.poll(endpoint)

    def value(self, name: str, labels: Mapping[str, str] | None = None) -> float | None:
        """One sample's value, or None when it is absent."""
        return self.registry.get_sample_value(name, dict(labels or {}))


def acct(account: str = "hot", provider: str = "westwallet", **extra: str) -> dict[str, str]:
    """The labels of one account, plus any extra labels."""
    return {"provider": provider, "account": account, **extra}


@pytest.fixture(name="store")
def fixture_store(tmp_path: Path) -> Iterator[AsyncStore]:
    """A real state database on tmp_path."""
    store = AsyncStore(Store(tmp_path / "state.db"))
    yield store
    store.close()


@pytest.fixture(name="rig")
def fixture_rig(clock: FakeClock, store: AsyncStore) -> Rig:
    """A rig with no accounts yet."""
    return Rig(clock, store)


class TestBalances:
    @pytest.mark.parametrize(
        "amount", ["1.5", "0.1", "0", "12345678.87654321", "0.00000001", "1E+3"]
    )
    async def test_balance_is_the_decimal_as_float(self, amount: str, rig: Rig) -> None:
        """walletwatch_balance carries the polled Decimal converted to float."""
        watcher = rig.add()
        await rig.poll(watcher, balances(("BTC", amount)))
        assert rig.value("walletwatch_balance", acct(currency="BTC")) == float(Decimal(amount))

    async def test_pending_balance_only_where_reported(self, rig: Rig) -> None:
        """walletwatch_balance_pending appears for currencies whose pending amount is known."""
        watcher = rig.add()
        answer = Observation(
            "balances",
            balances=(
                Balance("BTC", Decimal("1.5"), Decimal("0.25")),
                Balance("USDT", Decimal(2500)),
            ),
        )
        await rig.poll(watcher, answer)
        assert rig.value("walletwatch_balance_pending", acct(currency="BTC")) == 0.25
        assert rig.value("walletwatch_balance_pending", acct(currency="USDT")) is None
        assert rig.value("walletwatch_balance", acct(currency="USDT")) == 2500.0

    async def test_balance_absent_before_first_successful_poll(self, rig: Rig) -> None:
        """No balance series exists until a poll of the balances succeeds."""
        watcher = rig.add()
        assert rig.value("walletwatch_balance", acct(currency="BTC")) is None
        await rig.poll(watcher, Unavailable("down"))
        assert rig.value("walletwatch_balance", acct(currency="BTC")) is None
        await rig.poll(watcher, balances(("BTC", "2")))
        assert rig.value("walletwatch_balance", acct(currency="BTC")) == 2.0

    async def test_low_threshold_comes_from_config(self, rig: Rig) -> None:
        """walletwatch_balance_low_threshold exports each configured low_balance, before polls."""
        rig.add()
        assert rig.value("walletwatch_balance_low_threshold", acct(currency="BTC")) == 0.5
        assert rig.value("walletwatch_balance_low_threshold", acct(currency="USDT")) == 1000.0
        assert rig.value("walletwatch_balance_low_threshold", acct(currency="ETH")) is None

    async def test_accounts_are_kept_apart(self, rig: Rig) -> None:
        """Two accounts' balances are exported under their own account and provider labels."""
        hot = rig.add()
        cold = rig.add(account_config("cold", "kredswallet"))
        await rig.poll(hot, balances(("BTC", "1")))
        await rig.poll(cold, balances(("BTC", "7")))
        assert rig.value("walletwatch_balance", acct(currency="BTC")) == 1.0
        labels = acct("cold", "kredswallet", currency="BTC")
        assert rig.value("walletwatch_balance", labels) == 7.0


class TestHealth:
    async def test_up_follows_every_endpoint(self, rig: Rig) -> None:
        """up is 0 until every endpoint succeeded, 1 then, and 0 again when one fails."""
        watcher = rig.add()
        assert rig.value("walletwatch_up", acct()) == 0.0
        await rig.poll(watcher, balances(("BTC", "1.5")))
        assert rig.value("walletwatch_up", acct()) == 0.0
        await rig.poll(watcher, withdrawals())
        assert rig.value("walletwatch_up", acct()) == 1.0
        await rig.poll(watcher, Unavailable("timed out", reason="timeout"))
        assert rig.value("walletwatch_up", acct()) == 0.0
        await rig.poll(watcher, balances(("BTC", "1.5")))
        assert rig.value("walletwatch_up", acct()) == 1.0

    async def test_failed_poll_keeps_last_balance(self, rig: Rig) -> None:
        """After a failed poll the balance keeps its last value while up drops to 0."""
        watcher = rig.add()
        await rig.poll(watcher, balances(("BTC", "1.5")))
        await rig.poll(watcher, withdrawals())
        for _ in range(4):
            await rig.poll(watcher, Unavailable("down"))
        assert rig.value("walletwatch_up", acct()) == 0.0
        assert rig.value("walletwatch_balance", acct(currency="BTC")) == 1.5

    async def test_last_success_per_endpoint(self, rig: Rig, clock: FakeClock) -> None:
        """last_success_timestamp_seconds is each endpoint's own last success, kept on failure."""
        watcher = rig.add()
        await rig.poll(watcher, balances(("BTC", "1")))
        balances_labels = acct(endpoint="balances")
        withdrawals_labels = acct(endpoint="withdrawals")
        assert rig.value("walletwatch_last_success_timestamp_seconds", balances_labels) == START
        assert rig.value("walletwatch_last_success_timestamp_seconds", withdrawals_labels) is None
        await clock.advance(30.0)
        await rig.poll(watcher, withdrawals())
        await rig.poll(watcher, Unavailable("down"))
        assert rig.value("walletwatch_last_success_timestamp_seconds", balances_labels) == START
        assert (
            rig.value("walletwatch_last_success_timestamp_seconds", withdrawals_labels)
            == START + 30.0
        )
        await clock.advance(30.0)
        await rig.poll(watcher, balances(("BTC", "1")))
        assert (
            rig.value("walletwatch_last_success_timestamp_seconds", balances_labels) == START + 60.0
        )

    @pytest.mark.parametrize(
        ("error", "reason"),
        [
            (Unavailable("timed out", reason="timeout"), "timeout"),
            (Unavailable("refused"), "connection"),
            (Unavailable("HTTP 502", reason="http_5xx"), "http_5xx"),
            (Rejected("HTTP 404"), "http_4xx"),
            (RateLimited("HTTP 429", retry_after=5.0), "rate_limited"),
            (AuthFailed("HTTP 401"), "auth"),
            (BadPayload("not JSON"), "bad_payload"),
            (KeyError("balance"), "internal"),  # what no outcome maps: a bug, reported
        ],
        ids=lambda value: type(value).__name__ if isinstance(value, Exception) else value,
    )
    async def test_polls_and_errors_are_counted_by_reason(
        self, error: Exception, reason: str, rig: Rig
    ) -> None:
        """Every poll counts in polls_total; a failed one also in poll_errors_total{reason}."""
        watcher = rig.add()
        await rig.poll(watcher, balances(("BTC", "1")))
        await rig.poll(watcher, error)
        await rig.poll(watcher, error)
        labels = acct(endpoint="balances")
        assert rig.value("walletwatch_polls_total", labels) == 3.0
        assert rig.value("walletwatch_poll_errors_total", {**labels, "reason": reason}) == 2.0
        assert rig.value("walletwatch_polls_total", acct(endpoint="withdrawals")) is None

    def test_error_classes_cover_the_documented_reasons(self) -> None:
        """Every ProviderError subclass's reason is one of the documented poll_errors reasons."""
        documented = {
            "timeout",
            "connection",
            "http_4xx",
            "http_5xx",
            "rate_limited",
            "auth",
            "bad_payload",
            "internal",
        }
        errors: list[ProviderError] = [
            Unavailable("x"),
            RateLimited("x"),
            AuthFailed("x"),
            Rejected("x"),
            BadPayload("x"),
            Internal("x"),
        ]
        assert {e.reason for e in errors} <= documented


class TestTransfers:
    async def test_settled_transfers_are_counted_with_summed_amounts(self, rig: Rig) -> None:
        """transfers_total and transfer_amount_total count settled transfers, summed exactly."""
        watcher = rig.add()
        await rig.poll(
            watcher,
            withdrawals(transfer("w1", State.PENDING, "0.1"), transfer("w2", State.PENDING, "0.2")),
        )
        ok = acct(currency="BTC", direction="withdrawal", state="ok")
        assert rig.value("walletwatch_transfers_total", ok) is None
        await rig.poll(
            watcher,
            withdrawals(
                transfer("w1", State.OK, "0.1"),
                transfer("w2", State.OK, "0.2"),
                transfer("w3", State.FAILED, "5"),
            ),
        )
        assert rig.value("walletwatch_transfers_total", ok) == 2.0
        assert rig.value("walletwatch_transfer_amount_total", ok) == 0.3
        failed = acct(currency="BTC", direction="withdrawal", state="failed")
        assert rig.value("walletwatch_transfers_total", failed) == 1.0
        assert rig.value("walletwatch_transfer_amount_total", failed) == 5.0

    async def test_baseline_history_is_not_counted(self, rig: Rig) -> None:
        """Transfers already settled at the first poll are history, not counted as settled now."""
        watcher = rig.add()
        await rig.poll(watcher, withdrawals(transfer("w1", State.OK)))
        labels = acct(currency="BTC", direction="withdrawal", state="ok")
        assert rig.value("walletwatch_transfers_total", labels) is None

    async def test_in_flight_stuck_and_oldest(self, rig: Rig, clock: FakeClock) -> None:
        """In-flight transfers are counted, turn stuck past the threshold, and clear on settling."""
        watcher = rig.add()
        older = transfer("w1", State.PENDING, created_at=START - 100.0)
        unknown = transfer("w2", State.UNKNOWN)
        await rig.poll(watcher, withdrawals(older, unknown))
        flow = acct(currency="BTC", direction="withdrawal")
        assert rig.value("walletwatch_transfers_in_flight", flow) == 2.0
        assert rig.value("walletwatch_transfers_stuck", flow) == 0.0
        oldest = "walletwatch_transfer_oldest_in_flight_timestamp_seconds"
        assert rig.value(oldest, flow) == START - 100.0
        await clock.advance(3600.0 - 100.0)
        assert rig.value("walletwatch_transfers_stuck", flow) == 0.0
        await clock.advance(1.0)
        assert rig.value("walletwatch_transfers_stuck", flow) == 1.0
        await clock.advance(100.0)
        assert rig.value("walletwatch_transfers_stuck", flow) == 2.0
        await rig.poll(
            watcher,
            withdrawals(
                transfer("w1", State.OK, created_at=START - 100.0), transfer("w2", State.OK)
            ),
        )
        assert rig.value("walletwatch_transfers_in_flight", flow) == 0.0
        assert rig.value("walletwatch_transfers_stuck", flow) == 0.0
        assert rig.value(oldest, flow) is None

    async def test_oldest_in_flight_absent_when_none(self, rig: Rig) -> None:
        """A direction with nothing in flight has in_flight 0 and no oldest timestamp."""
        watcher = rig.add(endpoints=("balances", "withdrawals", "deposits"))
        await rig.poll(watcher, withdrawals(transfer("w1", State.PENDING)))
        flow = acct(currency="BTC", direction="deposit")
        assert rig.value("walletwatch_transfers_in_flight", flow) == 0.0
        assert rig.value("walletwatch_transfers_stuck", flow) == 0.0
        oldest = "walletwatch_transfer_oldest_in_flight_timestamp_seconds"
        assert rig.value(oldest, flow) is None
        assert rig.value(oldest, acct(currency="BTC", direction="withdrawal")) == START

    @pytest.mark.parametrize(
        ("direction", "seconds"), [("withdrawal", 3600.0), ("deposit", 21600.0)]
    )
    async def test_stuck_threshold_from_config(
        self, direction: str, seconds: float, rig: Rig
    ) -> None:
        """transfer_stuck_threshold_seconds exports the configured threshold by direction."""
        rig.add()
        labels = acct(direction=direction)
        assert rig.value("walletwatch_transfer_stuck_threshold_seconds", labels) == seconds


class TestEvents:
    async def test_every_event_name_is_exported_at_zero(self, rig: Rig) -> None:
        """events_total has a zero series for every event name before anything happens."""
        rig.add()
        for name in EVENT_NAMES:
            assert rig.value("walletwatch_events_total", {"event": name}) == 0.0

    async def test_emitted_events_are_counted(self, rig: Rig) -> None:
        """Each emitted event counts once under its name."""
        watcher = rig.add(endpoints=("balances", "deposits"))
        await rig.poll(watcher, deposits())
        await rig.poll(
            watcher,
            deposits(transfer("d1", State.PENDING, direction=Direction.DEPOSIT)),
        )
        await rig.poll(
            watcher,
            deposits(
                transfer("d1", State.OK, direction=Direction.DEPOSIT),
                transfer("d2", State.OK, direction=Direction.DEPOSIT),
            ),
        )
        await rig.poll(watcher, balances(("BTC", "1")))
        await rig.poll(watcher, balances(("BTC", "0.4")))
        for _ in range(3):
            await rig.poll(watcher, Unavailable("down"))
        expected = {
            "deposit.detected": 2.0,
            "deposit.confirmed": 2.0,
            "balance.changed": 1.0,
            "balance.low": 1.0,
            "account.down": 1.0,
        }
        for name in EVENT_NAMES:
            assert rig.value("walletwatch_events_total", {"event": name}) == expected.get(name, 0)


class TestProviderGauges:
    async def test_provider_gauge_is_exported_with_its_labels(self, rig: Rig) -> None:
        """A provider Gauge named price appears as walletwatch_price with its own labels."""
        hot = rig.add(account_config("hot", "potwallet"))
        cold = rig.add(account_config("cold", "potwallet"))
        for watcher, value in ((hot, "43000.5"), (cold, "42999")):
            price = Gauge("price", (("currency", "BTC"), ("quote", "USD")), Decimal(value))
            await rig.poll(watcher, Observation("balances", balances=(), gauges=(price,)))
        labels = {"currency": "BTC", "quote": "USD"}
        assert rig.value("walletwatch_price", acct("hot", "potwallet", **labels)) == 43000.5
        assert rig.value("walletwatch_price", acct("cold", "potwallet", **labels)) == 42999.0

    async def test_provider_gauge_keeps_last_value_on_failure(self, rig: Rig) -> None:
        """A failed poll leaves a provider gauge at its last reading."""
        watcher = rig.add(account_config("hot", "kredswallet"))
        enabled = Gauge("api_enabled", (), Decimal(1))
        await rig.poll(watcher, Observation("balances", balances=(), gauges=(enabled,)))
        await rig.poll(watcher, Unavailable("down"))
        assert rig.value("walletwatch_api_enabled", acct(provider="kredswallet")) == 1.0


class TestSelfMetrics:
    def test_build_info(self, rig: Rig) -> None:
        """build_info is 1 with the running version as its label."""
        assert rig.value("walletwatch_build_info", {"version": __version__}) == 1.0

    def test_histograms_and_request_counters(self, rig: Rig) -> None:
        """Request and scheduler telemetry come out as counters and cumulative histograms."""
        rig.telemetry.request("bitexbit", "balances", "200", 0.2)
        rig.telemetry.request("bitexbit", "balances", "429", 0.07)
        rig.telemetry.request("bitexbit", "balances", "error", 31.0)
        rig.telemetry.delay("bitexbit", 0.3)
        rig.telemetry.delay("bitexbit", -1.0)
        request = {"provider": "bitexbit", "endpoint": "balances"}
        assert rig.value("walletwatch_http_requests_total", {**request, "code": "429"}) == 1.0
        assert rig.value("walletwatch_http_requests_total", {**request, "code": "error"}) == 1.0
        assert rig.value("walletwatch_rate_limited_total", {"provider": "bitexbit"}) == 1.0
        duration = "walletwatch_http_request_duration_seconds"
        assert rig.value(f"{duration}_bucket", {**request, "le": "0.1"}) == 1.0
        assert rig.value(f"{duration}_bucket", {**request, "le": "0.25"}) == 2.0
        assert rig.value(f"{duration}_bucket", {**request, "le": "30.0"}) == 2.0
        assert rig.value(f"{duration}_bucket", {**request, "le": "+Inf"}) == 3.0
        assert rig.value(f"{duration}_count", request) == 3.0
        assert rig.value(f"{duration}_sum", request) == pytest.approx(31.27)
        delay = "walletwatch_scheduler_delay_seconds"
        provider = {"provider": "bitexbit"}
        assert rig.value(f"{delay}_bucket", {**provider, "le": "0.1"}) == 1.0
        assert rig.value(f"{delay}_bucket", {**provider, "le": "0.5"}) == 2.0
        assert rig.value(f"{delay}_count", provider) == 2.0
        assert rig.value(f"{delay}_sum", provider) == pytest.approx(0.3)


class TestExposition:
    async def populated(self, rig: Rig) -> None:
        """Fill every metric family with at least one series."""
        watcher = rig.add(account_config("hot", "potwallet"))
        await rig.poll(
            watcher,
            Observation(
                "balances",
                balances=(Balance("BTC", Decimal(1), Decimal("0.5")),),
                gauges=(Gauge("price", (("quote", "USD"),), Decimal(1)),),
            ),
        )
        await rig.poll(watcher, withdrawals(transfer("w1", State.PENDING)))
        await rig.poll(
            watcher, withdrawals(transfer("w1", State.PENDING), transfer("w2", State.OK))
        )
        await rig.poll(watcher, Unavailable("down"))
        rig.telemetry.request("potwallet", "balances", "200", 0.2)
        rig.telemetry.delay("potwallet", 0.2)

    async def test_no_created_series(self, rig: Rig) -> None:
        """The exposition has no _created series for any counter or histogram."""
        await self.populated(rig)
        text = generate_latest(rig.registry).decode()
        assert "walletwatch_transfers_total{" in text
        assert [line for line in text.splitlines() if "_created" in line] == []

    async def test_every_name_has_the_prefix(self, rig: Rig) -> None:
        """Every metric family and sample name starts with walletwatch_."""
        await self.populated(rig)
        families = list(rig.registry.collect())
        names = {f.name for f in families} | {s.name for f in families for s in f.samples}
        assert len(names) > 20
        assert [n for n in names if not n.startswith("walletwatch_")] == []

    async def test_registers_with_auto_describe(self, rig: Rig) -> None:
        """The collector can join a registry that checks for clashing names, as the app's does."""
        await self.populated(rig)
        registry = CollectorRegistry(auto_describe=True)
        registry.register(WalletwatchCollector(lambda: rig.watchers, rig.telemetry, rig.clock))
        assert registry.get_sample_value("walletwatch_up", acct(provider="potwallet")) == 0.0


def weird_state() -> AccountState:
    """A state exercising the renderer: odd currency names, NaN and infinities, big and tiny
    amounts, pending balances, settled totals, and transfers in flight (one of them stuck)."""
    transfers = {
        t.key: TrackedTransfer(t, first_seen=START - 10.0)
        for t in (
            transfer("w1", State.PENDING, created_at=START - 7200.0),
            transfer("w2", State.UNKNOWN, currency='US"D\\T\n'),
            transfer("d1", State.PENDING, direction=Direction.DEPOSIT, currency="ETH"),
            transfer("w3", State.OK),
        )
    }
    balances = (
        Balance("BTC", Decimal("NaN"), Decimal("0.00000001")),
        Balance("ETH", Decimal("Infinity")),
        Balance("USDT", Decimal("12345678.87654321"), Decimal("-Infinity")),
        Balance('US"D\\T\n', Decimal("-1E+3")),
    )
    return AccountState(
        transfers=transfers,
        balances={b.currency: TrackedBalance(b) for b in balances},
        baselined=frozenset(Direction),
        totals={
            ("BTC", Direction.WITHDRAWAL, State.OK): Total(2, Decimal("0.3")),
            ("BTC", Direction.WITHDRAWAL, State.FAILED): Total(1, Decimal(5)),
            ("XRP", Direction.DEPOSIT, State.CANCELED): Total(1_500_000, Decimal("1E+7")),
        },
    )


@pytest.fixture(name="weird")
def fixture_weird(rig: Rig) -> Rig:
    """A rig whose accounts, gauges and telemetry take every odd shape the exposition must."""
    odd = rig.add(account_config('a"b\\c\nd', "potwallet"), endpoints=("balances", "deposits"))
    odd.state = weird_state()
    odd.health["balances"] = EndpointHealth(ok=True, last_success=START - 0.123456)
    odd.health["deposits"] = EndpointHealth(ok=False, last_success=None, reason="timeout")
    for gauge in (
        Gauge("price", (("quote", 'U"S\\D\n'), ("currency", "POT")), Decimal("Infinity")),
        Gauge("price", (("quote", "USD"), ("currency", "POT")), Decimal("0.0125")),
        Gauge("brand_new", (), Decimal("2.5")),
    ):
        odd.gauges[(gauge.name, gauge.labels)] = gauge
    plain = rig.add(account_config("plain", "kredswallet"))
    plain.health["balances"] = EndpointHealth(ok=True, last_success=START)
    plain.health["withdrawals"] = EndpointHealth(ok=True, last_success=START + 1e-6)
    t = rig.telemetry
    t.polls[("potwallet", 'a"b\\c\nd', "balances")] = 3
    t.polls[("kredswallet", "plain", "balances")] = 2_000_000
    t.poll_errors[("potwallet", 'a"b\\c\nd', "deposits", "timeout")] = 1
    t.request("potwallet", "balances", "200", 0.2)
    t.request("potwallet", "balances", "error", 31.0)
    t.request("kredswallet", "withdrawals", "429", 0.07)
    t.delay("kredswallet", 12.5)
    t.events["balance.low"] = 4
    t.outbox_pending["hook"] = 2
    t.delivery_failures['we"bhook'] += 1
    t.bucket("potwallet:abc").rate = 9.5
    t.bucket('kreds"wallet@host').wait_seconds = 1234567.125
    return rig


class TestRendering:
    """The exposition is written directly, exactly as prometheus_client's encoders write it."""

    def test_text_is_prometheus_clients(self, weird: Rig) -> None:
        """The text format is byte for byte what generate_latest writes for the same families."""
        collector = WalletwatchCollector(lambda: weird.watchers, weird.telemetry, weird.clock)
        text = collector.render()
        assert text == generate_latest(weird.registry)
        assert b'account="a\\"b\\\\c\\nd"' in text
        assert b'currency="US\\"D\\\\T\\n"' in text
        for value in (b"NaN", b"+Inf", b"-Inf", b"1.234567887654321e+07", b"1e-08", b"-1000.0"):
            assert b" " + value + b"\n" in text

    def test_openmetrics_is_prometheus_clients_and_valid(self, weird: Rig) -> None:
        """OpenMetrics is what its encoder writes for the same families, and parses back."""
        collector = WalletwatchCollector(lambda: weird.watchers, weird.telemetry, weird.clock)
        text = collector.render(openmetrics=True)
        # prometheus_client's OpenMetrics encoder and parser carry no annotations.
        assert text == openmetrics.generate_latest(weird.registry)  # type: ignore[no-untyped-call]
        assert text.endswith(b"\n# EOF\n")
        assert b"# TYPE walletwatch_transfers counter\n" in text
        parsed = parse_openmetrics(text.decode())  # type: ignore[no-untyped-call]
        families = {f.name: f for f in parsed}
        assert families.keys() == {f.name for f in weird.registry.collect()}
        labels = acct('a"b\\c\nd', "potwallet", currency='US"D\\T\n', direction="withdrawal")
        in_flight = families["walletwatch_transfers_in_flight"].samples
        assert [s.value for s in in_flight if s.labels == labels] == [1.0]

    def test_every_family_once_and_empty_ones_kept(self, weird: Rig) -> None:
        """Each family has its HELP and TYPE once, in the same order, samples or none."""
        text = WalletwatchCollector(list, Telemetry(), weird.clock).render().decode()
        types = [line.split()[2] for line in text.splitlines() if line.startswith("# TYPE")]
        assert len(types) == len(set(types)) > 20
        full = generate_latest(weird.registry).decode()
        assert types == [
            line.split()[2]
            for line in full.splitlines()
            if line.startswith("# TYPE")
            if "walletwatch_price" not in line and "walletwatch_brand_new" not in line
        ]
        assert "walletwatch_balance_pending gauge\n# HELP" in text

    async def test_stuck_counts_follow_the_clock(self, weird: Rig, clock: FakeClock) -> None:
        """An in-flight transfer turns stuck in the exposition when time passes its threshold."""
        flow = acct('a"b\\c\nd', "potwallet", currency="ETH", direction="deposit")
        assert weird.value("walletwatch_transfers_stuck", flow) == 0.0
        await clock.advance(6 * 3600.0 + 10.0)
        assert weird.value("walletwatch_transfers_stuck", flow) == 1.0

    def test_replaced_config_and_removed_watcher(self, weird: Rig) -> None:
        """Series made from config follow a replaced config; a removed watcher's series go."""
        odd, plain = weird.watchers
        low = acct("plain", "kredswallet", currency="BTC")
        assert weird.value("walletwatch_balance_low_threshold", low) == 0.5
        plain.config = replace(plain.config, low_balance={"BTC": Decimal(7)})
        assert weird.value("walletwatch_balance_low_threshold", low) == 7.0
        weird.watchers.remove(odd)
        assert weird.value("walletwatch_up", acct('a"b\\c\nd', "potwallet")) is None
        assert weird.value("walletwatch_up", acct("plain", "kredswallet")) == 1.0

    def test_keeps_no_removed_watcher_alive(self, weird: Rig) -> None:
        """What the collector keeps between renders lets a removed watcher be collected."""
        assert weird.value("walletwatch_up", acct("plain", "kredswallet")) == 1.0
        removed = weakref.ref(weird.watchers.pop())
        gc.collect()
        assert removed() is None  # before any other render
        assert weird.value("walletwatch_up", acct("plain", "kredswallet")) is None

    def test_steps_yield_between_accounts(self, weird: Rig) -> None:
        """Rendering is a series of steps, at least one per account, parts in order."""
        collector = WalletwatchCollector(lambda: weird.watchers, weird.telemetry, weird.clock)
        steps = list(collector.steps())
        assert steps[: len(weird.watchers)] == [None] * len(weird.watchers)
        assert b"".join(part for part in steps if part is not None) == collector.render()


class TestFollower:
    """A replica that does not hold the lease serves the process's own series, none else."""

    @staticmethod
    def samples(text: bytes) -> dict[str, list[tuple[dict[str, str], float]]]:
        """Each family served, by name, with its samples' labels and values."""
        families = parse_openmetrics(text.decode())  # type: ignore[no-untyped-call]
        return {f.name: [(s.labels, s.value) for s in f.samples] for f in families}

    def test_leads_unless_told(self, weird: Rig) -> None:
        """walletwatch_leader is 1 on a collector nobody told otherwise (SQLite's case)."""
        assert weird.value("walletwatch_leader") == 1.0

    def test_follower_serves_only_daemon_series(self, weird: Rig) -> None:
        """A follower serves walletwatch_leader 0 and the daemon's series; every other
        family (accounts, health, polls, providers, sinks, buckets) has no sample."""
        reload = ReloadStatus(successful=True, success_time=START)
        collector = WalletwatchCollector(
            lambda: weird.watchers, weird.telemetry, weird.clock, reload
        )
        leader = self.samples(collector.render(openmetrics=True))
        collector.leading = False
        follower = self.samples(collector.render(openmetrics=True))
        assert follower.keys() == leader.keys() - {"walletwatch_price", "walletwatch_brand_new"}
        own = {f.name for f in (*DAEMON_FAMILIES, *RELOAD_FAMILIES, CLOCK_OFFSET)}
        assert {name for name, samples in follower.items() if samples} == own
        assert follower["walletwatch_leader"] == [({}, 0.0)]
        assert leader["walletwatch_leader"] == [({}, 1.0)]
        for name in own - {"walletwatch_leader"}:
            assert follower[name] == leader[name]
        for name in ("walletwatch_balance", "walletwatch_up", "walletwatch_polls"):
            assert leader[name]
            assert not follower[name]

    def test_text_format_follower(self, weird: Rig) -> None:
        """The follower's text exposition parses as prometheus_client's, leader 0 in it."""
        collector = WalletwatchCollector(lambda: weird.watchers, weird.telemetry, weird.clock)
        collector.leading = False
        registry = CollectorRegistry()
        registry.register(collector)
        assert registry.get_sample_value("walletwatch_leader") == 0.0
        assert registry.get_sample_value("walletwatch_up", acct("plain", "kredswallet")) is None
        assert registry.get_sample_value("walletwatch_build_info", {"version": __version__})

    def test_lapsed_lease_shows_as_a_follower(self, weird: Rig) -> None:
        """A leader not yet stepped down (its renewal hangs) whose lease may have lapsed by
        its own clock serves leader 0 and no account series, as a follower does."""
        collector = WalletwatchCollector(lambda: weird.watchers, weird.telemetry, weird.clock)
        held = [True]
        collector.lease = lambda: held[0]
        registry = CollectorRegistry()
        registry.register(collector)
        assert registry.get_sample_value("walletwatch_leader") == 1.0
        held[0] = False
        assert collector.leading
        assert registry.get_sample_value("walletwatch_leader") == 0.0
        assert registry.get_sample_value("walletwatch_up", acct("plain", "kredswallet")) is None

    async def test_leading_again_serves_everything_again(
        self, weird: Rig, clock: FakeClock
    ) -> None:
        """A replica that steps down and takes the lease again serves what it served before,
        with what changed meanwhile (the stuck count follows the clock)."""
        collector = WalletwatchCollector(lambda: weird.watchers, weird.telemetry, weird.clock)
        first = collector.render()
        collector.leading = False
        assert b"walletwatch_balance{" not in collector.render()
        collector.leading = True
        assert collector.render() == first
        collector.leading = False
        collector.render()
        await clock.advance(6 * 3600.0 + 10.0)
        collector.leading = True
        registry = CollectorRegistry()
        registry.register(collector)
        flow = acct('a"b\\c\nd', "potwallet", currency="ETH", direction="deposit")
        assert registry.get_sample_value("walletwatch_transfers_stuck", flow) == 1.0


class TestKeptLines:
    """Lines kept from one render to the next show what changed in between, and only that is
    written anew."""

    async def test_health_changed_in_place_shows(self, rig: Rig, clock: FakeClock) -> None:
        """up and last_success follow polls between renders (health is updated in place)."""
        watcher = rig.add()
        await rig.poll(watcher, balances(("BTC", "1")))
        await rig.poll(watcher, withdrawals())
        stamp = acct(endpoint="balances")
        assert rig.value("walletwatch_up", acct()) == 1.0
        assert rig.value("walletwatch_last_success_timestamp_seconds", stamp) == START
        await rig.poll(watcher, Unavailable("down"))
        assert rig.value("walletwatch_up", acct()) == 0.0
        await clock.advance(30.0)
        await rig.poll(watcher, balances(("BTC", "1")))
        assert rig.value("walletwatch_up", acct()) == 1.0
        assert rig.value("walletwatch_last_success_timestamp_seconds", stamp) == START + 30.0

    async def test_poll_counters_show(self, rig: Rig) -> None:
        """polls_total and poll_errors_total follow polls between renders."""
        watcher = rig.add(account_config("cold wallet"))
        await rig.poll(watcher, balances(("BTC", "1")))
        polls = acct("cold wallet", endpoint="balances")
        errors = acct("cold wallet", endpoint="balances", reason="timeout")
        assert rig.value("walletwatch_polls_total", polls) == 1.0
        assert rig.value("walletwatch_poll_errors_total", errors) is None
        await rig.poll(watcher, Unavailable("slow", reason="timeout"))
        assert rig.value("walletwatch_polls_total", polls) == 2.0
        assert rig.value("walletwatch_poll_errors_total", errors) == 1.0
        await rig.poll(watcher, Unavailable("slow", reason="timeout"))
        assert rig.value("walletwatch_polls_total", polls) == 3.0
        assert rig.value("walletwatch_poll_errors_total", errors) == 2.0

    async def test_gauges_show(self, rig: Rig) -> None:
        """A provider gauge's new value, and a new gauge, show after the poll that read them."""
        watcher = rig.add(account_config("hot", "potwallet"))
        usd = Gauge("price", (("quote", "USD"),), Decimal("0.5"))
        await rig.poll(watcher, Observation("balances", balances=(), gauges=(usd,)))
        labels = acct(provider="potwallet", quote="USD")
        assert rig.value("walletwatch_price", labels) == 0.5
        eur = Gauge("price", (("quote", "EUR"),), Decimal("0.25"))
        usd = replace(usd, value=Decimal("0.75"))
        await rig.poll(watcher, Observation("balances", balances=(), gauges=(usd, eur)))
        assert rig.value("walletwatch_price", labels) == 0.75
        assert rig.value("walletwatch_price", acct(provider="potwallet", quote="EUR")) == 0.25

    async def test_state_shows(self, rig: Rig) -> None:
        """A balance a poll changed shows in the next render."""
        watcher = rig.add()
        await rig.poll(watcher, balances(("BTC", "1")))
        assert rig.value("walletwatch_balance", acct(currency="BTC")) == 1.0
        await rig.poll(watcher, balances(("BTC", "2.5")))
        assert rig.value("walletwatch_balance", acct(currency="BTC")) == 2.5

    @pytest.mark.parametrize(
        ("attribute", "family", "value"),
        [
            ("rate", "walletwatch_bucket_rate", 0.5),
            ("max_rate", "walletwatch_bucket_max_rate", 1.5),
            ("requests", "walletwatch_bucket_requests_total", 7),
            ("wait_seconds", "walletwatch_bucket_wait_seconds_total", 2.25),
            ("rate_limited", "walletwatch_bucket_rate_limited_total", 3),
        ],
    )
    def test_bucket_stats_changed_in_place_show(
        self, attribute: str, family: str, value: float, rig: Rig
    ) -> None:
        """Each of a rate-limit bucket's values, changed in place, shows in the next render."""
        stats = rig.telemetry.bucket("kreds wallet@host")
        stats.rate = stats.max_rate = 2.0
        assert rig.value(family, {"bucket": "kreds wallet@host"}) == getattr(stats, attribute)
        setattr(stats, attribute, value)
        assert rig.value(family, {"bucket": "kreds wallet@host"}) == value

    async def test_only_what_changed_is_formatted_again(
        self, rig: Rig, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A render after nothing changed formats no timestamp, gauge or count it kept; after
        one poll, only that poll's timestamp and counter."""
        formatted: list[float] = []

        def spy(real: Callable[[float], str]) -> Callable[[float], str]:
            def formatting(value: float) -> str:
                formatted.append(value)
                return real(value)

            return formatting

        for module in (exposition, series, render):
            for name in ("go_float", "number", "count"):
                if hasattr(module, name):
                    monkeypatch.setattr(module, name, spy(getattr(module, name)))
        watcher = rig.add(account_config("hot", "potwallet"))
        price = Gauge("price", (("quote", "USD"),), Decimal("0.0625"))
        await rig.poll(watcher, Observation("balances", balances=(), gauges=(price,)))
        await rig.poll(watcher, withdrawals())
        rig.telemetry.bucket("pot@host").requests = 777
        collector = WalletwatchCollector(lambda: rig.watchers, rig.telemetry, clock)
        first = collector.render()
        assert {START, 0.0625, 777} <= set(formatted)
        formatted.clear()
        assert collector.render() == first
        assert {START, 0.0625, 777, 1} & set(formatted) == set()  # 1: each polls_total
        await clock.advance(30.0)
        await rig.poll(watcher, withdrawals())
        formatted.clear()
        collector.render()
        assert {START + 30.0, 2} <= set(formatted)
        assert {START, 0.0625, 777, 1} & set(formatted) == set()


class TestSortedKeys:
    def test_keys_added_later_are_sorted_in(self) -> None:
        """Keys a dict gains between calls come back sorted with the others."""
        keys: SortedKeys[str] = SortedKeys()
        counts = {"m": 1, "c": 1}
        assert keys.of(counts) == ["c", "m"]
        counts |= {"a": 1, "z": 1, "n": 1}
        assert keys.of(counts) == ["a", "c", "m", "n", "z"]

    def test_many_new_keys_are_sorted_in_a_chunk_per_step(self) -> None:
        """update() takes new keys CHUNK at a time, a step each: the first render after
        start-up, which gets every poll counter at once, never sorts them all in one step."""
        keys: SortedKeys[str] = SortedKeys()
        counts = {f"k{n:05d}": 1 for n in reversed(range(2 * SortedKeys.CHUNK + 5))}
        steps = list(keys.update(counts))
        assert len(steps) == 3
        assert keys.of(counts) == sorted(counts)
        assert list(keys.update(counts)) == []  # nothing new: no step

    def test_fewer_keys_sort_afresh(self) -> None:
        """Were keys removed, the next call sorts the dict's keys anew."""
        keys: SortedKeys[str] = SortedKeys()
        counts = {"b": 1, "a": 1}
        keys.of(counts)
        del counts["a"]
        assert keys.of(counts) == ["b"]
