"""The simulator's push machinery: the control routes, the switches, and never slowing the API."""

from __future__ import annotations

from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import aiohttp
import pytest
from structlog.testing import capture_logs

from tests.sim.pushing import (
    T0,
    TOKEN,
    Receiver,
    SkipClock,
    control,
    pusher,
    receiving,
    serving,
    settled,
)
from tests.simthread import serve_in_thread
from walletwatch.sim import Simulator
from walletwatch.sim.push import Backoff, Subscription, Switches, push_url
from walletwatch.sim.westwallet import sign

KEY, SECRET = "ww-key", "ww-secret"
PUSH = f"/_sim/westwallet/{KEY}/push"


@pytest.fixture(name="sim")
def fixture_sim(clock: SkipClock) -> Simulator:
    sim = Simulator(clock=clock, pusher=pusher(clock))
    sim.westwallet.add_account(KEY, SECRET)
    return sim


@pytest.fixture(name="base")
async def fixture_base(sim: Simulator) -> AsyncIterator[str]:
    async with serving(sim) as base:
        yield base


def deposit(sim: Simulator) -> int:
    """Add a pending deposit to the account; return its id."""
    tx_id: int = sim.westwallet.add_transaction(
        KEY, type="receive", currency="BTC", amount=Decimal("0.5")
    )
    return tx_id


def ipn_id(body: bytes) -> int:
    """The transaction id an IPN names."""
    fields = dict(item.split("=", 1) for item in body.decode().split("&"))
    return int(fields["id"])


class TestControlRoutes:
    """Setting, showing and clearing an account's push URL."""

    async def test_set_show_clear(
        self, base: str, http: aiohttp.ClientSession, receiver: Receiver
    ) -> None:
        """The URL set is shown by its origin alone (never the token), and cleared by DELETE."""
        url = receiver.push_url("hot")
        status, view = await control(http, "POST", base + PUSH, {"url": url, "delay": "0.25"})
        assert status == 200
        assert view == {
            "target": receiver.url,
            "delay": 0.25,
            "duplicate": 0.0,
            "drop": 0.0,
            "failed_in_a_row": 0,
            "disabled": False,
            "counts": {},
        }
        status, shown = await control(http, "GET", base + PUSH)
        assert (status, shown) == (200, view)
        assert TOKEN not in str(shown)
        assert await control(http, "DELETE", base + PUSH) == (200, {"cleared": True})
        for method in ("GET", "DELETE"):
            status, _ = await control(http, method, base + PUSH)
            assert status == 404

    @pytest.mark.parametrize(
        ("path", "body", "expected"),
        [
            ("/_sim/westwallet/nobody/push", {"url": "http://127.0.0.1/x"}, 404),
            (PUSH, {}, 400),
            (PUSH, {"url": "ftp://127.0.0.1/x"}, 400),
            (PUSH, {"url": "/push/relative"}, 400),
            (PUSH, {"url": 5}, 400),
            (PUSH, {"url": "http://127.0.0.1/x", "drop": 2}, 400),
            (PUSH, {"url": "http://127.0.0.1/x", "delay": -1}, 400),
            (PUSH, {"url": "http://127.0.0.1/x", "retries": 3}, 400),
            (PUSH + "/forge", None, 404),  # no URL set
        ],
    )
    async def test_refusals(
        self, base: str, http: aiohttp.ClientSession, path: str, body: object, expected: int
    ) -> None:
        """Unknown accounts, bad URLs and switches, and providers that never call back."""
        status, _ = await control(http, "POST", base + path, body)
        assert status == expected

    async def test_no_route_where_the_provider_never_calls_back(
        self, base: str, http: aiohttp.ClientSession
    ) -> None:
        """A provider without callbacks has no push route."""
        url = f"{base}/_sim/kredswallet/k/push"
        async with http.post(url, json={"url": "http://127.0.0.1/x"}) as resp:
            assert resp.status in (404, 405)

    async def test_index_says_how(self, base: str, http: aiohttp.ClientSession) -> None:
        """The simulator's / gives the push route of each provider that calls back."""
        async with http.get(base + "/") as resp:
            page = await resp.text()
        for route in (
            "POST /_sim/westwallet/<api_key>/push",
            "POST /_sim/potwallet/<public_key>/push",
            "POST /_sim/sila/<app>/<user>/push",
            "POST /_sim/bitexbit/<api_key>/push",
        ):
            assert route in page
        assert "/_sim/kredswallet/" not in page


@pytest.fixture(name="subscribe")
async def fixture_subscribe(base: str, http: aiohttp.ClientSession, receiver: Receiver) -> Any:
    async def subscribe(**switches: float) -> None:
        body = {"url": receiver.push_url("hot"), **switches}
        status, _ = await control(http, "POST", base + PUSH, body)
        assert status == 200

    return subscribe


class TestSwitches:
    """The test switches: drop, duplicate, delay."""

    async def test_drop(self, sim: Simulator, receiver: Receiver, subscribe: Any) -> None:
        """A dropped push is counted and never sent; the next one, without the switch, is."""
        await subscribe(drop=1)
        deposit(sim)
        await subscribe()
        kept = deposit(sim)
        [push] = await receiver.wait_for(1)
        await settled(sim)
        assert ipn_id(push.body) == kept
        assert sim.pushes.status()["providers"]["westwallet"] == {"dropped": 1, "delivered": 1}

    async def test_duplicate(self, sim: Simulator, receiver: Receiver, subscribe: Any) -> None:
        """A duplicated push arrives twice, the same bytes."""
        await subscribe(duplicate=1)
        deposit(sim)
        first, second = await receiver.wait_for(2)
        assert first.body == second.body

    async def test_delay(
        self, sim: Simulator, clock: SkipClock, receiver: Receiver, subscribe: Any
    ) -> None:
        """A push waits the delay before it is sent."""
        await subscribe(delay=2.5)
        deposit(sim)
        await receiver.wait_for(1)
        assert clock.waits == [2.5]


class TestNeverSlowsTheApi:
    """A hung receiver holds pushes, never API answers; the queue has a bound."""

    async def test_hung_receiver(self, clock: SkipClock, receiver: Receiver) -> None:
        """With the receiver hung, deposits and signed reads are answered at once while pushes
        wait, those past the capacity are dropped as overflow (logged once), and the waiting
        ones go out when the receiver answers again."""
        sim = Simulator(clock=clock, pusher=pusher(clock, capacity=3, concurrency=1))
        sim.westwallet.add_account(KEY, SECRET)
        receiver.hold.clear()
        async with serving(sim) as base, aiohttp.ClientSession() as http:
            await control(http, "POST", base + PUSH, {"url": receiver.push_url("hot")})
            with capture_logs() as logs:
                for _ in range(5):
                    code, _ = await control(
                        http,
                        "POST",
                        f"{base}/_sim/westwallet/{KEY}/transactions",
                        {"type": "receive", "currency": "BTC", "amount": "1"},
                    )
                    assert code == 201
            await receiver.wait_for(1)  # the first push is out, and hangs
            ts = str(int(T0))
            headers = {
                "X-API-KEY": KEY,
                "X-ACCESS-TIMESTAMP": ts,
                "X-ACCESS-SIGN": sign(SECRET, ts, b""),
            }
            async with http.get(f"{base}/westwallet/wallet/balances", headers=headers) as resp:
                assert resp.status == 200
            status = sim.pushes.status()
            assert (status["pending"], status["providers"]["westwallet"]) == (3, {"overflow": 2})
            assert [entry["event"] for entry in logs] == ["sim.push.overflow"]
            receiver.hold.set()
            assert (await settled(sim))["providers"]["westwallet"] == {
                "overflow": 2,
                "delivered": 3,
            }

    async def test_stopping_cancels_pushes_out(self, sim: Simulator, receiver: Receiver) -> None:
        """Stopping the simulator with a push hung on its receiver ends at once, nothing pending."""
        receiver.hold.clear()
        async with serving(sim) as base, aiohttp.ClientSession() as http:
            await control(http, "POST", base + PUSH, {"url": receiver.push_url("hot")})
            deposit(sim)
            await receiver.wait_for(1)
        status = sim.pushes.status()
        assert (status["pending"], status["running"]) == (0, False)

    async def test_pushes_made_before_serving_wait_for_it(
        self, sim: Simulator, receiver: Receiver
    ) -> None:
        """A transfer moved before the simulator is served is pushed once it is."""
        sim.pushes.subscribe("westwallet", (KEY,), receiver.push_url("hot"))
        tx_id = deposit(sim)
        assert sim.pushes.status()["pending"] == 1
        async with serving(sim):
            [push] = await receiver.wait_for(1)
        assert ipn_id(push.body) == tx_id

    async def test_from_another_thread(self, receiver: Receiver) -> None:
        """A transfer moved from outside the simulator's thread is pushed from its loop."""
        sim = Simulator()
        sim.westwallet.add_account(KEY, SECRET)
        sim.pushes.subscribe("westwallet", (KEY,), receiver.push_url("hot"))
        with serve_in_thread(sim):
            tx_id = deposit(sim)
            [push] = await receiver.wait_for(1)
        assert ipn_id(push.body) == tx_id


class TestHealth:
    """Failures are counted and logged on transitions only, without the URL's token."""

    async def test_failing_then_recovered(
        self, sim: Simulator, receiver: Receiver, subscribe: Any
    ) -> None:
        """Two failures then a success: one failing event, one recovered event."""
        await subscribe()
        receiver.answer = lambda n: (500, b"") if n <= 2 else (200, b"ok")
        with capture_logs() as logs:
            for _ in range(3):
                deposit(sim)
                await settled(sim)
        assert [entry["event"] for entry in logs] == ["sim.push.failing", "sim.push.recovered"]
        assert logs[0]["reason"] == "HTTP 500"
        assert all(TOKEN not in str(entry) for entry in logs)
        counts = sim.pushes.subscription("westwallet", (KEY,))["counts"]
        assert counts == {"failed": 2, "delivered": 1}

    @pytest.mark.usefixtures("base")
    async def test_unreachable_receiver(self, sim: Simulator) -> None:
        """A receiver nobody listens on counts as a failed delivery."""
        async with receiving() as gone:
            dead = gone.push_url("hot")
        sim.pushes.subscribe("westwallet", (KEY,), dead)
        deposit(sim)
        await settled(sim)
        assert sim.pushes.subscription("westwallet", (KEY,))["counts"] == {"failed": 1}


class TestPieces:
    """The pure parts."""

    def test_backoff_doubles_to_its_cap(self) -> None:
        """1, 2, 4 ... seconds, never more than the cap, whatever the attempt."""
        backoff = Backoff(first=1.0, cap=60.0)
        assert [backoff.delay(n) for n in (1, 2, 3, 6, 7, 10_000)] == [1, 2, 4, 32, 60, 60]

    @pytest.mark.parametrize(
        "switches", [{"delay": -1.0}, {"drop": 1.5}, {"duplicate": -0.1}, {"delay": float("inf")}]
    )
    def test_switches_refuse_nonsense(self, switches: dict[str, float]) -> None:
        """A negative or infinite delay, or a fraction outside 0..1, is refused."""
        with pytest.raises(ValueError, match="must be"):
            Switches(**switches)

    def test_a_subscription_never_shows_its_url(self) -> None:
        """Neither its repr nor its view carries the URL's path."""
        sub = Subscription(push_url(f"https://example.test:8443/push/a/{TOKEN}"), Switches())
        assert TOKEN not in repr(sub)
        assert sub.view()["target"] == "https://example.test:8443"

    def test_record_reports_transitions_once(self) -> None:
        """failing on the first failure, disabled at the limit, recovered after a success."""
        sub = Subscription(push_url("http://127.0.0.1/p"), Switches())
        changes = [sub.record(delivered=False, disable_after=3) for _ in range(4)]
        assert changes == ["failing", None, "disabled", None]
        assert sub.record(delivered=True, disable_after=3) == "recovered"
        assert sub.failing == 0
