"""What ``walletwatch status`` prints: --json, hostile provider strings, 10,000 accounts, colour."""

from __future__ import annotations

import asyncio
import json
import os
import pty
import re

import pytest

from tests.status.fakeapi import (
    COMMAND,
    CONTROL,
    NOW,
    FakeApi,
    Run,
    account_row,
    environment,
    transfer_row,
)
from walletwatch.statusview import COLOURS, LONGEST


class TestJson:
    """--json prints one document: the API's lists as it gave them."""

    async def test_the_document(self, api: FakeApi, run: Run) -> None:
        """{generated_at, accounts, transfers, truncated}, equal to the answers; same exit."""
        api.accounts = [account_row("hot", in_flight=1, stuck=1), account_row("cold", "down")]
        api.transfers = [transfer_row("9", stuck=True, txid="<script>\x1b[2J\u202e")]
        result = await run("--url", api.url, "--json")
        assert result.code == 1, result
        assert json.loads(result.out) == {
            "generated_at": NOW,
            "accounts": api.accounts,
            "transfers": api.transfers,
            "truncated": False,
        }
        assert result.out.isascii()  # a provider's escape stays a JSON escape
        assert CONTROL.search(result.out.replace("\n", "")) is None


HOSTILE = {
    "ansi": "\x1b[2J\x1b]0;pwned\x07",
    "control": "a\rb\x08c\x00d\x9b",
    "newline": "first\nsecond\u2028third",
    "script": "<script>alert(1)</script>",
    "rtl": "abc\u202edef\u2066",
}


class TestHostileStrings:
    """Provider strings are shown as text: escaped, never acted on by the terminal."""

    async def test_every_field_escaped(self, api: FakeApi, run: Run) -> None:
        """Escapes, control characters, separators and bidi overrides appear as \\u escapes."""
        hostile = "".join(HOSTILE.values())
        error = {"reason": hostile, "message": hostile, "at": hostile}
        balance = {"currency": hostile, "available": hostile, "pending": hostile}
        api.accounts = [
            account_row(
                hostile,
                "down",
                provider=hostile,
                down_since=hostile,
                endpoints={hostile: {"last_success": None, "last_error": error}},
                balances=[{**balance, "low_threshold": hostile, "low": True}],
                stuck=1,
            )
        ]
        fields = ("id", "txid", "status", "state", "currency", "amount", "direction", "account")
        api.transfers = [transfer_row("1", stuck=True, **dict.fromkeys(fields, hostile))]
        result = await run("--url", api.url)
        assert result.code == 1, result
        assert CONTROL.search(result.out) is None
        assert "\u2028" not in result.out
        assert "<script>alert(1)</script>" in result.out  # text on a terminal, as it came
        shown = (
            "\\u001b[2J\\u001b]0;pwned\\u0007a\\u000db\\u0008c\\u0000d\\u009b"
            "first\\u000asecond\\u2028third<script>alert(1)</script>abc\\u202edef\\u2066"
        )
        assert result.out.count(shown) >= 10
        # Only the view's own lines: a provider's newline made none.
        assert all(not line.startswith(("second", "third")) for line in result.out.splitlines())

    async def test_a_huge_string_is_cut_and_says_so(self, api: FakeApi, run: Run) -> None:
        """A megabyte error message shows its first LONGEST characters and how many more."""
        huge = "x" * 1_000_000
        error = {"reason": "payload", "message": huge, "at": None}
        api.accounts = [
            account_row("hot", "down", endpoints={"balances": {"last_error": error}}),
        ]
        api.transfers = [transfer_row("1", txid="f" * 200_000)]
        result = await run("--url", api.url)
        assert result.code == 1, result
        assert len(result.out) < 5_000
        assert f"{'x' * LONGEST}...[{1_000_000 - LONGEST:,} more characters]" in result.out
        assert f"{'f' * LONGEST}...[{200_000 - LONGEST:,} more characters]" in result.out


class TestManyAccounts:
    """At 10,000 accounts the view lists the problems and counts the rest."""

    @pytest.fixture(name="crowd")
    def fixture_crowd(self, api: FakeApi) -> FakeApi:
        """10,000 accounts: 3 down, 2 waiting, 4 with a low balance, 1 with a stuck transfer."""
        api.accounts = [account_row(f"acct-{i:05d}", in_flight=1) for i in range(10_000)]
        for i in (17, 4242, 9999):
            api.accounts[i] = account_row(f"acct-{i:05d}", "down")
        for i in (5, 6):
            api.accounts[i] = account_row(f"acct-{i:05d}", "waiting")
        for i in (100, 200, 300, 400):
            api.accounts[i]["balances"][0]["low"] = True
        api.accounts[7000]["stuck"] = 1
        api.transfers = [
            transfer_row(str(i), account=f"acct-{i:05d}", stuck=i == 7000)
            for i in range(10_000)
            if i not in (5, 6, 17, 4242, 9999)
        ]
        return api

    async def test_problems_in_full_the_rest_counted(self, crowd: FakeApi, run: Run) -> None:
        """Each account with a problem is listed; the healthy 9,990 are one line."""
        result = await run("--url", crowd.url)
        assert result.code == 1, result
        lines = result.out.splitlines()
        assert len(lines) < 100, len(lines)
        listed = {m for line in lines for m in re.findall(r"toy/(acct-\d+)", line)}
        problems = {f"acct-{i:05d}" for i in (5, 6, 17, 4242, 9999, 100, 200, 300, 400, 7000)}
        assert problems <= listed
        assert "... and 9,990 more accounts up, no balance low, nothing stuck" in result.out
        assert "... and 9,974 more transfers in flight, none stuck" in result.out
        assert lines[-1] == (
            "PROBLEM: 10,000 accounts: 3 down, 2 waiting, 9,995 up; 4 balances low;"
            " 9,995 transfers in flight, 1 stuck"
        )
        # The down ones first, then waiting, then the up ones with a problem.
        order = [
            lines.index(next(x for x in lines if f"toy/{a} " in x))
            for a in ("acct-00017", "acct-00005", "acct-07000", "acct-00100")
        ]
        assert order == sorted(order)

    async def test_all_lists_every_one(self, crowd: FakeApi, run: Run) -> None:
        """--all lists every account and every transfer."""
        result = await run("--url", crowd.url, "--all")
        assert result.code == 1, result
        listed = set(re.findall(r"^\S+\s+toy/(acct-\d+)", result.out, re.MULTILINE))
        assert len(listed) == 10_000
        assert "more accounts" not in result.out
        assert "more transfers" not in result.out

    async def test_a_reader_that_has_gone(self, crowd: FakeApi) -> None:
        """Piped to a reader that stopped (``| head``): no traceback, the exit status kept."""
        read_end, write_end = os.pipe()
        proc = await asyncio.create_subprocess_exec(
            *COMMAND,
            "--url",
            crowd.url,
            "--all",
            stdout=write_end,
            stderr=asyncio.subprocess.PIPE,
            env=environment(),
        )
        os.close(write_end)
        os.close(read_end)  # before the command writes: its first write meets a closed pipe
        _, err = await asyncio.wait_for(proc.communicate(), 30)
        assert (proc.returncode, err) == (1, b"")


class TestColour:
    """Colour on a terminal only, and never with NO_COLOR."""

    async def test_plain_when_not_a_terminal(self, api: FakeApi, run: Run) -> None:
        """Output to a file or pipe has no escape sequences."""
        api.accounts = [account_row("hot", "down")]
        result = await run("--url", api.url)
        assert "\x1b" not in result.out

    @pytest.mark.parametrize("no_color", [None, "1"])
    async def test_a_terminal(self, api: FakeApi, no_color: str | None) -> None:
        """On a pseudo-terminal the verdict is coloured, unless NO_COLOR is set."""
        api.accounts = [account_row("hot", "down")]
        env = environment() if no_color is None else environment(NO_COLOR=no_color)
        leader, follower = pty.openpty()
        proc = await asyncio.create_subprocess_exec(
            *COMMAND,
            "--url",
            api.url,
            stdout=follower,
            env=env,
        )
        os.close(follower)
        assert await asyncio.wait_for(proc.wait(), 30) == 1
        out = b""
        while True:
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # EIO: the terminal's other side is closed and drained
                break
            if not chunk:
                break
            out += chunk
        os.close(leader)
        text = out.decode()
        assert "PROBLEM: 1 account: 1 down" in text
        if no_color is None:
            assert f"{COLOURS['bad']}DOWN" in text
        else:
            assert "\x1b" not in text
