"""Retention: settled transfers are forgotten after `retention`, and never come back as news."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import replace
from pathlib import Path

import pytest

from tests.fakes import START, FakePolicy
from tests.test_tracker import DEP, WD, history, names, run, tx
from walletwatch.config import DEFAULT_RETENTION, parse_config
from walletwatch.errors import ConfigError
from walletwatch.model import Direction, State, Transfer
from walletwatch.tracker import KEEP_NEWEST, AccountState, Settled, observe, prune

DAY = 86400.0
POLICY = FakePolicy(retention=90 * DAY)
OLD = START - 200 * DAY  # created long before the tests' "now"
LATER = START + 91 * DAY  # more than the retention after first sight at START
ACCOUNT = {
    "name": "hot",
    "provider": "westwallet",
    "credentials": {"api_key": "k", "secret_key": "s"},
}


def baseline(*transfers: Transfer, direction: Direction = DEP) -> AccountState:
    """A state that has seen ``transfers`` (all of one direction) at START."""
    state, _ = run([history(direction, *transfers)], POLICY)
    return state


class TestPrune:
    """prune() forgets what is settled and old, and remembers how far it went."""

    def test_forgets_old_settled_transfers(self) -> None:
        """Beyond the newest KEEP_NEWEST, settled transfers with no news are forgotten."""
        old = [tx(str(n), State.OK, created_at=OLD + n) for n in range(KEEP_NEWEST + 20)]
        state = prune(baseline(*old), LATER - 90 * DAY)
        kept = sorted(int(i) for _, i in state.transfer_keys())
        assert kept == list(range(20, KEEP_NEWEST + 20))
        assert state.pruned == {DEP: OLD + 19}

    @pytest.mark.parametrize(
        ("transfer", "why"),
        [
            (tx("x", State.PENDING, created_at=OLD), "in flight"),
            (tx("x", State.OK, created_at=None), "no creation time"),
            (tx("x", State.OK, created_at=LATER - DAY), "recent"),
        ],
        ids=["in-flight", "no-created-at", "recent"],
    )
    def test_keeps(self, transfer: Transfer, why: str) -> None:
        """In-flight, timeless and recent transfers are kept whatever the count."""
        filler = [tx(str(n), State.OK, created_at=OLD) for n in range(KEEP_NEWEST + 5)]
        state = prune(baseline(transfer, *filler), LATER - 90 * DAY)
        assert state.known(DEP, "x"), why

    def test_first_sight_counts_as_news(self) -> None:
        """A transfer first seen recently is kept, however old its creation time."""
        old = [tx(str(n), State.OK, created_at=OLD) for n in range(KEEP_NEWEST + 5)]
        state = baseline(*old)
        assert prune(state, START - DAY) is state

    def test_nothing_to_forget_keeps_identity(self) -> None:
        """When nothing is pruned the very same state comes back (the store writes nothing)."""
        state = baseline(tx("1", State.OK, created_at=OLD))
        assert prune(state, LATER) is state

    def test_only_the_given_directions(self) -> None:
        """Pruning deposits leaves withdrawals alone."""
        old = [tx(str(n), State.OK, created_at=OLD, direction=WD) for n in range(KEEP_NEWEST + 5)]
        state = baseline(*old, direction=WD)
        assert prune(state, LATER, [DEP]) is state
        assert len(list(prune(state, LATER, [WD]).transfer_keys())) == KEEP_NEWEST


class NoScan(Mapping[str, Settled]):
    """A direction's settled transfers that may be looked up, never walked."""

    def __init__(self, entries: Mapping[str, Settled]) -> None:
        self.entries = entries

    def __getitem__(self, key: str) -> Settled:
        return self.entries[key]

    def __len__(self) -> int:
        return len(self.entries)

    def __iter__(self) -> Iterator[str]:
        raise AssertionError("walked every settled transfer")


class TestPruneTiming:
    """Pruning costs nothing until something can be forgotten, and then happens on time."""

    def test_forgotten_on_the_first_poll_past_the_retention(self) -> None:
        """The same page returns the same state, unwalked, until the retention has passed."""
        old = [tx(str(n), State.OK, created_at=OLD + n) for n in range(KEEP_NEWEST + 20)]
        page = history(DEP, *old)
        state = baseline(*old)  # first seen at START: news until START + retention
        due = START + POLICY.retention
        unwalked = replace(state, settled={DEP: NoScan(state.settled[DEP])})
        for now in (START + 60, START + DAY, due - 1, due):
            new, events = observe(unwalked, page, POLICY, now)
            assert (new is unwalked, events) == (True, [])
        pruned, events = observe(state, page, POLICY, due + 1)
        assert events == []
        kept = sorted(int(i) for _, i in pruned.transfer_keys())
        assert kept == list(range(20, KEEP_NEWEST + 20))
        assert pruned.pruned == {DEP: OLD + 19}
        again, _ = observe(pruned, page, POLICY, due + 10 * DAY)
        assert again is pruned

    def test_a_new_transfer_pushes_the_oldest_out(self) -> None:
        """With KEEP_NEWEST old transfers kept, a new one makes the oldest go at once."""
        old = [tx(str(n), State.OK, created_at=OLD + n) for n in range(KEEP_NEWEST)]
        state, events = observe(baseline(*old), history(DEP, *old), POLICY, LATER)
        assert (len(list(state.transfer_keys())), events) == (KEEP_NEWEST, [])
        fresh = tx("new", State.OK, created_at=LATER)
        state, events = observe(state, history(DEP, fresh, *old), POLICY, LATER + 60)
        assert names(events) == ["deposit.detected", "deposit.confirmed"]
        assert (state.known(DEP, "0"), state.known(DEP, "new")) == (False, True)
        assert state.pruned == {DEP: OLD}

    def test_a_transfer_that_settles_can_go_at_once(self) -> None:
        """An old transfer kept while in flight is forgotten as soon as it settles."""
        old = [tx(str(n), State.OK, created_at=OLD + n) for n in range(KEEP_NEWEST)]
        late = tx("late", created_at=OLD - 1)
        state, events = observe(baseline(late, *old), history(DEP, late, *old), POLICY, LATER)
        assert state.known(DEP, "late")
        settled = tx("late", State.OK, created_at=OLD - 1)
        state, events = observe(state, history(DEP, settled, *old), POLICY, LATER + 60)
        assert names(events) == ["deposit.confirmed"]
        assert not state.known(DEP, "late")
        assert state.pruned == {DEP: OLD - 1}


class TestNeverNewsAgain:
    """A forgotten transfer that a provider lists again is not announced again."""

    def test_reappearing_transfer_is_silent(self) -> None:
        """After pruning, the full old history on a page again emits nothing and adds nothing."""
        old = [tx(str(n), State.OK, created_at=OLD + n) for n in range(KEEP_NEWEST + 20)]
        state = baseline(*old)
        state, events = observe(state, history(DEP, *old), POLICY, LATER)
        assert events == []
        assert len(list(state.transfer_keys())) == KEEP_NEWEST
        again, events = observe(state, history(DEP, *old), POLICY, LATER + 60)
        assert events == []
        assert again is state

    def test_new_transfers_are_still_news(self) -> None:
        """A transfer created after the prune mark is detected as usual."""
        old = [tx(str(n), State.OK, created_at=OLD + n) for n in range(KEEP_NEWEST + 20)]
        state, _ = observe(baseline(*old), history(DEP, *old), POLICY, LATER)
        fresh = tx("new", State.OK, created_at=LATER)
        state, events = observe(state, history(DEP, fresh, *old), POLICY, LATER + 60)
        assert names(events) == ["deposit.detected", "deposit.confirmed"]

    def test_flap_after_pruning_is_not_a_second_settlement(self) -> None:
        """A forgotten settled transfer that shows up pending, then ok, stays forgotten."""
        old = [tx(str(n), State.OK, created_at=OLD + n) for n in range(KEEP_NEWEST + 20)]
        state, _ = observe(baseline(*old), history(DEP, *old), POLICY, LATER)
        flapped = tx("0", State.PENDING, created_at=OLD)
        state, events = observe(state, history(DEP, flapped), POLICY, LATER + 1)
        state, more = observe(state, history(DEP, old[0]), POLICY, LATER + 2)
        assert events + more == []


class TestConfig:
    """`retention` is an account key (and a default), at least a day."""

    def test_default_and_override(self, tmp_path: Path) -> None:
        """90 days unless the account or the defaults say otherwise."""
        accounts = [ACCOUNT, {**ACCOUNT, "name": "cold", "retention": "400d"}]
        config = parse_config(
            {"defaults": {"retention": "30d"}, "accounts": accounts},
            base_dir=tmp_path,
            environ={},
        )
        assert [a.retention for a in config.accounts] == [30 * DAY, 400 * DAY]
        bare = parse_config({"accounts": [ACCOUNT]}, base_dir=tmp_path, environ={})
        assert bare.accounts[0].retention == DEFAULT_RETENTION == 90 * DAY

    @pytest.mark.parametrize(
        ("value", "problem"),
        [
            ("12h", "accounts[0].retention: must be at least 1d, got '12h'"),
            (
                "forever",
                (
                    "accounts[0].retention: invalid duration 'forever': a number and a unit "
                    "(ms, s, m, h, d) with no spaces, or several from the largest unit down, "
                    "e.g. '30s', '1h30m'"
                ),
            ),
        ],
    )
    def test_bad_values(self, tmp_path: Path, value: str, problem: str) -> None:
        """Too short or not a duration: one problem with its path."""
        with pytest.raises(ConfigError) as caught:
            parse_config(
                {"accounts": [{**ACCOUNT, "retention": value}]},
                base_dir=tmp_path,
                environ={},
            )
        assert caught.value.problems == (problem,)
