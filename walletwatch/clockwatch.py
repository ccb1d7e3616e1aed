"""The system wall clock watched against the daemon's steady time: a step is exported and logged.

The daemon's own time does not follow a step (clock.SystemClock); only this says so.
"""

from __future__ import annotations

import structlog

from walletwatch.telemetry import Telemetry
from walletwatch.types import Clock, Timer

log = structlog.get_logger("walletwatch.clockwatch")

CLOCK_CHECK = 5.0
"""Seconds between two measurements of the system wall clock against the daemon's own."""
CLOCK_TOLERANCE = 30.0
"""A wall-clock step larger than this (seconds) is reported. NTP slews far less; the shortest
stuck thresholds are minutes, so a smaller step would not change what walletwatch reports."""


class ClockWatch:
    """Measures the wall clock's offset every CLOCK_CHECK seconds once started."""

    def __init__(self, clock: Clock, telemetry: Telemetry) -> None:
        self._clock = clock
        self._telemetry = telemetry
        self._timer: Timer | None = None
        self._jumped = False

    def start(self) -> None:
        """Measure the wall clock's offset now and every CLOCK_CHECK seconds."""
        self.check()
        self._timer = self._clock.call_later(CLOCK_CHECK, self.start)

    def stop(self) -> None:
        """Measure no more."""
        if self._timer is not None:
            self._timer.cancel()

    def check(self) -> None:
        """Export the system wall clock's offset; log when it leaves or rejoins tolerance."""
        offset = self._clock.wall_offset()
        self._telemetry.clock_offset = offset
        jumped = abs(offset) > CLOCK_TOLERANCE
        if jumped and not self._jumped:
            log.warning(
                "clock.jumped",
                offset_seconds=round(offset, 3),
                tolerance_seconds=CLOCK_TOLERANCE,
                note="the system wall clock was stepped; ages, stuck checks, pruning and "
                "timestamps keep walletwatch's steady time; a restart adopts the new time",
            )
        elif self._jumped and not jumped:
            log.info("clock.rejoined", offset_seconds=round(offset, 3))
        self._jumped = jumped
