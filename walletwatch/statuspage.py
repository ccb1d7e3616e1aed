"""The status page at ``/``: the operator views (accounts, transfers, events) as HTML for a person.

Rendered on the server, so it works in any browser without JavaScript (a script only adds copy
buttons). Every string from the views is text, never markup: each goes through ``text``. At
10,000 accounts the page still reads: problems come first, filters in the query string narrow
it, and only one page of rows is built.
"""

from __future__ import annotations

import html
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime

from walletwatch import __version__
from walletwatch.errors import StoreError
from walletwatch.escape import escaped
from walletwatch.operator import MAX_LIMIT, MOVING, consumed
from walletwatch.statusfilter import (
    STATES,
    Counts,
    Filters,
    Item,
    Tally,
    event_matches,
    moving_count,
    problem,
    stuck_only,
)
from walletwatch.statusread import Pacer, Views, Window
from walletwatch.statusstyle import SCRIPT, STYLE

REFRESH_SECONDS = 30
"""How often the page reloads itself."""

ACCOUNTS_PER_PAGE = 100
TRANSFERS_PER_PAGE = 200
EVENTS_SHOWN = 50


def text(value: object) -> str:
    """``value`` as HTML text: escaped markup, and characters UTF-8 cannot carry as escapes."""
    return html.escape(escaped(str(value)))


async def status_page(view: Views, query: Mapping[str, str], now: float) -> str:
    """The page for ``query``, read from the daemon's views at wall time ``now``.

    Every account is tallied from its brief; whole rows are read for the accounts of the page
    asked for alone, and only its transfers: the accounts' own counts tell how many there are
    in all. The briefs are tallied and the HTML built a slice at a time.
    """
    filters = Filters.parse(query)
    pacer = Pacer()
    tally = Tally(filters)
    # Consumed: the briefs not shown are freed one by one, not 10,000 at once at the end.
    async for brief in pacer.each(consumed(await view.briefs())):
        tally.add(brief)
    shown = tally.shown()
    on_page = _page(shown, ACCOUNTS_PER_PAGE, filters.page)
    whole = {a.get("account"): a for a in await view.accounts([a["account"] for a in on_page])}
    # In the order the briefs ranked them; one gone meanwhile (a reload) is left out.
    accounts = [whole[a["account"]] for a in on_page if a["account"] in whole]
    stuck_total = tally.held[0]
    total = tally.held[0 if stuck_only(filters) else 1]
    filters = replace(filters, tpage=min(filters.tpage, max(1, -(-total // TRANSFERS_PER_PAGE))))
    first = (filters.tpage - 1) * TRANSFERS_PER_PAGE
    last = first + TRANSFERS_PER_PAGE
    window = Window(view, shown, filters, tally)
    rows = await window.rows("stuck", first, min(last, stuck_total))
    if not stuck_only(filters):
        rows += await window.rows(MOVING, max(first, stuck_total) - stuck_total, last - stuck_total)
    notes = []
    try:
        events = await view.events(after=None, limit=EVENTS_SHOWN)
    except StoreError:  # the page still tells what live state knows; the logs say more
        events = []
        notes.append("Recent events cannot be read: the state database did not answer.")
    if window.cut:
        notes.append(f"More than {MAX_LIMIT} transfers matched: narrow the filters.")
    page = _Page(
        accounts=accounts,
        shown=len(shown),
        rows=rows,
        total=max(total, first + len(rows)),
        recent=[e for e in reversed(events) if event_matches(e, filters)],
        providers=sorted(tally.providers),
        counts=tally.counts(),
        filters=replace(filters, notes=(*filters.notes, *notes)),
        now=now,
    )
    parts = []
    for part in _steps(page):
        parts.append(part)
        await pacer.pause()
    async for _ in pacer.each(consumed(shown)):  # let go of 10,000 accounts a slice at a time
        pass
    return "".join(parts)


@dataclass(frozen=True, slots=True)
class _Page:
    """What one page shows: the accounts and transfers of its page, and the totals."""

    accounts: Sequence[Item]
    shown: int
    rows: Sequence[Item]
    total: int
    recent: Sequence[Item]
    providers: Sequence[str]
    counts: Counts
    filters: Filters
    now: float


def render(
    accounts: Sequence[Item],
    transfers: Sequence[Item],
    events: Sequence[Item],
    filters: Filters,
    now: float,
) -> str:
    """The whole page: summary, filters, one page of accounts and of transfers, recent events.

    ``transfers`` come in the order to show (``in_order``), those of the pages before too;
    those of accounts the filters leave out are left out. The accounts' counts say how many
    there are in all.
    """
    tally = Tally(filters)
    for account in accounts:
        tally.add(account)
    shown = tally.shown()
    names = {(a.get("provider"), a.get("account")) for a in shown}
    moving = [t for t in transfers if (t.get("provider"), t.get("account")) in names]
    page = _Page(
        accounts=_page(shown, ACCOUNTS_PER_PAGE, filters.page),
        shown=len(shown),
        rows=_page(moving, TRANSFERS_PER_PAGE, filters.tpage),
        total=max(moving_count(shown, filters), len(moving)),
        recent=[e for e in reversed(events) if event_matches(e, filters)],
        providers=sorted(tally.providers),
        counts=tally.counts(),
        filters=filters,
        now=now,
    )
    return "".join(_steps(page))


def _steps(page: _Page) -> Iterator[str]:
    """The page's HTML in parts of a few rows each, so a caller can pause between them."""
    filters, now = page.filters, page.now
    notes = list(filters.notes)
    if filters.provider and filters.provider not in page.providers:
        notes.append(f"No account of a provider named {filters.provider!r}.")
    stamp = datetime.fromtimestamp(now, tz=UTC)
    yield "".join(
        (
            '<!doctype html><html lang="en"><head><meta charset="utf-8">',
            '<meta name="viewport" content="width=device-width, initial-scale=1">',
            f'<meta http-equiv="refresh" content="{REFRESH_SECONDS}; url={text(filters.link())}">',
            f"<title>{_title(page.counts)}</title><style>{STYLE}</style></head><body>",
            f"<header><h1>walletwatch</h1><span class='muted'>{text(__version__)}</span>",
            f"<span>Generated <time datetime='{stamp:%Y-%m-%dT%H:%M:%SZ}'>",
            f"{stamp:%Y-%m-%d %H:%M:%S} UTC</time>; refreshes every {REFRESH_SECONDS} s</span>",
            "<nav class='muted'><a href='/metrics'>metrics</a> · ",
            "<a href='/api/v1/accounts'>API</a> · <a href='/healthz'>healthz</a> · ",
            "<a href='/readyz'>readyz</a></nav></header><main>",
            "".join(f"<p class='note' role='status'>{text(note)}</p>" for note in notes),
            _summary(page.counts, filters),
            _form(filters, page.providers),
        )
    )
    yield from _accounts(page.accounts, page.shown, filters, now)
    yield from _transfers(page.rows, page.total, filters)
    yield from _events(page.recent, now)
    yield f"</main><script>{SCRIPT}</script></body></html>\n"


def _chunks(rows: Iterable[str], size: int = 20) -> Iterator[str]:
    """``rows`` joined ``size`` at a time."""
    batch: list[str] = []
    for row in rows:
        batch.append(row)
        if len(batch) == size:
            yield "".join(batch)
            batch = []
    if batch:
        yield "".join(batch)


def _title(counts: Counts) -> str:
    problems = [
        f"{n} {what}"
        for n, what in (
            (counts.down, "down"),
            (counts.stuck_transfers, "stuck"),
            (counts.low, "low"),
        )
        if n
    ]
    return f"walletwatch: {', '.join(problems)}" if problems else "walletwatch: all well"


def _summary(counts: Counts, filters: Filters) -> str:
    cells = (
        (counts.accounts, "accounts", "all", ""),
        (counts.down, "down", "down", "down"),
        (counts.stuck, f"with stuck transfers ({counts.stuck_transfers})", "stuck", "stuck"),
        (counts.low, "with a low balance", "low", "low"),
        (counts.waiting, "waiting for a first poll", "all", "waiting"),
    )
    items = []
    for n, label, state, css in cells:
        href = text(filters.link(state=state, page=1, tpage=1))
        items.append(f"<li><a class='{css if n else ''}' href='{href}'><b>{n}</b> {label}</a></li>")
    return f"<section aria-label='Summary'><ul class='summary'>{''.join(items)}</ul></section>"


def _form(filters: Filters, providers: Sequence[str]) -> str:
    options = "".join(
        f"<option value='{text(p)}'{' selected' if p == filters.provider else ''}>"
        f"{text(p)}</option>"
        for p in providers
    )
    states = "".join(
        f"<option{' selected' if s == filters.state else ''}>{s}</option>" for s in STATES
    )
    return (
        "<section aria-label='Filters'><form method='get' action=''>"
        "<label>Provider<select name='provider'><option value=''>all</option>"
        f"{options}</select></label>"
        "<label>Account contains<input name='account' type='search' "
        f"value='{text(filters.account)}'></label>"
        f"<label>State<select name='state'>{states}</select></label>"
        "<button type='submit'>Filter</button> <a href='?'>Clear</a></form></section>"
    )


def _pager(total: int, per: int, page: int, *, field: str, filters: Filters, what: str) -> str:
    if total == 0:
        return ""
    pages = (total + per - 1) // per
    page = min(page, pages)
    first, last = (page - 1) * per + 1, min(page * per, total)
    links = [f"<span>{what} {first}&ndash;{last} of {total}</span>"]
    if page > 1:
        links.append(f"<a href='{text(filters.link(**{field: page - 1}))}'>&lsaquo; previous</a>")
    if page < pages:
        links.append(f"<a href='{text(filters.link(**{field: page + 1}))}'>next &rsaquo;</a>")
        links.append(f"<a href='{text(filters.link(**{field: pages}))}'>last ({pages})</a>")
    return f"<nav class='pager'>{''.join(links)}</nav>"


def _page(rows: Sequence[Item], per: int, page: int) -> Sequence[Item]:
    pages = max(1, (len(rows) + per - 1) // per)
    start = (min(page, pages) - 1) * per
    return rows[start : start + per]


_BADGES = {"down": "✖ DOWN", "waiting": "… waiting", "up": "✔ up"}
"""An account's state in words and a sign, so it reads without colour too."""


def _accounts(accounts: Sequence[Item], shown: int, filters: Filters, now: float) -> Iterator[str]:
    """The accounts section: ``accounts`` are those of the page asked for, of ``shown``."""
    pager = _pager(
        shown, ACCOUNTS_PER_PAGE, filters.page, field="page", filters=filters, what="accounts"
    )
    yield f"<section><h2 id='accounts'>Accounts</h2>{pager}"
    if not accounts:
        yield f"<p class='muted'>No account matches these filters.</p>{pager}</section>"
        return
    yield (
        "<div class='scroll'><table class='rows'><thead><tr><th>State</th><th>Account</th>"
        "<th>Why down</th><th>Balances (threshold)</th><th>Transfers</th>"
        "<th>Last successful poll</th></tr></thead><tbody>"
    )
    yield from _chunks(_account_row(a, now) for a in accounts)
    yield f"</tbody></table></div>{pager}</section>"


def _account_row(account: Item, now: float) -> str:
    worst = problem(account)
    state = str(account.get("state"))
    css, word = (state, _BADGES[state]) if state in _BADGES else ("waiting", text(state))
    errors = [
        f"<div class='error'><b>{text(name)}</b>: {text(err.get('message') or '')} "
        f"<span class='muted'>({text(err.get('reason') or 'error')}, {_when(err.get('at'), now)})"
        "</span></div>"
        for name, endpoint in sorted((account.get("endpoints") or {}).items())
        if (err := (endpoint or {}).get("last_error"))
    ]
    if account.get("down_since"):
        errors.append(f"<div>down since {_when(account.get('down_since'), now)}</div>")
    stuck, flying = int(account.get("stuck") or 0), int(account.get("in_flight") or 0)
    moves = f"{flying} in flight"
    if stuck:
        moves += f"<br><span class='badge stuck'>◷ {stuck} STUCK</span>"
    return (
        f"<tr class='row-{worst}'><td data-label='State'>"
        f"<span class='badge {css}'>{word}</span></td>"
        f"<td data-label='Account' class='who'><b>{text(account.get('account'))}</b>"
        f"<div class='muted'>{text(account.get('provider'))}</div></td>"
        f"<td data-label='Why down'>{''.join(errors) or '<span class=muted>—</span>'}</td>"
        f"<td data-label='Balances'>{_balances(account.get('balances') or ())}</td>"
        f"<td data-label='Transfers'>{moves}</td>"
        f"<td data-label='Last successful poll'>{_when(account.get('last_success'), now)}</td></tr>"
    )


def _balances(balances: Iterable[Item]) -> str:
    items = []
    for b in balances:
        pending = b.get("pending")
        line = f"<code>{text(b.get('available'))}</code> {text(b.get('currency'))}"
        if pending not in (None, "0"):
            line += f" <span class='muted'>(+{text(pending)} pending)</span>"
        if b.get("low_threshold") is not None:
            line += f" <span class='muted'>(low below {text(b.get('low_threshold'))})</span>"
        if b.get("low"):
            line = f"<span class='badge low'>⚠ LOW</span> {line}"
        items.append(f"<li>{line}</li>")
    return f"<ul class='balances'>{''.join(items)}</ul>" if items else "<span class=muted>—</span>"


def _transfers(rows: Sequence[Item], total: int, filters: Filters) -> Iterator[str]:
    """The transfers section: ``rows`` are those of the page asked for, ``total`` all of them."""
    pager = _pager(
        total,
        TRANSFERS_PER_PAGE,
        filters.tpage,
        field="tpage",
        filters=filters,
        what="transfers",
    )
    yield f"<section><h2 id='transfers'>Transfers: stuck first, then in flight</h2>{pager}"
    if not rows:
        yield f"<p class='muted'>No transfer in flight matches these filters.</p>{pager}</section>"
        return
    yield (
        "<div class='scroll'><table class='rows'><thead><tr><th>State</th><th>Age</th>"
        "<th>Account</th><th>Direction</th><th>Amount</th><th>Provider status</th>"
        "<th>Txid and id</th></tr></thead><tbody>"
    )
    yield from _chunks(_transfer_row(t) for t in rows)
    yield f"</tbody></table></div>{pager}</section>"


def _transfer_row(t: Item) -> str:
    stuck = bool(t.get("stuck"))
    badge = (
        "<span class='badge stuck'>◷ STUCK</span>"
        if stuck
        else "<span class='badge in-flight'>↻ in flight</span>"
    )
    txid = t.get("txid")
    txid_html = (
        f"<div><code class='txid'>{text(txid)}</code>"
        "<button type='button' class='copy' hidden>Copy</button></div>"
        if txid
        else "<div class='muted'>no txid yet</div>"
    )
    extra = f"<div class='muted'>id <code class='txid'>{text(t.get('id'))}</code></div>"
    if t.get("address"):
        extra += f"<div class='muted'>to <code class='txid'>{text(t.get('address'))}</code></div>"
    fee = f"<div class='muted'>fee {text(t.get('fee'))}</div>" if t.get("fee") is not None else ""
    return (
        f"<tr class='row-{'stuck' if stuck else 'up'}'><td data-label='State'>{badge}</td>"
        f"<td data-label='Age' class='num'>{_age(float(t.get('age_seconds') or 0))}</td>"
        f"<td data-label='Account' class='who'><b>{text(t.get('account'))}</b>"
        f"<div class='muted'>{text(t.get('provider'))}</div></td>"
        f"<td data-label='Direction'>{text(t.get('direction'))}</td>"
        f"<td data-label='Amount' class='num'><code>{text(t.get('amount'))}</code> "
        f"{text(t.get('currency'))}{fee}</td>"
        f"<td data-label='Provider status'>{text(t.get('status'))} "
        f"<span class='muted'>({text(t.get('state'))})</span></td>"
        f"<td data-label='Txid'>{txid_html}{extra}</td></tr>"
    )


def _events(recent: Sequence[Item], now: float) -> Iterator[str]:
    yield "<section><h2 id='events'>Recent events, newest first</h2>"
    if not recent:
        yield "<p class='muted'>No recent event matches these filters.</p></section>"
        return
    yield (
        "<div class='scroll'><table class='rows'><thead><tr><th>When</th><th>Severity</th>"
        "<th>Event</th><th>Account</th><th>Details</th></tr></thead><tbody>"
    )
    yield from _chunks(
        f"<tr><td data-label='When'>{_when(e.get('ts'), now)}</td>"
        f"<td data-label='Severity'>{_severity(e.get('severity'))}</td>"
        f"<td data-label='Event'>{text(e.get('event'))}</td>"
        f"<td data-label='Account' class='who'>{text(e.get('account'))} "
        f"<span class='muted'>{text(e.get('provider'))}</span></td>"
        f"<td data-label='Details'>{_details(e)}</td></tr>"
        for e in recent
    )
    yield "</tbody></table></div></section>"


_SEVERITY = {"critical": "down", "warning": "low", "info": "waiting"}
"""The colour of each severity: the word itself is shown as well."""


def _severity(severity: object) -> str:
    css = _SEVERITY.get(str(severity), "waiting")
    return f"<span class='badge {css}'>{text(severity)}</span>"


def _details(event: Item) -> str:
    parts = []
    if event.get("amount") is not None:
        parts.append(f"<code>{text(event['amount'])}</code> {text(event.get('currency', ''))}")
    elif event.get("currency"):
        parts.append(text(event["currency"]))
    parts.extend(
        f"{name} {text(event[name])}"
        for name in ("status", "reason", "threshold")
        if event.get(name) is not None
    )
    if event.get("txid"):
        parts.append(f"txid <code class='txid'>{text(event['txid'])}</code>")
    elif event.get("transfer_id"):
        parts.append(f"id <code class='txid'>{text(event['transfer_id'])}</code>")
    return " · ".join(parts)


def _when(stamp: object, now: float) -> str:
    """An RFC 3339 time as UTC and how long ago, or ``never``."""
    if not stamp:
        return "<span class='muted'>never</span>"
    try:
        moment = datetime.fromisoformat(str(stamp))
    except ValueError:
        return text(stamp)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return (
        f"<time datetime='{text(stamp)}'>{moment.astimezone(UTC):%Y-%m-%d %H:%M:%S}Z</time> "
        f"<span class='muted'>({_age(now - moment.timestamp())} ago)</span>"
    )


def _age(seconds: float) -> str:
    """A duration the way a person reads it: 45s, 3m 05s, 2h 10m, 4d 3h."""
    whole = max(0, int(seconds))
    if whole < 60:
        return f"{whole}s"
    minutes, whole = divmod(whole, 60)
    if minutes < 60:
        return f"{minutes}m {whole:02d}s"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours}h {minutes:02d}m"
    days, hours = divmod(hours, 24)
    return f"{days}d {hours}h"
