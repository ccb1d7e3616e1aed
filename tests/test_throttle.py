"""Tests of throttle.py: a repeating log line once per interval, with its count."""

from __future__ import annotations

import asyncio
import errno

import structlog
from structlog.testing import capture_logs

from tests.fakes import FakeClock
from walletwatch.throttle import Throttle, exception_handler, throttled_logger


class TestThrottle:
    def test_first_occurrence_is_logged_at_once(self) -> None:
        """The first occurrence of a key is due at once, counting itself."""
        assert Throttle(FakeClock().monotonic, 60).hit("accept") == 1

    def test_repeats_within_the_interval_are_held(self) -> None:
        """Occurrences within the interval after a line are held back."""
        clock = FakeClock()
        throttle = Throttle(clock.monotonic, 60)
        throttle.hit("accept")
        clock.mono += 59.9
        assert [throttle.hit("accept") for _ in range(1000)] == [None] * 1000
        assert throttle.held() == {"accept": 1000}

    def test_next_line_counts_everything_since_the_last(self) -> None:
        """Once the interval is over, the next occurrence is due with every one held back."""
        clock = FakeClock()
        throttle = Throttle(clock.monotonic, 60)
        throttle.hit("accept")
        for _ in range(9):
            throttle.hit("accept")
        clock.mono += 60
        assert throttle.hit("accept") == 10
        assert throttle.held() == {}
        clock.mono += 1
        assert throttle.hit("accept") is None

    def test_keys_are_counted_apart(self) -> None:
        """Each key has its own count and interval."""
        clock = FakeClock()
        throttle = Throttle(clock.monotonic, 60)
        assert throttle.hit("a") == 1
        assert throttle.hit("b") == 1
        assert throttle.hit("a") is None
        assert throttle.held() == {"a": 1}

    def test_lines_per_hour_are_bounded(self) -> None:
        """A key occurring every 10 ms for an hour makes one line a minute, all counted."""
        clock = FakeClock()
        throttle = Throttle(clock.monotonic, 60)
        counts = []
        for _ in range(360_000):
            clock.mono += 0.01
            if (count := throttle.hit("flood")) is not None:
                counts.append(count)
        assert len(counts) == 60
        assert sum(counts) + sum(throttle.held().values()) == 360_000


class TestExceptionHandler:
    def test_a_flood_of_loop_errors_is_one_line_a_minute(self) -> None:
        """asyncio's accept errors, thousands of them, become a line per interval with counts."""
        clock = FakeClock()
        handler = exception_handler(Throttle(clock.monotonic, 60))
        loop = asyncio.new_event_loop()
        context = {
            "message": "socket.accept() out of system resource",
            "exception": OSError(errno.EMFILE, "Too many open files"),
        }
        try:
            structlog.reset_defaults()  # whatever level an earlier in-process CLI test set
            with capture_logs() as logs:
                for _ in range(5000):
                    handler(loop, context)
                clock.mono += 60
                handler(loop, context)
        finally:
            loop.close()
        assert logs == [
            {
                "event": "loop.error",
                "log_level": "error",
                "message": "socket.accept() out of system resource",
                "exception": "OSError",
                "error": "Too many open files",
                "count": count,
                "interval": 60,
            }
            for count in (1, 5000)
        ]

    def test_other_exceptions_do_not_log_their_text(self) -> None:
        """Only an OSError's strerror is logged: other exception texts may carry secrets."""
        handler = exception_handler(Throttle(FakeClock().monotonic, 60))
        loop = asyncio.new_event_loop()
        try:
            structlog.reset_defaults()  # whatever level an earlier in-process CLI test set
            with capture_logs() as logs:
                handler(loop, {"message": "boom", "exception": ValueError("token=SECRET")})
        finally:
            loop.close()
        assert "SECRET" not in repr(logs)
        assert logs[0]["exception"] == "ValueError"


class TestThrottledLogger:
    def test_a_flood_of_request_errors_is_one_line_without_traceback(self) -> None:
        """aiohttp's per-request error logs become one line per interval, counted, no traceback."""
        clock = FakeClock()
        logger = throttled_logger("test.server", Throttle(clock.monotonic, 60), "web.request_error")
        structlog.reset_defaults()  # whatever level an earlier in-process CLI test set
        with capture_logs() as logs:
            for n in range(500):
                error = ValueError(f"bad header {n}")
                logger.error("Error handling request from %s", "127.0.0.1", exc_info=error)
            clock.mono += 60
            logger.error("Error handling request from %s", "127.0.0.2")
        assert logs == [
            {
                "event": "web.request_error",
                "log_level": "error",
                "message": "Error handling request from 127.0.0.1",
                "exception": "ValueError",
                "count": 1,
                "interval": 60,
            },
            {
                "event": "web.request_error",
                "log_level": "error",
                "message": "Error handling request from 127.0.0.2",
                "exception": None,
                "count": 1,
                "interval": 60,
            },
        ]
