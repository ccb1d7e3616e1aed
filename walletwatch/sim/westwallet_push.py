"""WestWallet's IPN as the simulator sends it: a form-encoded POST for each deposit that moves.

The doc's payment notification (westwallet.txt, "Notifications about payments"): ``id``,
``amount``, ``address``, ``dest_tag``, ``label``, ``currency``, ``status``,
``blockchain_confirmations`` and ``blockchain_hash``, sent with Content-Type
``application/x-www-form-urlencoded`` when funds arrive at an address. Nothing signs it. The
real ``ipn_url`` is given per address; the simulator takes one per API key, as if every
address of the account had been generated with it. Sent once: the doc promises no retry.
"""

from __future__ import annotations

import random
from decimal import Decimal
from typing import Any
from urllib.parse import urlencode

from walletwatch.sim.push import Account, Callback, Item, PushKind

FORM = "application/x-www-form-urlencoded"
IPN_FIELDS = (
    "id",
    "amount",
    "address",
    "dest_tag",
    "label",
    "currency",
    "status",
    "blockchain_confirmations",
    "blockchain_hash",
)


def form_value(value: object) -> str:
    """A field as the form carries it: amounts in plain notation, nothing as empty."""
    if value is None:
        return ""
    if isinstance(value, Decimal):
        return format(value, "f")
    return str(value)


def ipn(item: Item, _now: float) -> Callback | None:
    """The IPN for a transaction as the API lists it; None for a send (no IPN for those)."""
    if item["type"] != "receive":
        return None
    fields = [(name, form_value(item.get(name))) for name in IPN_FIELDS]
    return Callback("POST", body=urlencode(fields).encode(), content_type=FORM)


def forged(_account: Account, rng: random.Random, _now: float) -> dict[str, Any]:
    """A completed deposit no account holds, as the API would list it."""
    return {
        "id": rng.randrange(10**9, 10**10),  # far above any id the simulation hands out
        "type": "receive",
        "amount": Decimal(rng.randint(1, 10**8)).scaleb(-8),
        "address": "bc1q" + rng.randbytes(19).hex(),
        "dest_tag": "",
        "label": "",
        "currency": "BTC",
        "status": "completed",
        "blockchain_confirmations": 6,
        "blockchain_hash": rng.randbytes(32).hex(),
    }


IPN = PushKind(request=ipn, forge=forged)
