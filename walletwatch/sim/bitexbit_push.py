"""bitexbit's callbacks as the simulator sends them: the transfer, as listed, POSTed as JSON.

The gateway doc (bitexbit-gateway.md) takes a ``callback_url`` when a wallet (deposit
address) or a withdrawal is created, and says no more of the call. The simulator sends what
the doc does show of a transfer: a POST with the deposit as ``/wallet/history`` lists it, or
the withdrawal as ``/withdraw/history`` lists it, as JSON, whenever one arrives or changes
status or confirmations. Nothing signs it. One callback URL per API key stands in for
every wallet and withdrawal of the account having been given it. Sent once.
"""

from __future__ import annotations

import hashlib
import random
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from walletwatch.sim.common import dump_json
from walletwatch.sim.push import Account, Callback, Item, PushKind


def callback(item: Item, _now: float) -> Callback:
    """The callback for a deposit or withdrawal as its history lists it."""
    return Callback("POST", body=dump_json(item).encode(), content_type="application/json")


def forged(_account: Account, rng: random.Random, now: float) -> dict[str, Any]:
    """A confirmed deposit no account holds, as ``/wallet/history`` would list it."""
    created = datetime.fromtimestamp(now, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    address = "T" + rng.randbytes(16).hex()
    return {
        "address": address,
        "wallet_slug": hashlib.sha256(address.encode()).hexdigest()[:36],
        "date": created,
        "amount": format(Decimal(rng.randint(1, 10**10)).scaleb(-8), "f"),
        "fee": "0.00000000",
        "ticker": "USDT",
        "network": "tron",
        "status": "5",
        "txid": rng.randbytes(32).hex(),
        "actual_confirmations": 40,
        "required_confirmations": 40,
        "aml_success": True,
        "aml_risk": 0,
        "aml_url": None,
        "created_at": created,
    }


CALLBACK = PushKind(request=callback, forge=forged)
