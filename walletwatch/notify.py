"""systemd's notify protocol: READY=1, RELOADING=1, STOPPING=1 and the watchdog ping.

A few lines over a unix datagram socket (sd_notify(3)): the message goes to the socket named
by $NOTIFY_SOCKET, a path or an abstract name written with a leading '@'. Without the
variable (not run by systemd, or not Type=notify) every call is a no-op.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Mapping

import structlog

from walletwatch.types import Clock

log = structlog.get_logger("walletwatch.notify")


def notify(message: str, environ: Mapping[str, str] | None = None) -> bool:
    """Send ``message`` to systemd; False when not sent (no $NOTIFY_SOCKET, or it failed)."""
    environ = os.environ if environ is None else environ
    address = environ.get("NOTIFY_SOCKET", "")
    if not address:
        return False
    if address.startswith("@"):  # an abstract socket: the name starts with a NUL byte
        address = "\0" + address[1:]
    # Non-blocking: a full or vanished socket costs this one message, never the event loop.
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
        sock.setblocking(False)
        try:
            sock.connect(address)
            sock.send(message.encode())
        except OSError as err:
            log.warning("notify.failed", message=message.split("\n", maxsplit=1)[0], error=str(err))
            return False
    return True


def watchdog_period(environ: Mapping[str, str] | None = None) -> float | None:
    """Seconds between watchdog pings (half of WatchdogSec=), or None without a watchdog."""
    environ = os.environ if environ is None else environ
    usec = environ.get("WATCHDOG_USEC", "")
    pid = environ.get("WATCHDOG_PID", "")
    if not usec.isdigit() or int(usec) == 0 or (pid and pid != str(os.getpid())):
        return None
    return int(usec) / 2e6  # systemd's advice: ping at half the timeout


async def watchdog(
    healthy: Callable[[], bool],
    period: float,
    clock: Clock,
    send: Callable[[str], object] = notify,
) -> None:
    """Ping WATCHDOG=1 every ``period`` while ``healthy()``; run until cancelled.

    It runs on the event loop, so a blocked loop stops the pings as well as a stalled
    scheduler (``healthy`` false) does; systemd then restarts the service.
    """
    stalled = False
    while True:
        if healthy():
            send("WATCHDOG=1")
            if stalled:
                log.info("watchdog.recovered")
            stalled = False
        elif not stalled:
            stalled = True
            log.error("watchdog.stalled", note="no poll has begun or ended; pings stop")
        await clock.sleep(period)
