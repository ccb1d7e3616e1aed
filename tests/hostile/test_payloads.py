"""Malformed answers, for every provider and endpoint: a failed poll, reason bad_payload.

Each test polls an account of one provider against the hostile server once with good answers,
then serves one malformed variant on every route and polls every endpoint again. Every poll
must fail with reason ``bad_payload`` and ``up`` go to 0, except where the bad value is in
one transfer record of a listing: that record is set aside and counted as malformed, and
the poll succeeds with the rest of its answer. The last good balances stay on /metrics, and
neither the watcher's state nor the store's rows change beyond failure counters.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from pathlib import Path

import pytest

from tests.hostile.harness import (
    PROVIDERS,
    Answer,
    Good,
    HostileServer,
    Provider,
    make_config,
    route_key,
    serve,
    started,
)
from walletwatch.app import Daemon
from walletwatch.tracker import AccountState

LONG_INT = "1" + "7" * 5000  # past Python's 4300-digit int parsing limit

# Whole-body variants: name -> the answer served instead of the good one.
BODIES: dict[str, Callable[[bytes], Answer]] = {
    "truncated": lambda good: Answer(good[: len(good) // 2]),
    "invalid_json": lambda _: Answer(b'{"error": "ok",, "balance": }'),
    "html_200": lambda _: Answer(
        b"<html><head><title>502 Bad Gateway</title></head><body>nginx</body></html>",
        content_type="text/html",
    ),
    "wrong_content_type": lambda _: Answer(b"\x1f\x8b\x08\x00binary", content_type="image/png"),
    "empty_body": lambda _: Answer(b""),
    "empty_object": lambda _: Answer(b"{}"),  # every field missing
    "null": lambda _: Answer(b"null"),
    "string": lambda _: Answer(b'"ok"'),
    "deeply_nested": lambda _: Answer(b"[" * 100_000 + b"]" * 100_000),
    "nested_in_object": lambda _: Answer(b'{"error": "ok", "x": ' + b"[" * 50_000 + b"]" * 50_000),
    "long_integer": lambda _: Answer(b'{"error": "ok", "balance": ' + LONG_INT.encode() + b"}"),
    "nan_document": lambda _: Answer(b"NaN"),
    "not_utf8": lambda _: Answer(b'{"error": "\xff\xfe"}'),
}
# Replacements of the amount in each good answer (JSON text).
AMOUNTS = {
    "amount_nan": "NaN",
    "amount_infinity": "Infinity",
    "amount_minus_infinity": "-Infinity",
    "amount_1e400": "1e400",
    "amount_tiny": "1e-400",
    "amount_nan_text": '"NaN"',
    "amount_infinity_text": '"Infinity"',
    "amount_1e400_text": '"1e400"',
    "amount_words": '"one and a half"',
    "amount_bool": "true",
    "amount_object": '{"value": "1.5"}',
    "amount_list": '["1.5"]',
    "amount_missing": "null",
    "amount_long_integer": LONG_INT,
}
# Replacements of a confirmation count, where the answer has one.
COUNTS = {
    "count_negative": "-1",
    "count_absurd": "100000000000",
    "count_text": '"6"',
    "count_fraction": "1.5",
    "count_bool": "true",
    "count_long_integer": LONG_INT,
}
# KredsWallet reads negative confirmations as a conflicted (double-spent) transaction, a
# documented state of its own (providers/kredswallet.py), not a malformed answer.
ALLOWED = {("kredswallet", "count_negative")}


def variants() -> list[tuple[str, str]]:
    """(provider, variant) pairs to test."""
    names = [*BODIES, *AMOUNTS, *COUNTS]
    return [
        (p.name, v)
        for p in PROVIDERS
        for v in names
        if (p.name, v) not in ALLOWED and any(malformed(g, v) for g in p.routes.values())
    ]


def malformed(good: Good, variant: str) -> Answer | None:
    """The variant of one route's good answer; None when it does not apply to the route."""
    if variant in BODIES:
        return BODIES[variant](good.render())
    if variant in AMOUNTS:
        if "@AMOUNT@" not in good.template:
            return None
        return Answer(good.render(amount=AMOUNTS[variant]))
    if "@COUNT@" not in good.template:
        return None
    return Answer(good.render(count=COUNTS[variant]))


@pytest.fixture(name="server", scope="module")
def fixture_server() -> HostileServer:
    """One hostile server for the module (the tests reset its answers)."""
    return HostileServer()


@pytest.fixture(name="url")
async def fixture_url(server: HostileServer) -> AsyncIterator[str]:
    """The server on a loopback port."""
    async for url in serve(server.app()):
        yield url


async def rows(daemon: Daemon) -> AccountState:
    """The account's state as committed to the store (read through the daemon: it holds it)."""
    states = await daemon.store.call(daemon.store.store.load)
    return states["acct"]


def kept(state: AccountState) -> AccountState:
    """The state without the failure bookkeeping a failed poll may update."""
    return replace(state, failures={}, down=False, downs=0)


@pytest.mark.parametrize(("provider_name", "variant"), variants())
async def test_malformed_answer_is_a_failed_poll(
    provider_name: str, variant: str, server: HostileServer, url: str, tmp_path: Path
) -> None:
    """A malformed answer fails the poll as bad_payload; last good values stay, up goes to 0."""
    provider: Provider = next(p for p in PROVIDERS if p.name == provider_name)
    bad = {key: malformed(good, variant) for key, good in provider.routes.items()}
    affected = {key for key, answer in bad.items() if answer is not None}
    config = make_config(tmp_path, [provider.account(url)])
    daemon = await started(config)
    try:
        watcher = daemon.watchers["acct"]
        server.serve_good(provider)
        for endpoint in watcher.endpoints:
            assert (await watcher.poll(endpoint)).ok, (endpoint, watcher.health[endpoint])
        labels = {"provider": provider.name, "account": "acct"}
        assert daemon.registry.get_sample_value("walletwatch_up", labels) == 1
        balances = {
            s.labels["currency"]: s.value
            for family in daemon.registry.collect()
            if family.name == "walletwatch_balance"
            for s in family.samples
        }
        before = watcher.state
        stored = await rows(daemon)

        for key, answer in bad.items():
            if answer is not None:
                server.answers[key] = answer
        failed, set_aside = [], []
        for endpoint in watcher.endpoints:
            outcome = await watcher.poll(endpoint)
            health = watcher.health[endpoint]
            if not outcome.ok:
                assert health.reason == "bad_payload", (endpoint, health.error)
                failed.append(endpoint)
            elif daemon.telemetry.malformed[(provider.name, "acct", endpoint)]:
                set_aside.append(endpoint)  # a bad record of a listing: the rest is used
        assert failed or set_aside, f"{provider.name} took {variant!r} ({affected}) as good"
        if variant in BODIES:  # served on every route: every endpoint fails
            assert failed == list(watcher.endpoints)
        up = daemon.registry.get_sample_value("walletwatch_up", labels)
        assert up == (0 if failed else 1)
        for currency, value in balances.items():
            sample = {**labels, "currency": currency}
            assert daemon.registry.get_sample_value("walletwatch_balance", sample) == value
        assert kept(watcher.state) == kept(before)
        assert kept(await rows(daemon)) == kept(stored)
        errors = daemon.telemetry.poll_errors
        assert sum(errors[(provider.name, "acct", e, "bad_payload")] for e in failed) == len(failed)
    finally:
        await daemon.close()


@pytest.mark.parametrize("provider", PROVIDERS, ids=lambda p: p.name)
async def test_every_route_is_exercised(
    provider: Provider, server: HostileServer, url: str, tmp_path: Path
) -> None:
    """Each route of the table is requested by a poll, so every variant reaches every endpoint."""
    daemon = await started(make_config(tmp_path, [provider.account(url)]))
    try:
        server.serve_good(provider)
        server.seen.clear()
        watcher = daemon.watchers["acct"]
        for endpoint in watcher.endpoints:
            assert (await watcher.poll(endpoint)).ok
        requested = {route_key(s.method, s.path, s.body) for s in server.seen}
        assert requested == set(provider.routes)
    finally:
        await daemon.close()


async def test_json_labelled_as_html_is_read_on_its_merits(
    server: HostileServer, url: str, tmp_path: Path
) -> None:
    """The body decides, not Content-Type: PHP-backed APIs label good JSON text/html."""
    provider = PROVIDERS[0]
    daemon = await started(make_config(tmp_path, [provider.account(url)]))
    try:
        server.serve_good(provider)
        for key, answer in server.answers.items():
            server.answers[key] = replace(answer, content_type="text/html")
        watcher = daemon.watchers["acct"]
        for endpoint in watcher.endpoints:
            assert (await watcher.poll(endpoint)).ok
    finally:
        await daemon.close()
