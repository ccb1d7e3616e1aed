"""Keeping the cyclic garbage collector off while the web server builds a large answer."""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator


class CollectorHold:
    """Keeps the cyclic garbage collector off while any render (or API listing) is under way.

    A render makes thousands of objects in bursts (the first one fills the renderer's
    caches), and a full collection that their allocations set off would stall the loop
    for tens of milliseconds in the middle of a scrape. A render makes no reference cycles;
    what polls make meanwhile is collected once the render is over.
    """

    def __init__(self) -> None:
        self.renders = 0

    @contextlib.contextmanager
    def held(self) -> Iterator[None]:
        """The collector off in this block, and on again after the last block ends."""
        self.renders += 1
        if self.renders == 1:
            gc.disable()
        try:
            yield
        finally:
            self.renders -= 1
            if self.renders == 0:
                gc.enable()


HOLD = CollectorHold()
