"""A repeating log line, written once per interval with how many times it happened since."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any

import structlog


@dataclass(slots=True)
class _Seen:
    """One key's count since its last line, and when that line was written."""

    logged_at: float
    count: int = 0


class Throttle:
    """Counts occurrences by key and says when a line is due: the first, then one per interval.

    ``monotonic`` is the clock (seconds that never jump). A flood of the same error (an
    accept() failing thousands of times a second) becomes one line per ``interval`` that
    carries the count, instead of gigabytes of the same line.
    """

    def __init__(self, monotonic: Callable[[], float], interval: float = 60.0) -> None:
        self._now = monotonic
        self.interval = interval
        self._seen: dict[Hashable, _Seen] = {}

    def hit(self, key: Hashable) -> int | None:
        """Count one occurrence of ``key``: how many to report if a line is due now, else None.

        The count covers this occurrence and every one held back since the last line.
        """
        now = self._now()
        seen = self._seen.get(key)
        if seen is None:
            self._seen[key] = _Seen(logged_at=now)
            return 1
        seen.count += 1
        if now - seen.logged_at < self.interval:
            return None
        count, seen.count, seen.logged_at = seen.count, 0, now
        return count

    def held(self) -> dict[Hashable, int]:
        """The occurrences held back since each key's last line (keys with none left out)."""
        return {key: seen.count for key, seen in self._seen.items() if seen.count}


def exception_handler(
    throttle: Throttle, logger: Any = None
) -> Callable[[asyncio.AbstractEventLoop, dict[str, Any]], None]:
    """An event loop exception handler logging ``loop.error`` once per interval per message.

    asyncio reports what it cannot raise anywhere (a failed accept(), a callback that
    raised) through this handler; its default logs each one, however often it repeats.
    """
    log = logger if logger is not None else structlog.get_logger("walletwatch.loop")

    def handle(_: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        message = str(context.get("message", "unhandled exception in the event loop"))
        exception = context.get("exception")
        kind = type(exception).__name__ if exception is not None else None
        count = throttle.hit((message, kind))
        if count is not None:
            log.error(
                "loop.error",
                message=message,
                exception=kind,
                # Only an OSError's strerror: other texts may carry a URL or a payload.
                error=exception.strerror if isinstance(exception, OSError) else None,
                count=count,
                interval=throttle.interval,
            )

    return handle


class ThrottledHandler(logging.Handler):
    """Hands a stdlib logger's records to structlog as ``event``, each kind once per interval.

    A kind is the logger, the message's template and the exception's type; the line carries
    the first message and exception type of its kind, and the count, never a traceback.
    """

    def __init__(self, throttle: Throttle, event: str, logger: Any = None) -> None:
        super().__init__()
        self._throttle = throttle
        self._event = event
        self._log = logger if logger is not None else structlog.get_logger("walletwatch.loop")

    def emit(self, record: logging.LogRecord) -> None:
        """Log ``record`` if a line of its kind is due."""
        kind = record.exc_info[0].__name__ if record.exc_info and record.exc_info[0] else None
        count = self._throttle.hit((record.name, str(record.msg), kind))
        if count is not None:
            level = record.levelname.lower()
            method = getattr(self._log, level if level in _LEVELS else "error")
            method(
                self._event,
                message=record.getMessage(),
                exception=kind,
                count=count,
                interval=self._throttle.interval,
            )


_LEVELS = frozenset({"debug", "info", "warning", "error", "critical"})


def throttled_logger(name: str, throttle: Throttle, event: str) -> logging.Logger:
    """A stdlib logger of its own (not in logging's registry) writing through ``throttle``."""
    # Not getLogger(): one per daemon, not a process-wide one gaining a handler per start.
    logger = logging.Logger(name, logging.INFO)  # noqa: LOG001
    logger.addHandler(ThrottledHandler(throttle, event))
    return logger
