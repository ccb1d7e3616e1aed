"""Sila's transaction webhooks as the simulator sends them: JSON events, off after 15 failures.

Sila posts an event per transaction status change to the app's webhook endpoint: JSON with
``event_time``, ``event_type`` (``transaction``), ``event_uuid`` and ``event_details``
(``transaction``, ``transaction_type``, ``entity`` (the user handle), ``outcome`` (the
status), ``sila_amount``, ``processing_type``), and disables the endpoint after 15 failed
deliveries in a row. The simulator subscribes one wallet (app and user handle) rather than
a whole app, so that each watched account can have its own URL; it does not sign the event.
"""

from __future__ import annotations

import random
import uuid
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from walletwatch.sim.common import dump_json
from walletwatch.sim.push import Account, Callback, Item, PushKind

DISABLE_AFTER = 15  # failed deliveries in a row
# Event ids are derived from what happened, so a duplicate delivery carries the same one.
EVENTS = uuid.UUID("5f1c3c1e-8a4b-4c52-9a55-2f0e7d6b9c01")


def webhook(item: Item, _now: float) -> Callback:
    """The event for a transaction as ``/get_transactions`` lists it."""
    name = f"{item['transaction_id']}/{item['status']}/{item['last_update']}"
    event = {
        "event_time": item["last_update"],
        "event_type": "transaction",
        "event_uuid": str(uuid.uuid5(EVENTS, name)),
        "event_details": {
            "transaction": item["transaction_id"],
            "transaction_type": item["transaction_type"],
            "entity": item["user_handle"],
            "outcome": item["status"],
            "sila_amount": item["sila_amount"],
            "processing_type": item["processing_type"],
        },
    }
    return Callback("POST", body=dump_json(event).encode(), content_type="application/json")


def forged(account: Account, rng: random.Random, now: float) -> dict[str, Any]:
    """A successful issue of the account's wallet that does not exist, as it would be listed."""
    when = datetime.fromtimestamp(now, tz=UTC).isoformat(timespec="milliseconds")
    return {
        "user_handle": account[-1],
        "transaction_id": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
        "transaction_type": "issue",
        "sila_amount": Decimal(rng.randint(1, 10**6)),
        "status": "success",
        "last_update": when.replace("+00:00", "Z"),
        "processing_type": "STANDARD_ACH",
    }


WEBHOOK = PushKind(request=webhook, forge=forged, disable_after=DISABLE_AFTER)
