"""Money facts that change after the fact: reversals, amendments and malformed records.

Issue 16, item 9: a confirmed deposit whose amount went from 2 to 2000, then whose currency
went from BTC to USDT, passed without an event and the totals kept the old values; a deposit
back from completed to pending emitted nothing; a deposit of -5 was accepted and drove the
transfer_amount_total counter from 2 to -3.
"""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from structlog.testing import capture_logs

from tests.fakes import FakeClock, FakePolicy, ScriptedProvider, make_context, make_http
from tests.providers import test_kredswallet as kreds
from tests.providers import test_potwallet as pot
from tests.providers import test_sila as sila
from tests.providers import test_westwallet as ww
from tests.test_scheduler import SETTINGS, InlineStore, account_config
from walletwatch.config import AccountConfig, Config, parse_config
from walletwatch.errors import BadPayload
from walletwatch.events import Event
from walletwatch.model import Direction, Malformed, Observation, State, Transfer
from walletwatch.providers import kredswallet, potwallet, westwallet
from walletwatch.providers import sila as sila_provider
from walletwatch.providers.westwallet import WestWallet
from walletwatch.store import Store
from walletwatch.telemetry import Telemetry
from walletwatch.tracker import AccountState, Total, TransferKey, observe, to_look_up
from walletwatch.watcher import AccountWatcher

DEP = Direction.DEPOSIT
POLICY = FakePolicy()


def deposit(state: State, amount: str = "2", currency: str = "BTC", tx_id: str = "7") -> Transfer:
    """The deposit of the issue, as the provider reports it at one moment."""
    return Transfer(
        id=tx_id,
        direction=DEP,
        currency=currency,
        amount=Decimal(amount),
        status="completed" if state is State.OK else str(state),
        state=state,
        address="bc1q-sim",
    )


def deposits(*transfers: Transfer) -> Observation:
    """A deposits answer listing ``transfers``."""
    return Observation("deposits", transfers=transfers, directions=frozenset({DEP}))


def run(*steps: Observation) -> tuple[AccountState, list[Event]]:
    """The tracker over ``steps`` after an empty baseline, a second apart.

    Records are looked up as the watcher looks them up in the store.
    """
    state, events = AccountState(), list[Event]()
    records: dict[TransferKey, Transfer] = {}
    for i, obs in enumerate((deposits(), *steps)):
        previous = {key: records[key] for key in to_look_up(state, obs)}
        state, new = observe(state, obs, POLICY, 1000.0 + i, previous)
        records.update((key, tracked.transfer) for key, tracked in state.unsaved.items())
        state = state.saved()
        events.extend(new)
    return state, events


def named(events: list[Event], name: str) -> list[Event]:
    """The events called ``name``."""
    return [e for e in events if e.event == name]


class TestReversedDeposit:
    """A deposit that had reached ok and is reported in flight or failed again."""

    def test_completed_deposit_back_to_pending_is_reversed(self) -> None:
        """Completed, then pending again: one critical deposit.reversed naming the old state."""
        _, events = run(deposits(deposit(State.OK)), deposits(deposit(State.PENDING)))
        (reversed_,) = named(events, "deposit.reversed")
        body = reversed_.to_dict()
        assert body["severity"] == "critical"
        assert (body["transfer_id"], body["state"], body["previous_state"]) == (
            "7",
            "pending",
            "ok",
        )
        assert body["previous_status"] == "completed"

    @pytest.mark.parametrize("state", [State.FAILED, State.CANCELED, State.UNKNOWN])
    def test_completed_deposit_failing_is_reversed(self, state: State) -> None:
        """Completed, then failed, canceled or unrecognized: deposit.reversed too."""
        _, events = run(deposits(deposit(State.OK)), deposits(deposit(state)))
        assert [e.fields["state"] for e in named(events, "deposit.reversed")] == [str(state)]

    def test_each_reversal_of_a_flapping_deposit_is_its_own_fact(self) -> None:
        """ok, pending, ok, pending: two reversals with distinct ids, each emitted once."""
        ok, pending = deposits(deposit(State.OK)), deposits(deposit(State.PENDING))
        state, events = run(ok, pending, ok, pending, pending)
        ids = [e.event_id for e in named(events, "deposit.reversed")]
        assert len(ids) == 2
        assert len(set(ids)) == 2
        again, more = observe(state, pending, POLICY, 2000.0)
        assert (again is state, more) == (True, [])

    def test_reversal_is_counted_as_a_correction(self) -> None:
        """The reversed deposit's count and amount move to corrections; nothing decreases."""
        state, _ = run(deposits(deposit(State.OK)), deposits(deposit(State.PENDING)))
        assert state.totals[("BTC", DEP, State.OK)] == Total(1, Decimal(2), 1, Decimal(2))
        state, _ = run(
            deposits(deposit(State.OK)),
            deposits(deposit(State.PENDING)),
            deposits(deposit(State.OK)),
        )
        assert state.totals[("BTC", DEP, State.OK)] == Total(2, Decimal(4), 1, Decimal(2))


@pytest.fixture(name="store")
def fixture_store(tmp_path: Path) -> Store:
    """A state file on disk."""
    return Store(tmp_path / "state.db")


def watcher_on(
    store: Store, provider: Any, clock: FakeClock, state: AccountState
) -> AccountWatcher:
    """A watcher committing to ``store`` at once."""
    return AccountWatcher(
        account_config(),
        SETTINGS,
        provider,
        state,
        store=InlineStore(store),
        telemetry=Telemetry(),
        clock=clock,
    )


def outbox(store: Store) -> list[dict[str, Any]]:
    """Every event queued in the store, as delivered."""
    return [e.to_dict() for _, e in store.pending("sink", limit=1000)]


class TestAmendedTransfer:
    """Amount, fee, currency or address of a settled transfer changing, through the watcher."""

    async def test_amount_then_currency_change_are_reported(
        self, store: Store, clock: FakeClock
    ) -> None:
        """2 to 2000, then BTC to USDT: two transfer.amended with the old and the new values."""
        provider = ScriptedProvider(("deposits",))
        provider.answers["deposits"] += [
            deposits(),
            deposits(deposit(State.OK)),
            deposits(deposit(State.OK, amount="2000")),
            deposits(deposit(State.OK, amount="2000", currency="USDT")),
        ]
        watcher = watcher_on(store, provider, clock, AccountState())
        store.start_cursor("sink")
        for _ in range(4):
            assert (await watcher.poll("deposits")).ok
            await clock.advance(60)

        amended = [e for e in outbox(store) if e["event"] == "transfer.amended"]
        assert [
            (e["amount"], e["previous_amount"], e["currency"], e["previous_currency"])
            for e in amended
        ] == [("2000", "2", "BTC", "BTC"), ("2000", "2000", "USDT", "BTC")]
        assert {e["severity"] for e in amended} == {"warning"}
        assert len({e["event_id"] for e in amended}) == 2
        totals = watcher.state.totals
        assert totals[("BTC", DEP, State.OK)] == Total(1, Decimal(2000), 1, Decimal(2000))
        assert totals[("USDT", DEP, State.OK)] == Total(1, Decimal(2000))

    async def test_amendment_after_a_restart_reads_the_old_values(
        self, store: Store, clock: FakeClock, tmp_path: Path
    ) -> None:
        """A state loaded from the file still reports the old amount, and keeps corrections."""
        provider = ScriptedProvider(("deposits",))
        provider.answers["deposits"] += [deposits(), deposits(deposit(State.OK))]
        watcher = watcher_on(store, provider, clock, AccountState())
        for _ in range(2):
            assert (await watcher.poll("deposits")).ok
        store.close()

        reopened = Store(tmp_path / "state.db")
        reopened.start_cursor("sink")
        provider.answers["deposits"].append(deposits(deposit(State.OK, amount="1.5")))
        watcher = watcher_on(reopened, provider, clock, reopened.load()["hot"])
        assert (await watcher.poll("deposits")).ok

        (amended,) = [e for e in outbox(reopened) if e["event"] == "transfer.amended"]
        assert (amended["previous_amount"], amended["amount"]) == ("2", "1.5")
        total = Total(1, Decimal(2), 0, Decimal("0.5"))  # a lower amount: a correction
        assert reopened.load()["hot"].totals[("BTC", DEP, State.OK)] == total

    def test_quiet_change_is_no_amendment(self) -> None:
        """An amount written differently ("2" then "2.0") and more confirmations amend nothing."""
        again = deposit(State.OK, amount="2.0")
        _, events = run(deposits(deposit(State.OK)), deposits(again))
        assert named(events, "transfer.amended") == []


def westwallet_config(tmp_path: Path) -> Config:
    """One WestWallet account, "main", on the mocked API."""
    return parse_config(
        {
            "accounts": [
                {
                    "name": "main",
                    "provider": "westwallet",
                    "credentials": {"api_key": ww.API_KEY, "secret_key": ww.SECRET},
                }
            ]
        },
        base_dir=tmp_path,
        environ={},
    )


def watcher_for(
    client: Any, store: Store, clock: FakeClock, account: AccountConfig, telemetry: Telemetry
) -> AccountWatcher:
    """A watcher of a real provider client."""
    return AccountWatcher(
        account,
        SETTINGS,
        client,
        AccountState(),
        store=InlineStore(store),
        telemetry=telemetry,
        clock=clock,
    )


class TestMalformedRecords:
    """A record the provider should never send is reported and left out, alone."""

    @pytest.mark.parametrize(
        ("parse", "expected_id"),
        [
            pytest.param(
                lambda: westwallet.parse_transactions(
                    ww.listing(ww.item(1), ww.item(2, amount=-5)), DEP
                ),
                "2",
                id="westwallet",
            ),
            pytest.param(
                lambda: westwallet.parse_transactions(
                    ww.listing(ww.item(1), ww.item(2, fee="-0.1")), DEP
                ),
                "2",
                id="westwallet-negative-fee",
            ),
            pytest.param(
                lambda: kredswallet.parse_transfers(
                    kreds.decoded([kreds.deposit(1), kreds.deposit(2, amount="-5")]),
                    DEP,
                    "KREDS",
                    6,
                ),
                kreds.txid(2),
                id="kredswallet",
            ),
            pytest.param(
                lambda: potwallet.parse_transactions(
                    pot.ok([pot.item(txid="good"), pot.item(txid="bad", amount=-5)]), DEP
                ),
                "bad",
                id="potwallet",
            ),
            pytest.param(
                lambda: sila_provider.parse_transactions(
                    sila.decoded(
                        {
                            "success": True,
                            "transactions": [sila.item("a"), sila.item("b", sila_amount=-5)],
                        }
                    ),
                    DEP,
                ),
                "b",
                id="sila",
            ),
        ],
    )
    def test_negative_deposit_is_set_aside(self, parse: Any, expected_id: str) -> None:
        """One good deposit and one of -5: the good one is read, the bad one set aside."""
        transfers, malformed, *_ = parse()
        assert len(transfers) == 1
        assert [m.transfer_id for m in malformed] == [expected_id]
        assert all(t.amount >= 0 for t in transfers)

    async def test_westwallet_answer_with_bad_records_is_still_observed(
        self,
        store: Store,
        clock: FakeClock,
        responses: Any,
        session: aiohttp.ClientSession,
        tmp_path: Path,
    ) -> None:
        """A -5 deposit and one without an id are logged once and counted; the rest is used."""
        config = westwallet_config(tmp_path)
        account = config.accounts[0]
        client = WestWallet(
            account,
            make_context(
                config.providers["westwallet"], make_http(session, "westwallet", clock), clock
            ),
        )
        listed: list[dict[str, object]] = []
        ww.serve_history(responses, listed)
        telemetry = Telemetry()
        watcher = watcher_for(client, store, clock, account, telemetry)
        assert (await ww.drive(clock, watcher.poll("deposits"))).ok  # the baseline: none
        no_id = ww.item(3, status="completed")
        del no_id["id"]
        listed[:] = [
            ww.item(1, status="completed"),
            ww.item(2, amount=-5, status="completed"),
            no_id,
        ]
        with capture_logs() as logs:
            assert (await ww.drive(clock, watcher.poll("deposits"))).ok
            # The same answer again: counted again, not logged again.
            assert (await ww.drive(clock, watcher.poll("deposits"))).ok
            listed.insert(0, ww.item(4))  # a new deposit moves the bad ones down the list
            assert (await ww.drive(clock, watcher.poll("deposits"))).ok
        warned = [entry for entry in logs if entry["event"] == "poll.malformed_record"]
        assert [(e["log_level"], e["transfer_id"], e["endpoint"]) for e in warned] == [
            ("warning", "2", "deposits"),
            ("warning", None, "deposits"),
        ]
        assert {(e["provider"], e["account"]) for e in warned} == {("westwallet", "main")}
        assert all(ww.SECRET not in str(e) and ww.API_KEY not in str(e) for e in logs)
        assert telemetry.malformed[("westwallet", "main", "deposits")] == 6
        total = watcher.state.totals[("BTC", DEP, State.OK)]
        assert (total.count, total.amount) == (1, Decimal("0.25"))
        assert watcher.health["deposits"].ok

    async def test_full_page_with_a_bad_record_still_pages_back(
        self, clock: FakeClock, responses: Any, session: aiohttp.ClientSession, tmp_path: Path
    ) -> None:
        """A full first page holding a malformed record is a full page: the next one is read."""
        config = westwallet_config(tmp_path)
        client = WestWallet(
            config.accounts[0],
            make_context(
                config.providers["westwallet"], make_http(session, "westwallet", clock), clock
            ),
        )
        items = [ww.item(n) for n in range(100, 100 - westwallet.PAGE_SIZE - 1, -1)]
        items[3] = ww.item(97, amount=-5)
        ww.serve_history(responses, items)
        obs = await ww.drive(clock, client.poll("deposits", AccountState()))
        assert len(obs.transfers) == westwallet.PAGE_SIZE  # 51 listed, one set aside
        assert obs.malformed == (
            Malformed("transactions.result[3]", obs.malformed[0].problem, "97"),
        )

    def test_answer_malformed_as_a_whole_fails_the_poll(self) -> None:
        """A result that is not a list is still BadPayload: there are no records to keep."""
        with pytest.raises(BadPayload):
            westwallet.parse_transactions(ww.decoded({"error": "ok", "result": {"1": 2}}), DEP)
