"""Http.request: rate-limit slots, error mapping, Retry-After, size cap, telemetry; parse_json."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
from decimal import Decimal
from email.utils import formatdate
from typing import Any

import aiohttp
import pytest
from aiohttp.client_reqrep import ConnectionKey
from hypothesis import given
from hypothesis import strategies as st
from yarl import URL

from tests.fakes import FakeClock, make_http
from walletwatch.arbiter import Ticket, admit
from walletwatch.budget import TokenBucket
from walletwatch.errors import (
    AuthFailed,
    BadPayload,
    ProviderError,
    RateLimited,
    Rejected,
    Unavailable,
)
from walletwatch.http import Http, _in_words, parse_json, parse_retry_after
from walletwatch.telemetry import Telemetry

URL_ = "https://api.example.test/wallet/thing"
ENDPOINT = "thing"
PROVIDER = "westwallet"
MAX_BACKOFF = 60.0
MAX_BYTES = 1024
API_KEY = "api-key-7f3a9c"
SECRET = "secret-key-b41d2e"
HEADERS = {"X-API-KEY": API_KEY, "X-ACCESS-SIGN": SECRET}


@pytest.fixture(name="telemetry")
def fixture_telemetry() -> Telemetry:
    """Fresh counters."""
    return Telemetry()


@pytest.fixture(name="bucket")
def fixture_bucket(clock: FakeClock) -> TokenBucket:
    """A bucket fast enough that one request never waits."""
    return TokenBucket(1000.0, clock, name="test")


@pytest.fixture(name="http")
def fixture_http(
    session: aiohttp.ClientSession, bucket: TokenBucket, telemetry: Telemetry, clock: FakeClock
) -> Http:
    """An Http with a small body cap and a one-minute backoff cap."""
    return Http(
        session,
        provider=PROVIDER,
        buckets=[bucket],
        telemetry=telemetry,
        clock=clock,
        timeout=aiohttp.ClientTimeout(total=30),
        max_backoff=MAX_BACKOFF,
        max_bytes=MAX_BYTES,
    )


async def fail(http: Http) -> ProviderError:
    """Make one request that must fail, and return its error after checking it for secrets."""
    with pytest.raises(ProviderError) as caught:
        await http.request("POST", URL_, endpoint=ENDPOINT, headers=HEADERS, body=b"{}")
    assert_secret_free(caught.value)
    return caught.value


def assert_secret_free(err: BaseException) -> None:
    """Neither credential appears in the error's text."""
    text = str(err)
    assert API_KEY not in text
    assert SECRET not in text


class TestSuccess:
    async def test_returns_status_headers_and_body(self, http: Http, responses: Any) -> None:
        """A 2xx answer comes back with its status, headers and exact body bytes."""
        responses.get(URL_, status=200, body=b'{"a": 1}', headers={"X-Thing": "yes"})

        response = await http.request("GET", URL_, endpoint=ENDPOINT)

        assert (response.status, response.body) == (200, b'{"a": 1}')
        assert response.headers["X-Thing"] == "yes"
        assert response.json() == {"a": 1}

    async def test_sends_headers_and_body_unchanged(self, http: Http, responses: Any) -> None:
        """The request carries exactly the given headers and body bytes, with redirects off."""
        responses.post(URL_, status=200, body=b"{}")

        await http.request("POST", URL_, endpoint=ENDPOINT, headers=HEADERS, body=b'{"id":1}')

        (call,) = responses.requests[("POST", URL(URL_))]
        assert call.kwargs["data"] == b'{"id":1}'
        assert call.kwargs["headers"] == HEADERS
        assert call.kwargs["allow_redirects"] is False

    async def test_accepted_status_is_returned(self, http: Http, responses: Any) -> None:
        """A status listed in ``accept`` is returned instead of raised."""
        responses.get(URL_, status=404, body=b'{"error": "not_found"}')

        response = await http.request("GET", URL_, endpoint=ENDPOINT, accept=(404,))

        assert response.status == 404

    async def test_counts_the_status_code(
        self, http: Http, responses: Any, telemetry: Telemetry
    ) -> None:
        """A completed exchange is counted under its status code and timed."""
        responses.get(URL_, status=204, body=b"")

        await http.request("GET", URL_, endpoint=ENDPOINT)

        assert telemetry.http_requests == {(PROVIDER, ENDPOINT, "204"): 1}
        assert telemetry.http_duration[(PROVIDER, ENDPOINT)].count == 1
        assert not telemetry.rate_limited


class TestPollTicket:
    """The poll a request works for reaches the arbiter as an argument."""

    async def test_requests_of_the_polled_endpoint_carry_its_ticket(
        self, http: Http, bucket: TokenBucket, responses: Any, clock: FakeClock
    ) -> None:
        """Inside ``polling``, a request for that endpoint starts the poll's ticket (its first
        slot) and ends its claim on the bucket; a request for another endpoint, or after the
        poll, is none of its business."""
        responses.get(URL_, status=200, body=b"{}", repeat=True)

        async def get(endpoint: str) -> None:
            """One request, the fake clock moved on past its slot."""
            task = asyncio.create_task(http.request("GET", URL_, endpoint=endpoint))
            await clock.advance(1.0)
            await task

        ticket = Ticket(due=0.0, deadline=5.0, buckets=(bucket,))
        await admit(ticket)  # as the scheduler starts a poll: it claims the bucket
        assert bucket in ticket.claimed
        with http.polling(ENDPOINT, ticket):
            await get(ENDPOINT)
            assert ticket.started is not None
            assert not ticket.claimed
            ticket.started = None
            await get("another")
            assert ticket.started is None
        await get(ENDPOINT)  # the poll is over
        assert ticket.started is None


class TestStatusMapping:
    @pytest.mark.parametrize(
        ("status", "error", "reason"),
        [
            (401, AuthFailed, "auth"),
            (403, AuthFailed, "auth"),
            (400, Rejected, "http_4xx"),
            (404, Rejected, "http_4xx"),
            (405, Rejected, "http_4xx"),
            (500, Unavailable, "http_5xx"),
            (502, Unavailable, "http_5xx"),
            (503, Unavailable, "http_5xx"),
            (429, RateLimited, "rate_limited"),
        ],
    )
    async def test_status_maps_to_error(
        self, http: Http, responses: Any, status: int, error: type[ProviderError], reason: str
    ) -> None:
        """Each non-2xx status raises its ProviderError class with its reason label."""
        responses.post(URL_, status=status, body=b'{"error": "x"}')

        err = await fail(http)

        assert type(err) is error
        assert err.reason == reason

    @pytest.mark.parametrize("status", [401, 404, 503])
    async def test_error_status_is_counted(
        self, http: Http, responses: Any, telemetry: Telemetry, status: int
    ) -> None:
        """A refused exchange is still counted under its status code."""
        responses.post(URL_, status=status)

        await fail(http)

        assert telemetry.http_requests == {(PROVIDER, ENDPOINT, str(status)): 1}

    @pytest.mark.parametrize("status", [301, 302, 307])
    async def test_redirect_is_rejected_and_not_followed(
        self, http: Http, responses: Any, status: int
    ) -> None:
        """A redirect is refused as Rejected and its Location is never requested."""
        elsewhere = "https://elsewhere.test/collect"
        followed: list[URL] = []

        def record(url: URL, **_: Any) -> None:
            followed.append(url)

        responses.post(URL_, status=status, headers={"Location": elsewhere})
        responses.get(elsewhere, status=200, body=b"{}", callback=record)
        responses.post(elsewhere, status=200, body=b"{}", callback=record)

        err = await fail(http)

        assert type(err) is Rejected
        assert followed == []
        assert list(responses.requests) == [("POST", URL(URL_))]


class TestMessages:
    """Every poll error says the method, the URL without its query, what happened and what to
    check; never a credential."""

    @pytest.mark.parametrize(
        ("status", "says"),
        [
            (401, "HTTP 401: check the account's credentials and that the key may read"),
            (404, "HTTP 404: check base_url"),
            (503, "HTTP 503: the provider failed; polled again later"),
            (301, "HTTP 301: a redirect, not followed: check base_url"),
            (429, "HTTP 429: rate limited, retry after 7 s"),
        ],
    )
    async def test_a_status_in_words(
        self, http: Http, responses: Any, status: int, says: str
    ) -> None:
        """The status, the URL it came from (no query), and what to check."""
        url = URL_ + "?api_key=" + API_KEY
        responses.post(url, status=status, headers={"Retry-After": "7"})
        with pytest.raises(ProviderError) as caught:
            await http.request("POST", url, endpoint=ENDPOINT, headers=HEADERS)
        assert str(caught.value) == f"POST {URL_}: {says}"
        assert_secret_free(caught.value)

    async def test_the_credentials_are_named(
        self, session: aiohttp.ClientSession, clock: FakeClock, responses: Any
    ) -> None:
        """An Http told the account's credential names (never values) names them on a 401."""
        http = Http(
            session,
            provider=PROVIDER,
            buckets=[TokenBucket(1000.0, clock)],
            telemetry=Telemetry(),
            clock=clock,
            timeout=aiohttp.ClientTimeout(total=30),
            max_backoff=MAX_BACKOFF,
            credential_names=("api_key", "secret_key"),
        )
        responses.get(URL_, status=401)
        with pytest.raises(AuthFailed, match=r"check the account's api_key, secret_key and"):
            await http.request("GET", URL_, endpoint=ENDPOINT)

    async def test_a_refused_connection_names_the_host_and_port(
        self, session: aiohttp.ClientSession, clock: FakeClock
    ) -> None:
        """A real refused connection on loopback: 'connection refused by host:port'."""
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        http = make_http(session, PROVIDER, clock)
        url = f"http://127.0.0.1:{port}/wallet/balances?sign=x"
        with pytest.raises(Unavailable) as caught:
            await http.request("GET", url, endpoint=ENDPOINT)
        assert str(caught.value) == (
            f"GET http://127.0.0.1:{port}/wallet/balances: connection refused by 127.0.0.1:{port}"
        )
        assert caught.value.reason == "connection"

    def test_certificate_and_name_failures_in_words(self) -> None:
        """A certificate the host does not trust, and a name it cannot resolve."""
        key = ConnectionKey("api.example.test", 443, True, True, None, None, None)
        cause = ssl.SSLCertVerificationError(1, "certificate verify failed")
        cause.verify_message = "self-signed certificate"  # as the ssl module sets it
        untrusted = aiohttp.ClientConnectorCertificateError(key, cause)
        assert _in_words(untrusted) == "certificate not trusted: self-signed certificate"
        unresolved = aiohttp.ClientConnectorDNSError(key, OSError(-2, "Name not known"))
        assert _in_words(unresolved) == (
            "cannot resolve api.example.test: check base_url and the host's DNS"
        )


class TestRateLimited:
    async def test_retry_after_seconds_pauses_the_bucket(
        self, http: Http, responses: Any, bucket: TokenBucket, clock: FakeClock
    ) -> None:
        """429 with Retry-After: 7 raises retry_after=7 and the bucket hands out no slot for 7 s."""
        responses.post(URL_, status=429, headers={"Retry-After": "7"})

        err = await fail(http)

        assert isinstance(err, RateLimited)
        assert err.retry_after == 7
        assert bucket.reserve(clock.monotonic()) == pytest.approx(7.0, abs=0.01)

    async def test_next_request_waits_out_the_pause(
        self, http: Http, responses: Any, clock: FakeClock
    ) -> None:
        """After a 429 with Retry-After: 7 the next request is sent only once 7 s have passed."""
        responses.post(URL_, status=429, headers={"Retry-After": "7"})
        responses.get(URL_, status=200, body=b"{}")
        await fail(http)

        task = asyncio.ensure_future(http.request("GET", URL_, endpoint=ENDPOINT))
        await clock.advance(6.9)
        assert not task.done()
        assert ("GET", URL(URL_)) not in responses.requests
        await clock.advance(0.2)

        assert task.done()
        assert (await task).status == 200

    async def test_retry_after_http_date(
        self, http: Http, responses: Any, clock: FakeClock
    ) -> None:
        """An HTTP-date Retry-After 30 s after the wall clock gives retry_after=30."""
        when = formatdate(clock.time() + 30, usegmt=True)
        responses.post(URL_, status=429, headers={"Retry-After": when})

        err = await fail(http)

        assert isinstance(err, RateLimited)
        assert err.retry_after == pytest.approx(30.0)

    async def test_retry_after_is_capped(self, http: Http, responses: Any) -> None:
        """A Retry-After longer than max_backoff is cut down to max_backoff."""
        responses.post(URL_, status=429, headers={"Retry-After": "3600"})

        err = await fail(http)

        assert isinstance(err, RateLimited)
        assert err.retry_after == MAX_BACKOFF

    @pytest.mark.parametrize("headers", [{}, {"Retry-After": "soon"}, {"Retry-After": ""}])
    async def test_unusable_retry_after_gives_none(
        self,
        http: Http,
        responses: Any,
        bucket: TokenBucket,
        clock: FakeClock,
        headers: dict[str, str],
    ) -> None:
        """A missing or garbage Retry-After gives retry_after=None and leaves the bucket alone."""
        responses.post(URL_, status=429, headers=headers)

        err = await fail(http)

        assert isinstance(err, RateLimited)
        assert err.retry_after is None
        assert bucket.reserve(clock.monotonic()) < 0.01

    async def test_counts_rate_limited(
        self, http: Http, responses: Any, telemetry: Telemetry, clock: FakeClock
    ) -> None:
        """Each 429 is counted in rate_limited and under code 429; other statuses are not."""
        responses.post(URL_, status=429)
        responses.post(URL_, status=500)
        responses.post(URL_, status=429, headers={"Retry-After": "0"})

        for _ in range(3):
            await fail(http)
            await clock.advance(1.0)  # past the bucket's next slot

        assert telemetry.rate_limited == {PROVIDER: 2}
        assert telemetry.http_requests == {
            (PROVIDER, ENDPOINT, "429"): 2,
            (PROVIDER, ENDPOINT, "500"): 1,
        }


class TestTransportFailures:
    @pytest.mark.parametrize(
        "exception",
        [
            aiohttp.ClientConnectionError("refused"),
            aiohttp.ServerDisconnectedError(),
            aiohttp.ClientPayloadError("truncated"),
        ],
    )
    async def test_client_error_is_unavailable_connection(
        self, http: Http, responses: Any, telemetry: Telemetry, exception: Exception
    ) -> None:
        """A connection-level failure is Unavailable with reason connection, counted as error."""
        responses.post(URL_, exception=exception)

        err = await fail(http)

        assert type(err) is Unavailable
        assert err.reason == "connection"
        assert telemetry.http_requests == {(PROVIDER, ENDPOINT, "error"): 1}

    @pytest.mark.parametrize("exception", [TimeoutError(), aiohttp.ServerTimeoutError("read")])
    async def test_timeout_is_unavailable_timeout(
        self, http: Http, responses: Any, telemetry: Telemetry, exception: Exception
    ) -> None:
        """A timeout is Unavailable with reason timeout, counted as error."""
        responses.post(URL_, exception=exception)

        err = await fail(http)

        assert type(err) is Unavailable
        assert err.reason == "timeout"
        assert telemetry.http_requests == {(PROVIDER, ENDPOINT, "error"): 1}

    @pytest.mark.usefixtures("responses")
    async def test_unmatched_url_is_unavailable(self, http: Http) -> None:
        """A request nobody answers (connection refused) is Unavailable."""
        err = await fail(http)

        assert type(err) is Unavailable


class TestBodyCap:
    async def test_body_at_the_cap_is_read(self, http: Http, responses: Any) -> None:
        """A body of exactly max_bytes is returned whole."""
        responses.get(URL_, status=200, body=b"x" * MAX_BYTES)

        response = await http.request("GET", URL_, endpoint=ENDPOINT)

        assert response.body == b"x" * MAX_BYTES

    @pytest.mark.parametrize("status", [200, 500])
    async def test_body_over_the_cap_is_bad_payload(
        self, http: Http, responses: Any, status: int
    ) -> None:
        """A body one byte over max_bytes is BadPayload, whatever the status."""
        responses.post(URL_, status=status, body=b"x" * (MAX_BYTES + 1))

        err = await fail(http)

        assert type(err) is BadPayload


class TestSecrets:
    def test_repr_has_no_credentials(self, http: Http) -> None:
        """repr() of an Http shows no credential."""
        text = repr(http)
        assert API_KEY not in text
        assert SECRET not in text


class TestParseJson:
    @pytest.mark.parametrize(
        "body",
        [
            pytest.param(b'{"a": NaN}', id="nan"),
            pytest.param(b'{"a": Infinity}', id="infinity"),
            pytest.param(b'{"a": -Infinity}', id="minus-infinity"),
            pytest.param(b'{"a": "\xff\xfe"}', id="invalid-utf8"),
            pytest.param(b'{"a": [1, 2', id="truncated"),
            pytest.param(b"", id="empty"),
            pytest.param(b"[" * 100_000 + b"]" * 100_000, id="deeply-nested"),
            pytest.param(b"1" * 5000, id="5000-digit-integer"),
            pytest.param(b"<html>502 Bad Gateway</html>", id="html"),
        ],
    )
    def test_refuses(self, body: bytes) -> None:
        """Non-JSON, non-finite numbers and absurd documents are BadPayload."""
        with pytest.raises(BadPayload):
            parse_json(body)

    def test_floats_are_exact_decimals(self) -> None:
        """JSON fractions come back as the Decimal of their text, integers as int."""
        value = parse_json(b'{"a": 0.1, "b": [1e-8, 2.50], "c": 7}')

        assert value == {"a": Decimal("0.1"), "b": [Decimal("1e-8"), Decimal("2.50")], "c": 7}
        assert str(value["b"][1]) == "2.50"
        assert type(value["c"]) is int

    @given(st.binary(max_size=64))
    def test_any_bytes_parse_or_raise_bad_payload(self, body: bytes) -> None:
        """Arbitrary bytes either decode or raise BadPayload, never another exception."""
        with contextlib.suppress(BadPayload):
            parse_json(body)


class TestParseRetryAfter:
    NOW = 1_700_000_000.0

    @pytest.mark.parametrize(
        ("value", "expected"),
        [
            (None, None),
            ("", None),
            ("   ", None),
            ("7", 7.0),
            (" 7 ", 7.0),
            ("1.5", 1.5),
            ("0", 0.0),
            ("-5", 0.0),
            ("nan", None),
            ("NaN", None),
            ("3600", 60.0),
            ("soon", None),
            ("Tue, 14 Nov 2023 22:13:50 GMT", 30.0),  # NOW + 30
            ("Tue, 14 Nov 2023 22:13:00 GMT", 0.0),  # in the past
            ("Tue, 14 Nov 2023 23:13:20 GMT", 60.0),  # an hour ahead, capped
        ],
    )
    def test_cases(self, value: str | None, expected: float | None) -> None:
        """Delta-seconds and HTTP-dates give seconds in [0, cap]; anything else gives None."""
        assert parse_retry_after(value, self.NOW, 60.0) == expected

    @given(st.text(max_size=40))
    def test_any_text_is_none_or_within_bounds(self, value: str) -> None:
        """Whatever the header says, the answer is None or a number in [0, cap]."""
        seconds = parse_retry_after(value, self.NOW, 60.0)
        assert seconds is None or 0.0 <= seconds <= 60.0
