"""The status page in a real headless chromium: what a person sees, from a real daemon.

The daemon watches three simulator accounts behind basic auth: one with a stuck withdrawal
and an in-flight one whose txid is a script, one with a low balance, one with wrong
credentials. The browser sends the credentials as any browser would after the prompt. The
screenshot is kept at build/artifacts/status-page.png.
"""

from __future__ import annotations

import base64
import time
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import bcrypt
import pytest

from tests.browser import Page, browser
from walletwatch.app import Daemon
from walletwatch.clock import SystemClock
from walletwatch.config import parse_config
from walletwatch.sim import Simulator, start

ARTIFACT = Path(__file__).resolve().parents[1] / "build" / "artifacts" / "status-page.png"
USER, PASSWORD = "operator", "page-test-password"
HOT, CASH, COLD = "hot-key", "cash-key", "cold-key"
STUCK_TXID = "9f2c" * 16 + "-0123456789abcdef-an-unusually-long-provider-reference"
HOSTILE = "<script>window.__pwned=1</script><img src=x onerror=window.__pwned=2>"


@pytest.fixture(name="daemon")
async def fixture_daemon(tmp_path: Path) -> AsyncIterator[Daemon]:
    """A daemon over the simulator, polled twice, serving the page behind basic auth."""
    sim = Simulator(rate_limit=100_000)
    ww = sim.westwallet
    ww.add_account(HOT, "hot-secret", {"BTC": Decimal(2)})
    ww.add_account(CASH, "cash-secret", {"USDT": Decimal(900)})
    ww.add_account(COLD, "cold-secret", {"BTC": Decimal(1)})
    two_hours_ago = time.time() - 2 * 3600
    ww.add_transaction(
        HOT,
        type="send",
        currency="BTC",
        amount=Decimal("0.25"),
        txid=STUCK_TXID,
        created_at=two_hours_ago,
    )
    ww.add_transaction(HOT, type="send", currency="BTC", amount=Decimal("0.1"), txid=HOSTILE)
    runner, port = await start(sim, "127.0.0.1", 0)
    base = f"http://127.0.0.1:{port}/westwallet"
    hashed = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=4)).decode()

    def account(name: str, key: str, secret: str, **extra: Any) -> dict[str, Any]:
        credentials = {"api_key": key, "secret_key": secret}
        return (
            {"name": name, "provider": "westwallet", "base_url": base}
            | extra
            | {"credentials": credentials}
        )

    config = parse_config(
        {
            "listen": "127.0.0.1:0",
            "state_path": "state.db",
            "events_file": "events.jsonl",
            "web": {"basic_auth_users": {USER: hashed}},
            "providers": {"westwallet": {"rate_limit": 1000}},
            "accounts": [
                account("hot-wallet", HOT, "hot-secret", withdrawal_stuck_after="1h"),
                account("cash-desk", CASH, "cash-secret", low_balance={"USDT": "1000"}),
                account("cold-store", COLD, "not-the-secret", down_after=1),
            ],
        },
        base_dir=tmp_path,
        environ={},
    )
    daemon = Daemon(config, clock=SystemClock())
    await daemon.start()
    try:
        for _ in range(2):
            await daemon.poll_once()
        yield daemon
    finally:
        await daemon.close()
        await runner.cleanup()


@pytest.fixture(name="page")
async def fixture_page(daemon: Daemon, tmp_path: Path) -> AsyncIterator[Page]:
    """A chromium tab that sends the daemon's credentials, on the status page."""
    del daemon
    async with browser(tmp_path / "profile") as page:
        token = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
        await page.send("Network.setExtraHTTPHeaders", headers={"Authorization": f"Basic {token}"})
        await page.send(
            "Emulation.setDeviceMetricsOverride",
            width=1280,
            height=900,
            deviceScaleFactor=1,
            mobile=False,
        )
        yield page


ROWS = "[...document.getElementById({!r}).parentElement.querySelectorAll('tbody tr')]"


async def rows(page: Page, section: str) -> list[str]:
    """The innerText of each row of a section's table."""
    return list(await page.evaluate(ROWS.format(section) + ".map(r => r.innerText)"))


class TestInChromium:
    async def test_what_a_person_sees(self, page: Page, daemon: Daemon) -> None:
        """Down with its reason, low marked, stuck first with its whole txid, scripts as text."""
        await page.open(daemon.url + "/")
        accounts = await rows(page, "accounts")
        assert [row.split("\n")[0].split("\t")[0] for row in accounts] == [
            "✖ DOWN",
            "✔ up",
            "✔ up",
        ]
        cold, hot, cash = accounts
        assert "cold-store" in cold
        assert "HTTP 401: check the account's api_key, secret_key and that the key may read" in cold
        assert "down since" in cold
        assert "hot-wallet" in hot
        assert "1 STUCK" in hot
        assert "cash-desk" in cash
        assert "⚠ LOW 900 USDT (low below 1000)" in cash

        transfers = await rows(page, "transfers")
        assert len(transfers) == 2
        assert transfers[0].startswith("◷ STUCK")
        assert STUCK_TXID in transfers[0]
        assert transfers[1].startswith("↻ in flight")
        assert HOSTILE in transfers[1]  # as text
        codes = "[...document.querySelectorAll('code.txid')]"
        assert await page.evaluate(f"{codes}[0].textContent") == STUCK_TXID
        assert await page.evaluate(f"getComputedStyle({codes}[0]).overflowWrap") == "anywhere"

        assert await page.evaluate("typeof window.__pwned") == "undefined"
        assert await page.evaluate("document.scripts.length") == 1
        assert await page.evaluate("document.images.length") == 0
        # The page's own script ran under its policy: the copy buttons are shown.
        assert await page.evaluate("document.querySelector('button.copy').hidden") is False
        refused = [e for e in page.events if "Content Security Policy" in str(e.get("params", {}))]
        assert refused == []
        meta = "document.querySelector('meta[http-equiv=refresh]').content"
        assert await page.evaluate(meta) == "30; url=?"

        path = await page.screenshot(ARTIFACT)
        print(f"status page screenshot: {path}")

    async def test_filters_through_the_form(self, page: Page, daemon: Daemon) -> None:
        """The form narrows by state and by part of a name; the refresh keeps the filters."""
        await page.open(daemon.url + "/")
        await page.submit(
            "document.querySelector('select[name=state]').value = 'down';"
            "document.querySelector('form').requestSubmit()"
        )
        assert await page.evaluate("location.search") == "?provider=&account=&state=down"
        accounts = await rows(page, "accounts")
        assert len(accounts) == 1
        assert "cold-store" in accounts[0]
        assert "No transfer in flight matches these filters." in await page.evaluate(
            "document.body.innerText"
        )

        await page.submit(
            "document.querySelector('select[name=state]').value = 'all';"
            "document.querySelector('input[name=account]').value = 'HOT-';"
            "document.querySelector('form').requestSubmit()"
        )
        accounts = await rows(page, "accounts")
        assert len(accounts) == 1
        assert "hot-wallet" in accounts[0]
        assert len(await rows(page, "transfers")) == 2
        meta = "document.querySelector('meta[http-equiv=refresh]').content"
        assert await page.evaluate(meta) == "30; url=?account=HOT-"

        await page.open(daemon.url + "/?state=stuck")
        assert [t.split("\t")[0] for t in await rows(page, "transfers")] == ["◷ STUCK"]
        await page.open(daemon.url + "/?state=low")
        (cash,) = await rows(page, "accounts")
        assert "cash-desk" in cash
