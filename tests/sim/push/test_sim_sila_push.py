"""The Sila simulator's webhooks: a JSON event per transaction change, off after 15 failures."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from decimal import Decimal

import aiohttp
import pytest
from structlog.testing import capture_logs

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
from walletwatch.sim.sila_push import DISABLE_AFTER

APP, USER = "app-handle", "user-handle"
PUSH = f"/_sim/sila/{APP}/{USER}/push"


@pytest.fixture(name="sim")
def fixture_sim(clock: SkipClock) -> Simulator:
    sim = Simulator(clock=clock, pusher=pusher(clock))
    sim.sila.add_app(APP)
    sim.sila.add_user(APP, USER)
    return sim


@pytest.fixture(name="base")
async def fixture_base(
    sim: Simulator, receiver: Receiver, http: aiohttp.ClientSession
) -> AsyncIterator[str]:
    async with serving(sim) as base:
        status, _ = await control(http, "POST", base + PUSH, {"url": receiver.push_url("sila")})
        assert status == 200
        yield base


def issue(sim: Simulator, amount: int = 100) -> str:
    """Add a queued issue (a deposit) to the wallet; return its id."""
    tx_id: str = sim.sila.add_transaction(APP, USER, type="issue", amount=Decimal(amount))
    return tx_id


@pytest.mark.usefixtures("base")
class TestWebhook:
    """What Sila sends."""

    async def test_event_shape(self, sim: Simulator, receiver: Receiver) -> None:
        """A new issue is POSTed as a transaction event naming it, its user and its status."""
        tx_id = issue(sim, 250)
        [push] = await receiver.wait_for(1)
        assert (push.method, push.path, push.content_type) == (
            "POST",
            f"/push/sila/{TOKEN}",
            "application/json",
        )
        event = push.json()
        listed = sim.sila.snapshot(APP, USER)["transactions"][0]
        assert set(event) == {"event_time", "event_type", "event_uuid", "event_details"}
        assert (event["event_type"], event["event_time"]) == ("transaction", listed["last_update"])
        assert uuid.UUID(event["event_uuid"])
        assert event["event_details"] == {
            "transaction": tx_id,
            "transaction_type": "issue",
            "entity": USER,
            "outcome": "queued",
            "sila_amount": 250,
            "processing_type": "STANDARD_ACH",
        }

    async def test_each_status_change_is_a_new_event(
        self, sim: Simulator, receiver: Receiver
    ) -> None:
        """Moving the issue on sends an event per status, each with its own event_uuid."""
        tx_id = issue(sim)
        sim.sila.set_status(APP, USER, tx_id, "pending")
        sim.sila.set_status(APP, USER, tx_id, "success")
        events = [push.json() for push in await receiver.wait_for(3)]
        assert [e["event_details"]["outcome"] for e in events] == ["queued", "pending", "success"]
        assert len({e["event_uuid"] for e in events}) == 3

    async def test_a_duplicate_delivery_repeats_the_same_event(
        self, sim: Simulator, base: str, receiver: Receiver, http: aiohttp.ClientSession
    ) -> None:
        """With duplicate 1, each event arrives twice, byte for byte, event_uuid included."""
        url = receiver.push_url("sila")
        status, view = await control(http, "POST", base + PUSH, {"url": url, "duplicate": 1})
        assert (status, view["duplicate"]) == (200, 1.0)
        issue(sim)
        first, second = await receiver.wait_for(2)
        assert first.body == second.body
        assert sim.pushes.subscription("sila", (APP, USER))["counts"]["duplicated"] == 1


@pytest.mark.usefixtures("base")
class TestDisabled:
    """Sila's rule: 15 failed deliveries in a row disable the subscription."""

    async def test_fifteen_failures_in_a_row_disable_it(
        self, sim: Simulator, base: str, receiver: Receiver, http: aiohttp.ClientSession
    ) -> None:
        """The 15th failure in a row disables the subscription (logged once); later events are
        not sent but counted; setting the URL again enables it."""
        receiver.answer = lambda _n: (503, b"down")
        with capture_logs() as logs:
            for _ in range(DISABLE_AFTER):
                issue(sim)
                await settled(sim)  # one at a time: "in a row" in a known order
            issue(sim)
            await settled(sim)
        assert len(receiver.received) == DISABLE_AFTER
        _, view = await control(http, "GET", base + PUSH)
        assert (view["disabled"], view["failed_in_a_row"]) == (True, DISABLE_AFTER)
        assert view["counts"] == {"failed": DISABLE_AFTER, "not_sent_disabled": 1}
        events = [entry["event"] for entry in logs]
        assert events == ["sim.push.failing", "sim.push.disabled"]
        assert all(TOKEN not in str(entry) for entry in logs)

        receiver.answer = lambda _n: (200, b"ok")
        await control(http, "POST", base + PUSH, {"url": receiver.push_url("sila")})
        issue(sim)
        await receiver.wait_for(DISABLE_AFTER + 1)
        _, view = await control(http, "GET", base + PUSH)
        assert (view["disabled"], view["counts"]) == (False, {"delivered": 1})

    async def test_a_success_between_failures_starts_the_count_again(
        self, sim: Simulator, receiver: Receiver
    ) -> None:
        """14 failures, a success, 14 failures: never 15 in a row, so never disabled."""
        down = DISABLE_AFTER - 1
        receiver.answer = lambda n: (200, b"ok") if n == down + 1 else (500, b"")
        for _ in range(2 * down + 1):
            issue(sim)
            await settled(sim)
        view = sim.pushes.subscription("sila", (APP, USER))
        assert (view["disabled"], view["failed_in_a_row"]) == (False, down)
        assert view["counts"] == {"failed": 2 * down, "delivered": 1}
