"""The seams of walletwatch: the protocols its parts meet at."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    from walletwatch.configmodel import AccountConfig
    from walletwatch.events import Event
    from walletwatch.model import Direction, Observation, Transfer


class SqlCursor(Protocol):
    """The rows a statement gave (sqlite3's cursor, psycopg's)."""

    @property
    def rowcount(self) -> int:
        """How many rows the statement changed."""
        ...

    def fetchone(self) -> Any: ...
    def fetchall(self) -> list[Any]: ...
    def __iter__(self) -> Iterator[Any]: ...


class SqlConnection(Protocol):
    """A connection taking ``?`` placeholders (sqlite3's, or walletwatch.pgstore's wrapper)."""

    def execute(self, sql: str, parameters: Any = (), /) -> SqlCursor: ...
    def executemany(self, sql: str, parameters: Iterable[Any], /) -> object: ...
    def close(self) -> object: ...


class Timer(Protocol):
    """A callback the clock will run later, unless cancelled first."""

    def cancel(self) -> object: ...


class Clock(Protocol):
    """Wall time for timestamps, monotonic time for scheduling, sleeping and timers."""

    def time(self) -> float: ...
    def wall_offset(self) -> float: ...
    def monotonic(self) -> float: ...
    async def sleep(self, seconds: float) -> None: ...
    def call_later(self, seconds: float, callback: Callable[[], object]) -> Timer: ...


class InFlight(Protocol):
    """A tracked transfer that has not settled, as a provider sees it."""

    @property
    def transfer(self) -> Transfer:
        """The transfer as last observed."""
        ...

    @property
    def started_at(self) -> float:
        """When it began: the provider's created_at, else when it was first seen."""
        ...


class Tracked(Protocol):
    """What a provider may know of an account's tracked transfers (tracker.AccountState).

    ``known`` holds for each direction's newest transfers whatever their age (the tracker
    keeps its KEEP_NEWEST newest), so paging a history back, newest first, may stop at the
    first known one (providers/paging.py).
    """

    def known(self, direction: Direction, transfer_id: str) -> bool:
        """True if the transfer has been seen before."""
        ...

    def in_flight(self) -> Iterable[InFlight]:
        """The transfers that have not settled."""
        ...


class Provider(Protocol):
    """A client for one account at one provider; read-only by construction."""

    @property
    def endpoints(self) -> tuple[str, ...]:
        """The endpoint names this client polls, e.g. ("balances", "deposits")."""
        ...

    async def poll(self, endpoint: str, tracked: Tracked) -> Observation:
        """Poll one endpoint; raise a ProviderError when no usable answer came back."""
        ...


class ProviderFactory(Protocol):
    """Builds a provider client for an account (one registry entry)."""

    # ``context`` is a walletwatch.context.ProviderContext; naming its type here would close
    # an import cycle (the context holds the Http, which paces by the clock defined here).
    def __call__(self, account: AccountConfig, context: Any) -> Provider: ...


class Sink(Protocol):
    """Somewhere alert events go; ``deliver`` raises to have the batch retried."""

    name: str
    batch_size: int  # events one deliver() gets; acknowledged when it returns

    async def deliver(self, events: Sequence[Event]) -> None: ...


@runtime_checkable
class Refreshing(Protocol):
    """A sink that also sends on its own schedule (the Alertmanager sink's re-posts)."""

    unsent: int  # what its latest sends could not deliver: shown with its pending events

    async def refresh(self) -> float:
        """Send what is due; return the seconds until more is."""
        ...
