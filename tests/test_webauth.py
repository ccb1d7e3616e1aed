"""/metrics over TLS with basic auth, with a real TLS client on loopback; the web config block."""

from __future__ import annotations

import base64
import ssl
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import bcrypt
import pytest
import trustme

from walletwatch.app import Daemon
from walletwatch.clock import SystemClock
from walletwatch.config import parse_config
from walletwatch.errors import ConfigError
from walletwatch.webauth import BasicAuth, parse_basic

PASSWORD = "correct horse"
HASH = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=4)).decode()


def account() -> dict[str, Any]:
    """One account; it is never polled here."""
    return {
        "name": "hot",
        "provider": "westwallet",
        "base_url": "http://127.0.0.1:9/westwallet",
        "credentials": {"api_key": "k", "secret_key": "s"},
    }


@pytest.fixture(name="ca")
def fixture_ca() -> trustme.CA:
    """A throwaway certificate authority."""
    return trustme.CA()


@pytest.fixture(name="daemon")
async def fixture_daemon(ca: trustme.CA, tmp_path: Path) -> AsyncIterator[Daemon]:
    """A daemon serving HTTPS on loopback with one basic-auth user."""
    cert = ca.issue_cert("127.0.0.1")
    cert.private_key_pem.write_to_path(str(tmp_path / "key.pem"))
    cert.cert_chain_pems[0].write_to_path(str(tmp_path / "cert.pem"))
    config = parse_config(
        {
            "listen": "127.0.0.1:0",
            "state_path": "state.db",
            "web": {
                "tls_server_config": {"cert_file": "cert.pem", "key_file": "key.pem"},
                "basic_auth_users": {"prometheus": HASH},
            },
            "accounts": [account()],
        },
        base_dir=tmp_path,
        environ={},
    )
    daemon = Daemon(config, clock=SystemClock())
    await daemon.start()
    yield daemon
    await daemon.close()


def basic(user: str, password: str) -> str:
    """An Authorization header value."""
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


class TestTlsAndBasicAuth:
    """The server speaks TLS and asks for credentials, except on /healthz."""

    @pytest.mark.parametrize(
        ("path", "authorization", "status"),
        [
            ("/metrics", basic("prometheus", PASSWORD), 200),
            ("/metrics", basic("prometheus", PASSWORD + "!"), 401),
            ("/metrics", basic("grafana", PASSWORD), 401),
            ("/metrics", None, 401),
            ("/metrics", "Bearer abc", 401),
            ("/", None, 401),
            ("/healthz", None, 200),
        ],
    )
    async def test_status(
        self,
        ca: trustme.CA,
        daemon: Daemon,
        path: str,
        authorization: str | None,
        status: int,
    ) -> None:
        """Each request over verified TLS gets the expected status."""
        assert daemon.url.startswith("https://127.0.0.1:")
        context = ssl.create_default_context()
        ca.configure_trust(context)
        headers = {} if authorization is None else {"Authorization": authorization}
        async with (
            aiohttp.ClientSession() as session,
            session.get(daemon.url + path, ssl=context, headers=headers) as resp,
        ):
            assert resp.status == status
            body = await resp.text()
        if status == 401:
            assert resp.headers["WWW-Authenticate"] == 'Basic realm="walletwatch"'
        if path == "/metrics" and status == 200:
            assert "walletwatch_build_info" in body

    async def test_untrusted_client_refuses(self, daemon: Daemon) -> None:
        """A client that does not trust the CA cannot talk to the server."""
        async with aiohttp.ClientSession() as session:
            with pytest.raises(aiohttp.ClientConnectorCertificateError):
                await session.get(daemon.url + "/healthz", ssl=ssl.create_default_context())

    async def test_plain_http_refused(self, daemon: Daemon) -> None:
        """Plain HTTP to the TLS port gets no metrics."""
        plain = daemon.url.replace("https://", "http://")
        async with aiohttp.ClientSession() as session:
            with pytest.raises(aiohttp.ClientError):
                async with session.get(plain + "/metrics") as resp:
                    assert resp.status != 200


class TestBasicAuth:
    """Password checks: bcrypt, cached by a digest, never by the password."""

    async def test_cache_holds_no_password(self) -> None:
        """A successful check is remembered as a SHA-256 digest."""
        auth = BasicAuth({"prometheus": HASH})
        assert await auth.check(basic("prometheus", PASSWORD))
        assert await auth.check(basic("prometheus", PASSWORD))
        cached = auth._passed  # the cache's content is the behaviour
        assert len(cached) == 1
        assert all(PASSWORD.encode() not in entry and len(entry) == 32 for entry in cached)
        assert not await auth.check(basic("prometheus", "wrong"))

    @pytest.mark.parametrize(
        ("header", "expected"),
        [
            (basic("a", "b:c"), ("a", "b:c")),
            ("Basic !!!", None),
            ("Basic " + base64.b64encode(b"nocolon").decode(), None),
            ("Digest x", None),
        ],
    )
    def test_parse(self, header: str, expected: tuple[str, str] | None) -> None:
        """Only a well-formed Basic header yields credentials."""
        assert parse_basic(header) == expected


class TestWebConfig:
    """The web block is checked like the rest of the file."""

    def test_problems(self, tmp_path: Path) -> None:
        """Every problem of the block is listed with its path."""
        with pytest.raises(ConfigError) as err:
            parse_config(
                {
                    "web": {
                        "tls_server_config": {"cert_file": "missing.pem"},
                        "basic_auth_users": {"prometheus": "plaintext"},
                        "http_server_config": {},
                    },
                    "accounts": [account()],
                },
                base_dir=tmp_path,
                environ={},
            )
        assert list(err.value.problems) == [
            "web.http_server_config: unknown key (did you mean 'tls_server_config'?)",
            "web.tls_server_config: missing required key 'key_file'",
            "web.basic_auth_users.prometheus: expected a bcrypt hash ($2b$...)",
        ]

    def test_unloadable_certificate(self, tmp_path: Path) -> None:
        """A certificate that does not load is a config problem, not a startup crash."""
        (tmp_path / "cert.pem").write_text("not a certificate")
        (tmp_path / "key.pem").write_text("not a key")
        with pytest.raises(ConfigError) as err:
            parse_config(
                {
                    "web": {"tls_server_config": {"cert_file": "cert.pem", "key_file": "key.pem"}},
                    "accounts": [account()],
                },
                base_dir=tmp_path,
                environ={},
            )
        assert err.value.problems[0].startswith("web.tls_server_config: cannot load")
