"""structlog set-up: JSON lines when not on a terminal, the console renderer when on one."""

from __future__ import annotations

import logging
import re
from decimal import Decimal
from typing import TextIO

import structlog
from structlog.typing import EventDict, WrappedLogger

from walletwatch.escape import escaped
from walletwatch.model import plain

LOG_UNSAFE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\ud800-\udfff]")
"""What a log line must not carry as it is: lone surrogates (no stream can encode them) and
control characters but tab and newline (an escape character rewrites a terminal; tracebacks
need their newlines, which the JSON renderer escapes)."""


def escape_text(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    """Keep unsafe characters of every text value as their escapes (``\\ud800``)."""
    for key, value in event_dict.items():
        if isinstance(value, str) and LOG_UNSAFE.search(value) is not None:
            event_dict[key] = escaped(value, LOG_UNSAFE)
    return event_dict


def plain_amounts(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    """Write Decimal values as fixed-point text (``0.00000000``, never ``0E-8``)."""
    for key, value in event_dict.items():
        if isinstance(value, Decimal):
            event_dict[key] = plain(value)
    return event_dict


def mark_log(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    """Lead a JSON log line with ``"kind": "log"``: alert events on stdout say ``"event"``."""
    return {"kind": "log", **event_dict}


def console(fmt: str | None, stream: TextIO) -> bool:
    """Whether output to ``stream`` is for a person: ``console``, or None and a terminal."""
    return fmt == "console" or (fmt is None and stream.isatty())


def configure(fmt: str | None, stream: TextIO, level: int = logging.INFO) -> None:
    """Send logs to ``stream`` as ``json`` or ``console`` (None: console on a terminal)."""
    last: list[structlog.types.Processor] = (
        [structlog.dev.ConsoleRenderer()]
        if console(fmt, stream)
        else [mark_log, structlog.processors.JSONRenderer(sort_keys=False)]
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            escape_text,
            plain_amounts,
            *last,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        # One write per line: a log line and an event line on the same stream never mix.
        logger_factory=structlog.WriteLoggerFactory(file=stream),
        cache_logger_on_first_use=False,
    )
