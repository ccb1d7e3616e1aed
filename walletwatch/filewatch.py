"""The SQLite state file under a running daemon: still the file it opened, or reported lost."""

from __future__ import annotations

from collections.abc import Callable

import structlog

from walletwatch.asyncstore import AsyncStore
from walletwatch.errors import StateFileLost
from walletwatch.store import Store
from walletwatch.telemetry import Telemetry
from walletwatch.types import Clock

log = structlog.get_logger("walletwatch.app")


async def watch_file(
    store: AsyncStore,
    sqlite: Store,
    telemetry: Telemetry,
    clock: Clock,
    period: Callable[[], float],
) -> None:
    """Check, every ``period()`` seconds, that the state file is the one opened.

    Commits are refused by the store itself while it is not; this is what reports it
    (``state_file_ok``, and so ``up``) when no poll has anything to commit.
    """
    while True:
        await clock.sleep(period())
        try:
            await store.call(sqlite.check_file)
        except StateFileLost as err:
            if telemetry.state_file_ok:
                log.error(  # noqa: TRY400 - the message says it all; no traceback
                    "store.file_lost",
                    path=str(sqlite.path),
                    error=str(err),
                    note="no commit is made until it is back; restart walletwatch to "
                    "start afresh (a new baseline) or put the file back",
                )
            telemetry.state_file_ok = False
        else:
            if not telemetry.state_file_ok:
                log.info("store.file_recovered", path=str(sqlite.path))
            telemetry.state_file_ok = True
