"""The status page: what a person reads in it, from API-shaped views, and that it stays text."""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Collection
from datetime import UTC, datetime
from html.parser import HTMLParser
from typing import Any

import pytest

from walletwatch.errors import StoreError
from walletwatch.operator import MAX_LIMIT, MOVING, TransferQuery
from walletwatch.statusfilter import Filters
from walletwatch.statuspage import (
    ACCOUNTS_PER_PAGE,
    REFRESH_SECONDS,
    TRANSFERS_PER_PAGE,
    render,
    status_page,
)
from walletwatch.statusstyle import CSP

NOW = 1_796_500_000.0  # 2026-12-05T19:06:40Z
HOSTILE = "<script>window.__pwned=1</script>"


def stamp(seconds_ago: float) -> str:
    """An RFC 3339 UTC time ``seconds_ago`` before NOW."""
    return datetime.fromtimestamp(NOW - seconds_ago, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def account(name: str, provider: str = "westwallet", **fields: Any) -> dict[str, Any]:
    """An up account as /api/v1/accounts lists it, ``fields`` changed."""
    body: dict[str, Any] = {
        "provider": provider,
        "account": name,
        "state": "up",
        "up": True,
        "down_since": None,
        "last_success": stamp(30),
        "endpoints": {"balances": {"last_success": stamp(30), "last_error": None}},
        "balances": [
            {
                "currency": "BTC",
                "available": "1.5",
                "pending": "0",
                "low_threshold": None,
                "low": False,
            }
        ],
        "in_flight": 0,
        "stuck": 0,
    }
    body.update(fields)
    return body


def down(name: str, message: str = "connection refused by 127.0.0.1:9", **fields: Any) -> Any:
    """A down account whose balances poll failed with ``message``."""
    error = {"reason": "unavailable", "message": message, "at": stamp(20)}
    return account(
        name,
        state="down",
        up=False,
        down_since=stamp(600),
        endpoints={"balances": {"last_success": stamp(900), "last_error": error}},
        **fields,
    )


def low(name: str) -> dict[str, Any]:
    """An up account whose USDT is below its threshold."""
    balances = [
        {"currency": "USDT", "available": "900", "pending": None, "low_threshold": "1000"}
        | {"low": True}
    ]
    return account(name, balances=balances)


def transfer(name: str, txid: str | None, *, stuck: bool = False, **fields: Any) -> Any:
    """An in-flight withdrawal of account ``name`` as /api/v1/transfers lists it."""
    body = {
        "provider": "westwallet",
        "account": name,
        "id": f"id-{txid}",
        "direction": "withdrawal",
        "currency": "BTC",
        "amount": "0.25",
        "fee": "0.0001",
        "address": "bc1qaddress",
        "txid": txid,
        "status": "pending",
        "state": "pending",
        "created_at": stamp(7200),
        "first_seen": stamp(7200),
        "updated_at": stamp(60),
        "age_seconds": 7200.0 if stuck else 300.0,
        "stuck": stuck,
    }
    body.update(fields)
    return body


class FakeView:
    """The operator views, answering from lists; records each transfers query."""

    def __init__(
        self,
        accounts: list[dict[str, Any]],
        transfers: list[dict[str, Any]] = (),  # type: ignore[assignment]
        events: list[dict[str, Any]] = (),  # type: ignore[assignment]
    ) -> None:
        self._accounts, self._transfers, self._events = accounts, list(transfers), list(events)
        self.queries: list[TransferQuery] = []
        self.named: list[set[str]] = []

    async def briefs(self) -> list[dict[str, Any]]:
        """Every account, in a new list (the page empties it): whole rows hold a brief's fields."""
        return list(self._accounts)

    async def accounts(self, names: Collection[str] | None = None) -> list[dict[str, Any]]:
        """The accounts named."""
        self.named.append(set(names or ()))
        return [a for a in self._accounts if names is None or a["account"] in names]

    async def transfers(self, query: TransferQuery) -> tuple[list[dict[str, Any]], bool]:
        """The transfers of one state, oldest first, as OperatorView filters them."""
        self.queries.append(query)
        kept = {"in_flight": (True, False), "stuck": (True,), MOVING: (False,)}[query.state]
        rows = [t for t in self._transfers if t["stuck"] in kept]
        if query.provider is not None:
            rows = [t for t in rows if t["provider"] == query.provider]
        if query.account is not None:
            rows = [t for t in rows if t["account"] == query.account]
        if query.accounts is not None:
            rows = [t for t in rows if t["account"] in query.accounts]
        end = query.offset + query.limit
        return rows[query.offset : end], len(rows) > end

    async def events(self, after: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        """The last ``limit`` events."""
        assert after is None
        return self._events[-limit:]


class Visible(HTMLParser):
    """The text a person reads (no style or script), and every script element's source."""

    def __init__(self) -> None:
        super().__init__()
        self.parts: list[str] = []
        self.scripts: list[str] = []
        self._in: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        """Note when a style or script starts."""
        del attrs
        if tag in ("style", "script"):
            self._in = tag
            if tag == "script":
                self.scripts.append("")

    def handle_endtag(self, tag: str) -> None:
        """Note when a style or script ends."""
        if tag in ("style", "script"):
            self._in = None

    def handle_data(self, data: str) -> None:
        """Text, unless inside a style or script."""
        if self._in == "script":
            self.scripts[-1] += data
        elif self._in is None:
            self.parts.append(data)

    @property
    def text(self) -> str:
        """The visible text, whitespace collapsed."""
        return " ".join(" ".join(self.parts).split())


def read(page: str) -> Visible:
    """Parse a page."""
    parsed = Visible()
    parsed.feed(page)
    parsed.close()
    return parsed


async def page_of(view: FakeView, **query: str) -> str:
    """The page for ``query``."""
    return await status_page(view, query, NOW)


class TestWhatAPersonReads:
    async def test_down_account_says_why_and_since_when(self) -> None:
        """A down account shows DOWN, its endpoint's error in words and when it went down."""
        page = await page_of(FakeView([account("hot"), down("cold")]))
        seen = read(page).text
        assert "✖ DOWN cold" in seen
        assert "balances : connection refused by 127.0.0.1:9 (unavailable" in seen
        assert f"down since {stamp(600).replace('T', ' ')} (10m 00s ago)" in seen

    async def test_low_balance_is_marked_beside_its_threshold(self) -> None:
        """A balance below its threshold reads LOW, with the threshold beside it."""
        seen = read(await page_of(FakeView([account("hot"), low("cash")]))).text
        assert "⚠ LOW 900 USDT (low below 1000)" in seen
        assert seen.count("LOW") == 1
        assert "1.5 BTC" in seen

    async def test_last_successful_poll_and_generated_time(self) -> None:
        """Each account says when it last polled well; the page says when it was made."""
        seen = read(await page_of(FakeView([account("hot")]))).text
        assert f"{stamp(30).replace('T', ' ')} (30s ago)" in seen
        assert f"Generated {stamp(0).replace('T', ' ')[:-1]} UTC" in seen

    async def test_stuck_transfers_come_first_with_full_txids(self) -> None:
        """Stuck transfers precede in-flight ones; each txid is there whole, in a wrapping box."""
        txid = "f" * 64 + "0123456789abcdef"
        transfers = [transfer("hot", "early-moving"), transfer("hot", txid, stuck=True)]
        page = await page_of(FakeView([account("hot", in_flight=2, stuck=1)], transfers))
        seen = read(page).text
        assert seen.index(txid) < seen.index("early-moving")
        assert "◷ STUCK 2h 00m hot westwallet withdrawal 0.25 BTC" in seen
        assert f"<code class='txid'>{txid}</code>" in page
        assert "overflow-wrap:anywhere" in page

    async def test_events_newest_first(self) -> None:
        """Recent events are listed newest first with their amounts and txids."""
        events = [
            {"event": "withdrawal.detected", "ts": stamp(300), "severity": "info"}
            | {"provider": "westwallet", "account": "hot", "amount": "1", "currency": "BTC"},
            {"event": "withdrawal.stuck", "ts": stamp(60), "severity": "critical"}
            | {"provider": "westwallet", "account": "hot", "txid": "tx-9"},
        ]
        seen = read(await page_of(FakeView([account("hot")], events=events))).text
        assert seen.index("withdrawal.stuck") < seen.index("withdrawal.detected")
        assert "critical withdrawal.stuck hot westwallet txid tx-9" in seen

    async def test_refreshes_itself_keeping_the_filters(self) -> None:
        """The refresh reloads the same filters."""
        page = await page_of(FakeView([account("hot")]), state="low", account="h&t")
        assert (
            f'<meta http-equiv="refresh" content="{REFRESH_SECONDS}; '
            'url=?account=h%26t&amp;state=low">'
        ) in page


class TestProviderTextIsText:
    async def test_script_anywhere_renders_as_text(self) -> None:
        """Markup in names, txids, addresses, statuses and events shows as text, never runs."""
        accounts = [down(HOSTILE, message=HOSTILE, provider=HOSTILE, stuck=1)]
        accounts[0]["balances"][0]["currency"] = HOSTILE
        transfers = [
            transfer(HOSTILE, HOSTILE, stuck=True, address=HOSTILE, status=HOSTILE)
            | {"provider": HOSTILE}
        ]
        events = [{"event": HOSTILE, "ts": HOSTILE, "severity": HOSTILE, "txid": HOSTILE}]
        page = await page_of(FakeView(accounts, transfers, events))
        parsed = read(page)
        assert len(parsed.scripts) == 1
        assert "__pwned" not in parsed.scripts[0]
        assert parsed.text.count(HOSTILE) >= 9

    @pytest.mark.parametrize("raw", ["\ud800", "\x00", "\x1b]0;title\x07", "a\udcffb"])
    async def test_unencodable_text_is_escaped(self, raw: str) -> None:
        """A lone surrogate or control character renders as its escape; the page is UTF-8."""
        transfers = [transfer(raw, raw, stuck=True)]
        page = await page_of(FakeView([down(raw, message=raw, stuck=1)], transfers), account=raw)
        page.encode("utf-8")  # strict
        assert raw not in page
        assert "\\u" in page

    async def test_policy_admits_exactly_the_inline_style_and_script(self) -> None:
        """The CSP's hashes are those of the page's one style and one script."""
        page = await page_of(FakeView([account("hot")]))
        for tag in ("style", "script"):
            (body,) = re.findall(rf"<{tag}>(.*?)</{tag}>", page, re.DOTALL)
            digest = base64.b64encode(hashlib.sha256(body.encode()).digest()).decode()
            assert f"{tag}-src 'sha256-{digest}'" in CSP


class TestFilters:
    @pytest.fixture(name="view")
    def fixture_view(self) -> FakeView:
        """One account in each condition, at two providers, with a stuck and a moving transfer."""
        accounts = [
            account("alpha-ok", in_flight=1),
            low("beta-low"),
            down("gamma-down"),
            account("delta-stuck", "kredswallet", stuck=1, in_flight=2),
            account("epsilon-waiting", state="waiting", up=False, last_success=None),
        ]
        transfers = [
            transfer("delta-stuck", "tx-stuck", stuck=True) | {"provider": "kredswallet"},
            transfer("delta-stuck", "tx-moving") | {"provider": "kredswallet"},
            transfer("alpha-ok", "tx-alpha"),
        ]
        return FakeView(accounts, transfers)

    async def test_problems_come_first(self, view: FakeView) -> None:
        """Down, then stuck, then low, then waiting, then up."""
        seen = read(await page_of(view)).text
        order = ["gamma-down", "delta-stuck", "beta-low", "epsilon-waiting", "alpha-ok"]
        assert sorted(order, key=seen.index) == order

    @pytest.mark.parametrize(
        ("query", "accounts", "txids"),
        [
            ({"state": "problems"}, {"gamma-down", "delta-stuck", "beta-low"}, {"tx-stuck"}),
            ({"state": "down"}, {"gamma-down"}, set()),
            ({"state": "stuck"}, {"delta-stuck"}, {"tx-stuck"}),
            ({"state": "low"}, {"beta-low"}, set()),
            ({"provider": "kredswallet"}, {"delta-stuck"}, {"tx-stuck", "tx-moving"}),
            ({"account": "ALPHA"}, {"alpha-ok"}, {"tx-alpha"}),
            ({"account": "ta-", "state": "problems"}, {"beta-low", "delta-stuck"}, {"tx-stuck"}),
        ],
    )
    async def test_filters_narrow_accounts_and_transfers(
        self, view: FakeView, query: dict[str, str], accounts: set[str], txids: set[str]
    ) -> None:
        """Each filter keeps the accounts it names and their transfers only."""
        page = await page_of(view, **query)
        names = {"alpha-ok", "beta-low", "gamma-down", "delta-stuck", "epsilon-waiting"}
        assert {n for n in names if f"<b>{n}</b>" in page} == accounts
        assert {t for t in ("tx-stuck", "tx-moving", "tx-alpha") if t in page} == txids

    async def test_views_are_asked_only_what_is_needed(self, view: FakeView) -> None:
        """A few accounts are asked for one by one, as many as they hold; none, not at all."""
        await page_of(view, provider="kredswallet", state="stuck")
        await page_of(view, provider="nosuch")
        await page_of(view, account="alpha")
        assert view.queries == [
            TransferQuery("stuck", "kredswallet", "delta-stuck", limit=1),
            TransferQuery("in_flight", "westwallet", "alpha-ok", limit=200),
        ]

    @pytest.mark.parametrize(
        ("query", "note"),
        [
            ({"state": "broken"}, "Unknown state 'broken': showing all."),
            ({"page": "-1"}, "Page '-1' is not a page number: showing the first."),
            ({"provider": "nosuch"}, "No account of a provider named 'nosuch'."),
        ],
    )
    async def test_a_query_not_understood_is_said(
        self, view: FakeView, query: dict[str, str], note: str
    ) -> None:
        """A bad filter value is named on the page, which shows what it can."""
        seen = read(await page_of(view, **query)).text
        assert note in seen


class TestPaging:
    def test_accounts_page_by_page(self) -> None:
        """At 250 accounts the first page holds 100, the last 50, with links between."""
        accounts = [account(f"acct-{i:04d}") for i in range(250)]
        first = render(accounts, [], [], Filters(), NOW)
        last = render(accounts, [], [], Filters(page=3), NOW)
        assert first.count("<b>acct-") == ACCOUNTS_PER_PAGE
        assert "<b>acct-0099</b>" in first
        assert "<b>acct-0100</b>" not in first
        assert "accounts 1&ndash;100 of 250" in first
        assert "href='?page=2'>next" in first
        assert last.count("<b>acct-") == 50
        assert "accounts 201&ndash;250 of 250" in last
        assert "href='?page=2'>&lsaquo; previous" in last

    def test_page_past_the_end_shows_the_last(self) -> None:
        """A page number past the end shows the last page."""
        accounts = [account(f"acct-{i:04d}") for i in range(150)]
        page = render(accounts, [], [], Filters(page=99), NOW)
        assert "accounts 101&ndash;150 of 150" in page

    def test_transfers_page_keeping_the_filters(self) -> None:
        """Transfers page on their own, the links keeping the filters and the accounts' page."""
        transfers = [transfer("hot", f"tx-{i:04d}") for i in range(450)]
        filters = Filters(account="hot", page=1, tpage=2)
        page = render([account("hot")], transfers, [], filters, NOW)
        assert page.count("<code class='txid'>tx-") == TRANSFERS_PER_PAGE
        assert "tx-0200" in page
        assert "tx-0199<" not in page
        assert "href='?account=hot&amp;tpage=3'>next" in page


class TestReadingFewAccounts:
    async def test_whole_rows_of_the_page_alone(self) -> None:
        """Every account is tallied from its brief; whole rows are read for the page's alone,
        shown in the briefs' order, problems first."""
        accounts = [account(f"acct-{i:04d}") for i in range(250)]
        accounts[240] = down("acct-0240")
        view = FakeView(accounts)
        seen = read(await page_of(view, page="2")).text
        assert view.named == [{f"acct-{i:04d}" for i in range(99, 199)}]
        assert seen.index("acct-0099") < seen.index("acct-0198")
        assert "acct-0240" not in seen
        assert "accounts 101\N{EN DASH}200 of 250" in seen
        assert "1 down" in seen


class BrokenEvents(FakeView):
    """Views whose state database fails when events are read."""

    async def events(self, after: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        """Refuse, as a store that cannot be read does."""
        del after, limit
        raise StoreError("database is locked at /secret/path")


class TestStoreFailure:
    async def test_page_shows_live_state_when_events_cannot_be_read(self) -> None:
        """Events that cannot be read are said so; accounts and transfers still show."""
        view = BrokenEvents([down("cold", stuck=1)], [transfer("cold", "tx-1", stuck=True)])
        seen = read(await page_of(view)).text
        assert "Recent events cannot be read: the state database did not answer." in seen
        assert "✖ DOWN cold" in seen
        assert "tx-1" in seen
        assert "/secret/path" not in seen

    async def test_a_cut_listing_is_said(self) -> None:
        """A page past what the view gives at most says to narrow the filters."""
        count = MAX_LIMIT + 1
        transfers = [transfer("hot", f"tx-{i}", stuck=True) for i in range(count)]
        view = FakeView([account("hot", stuck=count, in_flight=count)], transfers)
        seen = read(await page_of(view, state="stuck", tpage="999")).text
        assert f"More than {MAX_LIMIT} transfers matched: narrow the filters." in seen
        assert f"transfers 100001\N{EN DASH}100001 of {count}" in seen


class TestReadingFewTransfers:
    async def test_many_accounts_read_oldest_first_until_the_page_is_full(self) -> None:
        """Past a few accounts, the page's transfers are read at once, of the accounts shown."""
        accounts, transfers = [], []
        for group, age in (("old", 90_000.0), ("new", 1_000.0)):
            for i in range(30):
                name = f"{group}-{i:02d}"
                accounts.append(account(name, in_flight=10))
                transfers += [
                    transfer(name, f"{name}-{n}") | {"age_seconds": age - i * 10 - n}
                    for n in range(10)
                ]
        view = FakeView(accounts, transfers)
        page = await page_of(view, account="new-")
        shown = frozenset(f"new-{i:02d}" for i in range(30))
        assert view.queries == [TransferQuery(MOVING, None, limit=200, accounts=shown)]
        assert page.count("<code class='txid'>new-") == TRANSFERS_PER_PAGE
        assert "<code class='txid'>old-" not in page
        assert "transfers 1&ndash;200 of 300" in page
        assert "new-00-0<" in page

    async def test_a_deep_page_reads_its_own_rows_only(self) -> None:
        """A later page asks for its own rows past those before it, not for all of them."""
        accounts = [account(f"a-{i:02d}", in_flight=20) for i in range(30)]
        transfers = [
            transfer(f"a-{i:02d}", f"tx-{i:02d}-{n:02d}") | {"age_seconds": 9_000.0 - i * 20 - n}
            for i in range(30)
            for n in range(20)
        ]
        view = FakeView(accounts, transfers)
        page = await page_of(view, tpage="3")
        assert view.queries == [TransferQuery(MOVING, None, limit=200, offset=400)]
        assert page.count("<code class='txid'>tx-") == TRANSFERS_PER_PAGE
        assert "transfers 401&ndash;600 of 600" in page
        assert "tx-20-00<" in page
        assert "tx-19-19<" not in page

    async def test_a_page_across_stuck_and_moving_reads_each_part(self) -> None:
        """A page holding the last stuck transfers and the first moving ones reads both parts,
        stuck first."""
        accounts = [account(f"a-{i:02d}", stuck=10, in_flight=20) for i in range(25)]
        transfers = [
            transfer(f"a-{i:02d}", f"{kind}-{i:02d}-{n:02d}", stuck=kind == "stuck")
            | {"age_seconds": (90_000.0 if kind == "stuck" else 900.0) - i * 10 - n}
            for kind in ("stuck", "moving")
            for i in range(25)
            for n in range(10)
        ]
        view = FakeView(accounts, transfers)
        seen = read(await page_of(view, tpage="2")).text
        assert view.queries == [
            TransferQuery("stuck", None, limit=50, offset=200),
            TransferQuery(MOVING, None, limit=150),
        ]
        assert seen.count("◷ STUCK") == 50
        assert seen.index("stuck-24-09") < seen.index("moving-00-00")
        assert "moving-14-09" in seen
        assert "moving-15-00" not in seen
        assert "transfers 201\N{EN DASH}400 of 500" in seen

    async def test_stuck_only_pages_read_no_in_flight(self) -> None:
        """The problems view reads stuck transfers alone, as many as the page needs."""
        accounts = [account(f"a-{i:02d}", stuck=1, in_flight=3) for i in range(25)]
        view = FakeView(accounts, [transfer("a-00", "tx", stuck=True)])
        await page_of(view, state="problems")
        assert view.queries == [TransferQuery("stuck", None, limit=25)]
