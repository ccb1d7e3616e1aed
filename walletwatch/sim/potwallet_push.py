"""PotWallet's merchant callback as the simulator sends it: a GET, repeated until ``*ok*``.

The doc (potwallet.txt, "Example Callback Response"): the callback URL given for a payment
address is called with its own query plus ``success``, ``amount``, ``address``, ``txid`` and
``confirmations``, and again until the answer body is ``*ok*`` ("Required to stop
notifications"). Nothing signs it: the merchant's own query secret is all it carries. The
simulator takes one callback URL per public key, as if every address had been given it, calls
it for each receive once its date comes, and says at each try how many confirmations the
transfer has by then.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from walletwatch.sim.push import Account, Callback, Item, PushKind

OK = b"*ok*"
ATTEMPTS = 20  # with the backoff's 1 s doubling to 60 s: about a quarter of an hour
BLOCK_SECONDS = 40.0  # the POT chain's block target: one confirmation per block


def _unix(date: str) -> float:
    """PotWallet's ``YYYY-MM-DD HH:MM:SS`` (UTC) as a Unix time."""
    return datetime.strptime(date, "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC).timestamp()


def callback(item: Item, now: float) -> Callback | None:
    """The callback for a transaction as the API lists it, sent now; None for a send."""
    if item["category"] != "receive":
        return None
    date = _unix(item["date"])
    confirmations = max(0, int((now - date) // BLOCK_SECONDS))
    amount = item["amount"]
    query = (
        ("success", "true"),
        ("amount", format(amount, "f") if isinstance(amount, Decimal) else str(amount)),
        ("address", str(item["address"])),
        ("txid", str(item["txid"])),
        ("confirmations", str(confirmations)),
    )
    return Callback("GET", query=query, not_before=date)


def forged(_account: Account, rng: random.Random, now: float) -> dict[str, Any]:
    """A receive no account holds, as the API would list it, dated a few blocks ago."""
    date = datetime.fromtimestamp(now - 4 * BLOCK_SECONDS, tz=UTC)
    return {
        "date": date.strftime("%Y-%m-%d %H:%M:%S"),
        "amount": Decimal(rng.randint(1, 10**8)).scaleb(-4),
        "category": "receive",
        "address": "P" + rng.randbytes(16).hex(),
        "blockhash": rng.randbytes(32).hex(),
        "txid": rng.randbytes(32).hex(),
        "label": None,
    }


CALLBACK = PushKind(request=callback, forge=forged, until=OK, attempts=ATTEMPTS)
