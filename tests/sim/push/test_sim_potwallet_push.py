"""The PotWallet simulator's merchant callback: a GET per receive, repeated until ``*ok*``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from decimal import Decimal

import aiohttp
import pytest

from tests.sim.pushing import (
    T0,
    TOKEN,
    Receiver,
    SkipClock,
    control,
    pusher,
    serving,
    settled,
)
from walletwatch.sim import Simulator
from walletwatch.sim.potwallet_push import ATTEMPTS

PUBLIC, PRIVATE = "pot-public", "pot-private"


@pytest.fixture(name="sim")
def fixture_sim(clock: SkipClock) -> Simulator:
    sim = Simulator(clock=clock, pusher=pusher(clock))
    sim.potwallet.add_account(PUBLIC, PRIVATE)
    return sim


@pytest.fixture(name="base")
async def fixture_base(sim: Simulator, receiver: Receiver) -> AsyncIterator[str]:
    async with serving(sim) as base, aiohttp.ClientSession() as http:
        url = receiver.push_url("pot", "secret=4321")
        status, _ = await control(
            http, "POST", f"{base}/_sim/potwallet/{PUBLIC}/push", {"url": url}
        )
        assert status == 200
        yield base


def receive(sim: Simulator, *, date: float | None = None) -> str:
    """Add a receive of 150.5 POT to the account; return its txid."""
    txid: str = sim.potwallet.add_transaction(
        PUBLIC, category="receive", amount=Decimal("150.5"), address="PAddr", date=date
    )
    return txid


@pytest.mark.usefixtures("base")
class TestCallback:
    """What PotWallet sends, and how often."""

    async def test_get_with_the_callback_query_and_the_payment(
        self, sim: Simulator, receiver: Receiver
    ) -> None:
        """The callback is a GET of the URL's own query plus success, amount, address, txid and
        confirmations."""
        receiver.answer = lambda _n: (200, b"*ok*")
        txid = receive(sim)
        [push] = await receiver.wait_for(1)
        assert (push.method, push.path, push.body) == ("GET", f"/push/pot/{TOKEN}", b"")
        assert push.query == [
            ("secret", "4321"),
            ("success", "true"),
            ("amount", "150.5"),
            ("address", "PAddr"),
            ("txid", txid),
            ("confirmations", "0"),
        ]
        assert (await settled(sim))["providers"]["potwallet"] == {"delivered": 1}

    async def test_repeats_with_backoff_until_the_body_is_exactly_ok(
        self, sim: Simulator, clock: SkipClock, receiver: Receiver
    ) -> None:
        """Answers that are not exactly ``*ok*`` (status aside) bring the callback again, after
        doubling waits, with the confirmations of the moment; ``*ok*`` stops it."""
        wrong = (b"ok", b"*OK*", b"*ok*\n", b" *ok*", b"", b"{}")
        receiver.answer = lambda n: (200, wrong[n - 1]) if n <= len(wrong) else (500, b"*ok*")
        receive(sim, date=T0 - 200)  # five 40 s blocks ago
        await receiver.wait_for(7)
        status = await settled(sim)
        assert len(receiver.received) == 7
        assert clock.waits == [1.0, 2.0, 4.0, 8.0, 16.0, 32.0]
        confirmations = [dict(push.query)["confirmations"] for push in receiver.received]
        assert confirmations == ["5"] * 6 + ["6"]  # 263 s after the receive on the 7th
        assert sim.pushes.subscription("potwallet", (PUBLIC,))["counts"] == {
            "delivered": 1,
            "failed": 6,
            "retried": 6,
        }
        assert status["providers"]["potwallet"]["delivered"] == 1

    async def test_gives_up_after_its_attempts(self, sim: Simulator, clock: SkipClock) -> None:
        """A receiver that never answers ``*ok*`` gets the callback ATTEMPTS times, then none."""
        receive(sim)
        await settled(sim)
        counts = sim.pushes.subscription("potwallet", (PUBLIC,))["counts"]
        assert counts == {"failed": ATTEMPTS, "retried": ATTEMPTS - 1, "abandoned": 1}
        assert max(clock.waits) == 60.0  # the backoff's cap

    async def test_sends_nothing_for_a_send(self, sim: Simulator, receiver: Receiver) -> None:
        """A send is no payment to an address: only the receive after it is called back."""
        receiver.answer = lambda _n: (200, b"*ok*")
        sim.potwallet.add_transaction(PUBLIC, category="send", amount=Decimal(3))
        txid = receive(sim)
        await receiver.wait_for(1)
        await settled(sim)
        assert [dict(push.query)["txid"] for push in receiver.received] == [txid]

    async def test_a_receive_scheduled_ahead_is_called_back_when_it_happens(
        self, sim: Simulator, clock: SkipClock, receiver: Receiver
    ) -> None:
        """A receive dated 90 s ahead waits those 90 s before its first callback."""
        receiver.answer = lambda _n: (200, b"*ok*")
        receive(sim, date=T0 + 90)
        [push] = await receiver.wait_for(1)
        assert clock.waits == [90.0]
        assert dict(push.query)["confirmations"] == "0"

    async def test_forged_callback_names_no_transaction_of_the_account(
        self, sim: Simulator, base: str, receiver: Receiver
    ) -> None:
        """A forged callback is shaped like a real one, for a txid the account does not have."""
        receiver.answer = lambda _n: (200, b"*ok*")
        async with aiohttp.ClientSession() as http:
            status, answer = await control(
                http, "POST", f"{base}/_sim/potwallet/{PUBLIC}/push/forge"
            )
        assert status == 202
        [push] = await receiver.wait_for(1)
        query = dict(push.query)
        assert (query["secret"], query["txid"]) == ("4321", answer["forged"]["txid"])
        assert sim.potwallet.transactions(PUBLIC) == []
