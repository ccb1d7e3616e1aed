"""The webhook sink: every event POSTed once it can be, in order, refused ones parked."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import socket
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from prometheus_client import CollectorRegistry

from tests.fakes import FakeClock
from tests.test_sinks import commit, make_events
from tests.test_store import captured_logs
from walletwatch.app import Daemon
from walletwatch.asyncstore import AsyncStore
from walletwatch.clock import SystemClock
from walletwatch.config import Config, Secret, WebhookConfig, parse_config
from walletwatch.errors import ConfigError
from walletwatch.metrics import WalletwatchCollector
from walletwatch.sim import Simulator, start
from walletwatch.sinks import (
    SIGNATURE_HEADER,
    DeliveryError,
    Dispatcher,
    Verdict,
    WebhookSink,
    signature,
    verdict,
)
from walletwatch.store import Store
from walletwatch.telemetry import Telemetry

HOOK_SECRET = "hook-secret"
KEY, SECRET = "hook-key", "hook-secret-key"


def free_port() -> int:
    """A loopback port nobody listens on (connection refused until a receiver binds it)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Receiver:
    """A webhook receiver on loopback that records every request and answers as told."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{port}/hook?token=t0ken"
        self.attempts: list[tuple[str, int]] = []  # (event_id, status answered)
        self.accepted: list[dict[str, Any]] = []  # bodies answered 2xx, in arrival order
        self.headers: list[dict[str, str]] = []
        self.script: list[int] = []  # statuses for the next requests, then 200
        self.refuse: dict[str, int] = {}  # event_id -> status, every time
        self.bad_signatures = 0
        self.delay = 0.0
        self.got = asyncio.Event()
        self._runner: web.AppRunner | None = None

    @property
    def ids(self) -> list[str]:
        """event_ids of the accepted bodies, in order."""
        return [body["event_id"] for body in self.accepted]

    async def up(self) -> None:
        """Start answering on the port."""
        app = web.Application()
        app.router.add_post("/hook", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def down(self) -> None:
        """Stop answering: connections are refused."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _handle(self, request: web.Request) -> web.Response:
        raw = await request.read()
        body = json.loads(raw)
        expected = hmac.new(HOOK_SECRET.encode(), raw, hashlib.sha256).hexdigest()
        if request.headers.get(SIGNATURE_HEADER) != f"sha256={expected}":
            self.bad_signatures += 1
        if self.delay:
            await asyncio.sleep(self.delay)
        status = self.refuse.get(body["event_id"]) or (self.script.pop(0) if self.script else 200)
        self.attempts.append((body["event_id"], status))
        self.headers.append(dict(request.headers))
        if 200 <= status < 300:
            self.accepted.append(body)
        self.got.set()
        headers = {"Retry-After": "30"} if status == 429 else None
        return web.Response(status=status, text=f"answer {status}\nbye", headers=headers)


@pytest.fixture(name="receiver")
async def fixture_receiver() -> AsyncIterator[Receiver]:
    """A receiver on a free port, not yet answering."""
    receiver = Receiver(free_port())
    yield receiver
    await receiver.down()


def hook_config(receiver: Receiver, **changes: Any) -> WebhookConfig:
    """A webhook sink pointed at the receiver."""
    fields: dict[str, Any] = {
        "name": "hook",
        "url": Secret(receiver.url),
        "headers": {"Authorization": Secret("Bearer abc")},
        "secret": Secret(HOOK_SECRET),
        "timeout": 5.0,
        **changes,
    }
    return WebhookConfig(**fields)


@pytest.fixture(name="store")
def fixture_store(tmp_path: Path) -> Iterator[AsyncStore]:
    """A state database on disk."""
    store = AsyncStore(Store(tmp_path / "state.db"))
    yield store
    store.close()


class Rig:
    """A dispatcher with one webhook sink, its telemetry and a registry exporting it."""

    def __init__(
        self, store: AsyncStore, session: aiohttp.ClientSession, clock: FakeClock, hook: Any
    ) -> None:
        self.store = store
        self.clock = clock
        self.telemetry = Telemetry()
        self.sink = WebhookSink(hook, session, clock)
        self.dispatcher = Dispatcher(store, [self.sink], clock, telemetry=self.telemetry)
        self.registry = CollectorRegistry()
        self.registry.register(WalletwatchCollector(lambda: (), self.telemetry, clock))

    def metric(self, name: str) -> float | None:
        """One delivery metric of the sink."""
        return self.registry.get_sample_value(name, {"sink": "hook"})

    async def drain_until_done(self, limit: int = 20) -> list[float]:
        """Drain, resting on the fake clock between failures; return the rests taken."""
        rests: list[float] = []
        for _ in range(limit):
            rest = await self.dispatcher.drain()
            if rest is None:
                return rests
            rests.append(rest)
            await self.clock.advance(rest)
        raise AssertionError(f"still failing after {limit} drains: {rests}")


@pytest.fixture(name="rig")
async def fixture_rig(
    store: AsyncStore, receiver: Receiver, clock: FakeClock
) -> AsyncIterator[Rig]:
    """A dispatcher feeding the receiver from a real outbox."""
    async with aiohttp.ClientSession() as session:
        rig = Rig(store, session, clock, hook_config(receiver))
        await rig.dispatcher.prepare()
        yield rig


class TestVerdict:
    """What each HTTP status means for the event that got it."""

    @pytest.mark.parametrize(
        ("status", "expected"),
        [
            (200, Verdict.DELIVERED),
            (202, Verdict.DELIVERED),
            (204, Verdict.DELIVERED),
            (301, Verdict.RETRY),  # redirects are not followed: fix the URL, nothing is lost
            (400, Verdict.REFUSED),
            (401, Verdict.REFUSED),
            (404, Verdict.REFUSED),
            (408, Verdict.RETRY),
            (413, Verdict.REFUSED),
            (422, Verdict.REFUSED),
            (429, Verdict.RETRY),
            (500, Verdict.RETRY),
            (503, Verdict.RETRY),
        ],
    )
    def test_table(self, status: int, expected: Verdict) -> None:
        """2xx delivered; 408, 429, 3xx and 5xx retried; any other 4xx refused."""
        assert verdict(status) is expected

    def test_signature_vector(self) -> None:
        """sha256= and the hex HMAC-SHA256 of the exact body (checked with openssl dgst)."""
        assert signature("topsecret", b'{"event":"x"}') == (
            "sha256=d3e1605d47ef7dcb51a1c506488393f329514f22326e7493a6cb12f377f289ab"
        )


class TestWebhookSink:
    """One POST per event, in outbox order; failures rest the sink; refusals are parked."""

    async def test_posts_each_event_as_signed_json(self, rig: Rig, receiver: Receiver) -> None:
        """The body is the event's JSON with its event_id; headers carry id and signature."""
        await receiver.up()
        events = make_events(0, 3)
        await commit(rig.store, events)
        assert await rig.dispatcher.drain() is None
        assert receiver.accepted == [e.to_dict() for e in events]
        assert receiver.bad_signatures == 0
        first = receiver.headers[0]
        assert first["Content-Type"] == "application/json"
        assert first["Authorization"] == "Bearer abc"
        assert first["X-Walletwatch-Event"] == "deposit.detected"
        assert first["X-Walletwatch-Event-Id"] == events[0].event_id
        assert rig.metric("walletwatch_outbox_pending") == 0.0

    async def test_receiver_down_then_up_delivers_everything_once_in_order(
        self, rig: Rig, receiver: Receiver
    ) -> None:
        """Refused connections, then 503s, then success: all events arrive, in order, once."""
        hot, cold = make_events(0, 4), make_events(4, 3, account="cold")
        await commit(rig.store, hot)
        with captured_logs() as logs:
            assert await rig.dispatcher.drain() == 2.0  # connection refused
            await commit(rig.store, cold, account="cold")
            await rig.clock.advance(2.0)
            assert await rig.dispatcher.drain() == 4.0
        assert rig.metric("walletwatch_outbox_pending") == 7.0
        assert rig.metric("walletwatch_delivery_failures_total") == 2.0
        warned = [e for e in logs if e["event"] == "sink.failed"]
        assert [e["log_level"] for e in warned] == ["warning", "debug"]  # once per outage
        assert "cannot connect" in warned[0]["error"]
        assert "t0ken" not in json.dumps(logs)  # the URL (and its token) never shows
        await receiver.up()
        receiver.script = [503, 503]
        await rig.clock.advance(4.0)
        with captured_logs() as logs:
            rests = await rig.drain_until_done()
        assert rests == [8.0, 16.0]
        assert [e["event"] for e in logs][-1] == "sink.recovered"
        assert receiver.ids == [e.event_id for e in hot + cold]
        assert rig.metric("walletwatch_outbox_pending") == 0.0
        assert rig.metric("walletwatch_delivery_failures_total") == 4.0

    async def test_failure_mid_batch_keeps_what_got_through(
        self, rig: Rig, receiver: Receiver
    ) -> None:
        """Events delivered before a failure in the same batch are not sent again."""
        await receiver.up()
        events = make_events(0, 5)
        await commit(rig.store, events)
        receiver.script = [200, 200, 500]
        assert await rig.dispatcher.drain() == 2.0
        assert rig.metric("walletwatch_outbox_pending") == 3.0
        await rig.clock.advance(2.0)
        assert await rig.dispatcher.drain() is None
        assert [event_id for event_id, _ in receiver.attempts] == [
            e.event_id for e in [*events[:3], *events[2:]]
        ]
        assert receiver.ids == [e.event_id for e in events]

    async def test_refused_event_is_parked_and_the_rest_flows(
        self, rig: Rig, receiver: Receiver
    ) -> None:
        """A 4xx parks that one event (kept, counted, logged) and delivery goes on at once."""
        await receiver.up()
        events = make_events(0, 4)
        receiver.refuse[events[1].event_id] = 422
        await commit(rig.store, events)
        with captured_logs() as logs:
            assert await rig.dispatcher.drain() is None
        assert receiver.ids == [events[0].event_id, events[2].event_id, events[3].event_id]
        (parked,) = await rig.store.call(rig.store.store.parked, "hook")
        assert (parked.event, parked.reason) == (events[1], "HTTP 422: answer 422 bye")
        assert rig.metric("walletwatch_events_parked_total") == 1.0
        assert rig.metric("walletwatch_delivery_failures_total") == 0.0
        (entry,) = [e for e in logs if e["event"] == "sink.event_parked"]
        assert entry["log_level"] == "error"
        assert entry["event_id"] == events[1].event_id
        await commit(rig.store, make_events(4, 1))
        assert await rig.dispatcher.drain() is None
        assert [event_id for event_id, _ in receiver.attempts].count(events[1].event_id) == 1

    @pytest.mark.parametrize("status", [408, 429])
    async def test_busy_answers_are_retried_not_parked(
        self, rig: Rig, receiver: Receiver, status: int
    ) -> None:
        """408 and 429 are the receiver being busy: retried (429's Retry-After honoured)."""
        await receiver.up()
        receiver.script = [status]
        await commit(rig.store, make_events(0, 2))
        rest = await rig.dispatcher.drain()
        assert rest == (30.0 if status == 429 else 2.0)
        await rig.clock.advance(rest or 0)
        assert await rig.dispatcher.drain() is None
        assert receiver.ids == ["hot-00000", "hot-00001"]
        assert rig.metric("walletwatch_events_parked_total") == 0.0

    async def test_slow_receiver_times_out(self, receiver: Receiver, clock: FakeClock) -> None:
        """A receiver slower than `timeout` is a failed attempt, retried later."""
        await receiver.up()
        receiver.delay = 0.5
        async with aiohttp.ClientSession() as session:
            sink = WebhookSink(hook_config(receiver, timeout=0.1), session, clock)
            with pytest.raises(DeliveryError, match="timed out") as caught:
                await sink.deliver(make_events(0, 2))
        assert caught.value.delivered == 0
        assert not caught.value.park


def daemon_config(sim_url: str, tmp_path: Path, hook_url: str) -> Config:
    """A daemon watching one simulator account, with an events file and a webhook."""
    return parse_config(
        {
            "listen": "127.0.0.1:0",
            "state_path": "state.db",
            "events_file": "events.jsonl",
            "providers": {"westwallet": {"rate_limit": 1000}},
            "accounts": [
                {
                    "name": "hot",
                    "provider": "westwallet",
                    "base_url": f"{sim_url}/westwallet",
                    "credentials": {"api_key": KEY, "secret_key": SECRET},
                    "low_balance": {"USDT": "1000"},
                }
            ],
            "sinks": [
                {
                    "type": "webhook",
                    "name": "hook",
                    "url": {"env": "HOOK_URL"},
                    "headers": {"Authorization": "Bearer abc"},
                    "secret": {"env": "HOOK_SECRET"},
                }
            ],
        },
        base_dir=tmp_path,
        environ={"HOOK_URL": hook_url, "HOOK_SECRET": HOOK_SECRET},
    )


def file_events(config: Config) -> list[dict[str, Any]]:
    """The events file, parsed."""
    assert config.events_file is not None
    return [json.loads(line) for line in config.events_file.read_text().splitlines()]


async def until(predicate: Any, deadline: float = 20.0) -> None:
    """Wait (in real time: a real daemon delivers) until predicate() is true."""
    end = time.monotonic() + deadline
    while not predicate():
        if time.monotonic() > end:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)


class TestDaemon:
    """The webhook sink inside the daemon, with the receiver down for part of the run."""

    async def test_every_event_of_a_run_arrives_across_a_restart(
        self, tmp_path: Path, receiver: Receiver
    ) -> None:
        """Events made while the receiver is down wait in the outbox, survive a restart of the
        daemon, and arrive in order; the receiver ends with exactly the events file."""
        sim = Simulator(rate_limit=100_000)
        ww = sim.westwallet
        ww.add_account(KEY, SECRET, {"BTC": Decimal(2), "USDT": Decimal(1500)})
        ww.add_transaction(KEY, type="send", currency="BTC", amount=Decimal("0.1"))
        runner, port = await start(sim, "127.0.0.1", 0)
        config = daemon_config(f"http://127.0.0.1:{port}", tmp_path, receiver.url)
        try:
            first = Daemon(config, clock=SystemClock())
            await first.start(serve=False)
            await first.poll_once()  # baseline
            for n in range(3):
                deposit = ww.add_transaction(
                    KEY, type="receive", currency="BTC", amount=Decimal(f"0.{n + 1}")
                )
                await first.poll_once()
                ww.set_status(KEY, deposit, "completed", confirmations=6)
                await first.poll_once()
            ww.set_balance(KEY, "USDT", Decimal(900))
            await first.poll_once()
            down_metrics = {
                name: first.registry.get_sample_value(name, {"sink": "hook"})
                for name in ("walletwatch_outbox_pending", "walletwatch_delivery_failures_total")
            }
            await first.close()
            made_while_down = len(file_events(config))
            assert receiver.accepted == []
            assert down_metrics["walletwatch_outbox_pending"] == made_while_down
            assert (down_metrics["walletwatch_delivery_failures_total"] or 0) >= 1

            await receiver.up()
            second = Daemon(config, clock=SystemClock())
            await second.start(serve=False)
            await until(lambda: len(receiver.accepted) == made_while_down)
            ww.set_balance(KEY, "USDT", Decimal(1200))
            ww.add_transaction(
                KEY, type="receive", currency="BTC", amount=Decimal(1), status="completed"
            )
            await second.poll_once()
            await second.close()
        finally:
            await runner.cleanup()
        events = file_events(config)
        assert receiver.ids == [e["event_id"] for e in events]
        assert receiver.accepted == events
        assert receiver.bad_signatures == 0
        kinds = [e["event"] for e in events]
        assert kinds.count("deposit.confirmed") == 4
        assert kinds.count("balance.low") == kinds.count("balance.recovered") == 1
        # The closing note of the change quotes these.
        print(f"webhook: {len(events)} events, {made_while_down} made while the receiver was down")


class TestConfig:
    """`sinks:` entries are validated like the rest of the config."""

    ACCOUNTS: Sequence[dict[str, object]] = (
        {"name": "a", "provider": "westwallet", "credentials": {"api_key": "k", "secret_key": "s"}},
    )

    def parse(self, sinks: object, tmp_path: Path, environ: dict[str, str] | None = None) -> Config:
        """parse_config with one account and these sinks."""
        return parse_config(
            {"accounts": list(self.ACCOUNTS), "sinks": sinks},
            base_dir=tmp_path,
            environ=environ or {},
        )

    def test_webhook_with_defaults(self, tmp_path: Path) -> None:
        """A bare webhook gets a stable name from its URL, a 10 s timeout, no signature."""
        config = self.parse([{"type": "webhook", "url": "https://hooks.example/x?t=1"}], tmp_path)
        (hook,) = config.sinks
        assert isinstance(hook, WebhookConfig)
        assert hook.name.startswith("webhook-")
        assert (
            hook.name
            == self.parse([{"type": "webhook", "url": hook.url.reveal()}], tmp_path).sinks[0].name
        )
        assert (hook.timeout, hook.secret, dict(hook.headers)) == (10.0, None, {})
        assert "hooks.example" not in repr(config)

    def test_credential_references(self, tmp_path: Path) -> None:
        """url, secret and header values may come from the environment or files."""
        (tmp_path / "hook.secret").write_text("from-file\n")
        config = self.parse(
            [
                {
                    "type": "webhook",
                    "name": "pager",
                    "url": {"env": "URL"},
                    "secret": {"file": "hook.secret"},
                    "headers": {"Authorization": {"env": "AUTH"}},
                    "timeout": "3s",
                }
            ],
            tmp_path,
            {"URL": "https://hooks.example/x", "AUTH": "Bearer z"},
        )
        (hook,) = config.sinks
        assert isinstance(hook, WebhookConfig)
        assert hook.url.reveal() == "https://hooks.example/x"
        assert hook.secret is not None
        assert hook.secret.reveal() == "from-file"
        assert hook.headers["Authorization"].reveal() == "Bearer z"
        assert (hook.name, hook.timeout) == ("pager", 3.0)

    @pytest.mark.parametrize(
        ("sinks", "problem"),
        [
            ({"type": "webhook"}, "sinks: expected a list of sinks, got a mapping"),
            ([{"url": "https://h/x"}], "sinks[0]: missing required key 'type'"),
            (
                [{"type": "slack", "url": "https://h/x"}],
                "sinks[0].type: expected one of 'webhook', 'alertmanager'; got 'slack'",
            ),
            ([{"type": "webhook"}], "sinks[0]: missing required key 'url'"),
            (
                [{"type": "webhook", "url": "ftp://user:pw@h/x"}],
                (
                    "sinks[0].url: expected an http(s) URL such as 'https://host/hook' "
                    "(value not shown)"
                ),
            ),
            ([{"type": "webhook", "url": "https://h/x", "tls": 1}], "sinks[0].tls: unknown key"),
            (
                [{"type": "webhook", "url": "https://h/x", "name": "stdout"}],
                "sinks[0].name: reserved sink name 'stdout'",
            ),
            (
                [
                    {
                        "type": "webhook",
                        "url": "https://h/x",
                        "headers": {"X-Walletwatch-Event": "x"},
                    }
                ],
                "sinks[0].headers.X-Walletwatch-Event: set by walletwatch; cannot be configured",
            ),
            (
                [{"type": "webhook", "url": "https://h/x", "headers": {"A": {"env": "NOPE"}}}],
                "sinks[0].headers.A: environment variable NOPE is not set",
            ),
            (
                [{"type": "webhook", "url": "https://h/x", "headers": {"A": "x\r\nB: y"}}],
                "sinks[0].headers.A: value must be printable ASCII on one line",
            ),
            (
                [{"type": "webhook", "url": "https://h/x", "timeout": "0s"}],
                "sinks[0].timeout: must be greater than 0s, got '0s'",
            ),
        ],
    )
    def test_problems(self, tmp_path: Path, sinks: object, problem: str) -> None:
        """Each mistake is one problem with its path; a URL is never echoed."""
        with pytest.raises(ConfigError) as caught:
            self.parse(sinks, tmp_path)
        assert caught.value.problems == (problem,)

    def test_duplicate_names(self, tmp_path: Path) -> None:
        """Two webhooks to one URL would share a cursor: refused."""
        hook = {"type": "webhook", "url": "https://h/x"}
        with pytest.raises(ConfigError, match=r"sinks\[1\]\.name: duplicate sink name"):
            self.parse([hook, hook], tmp_path)
