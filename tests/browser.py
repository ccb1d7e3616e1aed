"""A real headless chromium for the tests, driven over the DevTools protocol with aiohttp.

No driver and no new dependency: chromium listens on a loopback port of its choosing (written
to DevToolsActivePort in its profile), and each command is a JSON message on a websocket.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

DEADLINE = 30.0
"""Seconds chromium may take to start, or a page to load."""

FLAGS = (
    "--headless",
    "--no-sandbox",  # root in a container: the sandbox needs user namespaces it may not have
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",  # nothing but the pages the test opens
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--remote-debugging-address=127.0.0.1",
    "--remote-debugging-port=0",
)


def chromium() -> str:
    """The chromium binary; the test fails (never skips) when it is not installed."""
    path = shutil.which("chromium")
    if path is None:
        pytest.fail("chromium is not installed: `make test` installs it (Debian package chromium)")
    return path


class Page:
    """One tab: commands in, their results and the events seen so far out."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self._ws = ws
        self._ids = itertools.count(1)
        self._waiting: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self.events: list[dict[str, Any]] = []
        self._loaded = asyncio.Event()
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        async for message in self._ws:
            if message.type is not aiohttp.WSMsgType.TEXT:
                break
            body = message.json()
            if "id" in body:
                future = self._waiting.pop(body["id"], None)
                if future is not None and not future.done():
                    future.set_result(body)
            else:
                self.events.append(body)
                if body.get("method") == "Page.loadEventFired":
                    self._loaded.set()
        for future in self._waiting.values():
            if not future.done():
                future.set_exception(ConnectionError("chromium closed the page"))

    async def send(self, method: str, **params: Any) -> dict[str, Any]:
        """Run one command; its result, or AssertionError with chromium's error."""
        key = next(self._ids)
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._waiting[key] = future
        await self._ws.send_json({"id": key, "method": method, "params": params})
        body = await asyncio.wait_for(future, DEADLINE)
        assert "error" not in body, (method, body["error"])
        result: dict[str, Any] = body["result"]
        return result

    async def open(self, url: str) -> None:
        """Navigate to ``url`` and wait until it has loaded."""
        self._loaded.clear()
        result = await self.send("Page.navigate", url=url)
        assert "errorText" not in result, result
        await asyncio.wait_for(self._loaded.wait(), DEADLINE)

    async def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page (awaited if it is a promise)."""
        result = await self.send(
            "Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True
        )
        assert "exceptionDetails" not in result, result["exceptionDetails"]
        return result["result"].get("value")

    async def submit(self, script: str) -> None:
        """Run ``script``, which submits a form, and wait for the page it loads."""
        self._loaded.clear()
        await self.evaluate(script)
        await asyncio.wait_for(self._loaded.wait(), DEADLINE)

    async def screenshot(self, path: Path) -> Path:
        """A PNG of the whole page at ``path``."""
        shot = await self.send("Page.captureScreenshot", format="png", captureBeyondViewport=True)
        path.parent.mkdir(parents=True, exist_ok=True)
        await asyncio.to_thread(path.write_bytes, base64.b64decode(shot["data"]))
        return path

    async def close(self) -> None:
        """Stop reading."""
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader


@contextlib.asynccontextmanager
async def browser(profile: Path) -> AsyncIterator[Page]:
    """A headless chromium with a fresh ``profile`` and one blank tab, stopped afterwards."""
    process = await asyncio.create_subprocess_exec(
        chromium(),
        *FLAGS,
        f"--user-data-dir={profile}",
        "about:blank",
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        port = await _port(profile / "DevToolsActivePort", process)
        async with aiohttp.ClientSession() as session:
            async with session.get(f"http://127.0.0.1:{port}/json/list") as resp:
                targets = await resp.json()
            (tab,) = [t for t in targets if t["type"] == "page"]
            async with session.ws_connect(tab["webSocketDebuggerUrl"], max_msg_size=0) as ws:
                page = Page(ws)
                try:
                    for domain in ("Page", "Runtime", "Network", "Log"):
                        await page.send(f"{domain}.enable")
                    yield page
                finally:
                    await page.close()
    finally:
        if process.returncode is None:
            process.terminate()
            try:
                await asyncio.wait_for(process.wait(), 10)
            except TimeoutError:
                process.kill()
                await process.wait()


async def _port(path: Path, process: asyncio.subprocess.Process) -> int:
    """The DevTools port chromium chose, once it has written it."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + DEADLINE
    while loop.time() < deadline:
        assert process.returncode is None, f"chromium exited with {process.returncode}"
        with contextlib.suppress(FileNotFoundError, ValueError, IndexError):
            return int((await asyncio.to_thread(path.read_text)).splitlines()[0])
        await asyncio.sleep(0.05)
    raise AssertionError(f"chromium wrote no {path.name} within {DEADLINE} s")
