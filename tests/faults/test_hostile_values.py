"""Arbitrary JSON values in every provider's answers, through every output walletwatch has.

Hypothesis takes the good answers of tests/hostile/harness.py, puts an arbitrary JSON value
(all of Unicode with lone surrogates and NUL, huge and tiny numbers, deep and wide
structures) in place of one value or one key of one answer, or serves it as the whole answer,
and has a daemon on a real state file poll that provider's account over loopback: the
client, parse_json and the provider's parser, the tracker and the store. Each example then
renders /metrics (both formats) and the status output, reads every event back from the
outbox, and polls another account. Nothing may crash: no poll fails as ``internal``, no
commit fails, no log line raises; every account stays on /metrics, the other account
stays up, and the exposition parses. promtool checks a few of the renders at the end.

Deterministic (``derandomize``) and bounded, so CI runs the same examples in a few seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import logging
import re
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import structlog
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as openmetrics_families,
)
from prometheus_client.parser import text_string_to_metric_families

from tests.hostile.harness import PROVIDERS, Answer, HostileServer, Provider, make_config, serve
from tests.monitoring.tools import promtool
from walletwatch import logs
from walletwatch.app import Daemon
from walletwatch.cli import _summary, _table
from walletwatch.clock import SystemClock
from walletwatch.escape import SURROGATES
from walletwatch.events import Event
from walletwatch.operator import OperatorView
from walletwatch.statuspage import status_page

EXAMPLES = 80
"""Hypothesis examples: about a second of polling and rendering per 50."""
ESCAPED_SURROGATE = re.compile(r"\\\\ud[89a-f]")
"""A lone surrogate kept as text, in a label value (where its backslash is escaped)."""
WESTWALLET = next(p for p in PROVIDERS if p.name == "westwallet")
TELEMETRY = "# HELP walletwatch_polls_total"
"""Where walletwatch's own families begin, after those of the accounts."""

NASTY = [
    "\ud800",
    "\udfff",
    "\udc80",
    "\x00",
    "\x1b",
    "\n",
    "\t",
    '"',
    "\\",
    "\x7f",
    "\x85",
    "\u2028",
    "\ufeff",
    "\U0001f4b0",
    "%",
    "{",
    "}",
    "=",
    ",",
]


@dataclass(frozen=True)
class Raw:
    """JSON text written as it is (numbers JSON allows that Python would write otherwise)."""

    text: str


def characters() -> st.SearchStrategy[str]:
    """Any code point, lone surrogates and control characters included, nasty ones often."""
    return st.one_of(st.sampled_from(NASTY), st.characters(exclude_categories=()))


TEXT = st.lists(characters(), max_size=12).map("".join)  # st.text() leaves surrogates out
NUMBERS = st.one_of(
    st.integers(min_value=-(10**40), max_value=10**40).map(lambda n: Raw(str(n))),
    st.floats(allow_nan=False, allow_infinity=False).map(lambda f: Raw(repr(f))),
    st.sampled_from(
        ["1e400", "-1e400", "1e-400", "0.000000000000000000000000000001", "-0", "0e0", "1E+30"]
    ).map(Raw),
    st.just(Raw("9" * 5000)),  # past Python's int digit limit
)
LEAVES = st.one_of(st.none(), st.booleans(), NUMBERS, TEXT)
VALUES = st.recursive(
    LEAVES,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(TEXT, inner, max_size=4)),
    max_leaves=12,
)
SHAPES = st.one_of(
    st.integers(1, 2000).map(lambda depth: Raw("[" * depth + "]" * depth)),
    st.integers(1, 2000).map(lambda depth: Raw('{"a":' * depth + "1" + "}" * depth)),
    st.integers(1000, 5000).map(lambda width: Raw("[" + ",".join(["1"] * width) + "]")),
)
ANY_VALUE = st.one_of(VALUES, VALUES, VALUES, SHAPES)


def dumps(value: Any) -> str:
    """JSON text of a generated value: strings escaped as a JSON encoder would (``\\ud800``)."""
    if isinstance(value, Raw):
        return value.text
    if isinstance(value, list):
        return "[" + ",".join(dumps(item) for item in value) + "]"
    if isinstance(value, dict):
        return "{" + ",".join(f"{json.dumps(k)}:{dumps(v)}" for k, v in value.items()) + "}"
    return json.dumps(value)


def slots(doc: Any) -> Iterator[tuple[tuple[Any, ...], bool]]:
    """Every place in a document: (path, is_key) for each value and each key of an object."""
    stack: list[tuple[tuple[Any, ...], Any]] = [((), doc)]
    while stack:
        path, node = stack.pop()
        yield path, False
        if isinstance(node, dict):
            for key, item in node.items():
                yield (*path, key), True
                stack.append(((*path, key), item))
        elif isinstance(node, list):
            stack.extend(((*path, i), item) for i, item in enumerate(node))


def mutated(doc: Any, path: tuple[Any, ...], is_key: bool, value: Any, key: str) -> Any:
    """``doc`` with the value at ``path`` replaced by ``value`` (or its last key by ``key``)."""
    if not path:
        return value
    *parents, last = path
    if is_key:
        node = _at(doc, tuple(parents))
        assert isinstance(node, dict)
        return _replaced(
            doc, tuple(parents), {(key if k == last else k): v for k, v in node.items()}
        )
    return _replaced(doc, path, value)


def _at(doc: Any, path: tuple[Any, ...]) -> Any:
    for step in path:
        doc = doc[step]
    return doc


def _replaced(doc: Any, path: tuple[Any, ...], value: Any) -> Any:
    if not path:
        return value
    head, *rest = path
    if isinstance(doc, list):
        return [
            _replaced(item, tuple(rest), value) if i == head else item for i, item in enumerate(doc)
        ]
    return {k: (_replaced(v, tuple(rest), value) if k == head else v) for k, v in doc.items()}


def to_generated(value: Any) -> Any:
    """A good answer's decoded JSON as generated values (its numbers kept as JSON text)."""
    if isinstance(value, Decimal | int) and not isinstance(value, bool):
        return Raw(str(value))
    if isinstance(value, list):
        return [to_generated(item) for item in value]
    if isinstance(value, dict):
        return {k: to_generated(v) for k, v in value.items()}
    return value


@dataclass
class Case:
    """One example: which provider's route gets which answer."""

    provider: Provider
    route: str
    body: bytes


@st.composite
def cases(draw: st.DrawFn) -> Case:
    """A provider, one of its routes, and that route's good answer with one place replaced."""
    provider = draw(st.sampled_from(PROVIDERS))
    route = draw(st.sampled_from(sorted(provider.routes)))
    good = to_generated(json.loads(provider.routes[route].render(), parse_float=Decimal))
    places = list(slots(good))
    # Keys and text get past the parser to the state and the outputs: draw them most often.
    texts = [
        (path, False) for path, is_key in places if not is_key and isinstance(_at(good, path), str)
    ]
    keys = [place for place in places if place[1]]
    kind = draw(st.sampled_from(["text", "text", "key", "any"]))
    chosen = {"text": texts, "key": keys}.get(kind) or places
    path, is_key = draw(st.sampled_from(chosen))
    value = draw(TEXT.filter(bool) if kind == "text" and texts else ANY_VALUE)
    doc = mutated(good, path, is_key, value, draw(TEXT.filter(bool)))
    return Case(provider, route, dumps(doc).encode())


@dataclass
class Rig:
    """The hostile server and a daemon with one account per provider, on one event loop."""

    loop: asyncio.AbstractEventLoop
    server: HostileServer
    daemon: Daemon
    renders: dict[str, str]  # a few renders for promtool, by why they were kept
    openmetrics: dict[str, bytes]  # the same in OpenMetrics
    log: io.BytesIO

    def good(self) -> None:
        """Answer every route of every provider well."""
        self.server.answers = {
            key: Answer(good.render()) for p in PROVIDERS for key, good in p.routes.items()
        }


@pytest.fixture(name="rig")
def fixture_rig(tmp_path: Path) -> Iterator[Rig]:
    """A daemon on a real state file, its logs as JSON into a strict UTF-8 stream."""
    loop = asyncio.new_event_loop()
    server = HostileServer()
    urls = serve(server.app())
    buffer = io.BytesIO()
    stream = io.TextIOWrapper(buffer, encoding="utf-8", errors="strict", write_through=True)
    logs.configure("json", stream, level=logging.DEBUG)

    async def start() -> Daemon:
        url = await anext(urls)
        config = make_config(tmp_path, [p.account(url, name=p.name) for p in PROVIDERS])
        daemon = Daemon(config, clock=SystemClock())
        await daemon.start(serve=False)
        return daemon

    daemon: Daemon | None = None
    try:
        daemon = loop.run_until_complete(start())
        rig = Rig(loop, server, daemon, {}, {}, buffer)
        rig.good()
        loop.run_until_complete(baseline(daemon))
        yield rig
    finally:
        if daemon is not None:
            loop.run_until_complete(daemon.close())
        loop.run_until_complete(anext(urls, None))  # past its yield: the server stops
        structlog.reset_defaults()
        loop.close()


async def baseline(daemon: Daemon) -> None:
    """Poll every account once with good answers: later transfers are news, with events."""
    for watcher in daemon.watchers.values():
        for endpoint in watcher.endpoints:
            assert (await watcher.poll(endpoint)).ok, watcher.health


async def run(rig: Rig, case: Case, other: str) -> None:
    """Serve the case, poll its account, check every output, then poll ``other``."""
    rig.good()
    rig.server.answers[case.route] = Answer(case.body)
    watcher = rig.daemon.watchers[case.provider.name]
    for endpoint in watcher.endpoints:
        outcome = await watcher.poll(endpoint)
        health = watcher.health[endpoint]
        assert outcome.ok == health.ok
        assert health.reason != "internal", (endpoint, health.error, case.body[:300])
    await check_outputs(rig, case)
    rig.good()
    bystander = rig.daemon.watchers[other]
    for endpoint in bystander.endpoints:
        assert (await bystander.poll(endpoint)).ok, bystander.health[endpoint]
    assert bystander.up


async def check_outputs(rig: Rig, case: Case) -> None:
    """Every output takes what the example left in the state, and nothing else stopped."""
    daemon = rig.daemon
    text = daemon.collector.render().decode("utf-8")  # strict: the body is UTF-8
    # Provider values reach the families made from the accounts, which come first; the
    # telemetry after them (mostly histograms) is parsed in the renders kept for promtool.
    families = list(text_string_to_metric_families(text[: text.index(TELEMETRY)]))
    up = {
        s.labels["account"]: s.value
        for family in families
        if family.name == "walletwatch_up"
        for s in family.samples
    }
    assert set(up) == {p.name for p in PROVIDERS}, "an account left /metrics"
    for why in (case.provider.name, "escaped" if ESCAPED_SURROGATE.search(text) else None):
        if why is not None and why not in rig.renders:
            rig.renders[why] = text
            rig.openmetrics[why] = daemon.collector.render(openmetrics=True)

    rows = [_summary(w) for w in daemon.watchers.values()]
    json.dumps(rows, ensure_ascii=False).encode("utf-8")
    _table(rows).encode("utf-8")
    view = OperatorView(daemon.watchers.values, lambda: daemon.store, daemon.clock)
    for query in ({}, {"account": case.provider.name}):  # the status page, whole and filtered
        (await status_page(view, query, daemon.clock.time())).encode("utf-8")

    with contextlib.closing(sqlite3.connect(daemon.config.state_path)) as db:
        bodies = [body for (body,) in db.execute("SELECT body FROM outbox")]
    for body in bodies:
        body.encode("utf-8")
        event = Event.from_json(body)
        for value in (event.account, *event.fields.values()):
            assert not (isinstance(value, str) and SURROGATES.search(value)), body
    assert sum(daemon.telemetry.store_errors.values()) == 0


def test_arbitrary_values_never_crash_or_stop_anything(rig: Rig) -> None:
    """Whatever value any answer holds, every poll ends as ok or a failed poll with a known
    reason, every output takes the result, and the other accounts go on as before."""
    names = [p.name for p in PROVIDERS]

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(case=cases())
    # A lone surrogate in a label on /metrics, whatever the drawn examples hold.
    @example(case=Case(WESTWALLET, "/ww/wallet/balances", rb'{"\ud800": "2", "error": "ok"}'))
    def check(case: Case) -> None:
        other = names[(names.index(case.provider.name) + 1) % len(names)]
        rig.loop.run_until_complete(run(rig, case, other))

    check()
    for line in rig.log.getvalue().decode("utf-8").splitlines():
        json.loads(line)
    assert "escaped" in rig.renders, "no example put an escaped surrogate on /metrics"
    for why, text in sorted(rig.renders.items()):
        list(text_string_to_metric_families(text))
        openmetrics = rig.openmetrics[why].decode("utf-8")
        list(openmetrics_families(openmetrics))  # type: ignore[no-untyped-call]
        checked = promtool("check", "metrics", stdin=text)
        assert checked.returncode == 0, (why, checked.stdout, checked.stderr)
