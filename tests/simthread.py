"""The simulator served from a background thread, for tests that run the CLI."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from walletwatch.sim import Simulator, start


@contextmanager
def serve_in_thread(sim: Simulator) -> Iterator[str]:
    """Serve ``sim`` on a loopback port from its own thread and event loop; yield its URL."""
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    port: list[int] = []

    async def main() -> None:
        runner, bound = await start(sim, "127.0.0.1", 0)
        port.append(bound)
        ready.set()
        try:
            await asyncio.Event().wait()
        finally:
            await runner.cleanup()

    task: list[asyncio.Task[None]] = []

    def run() -> None:
        asyncio.set_event_loop(loop)
        task.append(loop.create_task(main()))
        try:
            loop.run_until_complete(task[0])
        except asyncio.CancelledError:
            pass
        finally:
            loop.close()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    if not ready.wait(timeout=10):
        raise RuntimeError("simulator did not start")
    try:
        yield f"http://127.0.0.1:{port[0]}"
    finally:
        loop.call_soon_threadsafe(task[0].cancel)
        thread.join(timeout=10)
