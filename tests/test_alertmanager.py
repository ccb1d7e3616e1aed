"""The Alertmanager sink: per-transfer alerts fired, re-posted, resolved, across restarts."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from prometheus_client import CollectorRegistry

from tests.fakes import FakeClock, FakePolicy
from tests.test_reload import ACCOUNTS, body, write
from tests.test_sinks import commit
from tests.test_store import captured_logs
from tests.test_webhook import free_port
from walletwatch.app import Daemon
from walletwatch.asyncstore import AsyncStore
from walletwatch.clock import SystemClock
from walletwatch.config import AlertmanagerConfig, Secret, parse_config
from walletwatch.emitter import Emitter
from walletwatch.errors import ConfigError
from walletwatch.events import Event
from walletwatch.metrics import WalletwatchCollector
from walletwatch.model import Direction, State, Transfer
from walletwatch.sim import Simulator, start
from walletwatch.sinks import AlertmanagerSink, Dispatcher
from walletwatch.sinks.alerts import (
    AHEAD,
    REPOST,
    REVERSED,
    REVERSED_FOR,
    STUCK,
    TEXT_MAX,
    Alert,
    key_of,
    on_event,
    payload,
    settled,
)
from walletwatch.store import Store
from walletwatch.telemetry import Telemetry

TOKEN = "am-token-0123456789"
PASSWORD = "am-passw0rd-secret"


def transfer(
    transfer_id: str = "tx-1",
    direction: Direction = Direction.WITHDRAWAL,
    state: State = State.PENDING,
    status: str = "pending",
    txid: str | None = "0xfeed",
) -> Transfer:
    """A BTC transfer of 0.25 created at tests.fakes.START - 7200."""
    return Transfer(
        id=transfer_id,
        direction=direction,
        currency="BTC",
        amount=Decimal("0.25"),
        status=status,
        state=state,
        txid=txid,
        created_at=FakeClock().time() - 7200,
    )


def stuck(t: Transfer, now: float, threshold: float = 3600.0) -> Event:
    """The stuck event the tracker makes of ``t`` at ``now``."""
    out = Emitter(FakePolicy(name="hot"), now)
    age = int(now - (t.created_at or now))
    out.transfer(f"{t.direction}.stuck", t, "stuck", threshold=int(threshold), age_seconds=age)
    return out.events[0]


def final(t: Transfer, now: float) -> Event:
    """The final event the tracker makes of ``t``, settled, at ``now``."""
    out = Emitter(FakePolicy(name="hot"), now)
    ok = "confirmed" if t.direction is Direction.DEPOSIT else "completed"
    names = {State.OK: f"{t.direction}.{ok}", State.FAILED: f"{t.direction}.failed"}
    out.transfer(names[t.state], t, t.state)
    return out.events[0]


def reversed_event(t: Transfer, now: float) -> Event:
    """The deposit.reversed event of ``t``, back to pending after ok."""
    out = Emitter(FakePolicy(name="hot"), now)
    out.transfer("deposit.reversed", t, "reversed", 2, previous_state="ok", previous_status="done")
    return out.events[0]


def ts(text: str) -> float:
    """Seconds since the epoch of an RFC 3339 time."""
    return datetime.fromisoformat(text).timestamp()


class FakeAlertmanager:
    """POST /api/v2/alerts on loopback: records each body, answers as scripted."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.base = f"http://am:{PASSWORD}@127.0.0.1:{port}/prefix"
        self.posts: list[list[dict[str, Any]]] = []  # bodies answered 2xx
        self.headers: list[dict[str, str]] = []
        self.script: list[int] = []  # statuses for the next requests, then 200
        self.delay = 0.0
        self.echo = False  # answer errors with the request's headers and URL in the body
        self._runner: web.AppRunner | None = None

    @property
    def alerts(self) -> list[dict[str, Any]]:
        """Every alert accepted, in order."""
        return [alert for body in self.posts for alert in body]

    async def up(self) -> None:
        """Start answering."""
        app = web.Application()
        app.router.add_post("/prefix/api/v2/alerts", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def down(self) -> None:
        """Stop answering: connections are refused."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _handle(self, request: web.Request) -> web.Response:
        body = json.loads(await request.read())
        if self.delay:
            await asyncio.sleep(self.delay)
        status = self.script.pop(0) if self.script else 200
        self.headers.append(dict(request.headers))
        if 200 <= status < 300:
            self.posts.append(body)
            return web.Response(status=status)
        text = f"bad alert {status}"
        if self.echo:
            text += f" {dict(request.headers)} {request.url}"
        return web.Response(status=status, text=text)


@pytest.fixture(name="am")
async def fixture_am() -> AsyncIterator[FakeAlertmanager]:
    """A fake Alertmanager on a free port, not yet answering."""
    am = FakeAlertmanager(free_port())
    yield am
    await am.down()


@pytest.fixture(name="store")
def fixture_store(tmp_path: Path) -> Iterator[AsyncStore]:
    """A state database on disk."""
    store = AsyncStore(Store(tmp_path / "state.db"))
    yield store
    store.close()


class Rig:
    """A dispatcher with one Alertmanager sink, the transfers in flight, and its metrics."""

    def __init__(
        self,
        store: AsyncStore,
        session: aiohttp.ClientSession,
        clock: FakeClock,
        am: FakeAlertmanager,
        timeout: float = 5.0,
    ) -> None:
        self.store, self.clock = store, clock
        self.in_flight: dict[tuple[str, str, str], bool | None] = {}
        self.telemetry = Telemetry()
        config = AlertmanagerConfig(
            name="am",
            url=Secret(am.base),
            headers={"X-Api-Key": Secret(TOKEN)},
            timeout=timeout,
        )
        self.sink = AlertmanagerSink(config, session, clock, store, self.lookup, check_every=10.0)
        self.dispatcher = Dispatcher(store, [self.sink], clock, telemetry=self.telemetry)
        self.registry = CollectorRegistry()
        self.registry.register(WalletwatchCollector(lambda: (), self.telemetry, clock))

    def lookup(self, account: str, direction: str, transfer_id: str) -> bool | None:
        """In flight unless told otherwise."""
        return self.in_flight.get((account, direction, transfer_id), True)

    def metric(self, name: str) -> float | None:
        """One delivery metric of the sink."""
        return self.registry.get_sample_value(name, {"sink": "am"})

    async def held(self) -> dict[str, str]:
        """The firing alerts the store holds for the sink."""
        return await self.store.call(self.store.store.firing, "am")


@pytest.fixture(name="rig")
async def fixture_rig(
    store: AsyncStore, am: FakeAlertmanager, clock: FakeClock
) -> AsyncIterator[Rig]:
    """A dispatcher feeding the fake Alertmanager from a real outbox."""
    async with aiohttp.ClientSession() as session:
        rig = Rig(store, session, clock, am)
        await rig.dispatcher.prepare()
        yield rig


class TestAlerts:
    """What each event fires or resolves, and the JSON Alertmanager gets."""

    def test_stuck_event_fires_one_alert(self, clock: FakeClock) -> None:
        """Labels name the transfer; annotations carry txid, amount, status, age, runbook."""
        t = transfer()
        change = on_event({}, stuck(t, clock.time()))
        assert change is not None
        (alert,) = change.post
        assert change.hold == {alert.key: alert}
        body = payload(alert, clock.time())
        assert body["labels"] == {
            "alertname": STUCK,
            "provider": "westwallet",
            "account": "hot",
            "currency": "BTC",
            "direction": "withdrawal",
            "transfer_id": "tx-1",
            "severity": "critical",
        }
        notes = body["annotations"]
        assert (notes["txid"], notes["amount"], notes["status"]) == ("0xfeed", "0.25", "pending")
        assert notes["age"] == "2h"
        assert notes["runbook_url"] == "docs/runbook.md#walletwatchtransferstuck"
        assert "0xfeed" in notes["description"]
        assert "In flight for 2h." in notes["description"]
        assert "withdrawal tx-1 stuck at westwallet account hot" in notes["summary"]
        # Stuck since the threshold passed: an hour after it began.
        assert ts(body["startsAt"]) == clock.time() - 3600
        assert ts(body["endsAt"]) == clock.time() + AHEAD

    def test_deposit_stuck_is_a_warning(self, clock: FakeClock) -> None:
        """severity is the stuck event's."""
        change = on_event({}, stuck(transfer(direction=Direction.DEPOSIT), clock.time()))
        assert change is not None
        assert change.post[0].labels["severity"] == "warning"
        assert change.post[0].labels["direction"] == "deposit"

    @pytest.mark.parametrize("state", [State.OK, State.FAILED])
    def test_final_event_resolves_at_its_time(self, clock: FakeClock, state: State) -> None:
        """withdrawal.completed or .failed posts the alert with endsAt = the event's time."""
        t = transfer()
        fired = on_event({}, stuck(t, clock.time()))
        assert fired is not None
        done = replace_state(t, state)
        change = on_event(fired.hold, final(done, clock.time() + 90))
        assert change is not None
        assert change.forget == (key_of("hot", "withdrawal", "tx-1"),)
        body = payload(change.post[0], clock.time() + 500)
        assert ts(body["endsAt"]) == clock.time() + 90
        assert body["annotations"]["status"] == done.status
        assert body["annotations"]["age"] == "2h1m30s"  # up to the end, not the post

    def test_events_of_other_transfers_change_nothing(self, clock: FakeClock) -> None:
        """A final event of a transfer not firing, or a balance event, posts nothing."""
        fired = on_event({}, stuck(transfer(), clock.time()))
        assert fired is not None
        other = replace_state(transfer("tx-2"), State.OK)
        assert on_event(fired.hold, final(other, clock.time())) is None
        balance = Event("balance.changed", "id", clock.time(), "westwallet", "hot", {})
        assert on_event(fired.hold, balance) is None

    def test_deposit_reversed_fires_once_for_a_day(self, clock: FakeClock) -> None:
        """A one-shot alert ending 24 h after the event, held nowhere."""
        t = transfer(direction=Direction.DEPOSIT)
        change = on_event({}, reversed_event(t, clock.time()))
        assert change is not None
        assert change.hold == {}
        assert change.forget == ()
        body = payload(change.post[0], clock.time() + 30)
        assert body["labels"]["alertname"] == REVERSED
        assert body["labels"]["severity"] == "critical"
        assert ts(body["startsAt"]) == clock.time()
        assert ts(body["endsAt"]) == clock.time() + REVERSED_FOR
        assert body["annotations"]["runbook_url"] == "docs/runbook.md#walletwatchdepositreversed"
        assert "'done'" in body["annotations"]["description"]

    def test_left_in_flight_is_resolved_unknown_is_kept(self, clock: FakeClock) -> None:
        """settled() resolves what the daemon says is not in flight, keeps what it cannot tell."""
        held: dict[str, Alert] = {}
        for name in ("gone", "kept", "unsure"):
            change = on_event(held, stuck(transfer(name), clock.time()))
            assert change is not None
            held.update(change.hold)
        answers = {"gone": False, "kept": True, "unsure": None}
        change = settled(held, lambda _a, _d, i: answers[i], clock.time() + 5)
        assert change.forget == (key_of("hot", "withdrawal", "gone"),)
        assert change.post[0].ends_at == clock.time() + 5

    def test_provider_text_is_bounded(self, clock: FakeClock) -> None:
        """A huge txid from a hostile answer is cut to TEXT_MAX characters in the alert."""
        change = on_event({}, stuck(transfer(txid="<x>" * 10_000), clock.time()))
        assert change is not None
        assert len(change.post[0].annotations["txid"]) == TEXT_MAX
        assert len(json.dumps(payload(change.post[0], clock.time()))) < 8 * TEXT_MAX


def replace_state(t: Transfer, state: State) -> Transfer:
    """``t`` settled in ``state``."""
    status = {State.OK: "completed", State.FAILED: "network_error"}[state]
    return Transfer(
        id=t.id,
        direction=t.direction,
        currency=t.currency,
        amount=t.amount,
        status=status,
        state=state,
        txid=t.txid,
        created_at=t.created_at,
    )


class TestAlertmanagerSink:
    """Through the dispatcher's lane, from a real outbox, to a loopback Alertmanager."""

    async def test_fires_with_transfer_id_and_txid(self, rig: Rig, am: FakeAlertmanager) -> None:
        """A stuck event is posted at once, with the configured header, and held in the store."""
        await am.up()
        await commit(rig.store, [stuck(transfer(), rig.clock.time())])
        await rig.dispatcher.drain()
        (alert,) = am.alerts
        assert alert["labels"]["transfer_id"] == "tx-1"
        assert alert["annotations"]["txid"] == "0xfeed"
        assert am.headers[0]["X-Api-Key"] == TOKEN
        assert am.headers[0]["Authorization"].startswith("Basic ")  # from the URL
        assert am.headers[0]["Content-Type"] == "application/json"
        assert list(await rig.held()) == [key_of("hot", "withdrawal", "tx-1")]
        assert rig.metric("walletwatch_outbox_pending") == 0.0

    async def test_reposts_every_minute_on_the_clock(self, rig: Rig, am: FakeAlertmanager) -> None:
        """While stuck, re-posted every REPOST seconds with endsAt AHEAD past each post."""
        await am.up()
        await commit(rig.store, [stuck(transfer(), rig.clock.time())])
        rig.dispatcher.start()
        try:
            await wait_until(lambda: len(am.posts) == 1)  # the event's post
            start = rig.clock.time()
            await rig.clock.advance(REPOST - 1)
            await asyncio.sleep(0.05)
            assert len(am.posts) == 1  # the check every 10 s posts nothing: all in flight
            await rig.clock.advance(1)
            await wait_until(lambda: len(am.posts) == 2)
            await rig.clock.advance(REPOST)
            await wait_until(lambda: len(am.posts) == 3)
        finally:
            await rig.dispatcher.close(grace=0)
        ends = [ts(body[0]["endsAt"]) for body in am.posts[1:]]
        assert ends == [start + REPOST + AHEAD, start + 2 * REPOST + AHEAD]

    async def test_resolves_on_the_final_event(self, rig: Rig, am: FakeAlertmanager) -> None:
        """The final event posts the alert resolved and the store forgets it."""
        await am.up()
        t = transfer()
        await commit(rig.store, [stuck(t, rig.clock.time())])
        await rig.dispatcher.drain()
        await commit(rig.store, [final(replace_state(t, State.OK), rig.clock.time() + 20)])
        await rig.dispatcher.drain()
        resolved = am.alerts[-1]
        assert ts(resolved["endsAt"]) == rig.clock.time() + 20
        assert resolved["labels"]["transfer_id"] == "tx-1"
        assert await rig.held() == {}
        assert rig.sink.firing == ()

    async def test_resolves_what_leaves_in_flight_without_an_event(
        self, rig: Rig, am: FakeAlertmanager
    ) -> None:
        """A transfer the daemon no longer has in flight is resolved at the next check."""
        await am.up()
        await commit(rig.store, [stuck(transfer(), rig.clock.time())])
        assert await rig.dispatcher.drain() == 10.0  # the next check
        rig.in_flight[("hot", "withdrawal", "tx-1")] = False
        await rig.clock.advance(10.0)
        await rig.dispatcher.drain()
        assert ts(am.alerts[-1]["endsAt"]) == rig.clock.time()
        assert await rig.held() == {}

    async def test_restart_reposts_firing_and_resolves_settled(
        self, store: AsyncStore, am: FakeAlertmanager, clock: FakeClock
    ) -> None:
        """A new sink on the same state re-posts what fires, resolves what settled meanwhile."""
        await am.up()
        async with aiohttp.ClientSession() as session:
            first = Rig(store, session, clock, am)
            await first.dispatcher.prepare()
            await commit(store, [stuck(transfer(i), clock.time()) for i in ("tx-1", "tx-2")])
            await first.dispatcher.drain()
            await first.dispatcher.close(grace=0)
            await clock.advance(600)  # down for ten minutes; tx-2 settled meanwhile
            am.posts.clear()
            second = Rig(store, session, clock, am)
            second.in_flight[("hot", "withdrawal", "tx-2")] = False
            await second.dispatcher.prepare()
            await second.dispatcher.drain()
        resolved, reposted = am.posts
        assert [a["labels"]["transfer_id"] for a in resolved] == ["tx-2"]
        assert ts(resolved[0]["endsAt"]) == clock.time()
        assert [a["labels"]["transfer_id"] for a in reposted] == ["tx-1"]
        assert ts(reposted[0]["endsAt"]) == clock.time() + AHEAD
        assert list(await second.held()) == [key_of("hot", "withdrawal", "tx-1")]

    async def test_restart_then_final_event_resolves(
        self, store: AsyncStore, am: FakeAlertmanager, clock: FakeClock
    ) -> None:
        """The first poll after a restart emits the final event: that resolves the alert."""
        await am.up()
        t = transfer()
        async with aiohttp.ClientSession() as session:
            first = Rig(store, session, clock, am)
            await first.dispatcher.prepare()
            await commit(store, [stuck(t, clock.time())])
            await first.dispatcher.drain()
            second = Rig(store, session, clock, am)
            await second.dispatcher.prepare()
            await commit(store, [final(replace_state(t, State.FAILED), clock.time() + 5)])
            await second.dispatcher.drain()
        assert ts(am.alerts[-1]["endsAt"]) == clock.time() + 5
        assert await second.held() == {}

    async def test_deposit_reversed_posted_once(self, rig: Rig, am: FakeAlertmanager) -> None:
        """Posted with its event, never re-posted: it is not held."""
        await am.up()
        await commit(rig.store, [reversed_event(transfer(direction=Direction.DEPOSIT), 1.0)])
        await rig.dispatcher.drain()
        await rig.clock.advance(REPOST)
        await rig.dispatcher.drain()
        assert [a["labels"]["alertname"] for a in am.alerts] == [REVERSED]
        assert await rig.held() == {}

    @pytest.mark.parametrize("status", [400, 422])
    async def test_refused_alert_is_parked_and_the_lane_goes_on(
        self, rig: Rig, am: FakeAlertmanager, status: int
    ) -> None:
        """A 4xx for one event parks it; the next events are delivered."""
        await am.up()
        am.script = [status]
        events = [stuck(transfer(i), rig.clock.time()) for i in ("bad", "good")]
        await commit(rig.store, events)
        with captured_logs() as logs:
            assert await rig.dispatcher.drain() == 10.0
        assert [a["labels"]["transfer_id"] for a in am.alerts] == ["good"]
        assert rig.metric("walletwatch_events_parked_total") == 1.0
        (parked,) = await rig.store.call(rig.store.store.parked, "am")
        assert parked.event.event_id == events[0].event_id
        assert parked.reason == f"HTTP {status}: bad alert {status}"
        assert [e["event"] for e in logs if e["log_level"] == "error"] == ["sink.event_parked"]

    @pytest.mark.parametrize("script", [[500, 503], [429, 408]])
    async def test_server_errors_retry_with_backoff(
        self, rig: Rig, am: FakeAlertmanager, script: list[int]
    ) -> None:
        """5xx, 429 and 408 keep the event in the outbox; it goes out once answered 2xx."""
        await am.up()
        am.script = list(script)
        await commit(rig.store, [stuck(transfer(), rig.clock.time())])
        assert await rig.dispatcher.drain() == 2.0
        assert rig.metric("walletwatch_outbox_pending") == 1.0
        await rig.clock.advance(2.0)
        assert await rig.dispatcher.drain() == 4.0
        await rig.clock.advance(4.0)
        await rig.dispatcher.drain()
        assert rig.metric("walletwatch_delivery_failures_total") == 2.0
        assert rig.metric("walletwatch_outbox_pending") == 0.0
        assert [a["labels"]["transfer_id"] for a in am.alerts] == ["tx-1"]

    async def test_timeout_is_a_failure(
        self, store: AsyncStore, am: FakeAlertmanager, clock: FakeClock
    ) -> None:
        """An Alertmanager slower than the sink's timeout fails the attempt, named so."""
        await am.up()
        am.delay = 1.0
        async with aiohttp.ClientSession() as session:
            rig = Rig(store, session, clock, am, timeout=0.1)
            await rig.dispatcher.prepare()
            await commit(store, [stuck(transfer(), clock.time())])
            with captured_logs() as logs:
                assert await rig.dispatcher.drain() == 2.0
        (failed,) = [e for e in logs if e["event"] == "sink.failed"]
        assert failed["error"] == "timed out"
        assert rig.metric("walletwatch_delivery_failures_total") == 1.0

    async def test_failed_repost_shows_as_pending(self, rig: Rig, am: FakeAlertmanager) -> None:
        """A re-post that fails counts a failure and its alerts as pending until one succeeds."""
        await am.up()
        await commit(rig.store, [stuck(transfer(i), rig.clock.time()) for i in ("a", "b")])
        await rig.dispatcher.drain()
        assert rig.metric("walletwatch_outbox_pending") == 0.0
        await am.down()
        await rig.clock.advance(REPOST)
        with captured_logs() as logs:
            assert await rig.dispatcher.drain() == 2.0
        assert "cannot connect" in next(e for e in logs if e["event"] == "sink.failed")["error"]
        assert rig.metric("walletwatch_delivery_failures_total") == 1.0
        assert rig.metric("walletwatch_outbox_pending") == 2.0
        await am.up()
        await rig.clock.advance(2.0)
        await rig.dispatcher.drain()
        assert rig.metric("walletwatch_outbox_pending") == 0.0
        assert len(am.alerts) == 4  # two fired, then both re-posted once it answered

    async def test_secrets_never_show(self, rig: Rig, am: FakeAlertmanager) -> None:
        """URL password and header values are masked in refusals, failures and reprs."""
        await am.up()
        am.echo = True
        am.script = [503, 400]
        await commit(rig.store, [stuck(transfer(), rig.clock.time())])
        with captured_logs() as logs:
            await rig.dispatcher.drain()
            await rig.clock.advance(2.0)
            await rig.dispatcher.drain()
        (parked,) = await rig.store.call(rig.store.store.parked, "am")
        shown = json.dumps(logs) + parked.reason + repr(rig.sink) + repr(rig.sink.firing)
        assert "bad alert" in shown  # the answers were read...
        for secret in (TOKEN, PASSWORD):
            assert secret not in shown  # ...and masked


async def wait_until(condition: Any, rounds: int = 200) -> None:
    """Let the loop (and the store's thread) run until ``condition()`` holds."""
    for _ in range(rounds):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition never held")


class TestConfig:
    """``type: alertmanager`` entries of ``sinks``."""

    def parse(self, sinks: object, tmp_path: Path) -> Any:
        """The config with these sinks."""
        data = {
            "accounts": [
                {
                    "name": "a",
                    "provider": "westwallet",
                    "credentials": {"api_key": "k", "secret_key": "s"},
                }
            ],
            "sinks": sinks,
        }
        return parse_config(data, base_dir=tmp_path, environ={"AM": "http://am:9093/"})

    def test_defaults(self, tmp_path: Path) -> None:
        """A stable name from the URL, a 10 s timeout, the trailing slash dropped."""
        config = self.parse([{"type": "alertmanager", "url": {"env": "AM"}}], tmp_path)
        (sink,) = config.sinks
        assert isinstance(sink, AlertmanagerConfig)
        assert sink.name.startswith("alertmanager-")
        assert (sink.url.reveal(), sink.timeout, dict(sink.headers)) == (
            "http://am:9093",
            10.0,
            {},
        )
        assert "am:9093" not in repr(config)

    @pytest.mark.parametrize(
        ("entry", "problem"),
        [
            (
                {"type": "alertmanager", "url": "http://am:9093/?token=x"},
                (
                    "sinks[0].url: expected Alertmanager's base URL such as "
                    "'http://alertmanager:9093', without a query or fragment (value not shown)"
                ),
            ),
            (
                {"type": "alertmanager", "url": "http://am:9093", "secret": "s"},
                "sinks[0].secret: unknown key",
            ),
            (
                {"type": "alertmanager"},
                "sinks[0]: missing required key 'url'",
            ),
            (
                {
                    "type": "alertmanager",
                    "url": "http://u:p@am:9093",
                    "headers": {"authorization": "Bearer x"},
                },
                (
                    "sinks[0].headers.authorization: the url carries a user and password already "
                    "(Basic credentials): use one or the other"
                ),
            ),
            (
                {"type": "alertmanager", "url": "am:9093"},
                (
                    "sinks[0].url: expected an http(s) URL such as 'https://host/hook' "
                    "(value not shown)"
                ),
            ),
        ],
    )
    def test_problems(self, tmp_path: Path, entry: object, problem: str) -> None:
        """Each mistake is one problem with its path; the URL is never echoed."""
        with pytest.raises(ConfigError) as caught:
            self.parse([entry], tmp_path)
        assert caught.value.problems == (problem,)

    def test_names_unique_across_types(self, tmp_path: Path) -> None:
        """A webhook and an Alertmanager cannot share a name (it names the cursor)."""
        with pytest.raises(ConfigError) as caught:
            self.parse(
                [
                    {"type": "webhook", "name": "x", "url": "https://h.example/"},
                    {"type": "alertmanager", "name": "x", "url": "http://am:9093"},
                ],
                tmp_path,
            )
        assert caught.value.problems == ("sinks[1].name: duplicate sink name 'x'",)


class TestDaemon:
    """The daemon builds the sink from the config and tells it what is in flight."""

    async def test_removed_account_resolves_its_alerts(
        self, am: FakeAlertmanager, tmp_path: Path
    ) -> None:
        """Both accounts' stuck withdrawals fire; a reload without one resolves its alert."""
        sim = Simulator(rate_limit=100_000)
        for key, secret in ACCOUNTS.values():
            sim.westwallet.add_account(key, secret, {"BTC": Decimal(2)})
            sim.westwallet.add_transaction(
                key, type="send", currency="BTC", amount=Decimal("0.1"), created_at=time.time() - 60
            )
        runner, port = await start(sim, "127.0.0.1", 0)
        sink = {"type": "alertmanager", "name": "am", "url": f"http://127.0.0.1:{am.port}/prefix"}
        sim_url = f"http://127.0.0.1:{port}"
        both = body(sim_url, ["hot", "cold"], interval="1s", sinks=[sink])
        for account in both["accounts"]:
            account["withdrawal_stuck_after"] = "1s"
        config = write(tmp_path / "c.yaml", both)
        assert config is not None
        await am.up()
        # The simulator checks signatures against real time: the daemon runs on it too.
        daemon = Daemon(config, clock=SystemClock())
        try:
            await daemon.start(serve=False)
            await daemon.poll_once()
            assert {a["labels"]["account"] for a in am.alerts} == {"hot", "cold"}
            assert all(a["labels"]["alertname"] == STUCK for a in am.alerts)
            await daemon.reload(replace(config, accounts=config.accounts[:1]))
            am.posts.clear()
            await asyncio.sleep(1.1)  # the sink checks what is in flight every interval (1 s)
            await daemon.deliver()
        finally:
            await daemon.close()
            await runner.cleanup()
        resolved = [a for a in am.alerts if ts(a["endsAt"]) <= time.time()]
        assert [a["labels"]["account"] for a in resolved] == ["cold"]
