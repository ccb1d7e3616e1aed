"""The pure tracker: observations in, state and events out."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from decimal import Decimal

from hypothesis import example, given, settings
from hypothesis import strategies as st

from tests.fakes import START, FakePolicy
from walletwatch.events import Event
from walletwatch.model import Balance, Direction, Observation, State, Transfer
from walletwatch.tracker import (
    AccountState,
    Total,
    TotalKey,
    TrackedTransfer,
    TransferKey,
    fail,
    observe,
    to_look_up,
)

DEP, WD = Direction.DEPOSIT, Direction.WITHDRAWAL
POLICY = FakePolicy(low_balance={"USDT": Decimal(1000)})


def tx(
    id_: str,
    state: State = State.PENDING,
    *,
    direction: Direction = DEP,
    status: str | None = None,
    amount: str = "1.5",
    currency: str = "BTC",
    created_at: float | None = START,
    confirmations: int = 0,
    details: tuple[tuple[str, str], ...] = (),
) -> Transfer:
    """A transfer with sensible defaults."""
    return Transfer(
        id=id_,
        direction=direction,
        currency=currency,
        amount=Decimal(amount),
        status=status or str(state),
        state=state,
        confirmations=confirmations,
        created_at=created_at,
        details=details,
    )


def history(direction: Direction, *transfers: Transfer) -> Observation:
    """An observation of one direction's history."""
    endpoint = "deposits" if direction is DEP else "withdrawals"
    return Observation(endpoint, transfers=transfers, directions=frozenset({direction}))


def balances(**amounts: str) -> Observation:
    """An observation of balances."""
    return Observation(
        "balances", balances=tuple(Balance(c, Decimal(a)) for c, a in amounts.items())
    )


def run(
    steps: Sequence[Observation],
    policy: FakePolicy = POLICY,
    state: AccountState | None = None,
    now: float = START,
) -> tuple[AccountState, list[Event]]:
    """Apply observations in order, a second apart; return the final state and all events."""
    state = state or AccountState()
    events: list[Event] = []
    for i, obs in enumerate(steps):
        state, new = observe(state, obs, policy, now + i)
        events.extend(new)
    return state, events


def names(events: Sequence[Event]) -> list[str]:
    """Event names in order."""
    return [e.event for e in events]


class TestBaseline:
    """The first poll of a history records it without announcing it."""

    def test_first_poll_is_silent(self) -> None:
        """Transfers seen on a direction's first poll emit nothing, settled or not."""
        _, events = run([history(DEP, tx("1"), tx("2", State.OK))])
        assert events == []

    def test_baseline_is_per_direction(self) -> None:
        """A baseline of deposits does not make the first withdrawal poll loud."""
        state, _ = run([history(DEP, tx("1"))])
        _, events = run([history(WD, tx("9", direction=WD))], state=state)
        assert events == []

    def test_after_baseline_new_transfers_are_detected(self) -> None:
        """A transfer first seen after the baseline is detected."""
        _, events = run([history(DEP, tx("1")), history(DEP, tx("2"), tx("1"))])
        assert names(events) == ["deposit.detected"]
        assert events[0].fields["transfer_id"] == "2"


class TestTransfers:
    """State changes of transfers become events once each."""

    def test_deposit_confirmed(self) -> None:
        """pending -> ok gives deposit.confirmed with the previous state, and counts it."""
        state, events = run([history(DEP), history(DEP, tx("1")), history(DEP, tx("1", State.OK))])
        assert names(events) == ["deposit.detected", "deposit.confirmed"]
        assert events[1].fields["previous_state"] == "pending"
        assert state.totals[("BTC", DEP, State.OK)] == Total(1, Decimal("1.5"))

    def test_first_seen_final_gets_detected_and_final(self) -> None:
        """A transfer first seen already settled gets its detected and its final event."""
        state, events = run([history(WD), history(WD, tx("7", State.OK, direction=WD))])
        assert names(events) == ["withdrawal.detected", "withdrawal.completed"]
        assert state.totals[("BTC", WD, State.OK)].count == 1

    def test_withdrawal_ladder(self) -> None:
        """Raw status moves of a withdrawal are status changes; the end is completed."""
        steps = [
            history(WD),
            history(WD, tx("5", direction=WD, status="new")),
            history(WD, tx("5", direction=WD, status="moderation")),
            history(WD, tx("5", State.OK, direction=WD, status="done")),
        ]
        _, events = run(steps)
        assert names(events) == [
            "withdrawal.detected",
            "withdrawal.status_changed",
            "withdrawal.completed",
        ]
        assert events[1].fields["previous_status"] == "new"
        assert events[1].fields["status"] == "moderation"

    def test_failed_and_canceled(self) -> None:
        """Failed and canceled withdrawals both end in withdrawal.failed with their state."""
        steps = [
            history(WD),
            history(WD, tx("1", direction=WD), tx("2", direction=WD)),
            history(WD, tx("1", State.FAILED, direction=WD), tx("2", State.CANCELED, direction=WD)),
        ]
        _, events = run(steps)
        finals = [(e.event, e.fields["state"]) for e in events[2:]]
        assert finals == [("withdrawal.failed", "failed"), ("withdrawal.failed", "canceled")]

    def test_settlement_flap_is_one_fact(self) -> None:
        """Completed, back to pending, completed again: one completion, counted once."""
        steps = [
            history(WD),
            history(WD, tx("1", State.OK, direction=WD)),
            history(WD, tx("1", direction=WD)),
            history(WD, tx("1", State.OK, direction=WD)),
        ]
        state, events = run(steps)
        assert names(events) == [
            "withdrawal.detected",
            "withdrawal.completed",
            "withdrawal.status_changed",
        ]
        total = state.totals[("BTC", WD, State.OK)]
        assert (total.count, total.corrections) == (2, 1)  # net: counted once

    def test_unknown_status_is_not_success(self) -> None:
        """An unrecognized status stays in flight and is never counted as ok."""
        state, events = run(
            [history(WD), history(WD, tx("1", State.UNKNOWN, direction=WD, status="weird"))]
        )
        assert names(events) == ["withdrawal.detected"]
        assert [t.transfer.id for t in state.in_flight()] == ["1"]
        assert state.totals == {}

    def test_details_travel_with_the_events(self) -> None:
        """Provider-specific details (an AML verdict, a status name) appear in the events."""
        aml = (("aml_risk", "low"), ("status_name", "moderation"))
        _, events = run([history(DEP), history(DEP, tx("1", details=aml))])
        assert events[0].to_dict()["aml_risk"] == "low"
        assert events[0].to_dict()["status_name"] == "moderation"

    def test_details_never_overwrite_contract_fields(self) -> None:
        """A provider detail named like an event field (status, event) is dropped, not fatal."""
        clash = (("status", "fake"), ("event", "fake"), ("aml_risk", "high"))
        _, events = run([history(DEP), history(DEP, tx("1", details=clash))])
        body = events[0].to_dict()
        assert (body["event"], body["status"], body["aml_risk"]) == (
            "deposit.detected",
            "pending",
            "high",
        )

    def test_confirmations_alone_are_quiet(self) -> None:
        """A confirmation count rising without a state change updates state silently."""
        state, events = run(
            [history(DEP), history(DEP, tx("1")), history(DEP, tx("1", confirmations=3))]
        )
        assert names(events) == ["deposit.detected"]
        assert state.transfers[(DEP, "1")].transfer.confirmations == 3

    def test_currency_filter(self) -> None:
        """Transfers and balances outside the currency filter are ignored."""
        policy = FakePolicy(currencies=frozenset({"ETH"}))
        state, events = run(
            [history(DEP), history(DEP, tx("1")), balances(BTC="1", ETH="2")], policy
        )
        assert events == []
        assert set(state.balances) == {"ETH"}
        assert list(state.transfer_keys()) == []


class TestUnchanged:
    """A poll that brings nothing new leaves the state as it was: the very same object."""

    def steps(self) -> list[Observation]:
        """A baseline of deposits (settled and pending), withdrawals and balances."""
        return [
            history(DEP, tx("1", State.OK), tx("2"), tx("3", State.FAILED, status="rejected")),
            history(WD, tx("9", State.OK, direction=WD)),
            balances(USDT="5000", BTC="1"),
        ]

    def test_same_answers_give_the_same_state(self) -> None:
        """Equal answers (new objects, as every poll parses) return ``state`` itself, silently."""
        state, _ = run(self.steps())
        for i, obs in enumerate(self.steps()):
            new, events = observe(state, obs, POLICY, START + 60 + i)
            assert new is state
            assert events == []

    def test_first_poll_of_an_endpoint_is_a_change(self) -> None:
        """An endpoint polled for the first time is recorded (its failure count starts at 0)."""
        state, _ = run(self.steps()[:1])
        new, events = observe(state, Observation("gauges"), POLICY, START + 5)
        assert (new is state, new.failures["gauges"], events) == (False, 0, [])

    def test_a_quiet_change_of_a_settled_transfer_is_kept(self) -> None:
        """More confirmations of a settled deposit: a new state, no event, the record kept."""
        state, _ = run(self.steps())
        new, events = observe(
            state, history(DEP, tx("1", State.OK, confirmations=7)), POLICY, START + 60
        )
        assert events == []
        assert new != state
        assert new.unsaved[(DEP, "1")].transfer.confirmations == 7
        assert new.saved() == new
        assert new.saved().unsaved == {}

    def test_settled_transfers_are_compact(self) -> None:
        """Only transfers in flight are kept whole; settled ones are known all the same."""
        state, _ = run(self.steps())
        assert list(state.transfers) == [(DEP, "2")]
        assert sorted(state.transfer_keys()) == [(DEP, "1"), (DEP, "2"), (DEP, "3"), (WD, "9")]
        assert state.known(DEP, "3")
        assert state.known(WD, "9")
        assert not state.known(WD, "1")
        assert [state.state_of(DEP, i) for i in ("1", "2", "3", "4")] == [
            State.OK,
            State.PENDING,
            State.FAILED,
            None,
        ]


class TestStuck:
    """An in-flight transfer older than its threshold is announced once."""

    def test_stuck_once(self) -> None:
        """Crossing the threshold emits withdrawal.stuck once, however often it is seen."""
        policy = FakePolicy(withdrawal_stuck=3600)
        pending = history(WD, tx("1", direction=WD, created_at=START))
        state, events = run([history(WD), pending], policy)
        assert events[-1].event == "withdrawal.detected"
        state, stuck = observe(state, pending, policy, START + 3601)
        assert names(stuck) == ["withdrawal.stuck"]
        assert stuck[0].fields["age_seconds"] == 3601
        assert stuck[0].fields["threshold"] == 3600
        _, again = observe(state, pending, policy, START + 7200)
        assert again == []

    def test_exactly_at_threshold_is_not_stuck(self) -> None:
        """Age equal to the threshold is not yet stuck."""
        policy = FakePolicy(deposit_stuck=60)
        obs = history(DEP, tx("1", created_at=START))
        _, events = observe(AccountState(), obs, policy, START + 60)
        assert events == []

    def test_stuck_from_first_sight_without_created_at(self) -> None:
        """Without created_at the age counts from first sight."""
        policy = FakePolicy(deposit_stuck=60)
        obs = history(DEP, tx("1", created_at=None))
        state, _ = observe(AccountState(), obs, policy, START + 1000)
        _, early = observe(state, obs, policy, START + 1059)
        _, late = observe(state, obs, policy, START + 1061)
        assert early == []
        assert names(late) == ["deposit.stuck"]

    def test_already_stuck_at_baseline_is_announced(self) -> None:
        """A withdrawal already stuck when walletwatch starts is announced (a condition)."""
        policy = FakePolicy(withdrawal_stuck=3600)
        obs = history(WD, tx("1", direction=WD, created_at=START - 10_000))
        _, events = observe(AccountState(), obs, policy, START)
        assert names(events) == ["withdrawal.stuck"]

    def test_settled_is_never_stuck(self) -> None:
        """A settled transfer is not stuck however old it is."""
        obs = history(WD, tx("1", State.OK, direction=WD, created_at=START - 10**6))
        _, events = observe(AccountState(), obs, POLICY, START)
        assert events == []


class TestBalances:
    """Balance changes, and low/recovered once per crossing."""

    def test_first_sight_is_quiet_and_change_is_announced(self) -> None:
        """The first balance is a baseline; a change after it is balance.changed."""
        _, events = run([balances(BTC="1"), balances(BTC="1"), balances(BTC="0.5")])
        assert names(events) == ["balance.changed"]
        assert events[0].fields["amount"] == Decimal("0.5")
        assert events[0].fields["previous_amount"] == Decimal(1)

    def test_low_once_per_crossing(self) -> None:
        """balance.low fires once going under, balance.recovered once going back."""
        steps = [balances(USDT=a) for a in ("1500", "999", "998", "1000", "1200", "10")]
        _, events = run(steps)
        lows = [e.event for e in events if e.event != "balance.changed"]
        assert lows == ["balance.low", "balance.recovered", "balance.low"]

    def test_exactly_at_threshold_is_not_low(self) -> None:
        """A balance equal to its threshold is not low."""
        _, events = run([balances(USDT="1000")])
        assert events == []

    def test_low_at_start_is_announced(self) -> None:
        """A balance already low at the first poll raises balance.low."""
        _, events = run([balances(USDT="5")])
        assert names(events) == ["balance.low"]

    def test_codes_compare_without_case(self) -> None:
        """A provider's lower-case code meets the config's (normalized to upper case): its
        threshold applies and the currencies filter keeps it."""
        policy = FakePolicy(low_balance={"USDT": Decimal(1000)}, currencies=frozenset({"USDT"}))
        state, events = run([balances(usdt="0.11", BTC="1")], policy=policy)
        assert names(events) == ["balance.low"]
        assert set(state.balances) == {"usdt"}

    def test_missing_currency_is_dropped(self) -> None:
        """A currency gone from a complete balances answer is no longer reported."""
        state, _ = run([balances(BTC="1", ETH="2"), balances(BTC="1")])
        assert set(state.balances) == {"BTC"}


class TestHealth:
    """account.down after sustained failure, account.recovered after, once each."""

    def test_down_once_and_recovered_once(self) -> None:
        """Three failures in a row go down once; the next success recovers once."""
        state, events = AccountState(), []
        for i in range(5):
            state, new = fail(state, "balances", "timeout", POLICY, START + i)
            events.extend(new)
        assert names(events) == ["account.down"]
        assert events[0].fields["reason"] == "timeout"
        state, new = observe(state, balances(BTC="1"), POLICY, START + 10)
        assert names(new) == ["account.recovered"]
        state, new = observe(state, balances(BTC="1"), POLICY, START + 11)
        assert new == []

    def test_recovery_waits_for_every_failing_endpoint(self) -> None:
        """While another endpoint still fails, the account stays down."""
        state = AccountState()
        for i in range(3):
            state, _ = fail(state, "balances", "auth", POLICY, START + i)
            state, _ = fail(state, "deposits", "auth", POLICY, START + i)
        state, events = observe(state, balances(BTC="1"), POLICY, START + 5)
        assert events == []
        assert state.down
        _, events = observe(state, history(DEP), POLICY, START + 6)
        assert names(events) == ["account.recovered"]

    def test_a_second_outage_has_a_new_id(self) -> None:
        """Two outages are two facts with different ids."""
        state, ids = AccountState(), list[str]()
        for outage in range(2):
            for i in range(3):
                state, new = fail(state, "balances", "timeout", POLICY, START + i)
                ids.extend(e.event_id for e in new)
            state, _ = observe(state, balances(BTC=str(outage)), POLICY, START + 9)
        assert len(ids) == len(set(ids)) == 2


class TestEventIds:
    """The same fact always gets the same id; different facts get different ids."""

    def test_ids_are_stable_across_runs_and_times(self) -> None:
        """Running the same history at a different time gives the same ids."""
        steps = [history(DEP), history(DEP, tx("1")), history(DEP, tx("1", State.OK))]
        _, first = run(steps, now=START)
        _, second = run(steps, now=START + 5000)
        assert [e.event_id for e in first] == [e.event_id for e in second]
        assert first[0].ts != second[0].ts

    def test_ids_differ_between_accounts(self) -> None:
        """The same transfer id at two accounts is two facts."""
        steps = [history(DEP), history(DEP, tx("1"))]
        _, a = run(steps, FakePolicy(name="a"))
        _, b = run(steps, FakePolicy(name="b"))
        assert a[0].event_id != b[0].event_id


# Property tests: random histories of up to eight transfers moving through random states.
STATES = st.sampled_from(list(State))
ACTION = st.tuples(
    st.sampled_from([DEP, WD]),
    st.integers(min_value=1, max_value=8),
    STATES,
    st.sampled_from(["a", "b", "c"]),
    st.sampled_from(["0.5", "1", "250"]),
)


def replay(actions: list[tuple[Direction, int, State, str, str]]) -> list[Observation]:
    """Turn random actions into full-history observations, as a provider would answer."""
    current: dict[tuple[Direction, str], Transfer] = {}
    observations = [history(DEP), history(WD)]
    for direction, n, state, status, usdt in actions:
        key = (direction, str(n))
        current[key] = tx(
            str(n), state, direction=direction, status=f"{state}-{status}", created_at=None
        )
        observations.append(
            history(direction, *(t for (d, _), t in current.items() if d is direction))
        )
        observations.append(balances(USDT=usdt))
    return observations


class TestProperties:
    """Invariants over random histories."""

    @settings(max_examples=200, deadline=None)
    @given(st.lists(ACTION, max_size=30))
    def test_replaying_an_observation_emits_nothing(
        self, actions: list[tuple[Direction, int, State, str, str]]
    ) -> None:
        """After any history, seeing the same answer again emits no event."""
        observations = replay(actions)
        state, _ = run(observations)
        for obs in observations[-2:]:
            new, again = observe(state, obs, POLICY, START + 10**6)
            assert [e for e in again if not e.event.endswith(".stuck")] == []
            assert (new is state) == (again == [])

    @settings(max_examples=200, deadline=None)
    @given(st.lists(ACTION, max_size=30))
    def test_no_fact_is_emitted_twice(
        self, actions: list[tuple[Direction, int, State, str, str]]
    ) -> None:
        """Every event of a history has a distinct id."""
        _, events = run(replay(actions))
        ids = [e.event_id for e in events]
        assert len(ids) == len(set(ids))

    @settings(max_examples=100, deadline=None)
    @given(st.lists(ACTION, max_size=30))
    def test_event_ids_are_deterministic(
        self, actions: list[tuple[Direction, int, State, str, str]]
    ) -> None:
        """The same history always yields the same events with the same ids."""
        _, first = run(replay(actions))
        _, second = run(replay(actions), now=START + 123)
        assert [(e.event, e.event_id) for e in first] == [(e.event, e.event_id) for e in second]

    @settings(max_examples=100, deadline=None)
    @given(st.lists(ACTION, max_size=30))
    def test_net_totals_are_the_transfers_settled_now(
        self, actions: list[tuple[Direction, int, State, str, str]]
    ) -> None:
        """Counted less corrected is, per final state, the transfers in that state now."""
        observations = replay(actions)
        state, _ = run(observations)
        now: dict[TotalKey, Total] = {}
        latest: dict[tuple[Direction, str], Transfer] = {}
        for obs in observations:
            latest.update((t.key, t) for t in obs.transfers)
        for t in latest.values():
            if t.state.final:
                key = (t.currency, t.direction, t.state)
                held = now.get(key, Total())
                now[key] = Total(held.count + 1, held.amount + t.amount)
        net = {
            key: Total(t.count - t.corrections, t.amount - t.corrected)
            for key, t in state.totals.items()
            if t.count - t.corrections
        }
        assert net == now

    @settings(max_examples=100, deadline=None)
    @given(st.lists(ACTION, max_size=30))
    def test_counters_never_decrease(
        self, actions: list[tuple[Direction, int, State, str, str]]
    ) -> None:
        """Every field of every total only grows, step after step."""
        state = AccountState()
        for i, obs in enumerate(replay(actions)):
            new, _ = observe(state, obs, POLICY, START + i)
            for key, old in state.totals.items():
                total = new.totals[key]
                assert total.count >= old.count
                assert total.amount >= old.amount
                assert total.corrections >= old.corrections
                assert total.corrected >= old.corrected
            state = new


# Differential test: the tracker decides from compact settled entries exactly as it does from
# whole TrackedTransfers (what it kept for every transfer before, and still accepts).
QUIET_ACTION = st.tuples(
    st.sampled_from([DEP, WD]),
    st.integers(min_value=1, max_value=6),
    STATES,
    st.sampled_from(["a", "b"]),
    st.integers(min_value=0, max_value=2),  # confirmations: a quiet change
    st.sampled_from(["1", "1.0", "2"]),  # amounts: "1" and "1.0" are equal, differently written
    st.sampled_from([None, START - 100]),  # created_at: none, or long ago (stuck at once)
)
STUCK_SOON = FakePolicy(withdrawal_stuck=3, deposit_stuck=5)


def whole(state: AccountState, records: dict[TransferKey, TrackedTransfer]) -> AccountState:
    """``state`` with every compact settled transfer whole again, from its record."""
    transfers = dict(state.transfers)
    for key in state.transfer_keys():
        if key not in transfers:
            transfers[key] = records[key]
    return replace(state, transfers=transfers, settled={})


class TestCompactIsFaithful:
    """Compact settled entries yield the same events and state as whole records."""

    @settings(max_examples=200, deadline=None)
    @given(st.lists(QUIET_ACTION, max_size=40))
    @example([(WD, 1, State.OK, "a", 0, "1", None), (WD, 1, State.OK, "b", 0, "1", None)])
    @example([(DEP, 1, State.OK, "a", 0, "1", None), (DEP, 1, State.OK, "a", 2, "2", None)])
    @example([(WD, 1, s, "a", 0, "1", START - 100) for s in (State.PENDING, State.OK)] * 2)
    @example([(DEP, 1, s, "a", 0, "1", None) for s in (State.OK, State.UNKNOWN, State.FAILED)])
    def test_same_events_as_whole_records(
        self, actions: list[tuple[Direction, int, State, str, int, str, float | None]]
    ) -> None:
        """Any history, run compact and run with every transfer whole: the same events."""
        current: dict[tuple[Direction, str], Transfer] = {}
        observations = [history(DEP), history(WD)]
        for direction, n, state, status, confirmations, amount, created in actions:
            current[(direction, str(n))] = tx(
                str(n),
                state,
                direction=direction,
                status=f"{state}-{status}",
                confirmations=confirmations,
                amount=amount,
                created_at=created,
            )
            observations.append(
                history(direction, *(t for (d, _), t in current.items() if d is direction))
            )
        compact, reference = AccountState(), AccountState()
        compact_records: dict[TransferKey, TrackedTransfer] = {}
        reference_records: dict[TransferKey, TrackedTransfer] = {}
        compact_events: list[Event] = []
        reference_events: list[Event] = []
        for i, obs in enumerate(observations):
            looked_up = {k: compact_records[k].transfer for k in to_look_up(compact, obs)}
            compact, events = observe(compact, obs, STUCK_SOON, START + i, looked_up)
            compact_records.update(compact.unsaved)
            compact = compact.saved()
            compact_events.extend(events)
            reference, events = observe(reference, obs, STUCK_SOON, START + i)
            reference_records.update(reference.unsaved)
            reference = whole(reference, reference_records)
            reference_events.extend(events)
            assert all(t.transfer.state.in_flight for t in compact.transfers.values())
        assert compact_events == reference_events
        assert whole(compact, compact_records) == reference


def run_stored(
    steps: Sequence[Observation], policy: FakePolicy = POLICY
) -> tuple[AccountState, list[Event]]:
    """``run``, handing observe() the records it asks for as the watcher reads them."""
    state, events = AccountState(), list[Event]()
    records: dict[TransferKey, Transfer] = {}
    for i, obs in enumerate(steps):
        previous = {key: records[key] for key in to_look_up(state, obs)}
        state, new = observe(state, obs, policy, START + i, previous)
        records.update((key, tracked.transfer) for key, tracked in state.unsaved.items())
        state = state.saved()
        events.extend(new)
    return state, events


def settled_deposit(**changes: object) -> Transfer:
    """Deposit "1", ok, with ``changes``."""
    return replace(tx("1", State.OK), **changes)  # type: ignore[arg-type]


class TestMoneyFacts:
    """Reversals, amendments and their corrections, one rule at a time."""

    def test_fee_and_address_changes_are_amendments(self) -> None:
        """A new fee and a new address of a settled transfer each amend it, old values kept."""
        steps = [
            history(DEP),
            history(DEP, settled_deposit(fee=Decimal("0.1"), address="a1")),
            history(DEP, settled_deposit(fee=Decimal("0.2"), address="a1")),
            history(DEP, settled_deposit(fee=Decimal("0.2"), address="a2")),
        ]
        whole_state, events = run_stored(steps)
        amended = [e.fields for e in events if e.event == "transfer.amended"]
        assert [(f["previous_fee"], f["fee"]) for f in amended] == [
            (Decimal("0.1"), Decimal("0.2")),
            (Decimal("0.2"), Decimal("0.2")),
        ]
        assert [(f["previous_address"], f["address"]) for f in amended] == [
            ("a1", "a1"),
            ("a1", "a2"),
        ]
        total = whole_state.totals[("BTC", DEP, State.OK)]
        assert (total.count, total.amount, total.corrections) == (1, Decimal("1.5"), 0)

    def test_amendment_without_the_stored_record_is_still_reported(self) -> None:
        """When the old values cannot be read, the amendment is reported without them."""
        state, _ = run_stored([history(DEP), history(DEP, settled_deposit())])
        state = state.saved()
        new, events = observe(state, history(DEP, settled_deposit(amount=Decimal(9))), POLICY, 9e9)
        (amended,) = events
        assert amended.event == "transfer.amended"
        assert "previous_amount" not in amended.to_dict()
        assert new.totals == state.totals  # nothing known to correct by

    def test_move_to_a_currency_not_watched_is_an_amendment(self) -> None:
        """A known transfer whose currency becomes one the account does not watch is amended."""
        policy = FakePolicy(currencies=frozenset({"BTC"}))
        steps = [
            history(DEP),
            history(DEP, settled_deposit()),
            history(DEP, settled_deposit(currency="USDT")),
        ]
        state, events = run_stored(steps, policy)
        assert [e.event for e in events][-1] == "transfer.amended"
        assert state.totals[("BTC", DEP, State.OK)].corrections == 1

    def test_amount_change_in_flight_is_no_amendment(self) -> None:
        """A pending transfer's amount may change: it is not settled yet."""
        steps = [history(DEP), history(DEP, tx("1")), history(DEP, tx("1", amount="3"))]
        _, events = run_stored(steps)
        assert [e.event for e in events] == ["deposit.detected"]

    def test_baseline_deposit_reversed_takes_nothing_back(self) -> None:
        """A deposit settled in the baseline was never counted: its reversal corrects nothing."""
        steps = [history(DEP, settled_deposit()), history(DEP, tx("1"))]
        state, events = run_stored(steps)
        assert [e.event for e in events] == ["deposit.reversed"]
        assert state.totals == {}

    def test_withdrawal_back_from_completed_is_corrected_not_reversed(self) -> None:
        """deposit.reversed is for deposits; a withdrawal's step back is a status change."""
        steps = [
            history(WD),
            history(WD, tx("1", State.OK, direction=WD)),
            history(WD, tx("1", direction=WD)),
        ]
        state, events = run_stored(steps)
        assert [e.event for e in events][-1] == "withdrawal.status_changed"
        assert state.totals[("BTC", WD, State.OK)] == Total(1, Decimal("1.5"), 1, Decimal("1.5"))
