"""Where alert events go: stdout, the events file, webhooks, Alertmanager, and the dispatcher.

Events reach a sink only from the store's outbox, after the commit that produced them, and a
sink's cursor moves only past what it has delivered. Each sink drains on its own, so one slow
or failing sink never delays another. A crash between delivering and moving the cursor would
repeat the tail of a batch; the events file drops those repeats by event_id, so every fact is
written to it once. A webhook is acknowledged event by event; a receiver may still see a
repeat of the one request in flight at a crash or at the end of the shutdown grace
(at-least-once), and drops it by the same event_id. An Alertmanager gets alerts, not events:
one per stuck transfer, re-posted while it stays stuck and resolved once it settles.
"""

from __future__ import annotations

from walletwatch.sinks.alertmanager import AlertmanagerSink
from walletwatch.sinks.alerts import ALERTNAMES, REPOST
from walletwatch.sinks.dispatcher import (
    DELIVERY_GRACE,
    MAX_REST,
    DeliveryError,
    Dispatcher,
)
from walletwatch.sinks.files import FileSink, StreamSink, stdout_json
from walletwatch.sinks.webhook import (
    SIGNATURE_HEADER,
    Verdict,
    WebhookSink,
    signature,
    verdict,
    webhook_secrets,
)

__all__ = [
    "ALERTNAMES",
    "DELIVERY_GRACE",
    "MAX_REST",
    "REPOST",
    "SIGNATURE_HEADER",
    "AlertmanagerSink",
    "DeliveryError",
    "Dispatcher",
    "FileSink",
    "StreamSink",
    "Verdict",
    "WebhookSink",
    "signature",
    "stdout_json",
    "verdict",
    "webhook_secrets",
]
