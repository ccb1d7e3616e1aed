"""structlog set-up: JSON lines when not on a terminal, the console renderer when on one."""

from __future__ import annotations

import logging
import sys
from typing import TextIO

import structlog


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
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(file=stream),
        cache_logger_on_first_use=False,
    )
