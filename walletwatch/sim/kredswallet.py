"""Simulated KredsWallet ("WebWallet API") instance: signed reads, nonces, a chain that grows.

The API is served under ``/kredswallet/api``. Its root has a path, as on kredswallet.com and
on self-hosted instances, so a client that drops base_url's path gets 404s. Requests are
verified here from the documented algorithm, independently of the client: HMAC-SHA512 of
the base64 payload, then the payload's nonce, which must be greater than the last nonce
accepted for that API key (checked only once the signature holds, as a forged request must
not burn nonces).

Transfers gain confirmations as blocks are mined (``mine``, once per scenario step). A
deposit counts in the balance once it has ``confirmations_required`` confirmations and in
``balance_pending`` before that. A withdraw leaves the balance (amount plus fee) as it is
made. There is no rate limit: KredsWallet publishes none and documents no 429. Calls that
write or need admin rights are refused with 403 and recorded.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import hashlib
import hmac
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from aiohttp import web

from walletwatch.sim.base import ApiSim, Call, Caller, Endpoint, Public, Refusal
from walletwatch.sim.common import (
    SimContext,
    as_int,
    as_str,
    as_time,
    json_response,
    read_fields,
    read_object,
    to_decimal,
)

PROVIDER = "kredswallet"
API_ROOT = "/api"
DEFAULT_PAGE_SIZE = 100  # the documented default
MAX_PAGE_SIZE = 1000  # the simulator's own bound; the doc gives none
START_HEIGHT = 76052  # the block count of the doc's /info example
EIGHT_PLACES = Decimal("0.00000001")
RECEIVE, SEND = "receive", "send"


def sign(secret: str, payload: str) -> str:
    """X-WWT-SIGNATURE: hex HMAC-SHA512 of the base64 payload text, keyed with the secret."""
    return hmac.new(secret.encode(), payload.encode(), hashlib.sha512).hexdigest()


def verify(secret: str, payload: str, signature: str) -> bool:
    """Whether ``signature`` is the X-WWT-SIGNATURE of this payload."""
    expected = sign(secret, payload).encode()
    return hmac.compare_digest(expected, signature.encode("utf-8", "replace"))


def read_nonce(payload: str) -> int | None:
    """The nonce in a payload (base64 JSON object, nonce as digits), or None if unreadable."""
    try:
        data = json.loads(base64.b64decode(payload, validate=True))
    except (binascii.Error, ValueError):
        return None
    nonce = data.get("nonce") if isinstance(data, dict) else None
    if not isinstance(nonce, str) or not nonce.isascii() or not nonce.isdigit():
        return None
    return int(nonce)


def wallet_time(ts: float) -> str:
    """A Unix time as the wallet writes ``blocktime``: ``YYYY-MM-DD HH:MM:SS`` in UTC."""
    return datetime.fromtimestamp(ts, tz=UTC).strftime("%Y-%m-%d %H:%M:%S")


def coins(amount: Decimal) -> str:
    """An amount as the wallet writes it: a string with eight decimals."""
    return format(amount.quantize(EIGHT_PLACES), "f")


def block_hash(height: int) -> str:
    """A made-up, stable hash for the block at ``height``."""
    return hashlib.sha256(f"kreds-block-{height}".encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class SimTransfer:
    """One simulated transfer (``receive`` = deposit, ``send`` = withdraw); amounts positive."""

    txid: str
    kind: str
    amount: Decimal
    fee: Decimal
    address: str
    created_at: float
    height: int | None = None  # the block that mined it; None while unconfirmed
    blocktime: float | None = None
    conflicted: bool = False


# POST /_sim/kredswallet/accounts: each body field and how to read it.
_ACCOUNT_FIELDS = {"api_key": as_str, "api_secret": as_str, "balance": to_decimal}


@dataclass(slots=True)
class _Account:
    """Mutable state behind one API key."""

    secret: str
    funds: Decimal  # the balance apart from the transfers listed below
    transfers: dict[str, SimTransfer]  # in the order they were made
    last_nonce: int = 0


class KredsWalletSim(ApiSim[_Account]):
    """One simulated WebWallet instance with accounts per API key and a Python API to drive it."""

    name = PROVIDER
    forbidden = "forbidden in the simulator"
    rate_limited = False  # KredsWallet publishes no limit and documents no 429
    account_fields = _ACCOUNT_FIELDS

    def __init__(self, ctx: SimContext, *, confirmations_required: int = 6) -> None:
        super().__init__(ctx)
        self._accounts: dict[str, _Account] = {}
        self._next_tx = 1
        self.height = START_HEIGHT
        self.api_enabled = True
        self.confirmations_required = confirmations_required

    # -- Python API ---------------------------------------------------------------------------

    def add_account(self, api_key: str, api_secret: str, balance: Decimal = Decimal(0)) -> None:
        """Create an account for an API key; ValueError if the key exists."""
        if api_key in self._accounts:
            raise ValueError(f"account {api_key!r} exists")
        self._accounts[api_key] = _Account(api_secret, balance, {})

    def set_balance(self, api_key: str, amount: Decimal) -> None:
        """Set the available balance outright (the listed transfers stay as they are)."""
        account = self._accounts[api_key]
        account.funds += amount - self.balance(api_key)

    def add_deposit(
        self,
        api_key: str,
        amount: Decimal,
        *,
        address: str = "KSimDepositAddress",
        confirmations: int = 0,
        txid: str | None = None,
        created_at: float | None = None,
    ) -> str:
        """A deposit into the account, already ``confirmations`` deep; returns its txid."""
        return self._add(
            api_key,
            RECEIVE,
            amount=amount,
            fee=Decimal(0),
            address=address,
            confirmations=confirmations,
            txid=txid,
            created_at=created_at,
        )

    def add_withdraw(
        self,
        api_key: str,
        amount: Decimal,
        *,
        fee: Decimal = Decimal("0.01"),
        address: str = "KSimWithdrawAddress",
        confirmations: int = 0,
        txid: str | None = None,
        created_at: float | None = None,
    ) -> str:
        """A withdraw of ``amount`` plus ``fee``, already ``confirmations`` deep; its txid."""
        return self._add(
            api_key,
            SEND,
            amount=amount,
            fee=fee,
            address=address,
            confirmations=confirmations,
            txid=txid,
            created_at=created_at,
        )

    def mine(self, blocks: int = 1) -> int:
        """Mine ``blocks`` blocks; the first takes in every unconfirmed transfer. New height."""
        if blocks < 0:
            raise ValueError(f"blocks must not be negative, got {blocks}")
        for _ in range(blocks):
            self.height += 1
            for account in self._accounts.values():
                for tx_id, tx in account.transfers.items():
                    if tx.height is None and not tx.conflicted:
                        account.transfers[tx_id] = dataclasses.replace(
                            tx, height=self.height, blocktime=self._ctx.clock()
                        )
        return self.height

    def conflict(self, api_key: str, txid: str) -> None:
        """Mark a transfer conflicted (double spent): confirmations -1, no balance effect."""
        tx = self._accounts[api_key].transfers[txid]
        self._accounts[api_key].transfers[txid] = dataclasses.replace(tx, conflicted=True)

    def confirmations(self, api_key: str, txid: str) -> int:
        """A transfer's confirmations as the API reports them."""
        return self._confirmations(self._accounts[api_key].transfers[txid])

    def balance(self, api_key: str) -> Decimal:
        """The available balance: funds, confirmed deposits, less withdraws and their fees."""
        return self._balance(self._accounts[api_key])

    def pending(self, api_key: str) -> Decimal:
        """Deposits not yet at ``confirmations_required``."""
        return sum(
            (tx.amount for tx in self._pending(self._accounts[api_key], RECEIVE)), Decimal(0)
        )

    def last_nonce(self, api_key: str) -> int:
        """The last nonce accepted for an API key (0 before any)."""
        return self._accounts[api_key].last_nonce

    def snapshot(self, api_key: str) -> dict[str, Any]:
        """Ground truth for an account: balances, nonce, every transfer as the API shows it."""
        account = self._accounts[api_key]
        return {
            "api_key": api_key,
            "balance": coins(self.balance(api_key)),
            "balance_pending": coins(self.pending(api_key)),
            "last_nonce": account.last_nonce,
            "height": self.height,
            "transfers": [{"type": tx.kind, **self._item(tx)} for tx in account.transfers.values()],
        }

    def _add(
        self,
        api_key: str,
        kind: str,
        *,
        amount: Decimal,
        fee: Decimal,
        address: str,
        confirmations: int,
        txid: str | None,
        created_at: float | None,
    ) -> str:
        account = self._accounts[api_key]
        if not amount.is_finite() or amount <= 0 or not fee.is_finite() or fee < 0:
            raise ValueError("amount must be positive and fee not negative")
        if not 0 <= confirmations <= self.height:
            raise ValueError(f"confirmations must be 0..{self.height}, got {confirmations}")
        if txid is None:
            txid = hashlib.sha256(f"kreds-tx-{self._next_tx}".encode()).hexdigest()
            self._next_tx += 1
        if any(txid in a.transfers for a in self._accounts.values()):
            raise ValueError(f"transaction {txid!r} exists")
        now = self._ctx.clock()
        created = now if created_at is None else created_at
        mined = self.height - confirmations + 1 if confirmations else None
        account.transfers[txid] = SimTransfer(
            txid=txid,
            kind=kind,
            amount=amount,
            fee=fee,
            address=address,
            created_at=created,
            height=mined,
            blocktime=None if mined is None else created,
        )
        return txid

    def _balance(self, account: _Account) -> Decimal:
        total = account.funds
        for tx in account.transfers.values():
            if tx.conflicted:
                continue
            if tx.kind == SEND:
                total -= tx.amount + tx.fee
            elif self._confirmed(tx):
                total += tx.amount
        return total

    def _confirmations(self, tx: SimTransfer) -> int:
        if tx.conflicted:
            return -1
        return 0 if tx.height is None else self.height - tx.height + 1

    def _confirmed(self, tx: SimTransfer) -> bool:
        return self._confirmations(tx) >= self.confirmations_required

    def _pending(self, account: _Account, kind: str) -> list[SimTransfer]:
        return [
            tx
            for tx in account.transfers.values()
            if tx.kind == kind and not tx.conflicted and not self._confirmed(tx)
        ]

    def _item(self, tx: SimTransfer) -> dict[str, object]:
        """A transfer as the listings show it; block fields only once it is mined."""
        item: dict[str, object] = {"txid": tx.txid}
        if tx.kind == SEND:
            item = {"address_to": tx.address, **item}
        if tx.height is not None and tx.blocktime is not None:
            item["blockhash"] = block_hash(tx.height)
            item["blockindex"] = tx.height
        if tx.kind == SEND:
            item["amount"] = coins(-tx.amount)
            item["total"] = coins(-(tx.amount + tx.fee))
        else:
            item["amount"] = coins(tx.amount)
        item["confirmations"] = self._confirmations(tx)
        item["label"] = ""
        if tx.blocktime is not None:
            item["blocktime"] = wallet_time(tx.blocktime)
        if tx.kind == RECEIVE:
            item["address"] = tx.address
        return item

    # -- HTTP API -----------------------------------------------------------------------------

    def is_write(self, method: str, path: str) -> bool:
        """Creating addresses, withdrawing and every admin call: never walletwatch's business."""
        if not path.startswith(API_ROOT + "/"):
            return False
        parts = path.removeprefix(API_ROOT).strip("/").split("/")
        return parts[0] == "admin" or (method != "GET" and parts[0] == "user")

    def route(self, method: str, path: str) -> Endpoint[_Account] | Public:
        """``GET /api/status`` for anyone; signed ``GET /api/user/...`` reads."""
        if not path.startswith(API_ROOT + "/"):
            raise Refusal(404, "Not found")
        if method != "GET":
            raise Refusal(405, "Method not allowed")
        parts = path.removeprefix(API_ROOT).strip("/").split("/")
        if parts == ["status"]:
            return Public(lambda _call: {"apiEnabled": self.api_enabled})
        if parts[0] != "user":
            raise Refusal(404, "Not found")
        return Endpoint(lambda account, _call: self._read(account, parts[1:]))

    def error_body(self, status: int, message: str) -> object:
        """The documented error body ``{error, code, message}``."""
        return {"error": True, "code": status, "message": message}

    def answer_headers(self, call: Call) -> Mapping[str, str] | None:
        """X-WWT-NONCE: every answer to a request with a readable nonce repeats it."""
        nonce = read_nonce(call.request.headers.get("X-WWT-PAYLOAD", ""))
        return None if nonce is None else {"X-WWT-NONCE": str(nonce)}

    def authenticate(self, call: Call) -> Caller[_Account]:
        """The account a request is signed for, once its signature and nonce hold."""
        request = call.request
        key = request.headers.get("X-WWT-APIKEY", "")
        payload = request.headers.get("X-WWT-PAYLOAD", "")
        signature = request.headers.get("X-WWT-SIGNATURE", "")
        account = self._accounts.get(key)
        if account is None or not verify(account.secret, payload, signature):
            raise Refusal(401, "Unauthorized: invalid API key or signature")
        if not self.api_enabled:
            raise Refusal(401, "Unauthorized: the API is disabled on this wallet")
        nonce = read_nonce(payload)
        if nonce is None:
            raise Refusal(400, "Invalid payload")
        if nonce <= account.last_nonce:
            raise Refusal(400, f"Invalid nonce: must be greater than {account.last_nonce}")
        account.last_nonce = nonce
        return Caller(account, key)

    def _read(self, account: _Account, parts: list[str]) -> object:
        """The answer to a signed GET of /user/<parts>."""
        name, args = parts[0], parts[1:]
        if name == "balance" and not args:
            return {"balance": coins(self._balance(account))}
        if name == "summary" and not args:
            return self._summary(account)
        if name in ("deposits", "withdraws", "transactions") and len(args) <= 2:
            page, size = _paging(args)
            kinds = {"deposits": (RECEIVE,), "withdraws": (SEND,)}.get(name, (RECEIVE, SEND))
            newest_first = [tx for tx in reversed(account.transfers.values()) if tx.kind in kinds]
            chosen = newest_first[(page - 1) * size : page * size]
            return [self._item(tx) for tx in chosen]
        if name == "transaction" and len(args) == 1:
            tx = account.transfers.get(args[0])
            if tx is None:
                raise Refusal(400, "Invalid txid: transaction not found")
            item = self._item(tx)
            return item if tx.kind == SEND else {**item, "total": coins(Decimal(0))}
        raise Refusal(404, "Not found")

    def _summary(self, account: _Account) -> dict[str, object]:
        live = [tx for tx in account.transfers.values() if not tx.conflicted]
        received = sum((tx.amount for tx in live if tx.kind == RECEIVE), Decimal(0))
        sent = sum((tx.amount + tx.fee for tx in live if tx.kind == SEND), Decimal(0))
        incoming = self._pending(account, RECEIVE)
        outgoing = self._pending(account, SEND)
        received_pending = sum((tx.amount for tx in incoming), Decimal(0))
        sent_pending = sum((tx.amount + tx.fee for tx in outgoing), Decimal(0))
        return {  # signs as in the doc's example: sent positive, sent_pending negative
            "balance": coins(self._balance(account)),
            "balance_pending": coins(received_pending),
            "received": coins(received - received_pending),
            "received_pending": coins(received_pending),
            "sent": coins(sent - sent_pending),
            "sent_pending": coins(-sent_pending),
            "transactions": len(live),
            "transactions_pending": len(incoming) + len(outgoing),
        }

    # -- control endpoints ----------------------------------------------------------------------

    def control_routes(self, router: web.UrlDispatcher) -> None:
        """Mine, switch the API, set balances, add transfers, mark one conflicted."""
        router.add_post("/mine", self._c_mine)
        router.add_put("/status", self._c_status)
        router.add_put("/{api_key}/balance", self._c_set_balance)
        router.add_post("/{api_key}/deposits", self._c_add_deposit)
        router.add_post("/{api_key}/withdraws", self._c_add_withdraw)
        router.add_post("/{api_key}/transactions/{txid}/conflict", self._c_conflict)

    async def _c_mine(self, request: web.Request) -> web.Response:
        fields = read_fields(await read_object(request), {"blocks": as_int})
        return json_response({"height": self.mine(fields.get("blocks", 1))})

    async def _c_status(self, request: web.Request) -> web.Response:
        enabled = (await read_object(request)).get("apiEnabled")
        if not isinstance(enabled, bool):
            raise TypeError(f"apiEnabled must be true or false, got {enabled!r}")
        self.api_enabled = enabled
        return json_response({"apiEnabled": enabled})

    async def _c_set_balance(self, request: web.Request) -> web.Response:
        api_key = request.match_info["api_key"]
        fields = read_fields(await read_object(request), {"balance": to_decimal})
        self.set_balance(api_key, fields["balance"])
        return json_response(self.snapshot(api_key))

    async def _c_add_deposit(self, request: web.Request) -> web.Response:
        fields = read_fields(await read_object(request), _TRANSFER_FIELDS)
        txid = self.add_deposit(request.match_info["api_key"], **fields)
        return json_response({"txid": txid}, status=201)

    async def _c_add_withdraw(self, request: web.Request) -> web.Response:
        fields = read_fields(await read_object(request), {**_TRANSFER_FIELDS, "fee": to_decimal})
        txid = self.add_withdraw(request.match_info["api_key"], **fields)
        return json_response({"txid": txid}, status=201)

    async def _c_conflict(self, request: web.Request) -> web.Response:
        api_key, txid = request.match_info["api_key"], request.match_info["txid"]
        self.conflict(api_key, txid)
        return json_response({"txid": txid, "confirmations": self.confirmations(api_key, txid)})


# Control-endpoint bodies: each field and how to read it (missing required ones answer 400).
_TRANSFER_FIELDS = {
    "amount": to_decimal,
    "address": as_str,
    "confirmations": as_int,
    "txid": as_str,
    "created_at": as_time,
}


def _paging(args: list[str]) -> tuple[int, int]:
    """[page[, pagesize]] from the path (defaults 1 and 100); Refusal when not numbers."""
    page = args[0] if args else "1"
    size = args[1] if len(args) > 1 else str(DEFAULT_PAGE_SIZE)
    if not all(v.isascii() and v.isdigit() for v in (page, size)):
        raise Refusal(400, "Invalid page or pagesize")
    if int(page) < 1 or not 1 <= int(size) <= MAX_PAGE_SIZE:
        raise Refusal(400, "Invalid page or pagesize")
    return int(page), int(size)
