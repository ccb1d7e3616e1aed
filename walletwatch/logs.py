"""structlog set-up: JSON lines when not on a terminal, the console renderer when on one."""

from __future__ import annotations

import logging
import re
import sys
from typing import TextIO

import structlog
from structlog.typing import EventDict, WrappedLogger

from walletwatch.escape import escaped

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


def configure(fmt: str | None, stream: TextIO, level: int = logging.INFO) -> None:
    """Send logs to ``stream`` as ``json`` or ``console`` (None: console on a terminal)."""
    if fmt is None:
        fmt = "console" if sys.stderr.isatty() else "json"
    renderer: structlog.types.Processor = (
        structlog.dev.ConsoleRenderer()
        if fmt == "console"
        else structlog.processors.JSONRenderer(sort_keys=False)
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            escape_text,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(file=stream),
        cache_logger_on_first_use=False,
    )
