"""Shared simulator pieces: the rate limiter, Retry-After, exact JSON, the request log."""

from __future__ import annotations

import json
from decimal import Decimal
from email.utils import parsedate_to_datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from walletwatch.sim.common import (
    RateLimiter,
    RequestLog,
    dump_json,
    load_json,
    retry_after_value,
    to_decimal,
)


class FakeClock:
    """A clock that moves only when told to."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class TestRateLimiter:
    """The per-key token bucket without burst."""

    def test_one_token_then_wait(self) -> None:
        """The first take is admitted, the next one waits 1/rate."""
        limiter = RateLimiter(2.0, FakeClock())
        assert limiter.take("k") == 0.0
        assert limiter.take("k") == 0.5

    def test_refills_with_time(self) -> None:
        """After 1/rate of fake time the key is admitted again, and not before."""
        clock = FakeClock()
        limiter = RateLimiter(2.0, clock)
        limiter.take("k")
        clock.now += 0.4
        assert limiter.take("k") == pytest.approx(0.1)
        clock.now += 0.1
        assert limiter.take("k") == 0.0

    def test_no_burst_after_idle(self) -> None:
        """A long idle period still allows only one call at once."""
        clock = FakeClock()
        limiter = RateLimiter(2.0, clock)
        clock.now += 100
        assert limiter.take("k") == 0.0
        assert limiter.take("k") > 0

    def test_keys_independent(self) -> None:
        """Each key has its own bucket."""
        limiter = RateLimiter(1.0, FakeClock())
        assert (limiter.take("a"), limiter.take("b")) == (0.0, 0.0)

    @pytest.mark.parametrize("rate", [0.0, -1.0, float("nan")])
    def test_bad_rate(self, rate: float) -> None:
        """A rate that is not positive is refused."""
        with pytest.raises(ValueError, match="rate"):
            RateLimiter(rate, FakeClock())


class TestRetryAfter:
    """Formatting of the Retry-After header."""

    @pytest.mark.parametrize(("delay", "expected"), [(0.001, "1"), (0.5, "1"), (1.2, "2")])
    def test_seconds_round_up(self, delay: float, expected: str) -> None:
        """Seconds are whole, rounded up, at least 1."""
        assert retry_after_value(delay, 1000.0, http_date=False) == expected

    def test_http_date(self) -> None:
        """The HTTP-date form names the first whole second the call is allowed."""
        value = retry_after_value(0.5, 1_700_000_000.7, http_date=True)
        assert value == "Tue, 14 Nov 2023 22:13:22 GMT"
        assert parsedate_to_datetime(value).timestamp() == 1_700_000_002


class TestJson:
    """Exact JSON numbers for Decimal values."""

    def test_nested(self) -> None:
        """Decimals inside objects and lists become bare numbers; other values as json does."""
        data = {"a": [Decimal("1.10"), Decimal("1E+3")], "b": None, "c": True, "d": "x\u00e9"}
        assert dump_json(data) == '{"a": [1.10, 1000], "b": null, "c": true, "d": "x\\u00e9"}'

    @given(
        st.decimals(allow_nan=False, allow_infinity=False, min_value=-(10**20), max_value=10**20)
    )
    def test_round_trip_exact(self, value: Decimal) -> None:
        """Any finite Decimal reads back equal, with no float in between."""
        assert json.loads(dump_json({"v": value}), parse_float=Decimal)["v"] == value

    @pytest.mark.parametrize("value", [Decimal("NaN"), Decimal("Infinity"), float("inf")])
    def test_refuses_non_finite(self, value: object) -> None:
        """NaN and infinities have no JSON number."""
        with pytest.raises(ValueError, match=r"JSON|Out of range"):
            dump_json([value])

    def test_refuses_other_types(self) -> None:
        """An object json cannot represent is a TypeError."""
        with pytest.raises(TypeError):
            dump_json({"x": object()})

    def test_load_refuses_nan(self) -> None:
        """Reading NaN is refused."""
        with pytest.raises(ValueError, match="NaN"):
            load_json(b'{"a": NaN}')

    @pytest.mark.parametrize(
        ("raw", "expected"),
        [("1.5", Decimal("1.5")), (2, Decimal(2)), (Decimal("3.3"), Decimal("3.3"))],
    )
    def test_to_decimal(self, raw: object, expected: Decimal) -> None:
        """Numeric strings, ints and Decimals are amounts."""
        assert to_decimal(raw) == expected

    @pytest.mark.parametrize("raw", ["abc", "Infinity", True, 1.5, None])
    def test_to_decimal_refuses(self, raw: object) -> None:
        """Text, non-finite values, booleans and floats are not amounts."""
        with pytest.raises((ValueError, TypeError)):
            to_decimal(raw)


class TestRequestLog:
    """Response counts by provider, path and status."""

    def test_count_filters(self) -> None:
        """count() sums every row that matches all the filters given."""
        log = RequestLog()
        log.record("westwallet", "/a", 200)
        log.record("westwallet", "/a", 200)
        log.record("westwallet", "/b", 429)
        log.record("bitexbit", "/a", 200)
        assert log.count() == 4
        assert log.count(provider="westwallet") == 3
        assert log.count(provider="westwallet", path="/a", status=200) == 2
        assert log.count(status=429) == 1
        assert log.count(provider="sila") == 0
