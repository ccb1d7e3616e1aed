"""The bitexbit simulator's callbacks: each deposit and withdrawal that moves, POSTed as JSON."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from decimal import Decimal

import aiohttp
import pytest

from tests.sim.pushing import TOKEN, Receiver, SkipClock, control, pusher, serving
from walletwatch.sim import Simulator
from walletwatch.sim.common import dump_json

KEY, SECRET = "bx-key", "bx-secret"


@pytest.fixture(name="sim")
def fixture_sim(clock: SkipClock) -> Simulator:
    sim = Simulator(clock=clock, pusher=pusher(clock))
    sim.bitexbit.add_account(KEY, SECRET)
    return sim


@pytest.fixture(name="base")
async def fixture_base(sim: Simulator, receiver: Receiver) -> AsyncIterator[str]:
    async with serving(sim) as base, aiohttp.ClientSession() as http:
        url = receiver.push_url("bx")
        status, _ = await control(http, "POST", f"{base}/_sim/bitexbit/{KEY}/push", {"url": url})
        assert status == 200
        yield base


def listed(item: object) -> object:
    """An item as JSON carries it, numbers exact."""
    return json.loads(dump_json(item), parse_float=Decimal)


@pytest.mark.usefixtures("base")
class TestCallback:
    """What bitexbit sends, and when."""

    async def test_deposit_is_posted_as_its_history_lists_it(
        self, sim: Simulator, receiver: Receiver
    ) -> None:
        """A new deposit is a JSON POST of the deposit exactly as /wallet/history lists it."""
        deposit_id = sim.bitexbit.add_deposit(
            KEY, ticker="USDT", network="tron", amount=Decimal("12.5"), required_confirmations=2
        )
        [push] = await receiver.wait_for(1)
        assert (push.method, push.path) == ("POST", f"/push/bx/{TOKEN}")
        assert push.content_type == "application/json"
        body = push.json()
        assert body == listed(sim.bitexbit.deposit(KEY, deposit_id))
        assert (body["status"], body["amount"], body["actual_confirmations"]) == ("1", "12.5", 0)

    async def test_confirmations_and_status_send_again(
        self, sim: Simulator, receiver: Receiver
    ) -> None:
        """Each confirmation is called back, the last with the deposit confirmed ("5")."""
        deposit_id = sim.bitexbit.add_deposit(
            KEY, ticker="BTC", network="bitcoin", amount=Decimal(1), required_confirmations=2
        )
        sim.bitexbit.update_deposit(KEY, deposit_id, confirmations=1)
        sim.bitexbit.update_deposit(KEY, deposit_id, confirmations=2)
        pushes = await receiver.wait_for(3)
        seen = [(p.json()["actual_confirmations"], p.json()["status"]) for p in pushes]
        assert seen == [(0, "1"), (1, "1"), (2, "5")]

    async def test_withdrawal_is_called_back_at_each_status(
        self, sim: Simulator, receiver: Receiver
    ) -> None:
        """A withdrawal is called back when created (10) and at each status it climbs to."""
        withdrawal_id = sim.bitexbit.add_withdrawal(
            KEY, ticker="USDT", network="tron", amount=Decimal("22.75")
        )
        sim.bitexbit.advance_withdrawal(KEY, withdrawal_id)
        sim.bitexbit.set_withdrawal_status(KEY, withdrawal_id, 30)
        pushes = await receiver.wait_for(3)
        assert [p.json()["status"] for p in pushes] == [10, 20, 30]
        last = pushes[-1].json()
        assert last == listed(sim.bitexbit.withdrawal(KEY, withdrawal_id))
        assert (last["id"], last["amount"]) == (withdrawal_id, Decimal("22.75"))
        assert last["txid"] is not None

    async def test_forged_callback_names_no_deposit_of_the_account(
        self, sim: Simulator, base: str, receiver: Receiver
    ) -> None:
        """A forged callback is a deposit in the listed shape that the account does not hold."""
        sim.bitexbit.add_deposit(KEY, ticker="USDT", network="tron", amount=Decimal(1))
        await receiver.wait_for(1)
        async with aiohttp.ClientSession() as http:
            status, answer = await control(http, "POST", f"{base}/_sim/bitexbit/{KEY}/push/forge")
        assert status == 202
        real, forged = await receiver.wait_for(2)
        assert forged.json()["txid"] == answer["forged"]["txid"]
        assert set(forged.json()) == set(real.json())
        held = {item["txid"] for item in sim.bitexbit.snapshot(KEY)["deposits"]}
        assert answer["forged"]["txid"] not in held
