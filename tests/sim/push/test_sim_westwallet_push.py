"""The WestWallet simulator's IPN: a form POST per deposit that moves, to the URL set per key."""

from __future__ import annotations

from collections.abc import AsyncIterator
from decimal import Decimal
from urllib.parse import parse_qsl

import aiohttp
import pytest

from tests.sim.pushing import (
    TOKEN,
    Receiver,
    SkipClock,
    control,
    pusher,
    serving,
    settled,
)
from walletwatch.sim import Simulator

KEY, SECRET = "ww-key", "ww-secret"


@pytest.fixture(name="sim")
def fixture_sim(clock: SkipClock) -> Simulator:
    sim = Simulator(clock=clock, pusher=pusher(clock))
    sim.westwallet.add_account(KEY, SECRET)
    return sim


@pytest.fixture(name="base")
async def fixture_base(sim: Simulator) -> AsyncIterator[str]:
    async with serving(sim) as base:
        yield base


@pytest.fixture(name="subscribed")
async def fixture_subscribed(base: str, http: aiohttp.ClientSession, receiver: Receiver) -> str:
    status, _ = await control(
        http, "POST", f"{base}/_sim/westwallet/{KEY}/push", {"url": receiver.push_url("hot")}
    )
    assert status == 200
    return base


@pytest.mark.usefixtures("subscribed")
class TestIpn:
    """What WestWallet sends, and when."""

    async def test_deposit_is_a_form_post_of_the_documented_fields(
        self, sim: Simulator, receiver: Receiver
    ) -> None:
        """A new deposit is POSTed form-encoded with the doc's nine fields, amount plain."""
        tx_id = sim.westwallet.add_transaction(
            KEY,
            type="receive",
            currency="BTC",
            amount=Decimal("0.00000010"),
            address="bc1qaddress",
            txid="beef",
        )
        [push] = await receiver.wait_for(1)
        assert (push.method, push.path) == ("POST", f"/push/hot/{TOKEN}")
        assert push.content_type == "application/x-www-form-urlencoded"
        assert parse_qsl(push.body.decode(), keep_blank_values=True) == [
            ("id", str(tx_id)),
            ("amount", "0.00000010"),
            ("address", "bc1qaddress"),
            ("dest_tag", ""),
            ("label", ""),
            ("currency", "BTC"),
            ("status", "pending"),
            ("blockchain_confirmations", "0"),
            ("blockchain_hash", "beef"),
        ]

    async def test_status_change_sends_another(self, sim: Simulator, receiver: Receiver) -> None:
        """Completing the deposit sends a second IPN with the new status and confirmations."""
        tx_id = sim.westwallet.add_transaction(
            KEY, type="receive", currency="USDT", amount=Decimal(5)
        )
        sim.westwallet.set_status(KEY, tx_id, "completed", confirmations=3)
        first, second = await receiver.wait_for(2)
        fields = dict(parse_qsl(second.body.decode(), keep_blank_values=True))
        assert (fields["id"], fields["status"], fields["blockchain_confirmations"]) == (
            str(tx_id),
            "completed",
            "3",
        )
        assert dict(parse_qsl(first.body.decode()))["status"] == "pending"

    async def test_withdrawals_send_nothing(self, sim: Simulator, receiver: Receiver) -> None:
        """A send gets no IPN: the next push to arrive is the deposit made after it."""
        sim.westwallet.add_transaction(KEY, type="send", currency="BTC", amount=Decimal(1))
        deposit = sim.westwallet.add_transaction(
            KEY, type="receive", currency="BTC", amount=Decimal(2)
        )
        await receiver.wait_for(1)
        await settled(sim)
        [push] = receiver.received
        assert dict(parse_qsl(push.body.decode()))["id"] == str(deposit)

    async def test_sent_once_even_when_refused(self, sim: Simulator, receiver: Receiver) -> None:
        """An IPN answered 500 is counted failed and not repeated (the doc promises no retry)."""
        receiver.answer = lambda _n: (500, b"down")
        sim.westwallet.add_transaction(KEY, type="receive", currency="BTC", amount=Decimal(1))
        await receiver.wait_for(1)
        status = await settled(sim)
        assert len(receiver.received) == 1
        assert status["providers"]["westwallet"] == {"failed": 1}

    async def test_forged_push_names_a_transaction_that_does_not_exist(
        self, sim: Simulator, receiver: Receiver, base: str, http: aiohttp.ClientSession
    ) -> None:
        """A forged IPN carries an id the account does not hold, in the same shape."""
        status, answer = await control(http, "POST", f"{base}/_sim/westwallet/{KEY}/push/forge")
        assert status == 202
        [push] = await receiver.wait_for(1)
        fields = dict(parse_qsl(push.body.decode(), keep_blank_values=True))
        assert fields["id"] == str(answer["forged"]["id"])
        assert fields["status"] == "completed"
        assert sim.westwallet.snapshot(KEY)["transactions"] == []
        assert sim.pushes.subscription("westwallet", (KEY,))["counts"]["forged"] == 1
