"""``walletwatch status``: read a running daemon's operator API and say what it sees now.

The shell around ``statusdoc`` (reading the answers) and ``statusview`` (laying them out):
where the daemon is (``--url``, else the config's ``listen``), its credentials (from the
environment, never a flag: a flag shows in ``ps`` and shell history), the requests under one
time limit, and the exit code: 0 when every account is up and nothing is stuck, 1
otherwise, 2 when the daemon's answer could not be had.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import ipaddress
import json
import os
import socket
import ssl
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import aiohttp
from yarl import URL

from walletwatch import logs
from walletwatch.configload import read_yaml
from walletwatch.errors import ConfigError, StatusUnavailable
from walletwatch.schema import Invalid, listen_address
from walletwatch.statusdoc import combined, read_snapshot, stuck_total, with_stuck
from walletwatch.statusview import IN_FLIGHT_SHOWN, render, text

ENV_USER, ENV_PASSWORD = "WALLETWATCH_USER", "WALLETWATCH_PASSWORD"
DEFAULT_LISTEN = "127.0.0.1:10101"
"""Where the daemon listens when neither ``--url`` nor a config says (the config's default)."""
DEFAULT_TIMEOUT = 10.0
"""Seconds both requests may take together: a hung daemon must not hang the check."""
TRANSFERS_LIMIT = 100_000
"""The API's largest ``limit``: every transfer in flight, up to it (the counts stay complete)."""
ERROR_BYTES = 4096
"""Most of a refusal's body read for its reason: the API's JSON errors are one short line."""
EXIT_OK, EXIT_PROBLEM, EXIT_UNAVAILABLE = 0, 1, 2

DESCRIPTION = """\
Show what a running walletwatch sees now, read from its operator API: each account up,
down or waiting and why, balances against their thresholds, stuck and in-flight transfers.
Problems are listed in full; beyond 20 accounts the healthy ones are counted, not listed,
and beyond 20 in-flight transfers that are not stuck the oldest are listed (--all lists
everything). Colour on a terminal only, and not when NO_COLOR is set.
"""
EPILOG = f"""\
credentials: when the daemon's web config has basic_auth_users, set {ENV_USER} and
{ENV_PASSWORD} in the environment (never on the command line).

exit status: 0 every account is up and nothing is stuck; 1 an account is down or waiting for
its first poll (just after a start or reload: the daemon cannot vouch for it yet), a
transfer is stuck, or the daemon answers no account; 2 the daemon could not be reached,
refused the credentials, is a replica that does not lead, or did not answer its API (one
line on stderr says which), or the config is bad. A low balance is marked but does not change
the status: WalletwatchBalanceLow alerts on it.
"""


def add_parser(sub: Any) -> None:
    """The ``status`` subcommand on ``sub`` (the parser's subparsers), its options and handler."""
    status = sub.add_parser(
        "status",
        help="what a running daemon sees now: accounts, why down, balances, stuck transfers",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    status.add_argument(
        "-c",
        "--config",
        type=Path,
        default=None,
        help="the daemon's config: its listen address and web.tls_server_config say where to "
        "ask (a wildcard address such as 0.0.0.0 means loopback)",
    )
    status.add_argument(
        "--url",
        default=None,
        help=f"the daemon's base URL, e.g. https://walletwatch.internal:10101 (overrides -c; "
        f"default http://{DEFAULT_LISTEN})",
    )
    status.add_argument(
        "--json",
        action="store_true",
        help="print one JSON document instead of the table: {generated_at, accounts, "
        "transfers, truncated}, the API's lists as it gave them (same exit status)",
    )
    status.add_argument(
        "--all", action="store_true", help="list every account and in-flight transfer"
    )
    status.add_argument(
        "--cacert",
        type=Path,
        metavar="FILE",
        default=None,
        help="trust this CA or self-signed certificate (PEM) for https; default: the system's",
    )
    status.add_argument(
        "--timeout",
        type=_seconds,
        metavar="SECONDS",
        default=DEFAULT_TIMEOUT,
        help=f"seconds to wait for the daemon's answers (default {DEFAULT_TIMEOUT:g})",
    )
    status.set_defaults(func=cmd_status)


def _seconds(value: str) -> float:
    try:
        seconds = float(value)
    except ValueError:
        seconds = 0.0
    if not 0 < seconds < float("inf"):
        raise argparse.ArgumentTypeError(f"expected a number of seconds above 0, got {value!r}")
    return seconds


def cmd_status(args: argparse.Namespace) -> int:
    """Print what the daemon sees; exit 0 healthy, 1 a problem, 2 no usable answer."""
    try:
        base = base_url(args.url, args.config)
        auth = credentials(os.environ)
        tls = tls_context(args.cacert) if base.startswith("https:") else None
        everything = args.json or args.all
        accounts, transfers = asyncio.run(fetch(base, auth, tls, args.timeout, everything))
        snap = read_snapshot(accounts, transfers)
    except StatusUnavailable as err:
        print(f"walletwatch status: {err}", file=sys.stderr)
        return EXIT_UNAVAILABLE
    if args.json:
        # ASCII only: a provider's control character stays a JSON escape, harmless anywhere.
        _emit(json.dumps(combined(accounts, transfers), indent=2) + "\n", sys.stdout)
    else:
        colour = logs.console(None, sys.stdout) and not os.environ.get("NO_COLOR")
        _emit(render(snap, source=base, colour=colour, show_all=args.all) + "\n", sys.stdout)
    return EXIT_OK if snap.healthy else EXIT_PROBLEM


def _emit(output: str, stream: TextIO) -> None:
    """Write ``output`` in the stream's encoding; what it cannot encode is escaped, not fatal."""
    encoding = stream.encoding or "utf-8"
    try:
        stream.write(output.encode(encoding, "backslashreplace").decode(encoding))
        stream.flush()
    except BrokenPipeError:
        # The reader went away (``| head``): the rest is not wanted, and the exit status still
        # is. Python's flush at exit would fail again with a traceback: /dev/null takes it.
        os.dup2(os.open(os.devnull, os.O_WRONLY), stream.fileno())


# Where and how to ask -------------------------------------------------------------------------


def base_url(url: str | None, config: Path | None) -> str:
    """The daemon's base URL, without a trailing slash: ``--url``, else the config's listen."""
    if url is not None:
        return _checked_url(url)
    if config is None:
        return f"http://{DEFAULT_LISTEN}"
    # Only ``listen`` and ``web`` are read: the daemon's secrets and TLS key may be readable
    # by its own user only, and this command needs neither.
    data = read_yaml(config)
    try:
        host, port = listen_address(data.get("listen", DEFAULT_LISTEN))
    except Invalid as err:
        raise ConfigError([f"{config}: listen: {err}"]) from None
    if port == 0:
        raise StatusUnavailable(
            f"{config} listens on port 0 (any free port): give the daemon's address with --url"
        )
    web = data.get("web")
    tls = isinstance(web, Mapping) and isinstance(web.get("tls_server_config"), Mapping)
    return f"{'https' if tls else 'http'}://{_bracketed(_reachable(host))}:{port}"


def _reachable(host: str) -> str:
    """A wildcard listen address is answered on loopback of the same family."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host  # a name
    if address.is_unspecified:
        return "127.0.0.1" if address.version == 4 else "::1"
    return host


def _bracketed(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _checked_url(url: str) -> str:
    try:
        parsed = URL(url)
    except ValueError:
        raise StatusUnavailable(f"--url {text(url)!r} is not a URL") from None
    if parsed.user is not None or parsed.password is not None:
        # The URL is echoed in messages and sits in shell history: never a password in it.
        raise StatusUnavailable(
            f"--url must not hold credentials: set {ENV_USER} and {ENV_PASSWORD} instead"
        )
    if parsed.scheme not in {"http", "https"} or not parsed.host:
        raise StatusUnavailable(
            f"--url {text(url)!r}: expected http://HOST:PORT or https://HOST:PORT"
        )
    if parsed.query_string or parsed.fragment:
        raise StatusUnavailable(f"--url {text(url)!r}: expected a base URL, without ? or #")
    return str(parsed).rstrip("/")


@dataclass(frozen=True, slots=True)
class Credentials:
    """Basic-auth credentials: the user, which messages name, and the header, never shown."""

    login: str
    header: str = field(repr=False)


def credentials(environ: Mapping[str, str]) -> Credentials | None:
    """Basic-auth credentials from ENV_USER and ENV_PASSWORD; None when neither is set."""
    user, password = environ.get(ENV_USER), environ.get(ENV_PASSWORD)
    if user is None and password is None:
        return None
    if user is None or password is None:
        missing = ENV_PASSWORD if password is None else ENV_USER
        raise StatusUnavailable(f"{missing} is not set: set both {ENV_USER} and {ENV_PASSWORD}")
    if not user or ":" in user:
        raise StatusUnavailable(f"{ENV_USER} must be a non-empty user name without ':'")
    for name, value in ((ENV_USER, user), (ENV_PASSWORD, password)):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise StatusUnavailable(f"{name} is not valid UTF-8 text") from None
    # UTF-8, as the daemon decodes it (RFC 7617's charset="UTF-8").
    token = base64.b64encode(f"{user}:{password}".encode()).decode("ascii")
    return Credentials(user, f"Basic {token}")


def tls_context(cacert: Path | None) -> ssl.SSLContext:
    """Verification against the system's CAs, or against ``cacert`` alone."""
    try:
        return ssl.create_default_context(cafile=None if cacert is None else str(cacert))
    except (OSError, ssl.SSLError) as err:
        reason = getattr(err, "strerror", None) or getattr(err, "reason", None) or err
        raise StatusUnavailable(f"--cacert {cacert}: cannot load it: {reason}") from None


# Asking ---------------------------------------------------------------------------------------


async def fetch(
    base: str,
    auth: Credentials | None,
    tls: ssl.SSLContext | None,
    seconds: float,
    everything: bool,
) -> tuple[object, object]:
    """The JSON of /api/v1/accounts and a transfers answer, within ``seconds``.

    With ``everything``, every transfer in flight (up to the API's largest limit); else only
    what the table shows: the stuck ones and the oldest of the rest. At 100,000 in flight
    that is a few kilobytes instead of some 50 MB read and parsed by a check.
    """
    try:
        async with asyncio.timeout(seconds), aiohttp.ClientSession() as session:
            accounts = await _get(session, base, "/api/v1/accounts", auth, tls)
            if everything:
                wanted = _in_flight("in_flight", TRANSFERS_LIMIT)
                return accounts, await _get(session, base, wanted, auth, tls)
            stuck = await _get(session, base, _in_flight("stuck", TRANSFERS_LIMIT), auth, tls)
            first = min(stuck_total(accounts) + IN_FLIGHT_SHOWN, TRANSFERS_LIMIT)
            oldest = await _get(session, base, _in_flight("in_flight", first), auth, tls)
    except (aiohttp.ClientError, TimeoutError, OSError) as err:
        raise StatusUnavailable(f"{base}: {failure(err, seconds)}") from None
    return accounts, with_stuck(stuck, oldest)


def _in_flight(state: str, limit: int) -> str:
    return f"/api/v1/transfers?state={state}&limit={limit}"


async def _get(
    session: aiohttp.ClientSession,
    base: str,
    path: str,
    auth: Credentials | None,
    tls: ssl.SSLContext | None,
) -> object:
    where = base + path.partition("?")[0]
    async with session.get(
        base + path,
        ssl=True if tls is None else tls,
        # A redirect would carry the credentials elsewhere; the API never redirects.
        allow_redirects=False,
        headers={"Accept": "application/json"}
        | ({} if auth is None else {"Authorization": auth.header}),
    ) as resp:
        if resp.status == 401:
            raise StatusUnavailable(
                f"{where}: HTTP 401, "
                + (
                    f"the credentials of {ENV_USER}={text(auth.login)!r} were refused"
                    if auth is not None
                    else f"the daemon asks for credentials: set {ENV_USER} and {ENV_PASSWORD}"
                )
            )
        if resp.status != 200:
            hint = " (is it walletwatch with the operator API?)" if resp.status == 404 else ""
            said = _refusal(await resp.content.read(ERROR_BYTES))
            raise StatusUnavailable(f"{where}: HTTP {resp.status}{said}{hint}")
        body = await resp.read()
    try:
        return json.loads(body)
    except (ValueError, RecursionError):
        raise StatusUnavailable(f"{where}: the answer is not JSON (is it walletwatch?)") from None


def _refusal(body: bytes) -> str:
    """``: the reason`` the API gave in its JSON refusal (a 503 names the store), else ''."""
    try:
        error = json.loads(body).get("error")
    except (ValueError, RecursionError, AttributeError):
        return ""
    return f": {text(error)}" if isinstance(error, str) and error else ""


FAILURES: tuple[tuple[type[BaseException], Callable[[Any, float], str]], ...] = (
    (
        aiohttp.ClientConnectorCertificateError,
        lambda err, _: (
            "its TLS certificate is not trusted ("
            f"{getattr(err.certificate_error, 'verify_message', None) or err.certificate_error}); "
            "--cacert FILE trusts a self-signed one, --url names the host the certificate is for"
        ),
    ),
    (aiohttp.ClientSSLError, lambda err, _: f"TLS failed: {err.os_error}"),
    (
        aiohttp.ClientConnectorError,
        lambda err, _: (
            f"cannot connect: {_os_reason(err.os_error)}"
            " (is the daemon running, and at this address?)"
        ),
    ),
    (TimeoutError, lambda _, timeout: f"no answer within {timeout:g} s (--timeout)"),
    (aiohttp.ServerDisconnectedError, lambda *_: "the server closed the connection"),
)
"""What a person reads for each way a request fails, most specific first."""


def _os_reason(err: OSError) -> str:
    """``Connection refused``, ``Name or service not known``: the system's words."""
    if isinstance(err, socket.gaierror) or not err.errno or err.errno < 0:
        return err.strerror or str(err)  # a resolver error: its errno is not errno's
    return os.strerror(err.errno)


def failure(err: BaseException, timeout: float) -> str:
    """The one-line reason a request failed."""
    for kind, words in FAILURES:
        if isinstance(err, kind):
            return words(err, timeout)
    return f"the request failed: {text(str(err)) or type(err).__name__}"
