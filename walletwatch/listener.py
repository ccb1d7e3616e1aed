"""The web server's listening sockets: connections capped, idle ones cut off, polling's
descriptors kept.

asyncio's own accept loop takes up to ``backlog`` connections at a time and, once the process
runs out of file descriptors, starves everything else that opens one (the provider polls) and
logs every failed accept(). Here each accept is weighed against a cap computed from the open
files limit less a reserve kept for polling: a connection over the cap makes room by closing
the longest-idle connection that is not handling a request, or is refused (closed at once).
A connection that has not sent a complete request within ``header_timeout`` of its accept is
closed; after a request, aiohttp's ``keepalive_timeout`` closes it once idle, also when the
next request's headers come too slowly (its timer is not moved by partial data).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import resource
import socket
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import structlog
from aiohttp import web

from walletwatch.errors import StartupError
from walletwatch.telemetry import WebConnections
from walletwatch.throttle import Throttle

log = structlog.get_logger("walletwatch.listener")

HEADER_TIMEOUT = 5.0
"""Seconds a new connection gets to finish its TLS handshake and send one complete request."""
KEEPALIVE_TIMEOUT = 5.0
"""Seconds an idle connection stays open after a response (Prometheus scrapes reconnect)."""
RESERVE = 200
"""File descriptors kept from the web server: the HTTP client's 100 connections (app.py's
connector limit), the state file with its WAL and shared memory, the events file, the logs,
the event loop's own, sink and DNS sockets, with room to spare."""
ACCEPT_BATCH = 16
"""Connections accepted per readiness of the socket. A connection that makes room closes
another, freed one loop turn later: the reserve must also hold one batch."""
ACCEPT_RETRY = 1.0
"""Seconds accepting pauses when accept() itself fails for want of a resource."""
MIN_CONNECTIONS = 8
"""The cap never goes below this, however low the open files limit: /metrics must answer."""
BACKLOG = 128
# accept() failing for want of descriptors or memory: the socket stays readable, so
# accepting pauses instead of spinning.
OUT_OF_RESOURCES = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
REFUSAL = (
    b"HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\nContent-Length: 0\r\n"
    b"Retry-After: 5\r\n\r\n"
)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True, slots=True)
class OpenFiles:
    """The process's open files limit as found and as raised, and the web server's share."""

    found: int  # the soft limit at start
    limit: int  # the soft limit now
    hard: int
    connections: int  # the web server's cap


def connection_cap(limit: int, reserve: int = RESERVE, batch: int = ACCEPT_BATCH) -> int:
    """How many web connections fit under an open files ``limit`` beside the reserve."""
    return max(limit - reserve - batch, MIN_CONNECTIONS)


def raise_open_files() -> OpenFiles:
    """Raise the soft RLIMIT_NOFILE to the hard limit when lower; the cap it leaves for the web.

    The soft limit is often 1024 where the hard one is far higher. A refused raise (a
    seccomp filter, an odd platform) is logged, and the soft limit is used as it is.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    found = soft
    # An unlimited hard limit cannot be the soft one (the kernel's nr_open caps it).
    target = 1 << 20 if hard == resource.RLIM_INFINITY else hard
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (OSError, ValueError) as err:
            log.warning("web.open_files_not_raised", soft=soft, hard=hard, error=str(err))
    limit = (1 << 20) if soft == resource.RLIM_INFINITY else soft
    cap = connection_cap(limit)
    if limit - RESERVE - ACCEPT_BATCH < MIN_CONNECTIONS:
        log.warning("web.open_files_low", limit=limit, reserve=RESERVE, connections=cap)
    return OpenFiles(found=found, limit=limit, hard=hard, connections=cap)


@dataclass(eq=False, slots=True)
class _Connection:
    """One accepted connection as the listener tracks it."""

    sock: socket.socket
    transport: asyncio.BaseTransport | None = None  # once the protocol is connected
    requested: bool = False  # a complete request came
    busy: bool = False  # a request is being handled
    closing: bool = False  # closed by the listener, not yet gone
    timer: asyncio.TimerHandle | None = field(default=None, repr=False)


class _Guarded(asyncio.Protocol):
    """The aiohttp protocol of one connection, reporting to the listener when it ends."""

    def __init__(self, inner: asyncio.Protocol, conn: _Connection, listener: Listener) -> None:
        self._inner = inner
        self._conn = conn
        self._listener = listener

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._listener._connected(self._conn, transport)
        self._inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self._inner.eof_received()

    def pause_writing(self) -> None:
        self._inner.pause_writing()

    def resume_writing(self) -> None:
        self._inner.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        self._listener._lost(self._conn)
        self._inner.connection_lost(exc)


class Listener:
    """Accepts web connections within ``stats.limit``, each cut off if no request comes."""

    def __init__(
        self,
        stats: WebConnections,
        *,
        tls: ssl.SSLContext | None = None,
        throttle: Throttle,
        header_timeout: float = HEADER_TIMEOUT,
    ) -> None:
        self._factory: Callable[[], asyncio.Protocol] = asyncio.Protocol
        self.stats = stats
        self._tls = tls
        self._throttle = throttle
        self._header_timeout = header_timeout
        # Oldest first: the first idle one is the one to close to make room.
        self._conns: dict[_Connection, None] = {}
        self._closing = 0  # of them, closed by the listener and not yet gone
        self._by_transport: dict[asyncio.BaseTransport, _Connection] = {}
        self._socks: list[socket.socket] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._retry: asyncio.TimerHandle | None = None

    @property
    def port(self) -> int:
        """The port of the first listening socket."""
        return int(self._socks[0].getsockname()[1])

    async def start(self, host: str, port: int, factory: Callable[[], asyncio.Protocol]) -> None:
        """Bind ``host``:``port`` and serve ``factory``'s protocol (aiohttp's server) on it."""
        await self.bind(host, port)
        self.serve(factory)

    async def bind(self, host: str, port: int, setting: str = "listen") -> None:
        """Take every address of ``host`` as asyncio's create_server would, accepting nothing
        yet; StartupError (one line: the address, what is wrong, what to do) if this host
        cannot give it. ``setting`` is the config key the advice names."""
        loop = asyncio.get_running_loop()
        where = f"{host}:{port}" if ":" not in host else f"[{host}]:{port}"
        try:
            infos = await loop.getaddrinfo(
                host,
                port,
                family=socket.AF_UNSPEC,
                type=socket.SOCK_STREAM,
                flags=socket.AI_PASSIVE,
            )
        except socket.gaierror as err:
            raise StartupError(
                f"cannot listen on {where}: {err.strerror or err}; set {setting} to an address "
                "of this host (127.0.0.1:PORT serves this host only)"
            ) from None
        try:
            for family, kind, proto, _, address in dict.fromkeys(infos):
                sock = socket.socket(family, kind, proto)
                self._socks.append(sock)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                if family == socket.AF_INET6:
                    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                try:
                    sock.bind(address)
                except OSError as err:
                    advice = _bind_advice(err, setting)
                    raise StartupError(f"cannot listen on {where}: {advice}") from None
                sock.listen(BACKLOG)
                sock.setblocking(False)
        except BaseException:
            self.close()
            raise

    def serve(self, factory: Callable[[], asyncio.Protocol]) -> None:
        """Start accepting connections on the bound sockets for ``factory``'s protocol."""
        self._factory = factory
        loop = asyncio.get_running_loop()
        for sock in self._socks:
            loop.add_reader(sock.fileno(), self._accept, sock)

    def close(self) -> None:
        """Stop accepting (open connections are aiohttp's to shut down)."""
        loop = asyncio.get_running_loop()
        if self._retry is not None:
            self._retry.cancel()
        for sock in self._socks:
            if sock.fileno() != -1:
                loop.remove_reader(sock.fileno())
                sock.close()
        for conn in self._conns:
            if conn.timer is not None:
                conn.timer.cancel()

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Mark the request's connection busy while it is handled (aiohttp middleware)."""
        conn = self._by_transport.get(request.transport) if request.transport else None
        if conn is None:
            return await handler(request)
        conn.requested = conn.busy = True
        if conn.timer is not None:
            conn.timer.cancel()
            conn.timer = None
        try:
            return await handler(request)
        finally:
            conn.busy = False
            # The most recently active last: the last to be closed to make room.
            if conn in self._conns:  # not gone meanwhile
                del self._conns[conn]
                self._conns[conn] = None

    def _accept(self, listening: socket.socket) -> None:
        for _ in range(ACCEPT_BATCH):
            try:
                sock, _ = listening.accept()
            except (BlockingIOError, InterruptedError):
                return
            except ConnectionAbortedError:
                continue
            except OSError as err:
                self._accept_failed(listening, err)
                return
            if self._open() >= self.stats.limit and not self._make_room():
                self._refuse(sock)
            else:
                self._admit(sock)

    def _open(self) -> int:
        return len(self._conns) - self._closing

    def _make_room(self) -> bool:
        """Close the longest-idle connection that is not handling a request, if any."""
        for conn in self._conns:
            if not conn.busy and not conn.closing and conn.transport is not None:
                self._close(conn, "evicted")
                self._log("web.connection_evicted", "warning")
                return True
        return False

    def _refuse(self, sock: socket.socket) -> None:
        if self._tls is None:
            # A fresh socket's send buffer takes this at once, or it is dropped.
            with contextlib.suppress(OSError):
                sock.send(REFUSAL)
        sock.close()
        self.stats.dropped["refused"] += 1
        self._log("web.connection_refused", "warning")

    def _admit(self, sock: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        sock.setblocking(False)
        conn = _Connection(sock)
        self._conns[conn] = None
        self.stats.open = len(self._conns)
        conn.timer = loop.call_later(self._header_timeout, self._expire, conn)
        protocol = _Guarded(self._factory(), conn, self)
        task = loop.create_task(self._connect(conn, protocol))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _connect(self, conn: _Connection, protocol: _Guarded) -> None:
        loop = asyncio.get_running_loop()
        try:
            await loop.connect_accepted_socket(
                lambda: protocol,
                conn.sock,
                ssl=self._tls,
                ssl_handshake_timeout=self._header_timeout if self._tls else None,
            )
        except (OSError, ssl.SSLError, TimeoutError, ConnectionError):
            # A failed or too slow TLS handshake: the transport closed the socket.
            conn.sock.close()
            self._lost(conn)

    def _connected(self, conn: _Connection, transport: asyncio.BaseTransport) -> None:
        conn.transport = transport
        self._by_transport[transport] = conn
        if conn.closing:  # evicted during its TLS handshake
            transport.abort()  # type: ignore[attr-defined]

    def _expire(self, conn: _Connection) -> None:
        conn.timer = None
        if not conn.requested and not conn.closing and conn.transport is not None:
            self._close(conn, "header_timeout")

    def _close(self, conn: _Connection, reason: str) -> None:
        conn.closing = True
        self._closing += 1
        self.stats.dropped[reason] += 1
        if conn.timer is not None:
            conn.timer.cancel()
            conn.timer = None
        if conn.transport is not None:
            conn.transport.abort()  # type: ignore[attr-defined]

    def _lost(self, conn: _Connection) -> None:
        if conn.timer is not None:
            conn.timer.cancel()
            conn.timer = None
        if conn in self._conns:  # not lost already (a failed handshake, then close())
            del self._conns[conn]
            self._closing -= conn.closing
        if conn.transport is not None:
            self._by_transport.pop(conn.transport, None)
        self.stats.open = len(self._conns)

    def _accept_failed(self, listening: socket.socket, err: OSError) -> None:
        self.stats.accept_errors += 1
        self._log("web.accept_failed", "error", error=err.strerror or str(err))
        if err.errno in OUT_OF_RESOURCES:
            loop = asyncio.get_running_loop()
            loop.remove_reader(listening.fileno())
            self._retry = loop.call_later(ACCEPT_RETRY, self._resume, listening)

    def _resume(self, listening: socket.socket) -> None:
        self._retry = None
        if listening.fileno() != -1:
            asyncio.get_running_loop().add_reader(listening.fileno(), self._accept, listening)

    def _log(self, event: str, level: str, **fields: object) -> None:
        count = self._throttle.hit(event)
        if count is not None:
            getattr(log, level)(
                event,
                count=count,
                interval=self._throttle.interval,
                open=self._open(),
                limit=self.stats.limit,
                **fields,
            )


def _bind_advice(err: OSError, setting: str = "listen") -> str:
    """What a failed bind means and what to do about it (``setting``: the key), in words."""
    if err.errno == errno.EADDRINUSE:
        return (
            "the address is in use by another program (another walletwatch? `ss -ltnp` "
            f"names it); stop it, or set {setting} to a free port"
        )
    if err.errno == errno.EADDRNOTAVAIL:
        return (
            f"this host has no such address; set {setting} to one of its own addresses "
            "(127.0.0.1 serves this host only)"
        )
    if err.errno == errno.EACCES:
        return (
            f"permission denied (ports below 1024 need privileges); set {setting} to a higher port"
        )
    return f"{(err.strerror or str(err)).lower()}"
