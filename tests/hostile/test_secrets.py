"""Secrets never leak: not in logs, events, metrics, errors, ``once`` output or reprs.

Every failure path is run with distinctive fake credentials, logs at debug level, and a
hostile server that repeats every request header (keys, signatures, tokens) in its error
bodies. Then every output walletwatch produced is searched for every secret and signature.
"""

from __future__ import annotations

import base64
import io
import json
import logging
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest
import structlog
import yaml
from prometheus_client import generate_latest

from tests.hostile.harness import (
    PROVIDERS,
    Answer,
    HostileServer,
    Provider,
    make_config,
    serve,
    serve_in_thread,
)
from walletwatch import logs
from walletwatch.app import Daemon
from walletwatch.cli import main
from walletwatch.clock import SystemClock
from walletwatch.config import load_config
from walletwatch.errors import ConfigError

SILA_TOKEN_CREDENTIALS = {"client_id": "SILA-CLIENT-ID-5t6y7u", "client_secret": "SILA-SECRET-1q2w"}
SILA_TOKEN = "SILA-TOKEN-0o9i8u7y6t"
TOKEN_ANSWER = Answer(json.dumps({"success": True, "access_token": {"token": SILA_TOKEN}}).encode())
# Headers that carry a credential or a signature (names lowercased).
SECRET_HEADERS = frozenset(
    {
        "x-api-key",
        "x-access-sign",
        "x-wwt-apikey",
        "x-wwt-signature",
        "access-public",
        "access-hash",
        "authsignature",
        "usersignature",
        "x-key",
        "x-sign",
        "x-signature",
        "authorization",
    }
)


def set_fallback(answer: Answer) -> Callable[[HostileServer], None]:
    """A failure: every request gets ``answer``."""

    def apply(server: HostileServer) -> None:
        server.fallback = answer

    return apply


def set_echo(status: int) -> Callable[[HostileServer], None]:
    """A failure: every request gets ``status`` with its own headers repeated in the body."""

    def apply(server: HostileServer) -> None:
        server.echo = status

    return apply


FAILURES: dict[str, Callable[[HostileServer], None]] = {
    "auth_401": set_echo(401),
    "forbidden_403": set_echo(403),
    "refused_in_200": set_echo(200),
    "bad_request_400": set_echo(400),
    "not_found_404": set_echo(404),
    "server_500": set_echo(500),
    "rate_limited_429": set_echo(429),
    "html_page": set_fallback(Answer(b"<html>oops</html>", content_type="text/html")),
    "timeout": set_fallback(Answer(b"{}", delay=0.3)),
    "redirect": set_fallback(Answer(b"", status=302, headers={"Location": "http://x.test/"})),
}


def accounts(provider: Provider, url: str) -> list[dict[str, object]]:
    """The provider's account (down after one failure), and for Sila a token account too."""
    main_account = provider.account(url, down_after=1)
    if provider.name != "sila":
        return [main_account]
    handles = {k: v for k, v in provider.credentials.items() if k.endswith("handle")}
    token = {
        **provider.account(url, name="acct-token", down_after=1),
        "auth": "token",
        "credentials": {**handles, **SILA_TOKEN_CREDENTIALS},
    }
    return [main_account, token]


def secrets_of(provider: Provider, server: HostileServer, *, sent: bool = True) -> set[str]:
    """Every credential (Sila's public handles aside) and every signature that was sent."""
    found = {v for k, v in provider.credentials.items() if not k.endswith("handle")}
    if provider.name == "sila":
        found |= {*SILA_TOKEN_CREDENTIALS.values(), SILA_TOKEN}
    for seen in server.seen:
        for name, value in seen.headers.items():
            if name.lower() in SECRET_HEADERS:
                found.add(value)
                found.add(value.split(" ", 1)[-1])  # "Bearer <token>", "Basic <b64>"
    if provider.name == "sila" and sent:
        pair = ":".join(SILA_TOKEN_CREDENTIALS.values()).encode()
        assert base64.b64encode(pair).decode() in found  # the Basic header was seen
    return found


WINDOW = 16  # a run this long of a secret counts as a leak, so a cut-off echo is caught


def assert_hidden(secrets: set[str], texts: dict[str, str]) -> None:
    """No secret, nor any 16-character run of one, appears in any text."""
    leaks = {
        (where, secret)
        for secret in secrets
        for i in range(max(1, len(secret) - WINDOW + 1))
        for where, text in texts.items()
        if secret[i : i + WINDOW] in text
    }
    assert sorted(leaks) == []


@pytest.fixture(name="server")
def fixture_server() -> HostileServer:
    """A hostile server."""
    return HostileServer()


@pytest.fixture(name="url")
async def fixture_url(server: HostileServer) -> AsyncIterator[str]:
    """The server on a loopback port."""
    async for url in serve(server.app()):
        yield url


@pytest.fixture(name="debug_logs")
def fixture_debug_logs(caplog: pytest.LogCaptureFixture) -> Iterator[Callable[[], dict[str, str]]]:
    """structlog as JSON at debug level into a buffer, stdlib logging captured: both texts."""
    caplog.set_level(logging.DEBUG)
    stream = io.StringIO()
    logs.configure("json", stream, level=logging.DEBUG)
    yield lambda: {"structlog": stream.getvalue(), "logging": caplog.text}
    structlog.reset_defaults()


@pytest.mark.parametrize("provider", PROVIDERS, ids=lambda p: p.name)
async def test_failures_leak_no_secret(
    provider: Provider,
    server: HostileServer,
    url: str,
    tmp_path: Path,
    debug_logs: Callable[[], dict[str, str]],
) -> None:
    """Every failure path, at debug level: no secret in logs, events, metrics or errors."""
    config = make_config(
        tmp_path, accounts(provider, url), **{provider.name: {"read_timeout": "100ms"}}
    )
    events = io.StringIO()
    daemon = Daemon(config, clock=SystemClock(), stdout=events)
    await daemon.start(serve=False)
    errors: list[str] = []
    try:
        for failure in FAILURES.values():
            server.echo = None
            server.serve_good(provider)
            server.answers["/sila/auth_token"] = TOKEN_ANSWER
            for watcher in daemon.watchers.values():
                for endpoint in watcher.endpoints:
                    assert (await watcher.poll(endpoint)).ok, watcher.health[endpoint]
            failure(server)
            for watcher in daemon.watchers.values():
                for endpoint in watcher.endpoints:
                    assert not (await watcher.poll(endpoint)).ok
                    errors.append(watcher.health[endpoint].error or "")
        await daemon.deliver()
        metrics = generate_latest(daemon.registry).decode()
        reprs = [repr(config), str(config), repr(daemon)]
        for watcher in daemon.watchers.values():
            reprs += [
                repr(watcher),
                repr(watcher.client),
                repr(watcher.config),
                repr(watcher.state),
            ]
    finally:
        await daemon.close()
    texts = {
        **debug_logs(),
        "events": events.getvalue(),
        "events_file": config.events_file.read_text() if config.events_file else "",
        "metrics": metrics,
        "errors": "\n".join(errors),
        "reprs": "\n".join(reprs),
    }
    assert '"account.down"' in texts["events"]
    assert "poll.failed" in texts["structlog"]
    secrets = secrets_of(provider, server)
    assert len(secrets) > len(provider.credentials)  # signatures were collected too
    assert_hidden(secrets, texts)


@pytest.mark.parametrize("fmt", [[], ["--json"]], ids=["table", "json"])
def test_once_output_leaks_no_secret(
    fmt: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``walletwatch once`` against refusing providers prints no secret, table or JSON."""
    server = HostileServer()
    server.echo = 401
    with serve_in_thread(server.app()) as url:
        data = {
            "state_path": str(tmp_path / "state.db"),
            "providers": {p.name: {"rate_limit": 1000} for p in PROVIDERS},
            "accounts": [p.account(url, name=f"acct-{p.name}") for p in PROVIDERS],
        }
        path = tmp_path / "config.yaml"
        path.write_text(yaml.safe_dump(data))
        code = main(["once", "-c", str(path), *fmt])
    out, err = capsys.readouterr()
    assert code == 1
    assert "acct-bitexbit" in out
    secrets = {s for p in PROVIDERS for s in secrets_of(p, HostileServer(), sent=False)}
    for seen in server.seen:
        secrets |= {v for k, v in seen.headers.items() if k.lower() in SECRET_HEADERS}
    assert_hidden(secrets, {"stdout": out, "stderr": err})


CONFIG_SECRET = "CFG-SECRET-9a8b7c6d5e"


@pytest.mark.parametrize(
    "account",
    [
        # An unknown credential name, a secret for its value.
        {"credentials": {"api_key": CONFIG_SECRET, "secret_key": "x" * 12, "pin": CONFIG_SECRET}},
        # A secret where a mapping of credentials belongs.
        {"credentials": CONFIG_SECRET},
        {"credentials": [CONFIG_SECRET]},
        # A password in the base URL.
        {
            "base_url": f"https://user:{CONFIG_SECRET}@api.westwallet.io",
            "credentials": {"api_key": "k" * 12, "secret_key": "s" * 12},
        },
        # A source that is not one of the known ones.
        {"credentials": {"api_key": {"vault": CONFIG_SECRET}, "secret_key": "s" * 12}},
        # A secret on plain http to a remote host.
        {
            "base_url": "http://api.westwallet.io",
            "credentials": {"api_key": CONFIG_SECRET, "secret_key": CONFIG_SECRET},
        },
    ],
    ids=["unknown_name", "text", "list", "url_password", "unknown_source", "plain_http"],
)
def test_config_errors_leak_no_secret(
    account: dict[str, object], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Config problems name the path, never the credential value, in the error and `check`."""
    path = tmp_path / "config.yaml"
    entry = {"name": "a", "provider": "westwallet", **account}
    path.write_text(yaml.safe_dump({"accounts": [entry]}))
    with pytest.raises(ConfigError) as raised:
        load_config(path, environ={})
    assert main(["check", "-c", str(path)]) == 2
    out, err = capsys.readouterr()
    assert_hidden({CONFIG_SECRET}, {"error": str(raised.value), "stdout": out, "stderr": err})


def test_world_readable_refusal_leaks_no_secret(tmp_path: Path) -> None:
    """The refusal of a world-readable config names where the literals are, not what."""
    path = tmp_path / "config.yaml"
    creds = {"api_key": CONFIG_SECRET, "secret_key": CONFIG_SECRET}
    path.write_text(
        yaml.safe_dump(
            {"accounts": [{"name": "a", "provider": "westwallet", "credentials": creds}]}
        )
    )
    path.chmod(0o644)
    with pytest.raises(ConfigError) as raised:
        load_config(path, environ={})
    assert_hidden({CONFIG_SECRET}, {"error": str(raised.value)})
    assert "accounts[0].credentials.api_key" in str(raised.value)
