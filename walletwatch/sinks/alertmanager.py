"""The Alertmanager sink: per-transfer alerts POSTed to /api/v2/alerts, held across restarts.

Events come from the outbox like any sink's: a stuck event fires its transfer's alert, the
transfer's final event resolves it, ``deposit.reversed`` fires a one-shot alert (what each
means is ``alerts.py``). The alerts firing are kept in the store (``Store.firing``) as they
are posted, before the cursor moves. On its own schedule (``refresh``, run by its lane in
the dispatcher) the sink re-posts every firing alert each REPOST seconds, and resolves those
whose transfer the daemon no longer has in flight; the first refresh after a start re-posts
what the last run left firing.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence

import aiohttp
import structlog

from walletwatch.asyncstore import AsyncStore
from walletwatch.config import AlertmanagerConfig
from walletwatch.errors import StoreError, redact
from walletwatch.events import Event
from walletwatch.http import parse_retry_after
from walletwatch.sinks.alerts import REPOST, Alert, Change, InFlight, on_event, payload, settled
from walletwatch.sinks.dispatcher import MAX_REST, DeliveryError
from walletwatch.sinks.webhook import (
    ERROR_READ,
    ERROR_SHOWN,
    Verdict,
    request_secrets,
    transport_error,
    verdict,
)
from walletwatch.types import Clock

log = structlog.get_logger("walletwatch.sinks")

PATH = "/api/v2/alerts"
CHUNK = 100
"""Alerts in one POST at most: a re-post of thousands goes in bodies of a bounded size."""


class AlertmanagerSink:
    """Posts per-transfer alerts to one Alertmanager, and keeps the firing ones posted.

    Its messages (a refusal's body, a transport error) have the URL, its credentials and
    the header values masked. ``unsent`` counts the alerts whose latest post failed.
    """

    batch_size = 100  # most events concern no alert: they pass without a request

    def __init__(
        self,
        config: AlertmanagerConfig,
        session: aiohttp.ClientSession,
        clock: Clock,
        store: AsyncStore,
        in_flight: InFlight,
        *,
        check_every: float = REPOST,
    ) -> None:
        self.name = config.name
        self.unsent = 0
        self._config = config
        self._url = config.url.reveal() + PATH
        self._session = session
        self._clock = clock
        self._store = store
        self._in_flight = in_flight
        self._check_every = min(check_every, REPOST)
        self._timeout = aiohttp.ClientTimeout(total=config.timeout)
        self._hidden = request_secrets(self._url, config.headers)
        self._held: dict[str, Alert] | None = None  # read from the store on first use
        self._repost_at = -math.inf  # monotonic
        self._check_at = -math.inf

    def __repr__(self) -> str:
        return f"AlertmanagerSink(name={self.name!r})"

    @property
    def firing(self) -> tuple[Alert, ...]:
        """The alerts held firing now."""
        return tuple((self._held or {}).values())

    async def deliver(self, events: Sequence[Event]) -> None:
        """Post what the events fire or resolve; DeliveryError says how far it got."""
        held = await self._load()
        for index, event in enumerate(events):
            change = on_event(held, event)
            if change is None:
                continue
            try:
                await self._apply(change)
            except DeliveryError as err:
                err.delivered = index
                raise

    async def refresh(self) -> float:
        """Resolve what left the in-flight set, re-post what fires if due; seconds until next."""
        held = await self._load()
        now = self._clock.monotonic()
        try:
            if now >= self._check_at:
                change = settled(held, self._in_flight, self._clock.time())
                if change.post:
                    await self._apply(change)
                self._check_at = now + self._check_every
            if now >= self._repost_at:
                firing = list(held.values())
                for start in range(0, len(firing), CHUNK):
                    await self._post(firing[start : start + CHUNK])
                self._repost_at = now + REPOST
        except DeliveryError:
            self.unsent = len(held)  # Alertmanager may not have the latest of any of them
            raise
        self.unsent = 0
        return max(0.0, min(self._check_at, self._repost_at) - now)

    async def _load(self) -> dict[str, Alert]:
        if self._held is None:
            try:
                rows = await self._store.call(self._store.store.firing, self.name)
            except StoreError as err:
                raise DeliveryError(str(err), delivered=0) from err
            self._held = {key: Alert.from_json(body) for key, body in rows.items()}
            if self._held:  # the last run's: re-posted at once
                log.info("alertmanager.loaded", sink=self.name, firing=len(self._held))
            else:  # those fired from now on were just posted
                self._repost_at = self._clock.monotonic() + REPOST
        return self._held

    async def _apply(self, change: Change) -> None:
        """Post the change's alerts, then record what it holds and forgets."""
        held = await self._load()
        await self._post(change.post)
        put = {key: alert.to_json() for key, alert in change.hold.items()}
        try:
            await self._store.call(self._store.store.save_firing, self.name, put, change.forget)
        except StoreError as err:
            # Posted but not recorded: the same change is made again on the retry.
            raise DeliveryError(str(err), delivered=0) from err
        held.update(change.hold)
        for key in change.forget:
            held.pop(key, None)

    async def _post(self, alerts: Sequence[Alert]) -> None:
        """POST the alerts in one request; DeliveryError(park) when refused for good."""
        if not alerts:
            return
        now = self._clock.time()
        body = json.dumps([payload(alert, now) for alert in alerts]).encode()
        headers = {name: value.reveal() for name, value in self._config.headers.items()}
        headers["Content-Type"] = "application/json"
        try:
            async with self._session.post(
                self._url,
                data=body,
                headers=headers,
                timeout=self._timeout,
                allow_redirects=False,
            ) as response:
                outcome = verdict(response.status)
                if outcome is Verdict.DELIVERED:
                    return
                read = await response.content.read(ERROR_READ)
                retry_after = response.headers.get("Retry-After")
        except Exception as err:  # noqa: BLE001 - any failure of the request keeps the alerts
            # Not chained: aiohttp's errors carry the URL in their text and request_info.
            raise DeliveryError(redact(transport_error(err), self._hidden), delivered=0) from None
        detail = " ".join(redact(read.decode("utf-8", "replace"), self._hidden).split())
        message = f"HTTP {response.status}" + (f": {detail[:ERROR_SHOWN]}" if detail else "")
        raise DeliveryError(
            message,
            delivered=0,
            park=outcome is Verdict.REFUSED,
            retry_after=parse_retry_after(retry_after, self._clock.time(), MAX_REST),
        )
