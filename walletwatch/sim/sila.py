"""Simulated Sila API: ECDSA or access-token auth, /get_wallet, /get_transactions, writes refused.

Follows the provider notes (NOTES.md). Callers are checked in sila_auth.py the way the
server does it, independently of the client: the signer's address is recovered from each
signature and compared with the address registered for the app or the user.
"""

from __future__ import annotations

import dataclasses
import hmac
import itertools
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from aiohttp import web

from walletwatch.sim.base import ApiSim, Call, Caller, Endpoint, Refusal
from walletwatch.sim.common import (
    SimContext,
    as_bool,
    as_str,
    as_time,
    json_response,
    load_json,
    read_fields,
    read_object,
    to_decimal,
)
from walletwatch.sim.sila_auth import (
    EXPIRATIONS,
    SHAPES,
    TokenIssuer,
    basic_credentials,
    keccak256,
    recover_address,
    token_answer,
)
from walletwatch.sim.sila_push import WEBHOOK

PROVIDER = "sila"
READ_PATHS = frozenset({"/get_wallet", "/get_transactions", "/auth_token"})
MAX_CLOCK_SKEW = 300.0  # seconds header.created may differ from the server clock
MAX_PER_PAGE = 100
DEFAULT_PER_PAGE = 20
TYPES = ("issue", "redeem", "transfer")
STATUSES = ("queued", "pending", "review", "success", "failed", "rollback")
IN_FLIGHT = frozenset({"queued", "pending", "review"})
FAMILIES = ("doc", "sdk")  # available_balance/pending_balance, or the SDKs' sila_* fields
FILTERS = frozenset(
    {"page", "per_page", "transaction_types", "statuses", "sort_ascending", "transaction_id"}
)


def iso_time(ts: float) -> str:
    """A Unix time as Sila writes ``created``: ISO 8601 UTC with milliseconds and ``Z``."""
    text = datetime.fromtimestamp(ts, tz=UTC).isoformat(timespec="milliseconds")
    return text.replace("+00:00", "Z")


@dataclass(frozen=True, slots=True)
class SimTransaction:
    """One simulated transaction (``issue`` = deposit, ``redeem`` = withdrawal)."""

    id: str
    seq: int
    type: str
    amount: Decimal
    status: str
    created_at: float
    updated_at: float
    txid: str
    bank_account_name: str


def balance_effect(tx: SimTransaction) -> tuple[Decimal, Decimal]:
    """What a transaction in its status does to (available, pending)."""
    zero = Decimal(0)
    if tx.type == "issue":
        if tx.status == "success":
            return tx.amount, zero
        return zero, tx.amount if tx.status in IN_FLIGHT else zero
    if tx.type == "redeem" and (tx.status == "success" or tx.status in IN_FLIGHT):
        return -tx.amount, zero  # a redeem holds its amount unless it fails
    return zero, zero


def api_item(user_handle: str, address: str | None, tx: SimTransaction) -> dict[str, object]:
    """The transaction as /get_transactions lists it."""
    return {
        "user_handle": user_handle,
        "reference_id": f"ref-{tx.seq}",
        "transaction_id": tx.id,
        "transaction_hash": tx.txid,
        "transaction_type": tx.type,
        "sila_amount": tx.amount,
        "bank_account_name": tx.bank_account_name,
        "handle_address": address,
        "status": tx.status,
        "created": iso_time(tx.created_at),
        "last_update": iso_time(tx.updated_at),
        "created_epoch": int(tx.created_at),
        "last_update_epoch": int(tx.updated_at),
        "processing_type": "STANDARD_ACH",
    }


@dataclass(slots=True)
class _App:
    address: str | None
    client_id: str | None
    client_secret: str | None


@dataclass(slots=True)
class _User:
    """One wallet's mutable state (not frozen: the simulation changes it in place)."""

    app_handle: str
    handle: str
    address: str | None
    available: Decimal = Decimal(0)
    pending: Decimal = Decimal(0)
    whitelisted: bool = True
    family: str = "doc"
    transactions: dict[str, SimTransaction] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class _Session:
    """An authenticated call: its payload and header, and the wallet it reads (none for a token)."""

    payload: Mapping[str, Any]
    header: Mapping[str, Any]
    user: _User | None


class SilaSim(ApiSim[_Session]):
    """In-memory Sila apps and users served over HTTP, with a Python API to drive them.

    Its control endpoints ``POST /_sim/sila/{action}`` call the Python API method of that name
    with the JSON body as keyword arguments (see ``_ACTIONS``); ``GET /_sim/sila/{app}/{user}``
    is a wallet's snapshot.
    """

    name = PROVIDER
    forbidden = "forbidden in the simulator"
    throttled = "rate limited"
    snapshot_keys = ("app", "user")
    push_kind = WEBHOOK  # transaction events, to the URL set per wallet

    def __init__(self, ctx: SimContext) -> None:
        super().__init__(ctx)
        self._apps: dict[str, _App] = {}
        self._users: dict[tuple[str, str], _User] = {}
        self._seq = itertools.count(1)
        self.tokens = TokenIssuer(ctx.clock)
        self.references: list[str] = []  # every header.reference received, in order
        self.token_shape, self.token_expiration = "sila", "seconds"
        self.type_filter = True  # False: history pages list every type, whatever was asked

    # -- Python API ---------------------------------------------------------------------------

    def add_app(
        self,
        app_handle: str,
        *,
        address: str | None = None,
        client_id: str | None = None,
        client_secret: str | None = None,
    ) -> None:
        """Register an app by its ECDSA address, its client credentials, or both."""
        if app_handle in self._apps:
            raise ValueError(f"app {app_handle!r} exists")
        if (client_id is None) != (client_secret is None):
            raise ValueError("client_id and client_secret go together")
        self._apps[app_handle] = _App(address, client_id, client_secret)

    def add_user(
        self, app_handle: str, user_handle: str, *, address: str | None = None, **wallet: Any
    ) -> None:
        """Register a user (one wallet) of an app; ``wallet`` fields as for set_wallet."""
        if app_handle not in self._apps:
            raise KeyError(app_handle)
        if (app_handle, user_handle) in self._users:
            raise ValueError(f"user {user_handle!r} exists")
        self._users[(app_handle, user_handle)] = _User(app_handle, user_handle, address)
        self.set_wallet(app_handle, user_handle, **wallet)

    def set_wallet(
        self,
        app_handle: str,
        user_handle: str,
        *,
        available: Decimal | None = None,
        pending: Decimal | None = None,
        whitelisted: bool | None = None,
        family: str | None = None,
    ) -> None:
        """Change a wallet's balances, whitelisting, or the family of balance field names."""
        user = self._users[(app_handle, user_handle)]
        if family not in (None, *FAMILIES):
            raise ValueError(f"family must be one of {FAMILIES}")
        changes: dict[str, object] = {"available": available, "pending": pending}
        changes |= {"whitelisted": whitelisted, "family": family}
        for name, value in changes.items():
            if value is not None:
                setattr(user, name, value)

    def add_transaction(
        self,
        app_handle: str,
        user_handle: str,
        *,
        type: str,  # noqa: A002 - named after the API field the caller is simulating
        amount: Decimal,
        status: str = "queued",
        created_at: float | None = None,
        txid: str | None = None,
        bank_account_name: str = "default",
    ) -> str:
        """Add a transaction, move the balances as it implies, and return its id."""
        user = self._users[(app_handle, user_handle)]
        if type not in TYPES or not amount.is_finite() or amount <= 0:
            raise ValueError(f"type must be one of {TYPES} and amount positive")
        seq = next(self._seq)
        created = self._ctx.clock() if created_at is None else created_at
        tx = SimTransaction(
            id=str(uuid.UUID(int=seq, version=4)),
            seq=seq,
            type=type,
            amount=amount,
            status=status,
            created_at=created,
            updated_at=created,
            txid=txid or "0x" + keccak256(f"sila-sim-{seq}".encode()).hex(),
            bank_account_name=bank_account_name,
        )
        user.transactions[tx.id] = tx
        self._move(user, balance_effect(tx), 1)
        self.pushed(api_item(user_handle, user.address, tx), app_handle, user_handle)
        return tx.id

    def set_status(self, app_handle: str, user_handle: str, tx_id: str, status: str) -> None:
        """Change a transaction's status, bump its last update, move the balances."""
        user = self._users[(app_handle, user_handle)]
        old = user.transactions[tx_id]
        updated = max(old.updated_at, self._ctx.clock())
        new = user.transactions[tx_id] = dataclasses.replace(old, status=status, updated_at=updated)
        self._move(user, balance_effect(old), -1)
        self._move(user, balance_effect(new), 1)
        self.pushed(api_item(user_handle, user.address, new), app_handle, user_handle)

    def transaction(self, app_handle: str, user_handle: str, tx_id: str) -> SimTransaction:
        """One transaction as the simulation holds it."""
        return self._users[(app_handle, user_handle)].transactions[tx_id]

    def balance(self, app_handle: str, user_handle: str) -> tuple[Decimal, Decimal]:
        """A wallet's (available, pending) SILA."""
        user = self._users[(app_handle, user_handle)]
        return user.available, user.pending

    def set_token_answer(self, *, shape: str | None = None, expiration: str | None = None) -> None:
        """Answer /auth_token in another shape (SHAPES) or expiration form (EXPIRATIONS)."""
        if shape not in (None, *SHAPES) or expiration not in (None, *EXPIRATIONS):
            raise ValueError(f"shape must be one of {SHAPES}, expiration one of {EXPIRATIONS}")
        self.token_shape = shape or self.token_shape
        self.token_expiration = expiration or self.token_expiration

    def set_type_filter(self, *, honoured: bool) -> None:
        """Honour search_filters.transaction_types, or ignore it as an upstream bug might."""
        self.type_filter = honoured

    def revoke_tokens(self) -> None:
        """Invalidate every issued token: the next call with one gets 401."""
        self.tokens.revoke_all()

    def snapshot(self, app_handle: str, user_handle: str) -> dict[str, Any]:
        """Ground truth for one wallet, amounts as strings."""
        user = self._users[(app_handle, user_handle)]
        return {
            "app_handle": app_handle,
            "user_handle": user_handle,
            "available": format(user.available, "f"),
            "pending": format(user.pending, "f"),
            "whitelisted": user.whitelisted,
            "family": user.family,
            "transactions": [
                {**api_item(user_handle, user.address, tx), "sila_amount": format(tx.amount, "f")}
                for tx in sorted(user.transactions.values(), key=lambda tx: tx.seq)
            ],
        }

    @staticmethod
    def _move(user: _User, effect: tuple[Decimal, Decimal], sign: int) -> None:
        user.available += sign * effect[0]
        user.pending += sign * effect[1]

    # -- HTTP API -----------------------------------------------------------------------------

    def is_write(self, method: str, path: str) -> bool:
        """Every Sila call is a POST: any POST that is not a simulated read writes."""
        return path not in READ_PATHS and method == "POST"

    def route(self, method: str, path: str) -> Endpoint[_Session]:
        """The read at path, answered with ``success`` and the request's reference."""
        if path not in READ_PATHS:
            raise Refusal(404, "not found")
        if method != "POST":
            raise Refusal(405, "method not allowed")
        return Endpoint(self._answer)

    def error_body(self, status: int, message: str) -> object:  # noqa: ARG002 - status-free shape
        """``{"success": false, "status": "FAILURE", "message": ...}``."""
        return {"success": False, "status": "FAILURE", "message": message}

    def authenticate(self, call: Call) -> Caller[_Session]:
        """A valid header, then the app's client credentials (for a token) or the user's auth."""
        payload = _payload(call.body)
        header = self._header(payload)
        app_handle = header["app_handle"]
        user = None
        if call.path == "/auth_token":
            self._check_client(call.request, app_handle)
        else:
            user = self._authenticate(call.request, call.body, header)
        return Caller(_Session(payload, header, user), app_handle)

    def _answer(self, session: _Session, call: Call) -> object:
        user = session.user
        if user is None:
            token = self.tokens.issue(session.header["app_handle"])
            now, shape, form = self._ctx.clock(), self.token_shape, self.token_expiration
            answer: dict[str, object] = token_answer(
                token.value, token.expires_at, now, shape, form
            )
            if shape == "oauth2":  # a standard OAuth2 answer: no Sila envelope at all
                return answer
        elif call.path == "/get_wallet":
            answer = _wallet(user)
        else:
            filters = session.payload.get("search_filters", {})
            answer = _transactions(user, filters, honour_types=self.type_filter)
        reference = session.header["reference"]
        return {"success": True, "status": "SUCCESS", "reference": reference, **answer}

    def _header(self, payload: Mapping[str, Any]) -> Mapping[str, Any]:
        header = payload.get("header")
        if not isinstance(header, dict):
            raise Refusal(400, "header is required")
        reference, created = header.get("reference"), header.get("created")
        if not isinstance(reference, str) or not reference:
            raise Refusal(400, "header.reference must be a non-empty string")
        if isinstance(created, bool) or not isinstance(created, int):
            raise Refusal(400, "header.created must be Unix seconds")
        if abs(self._ctx.clock() - created) > MAX_CLOCK_SKEW:
            raise Refusal(400, "header.created is too far from the server time")
        if header.get("version") != "0.2" or not isinstance(header.get("app_handle"), str):
            raise Refusal(400, "header.version 0.2 and header.app_handle are required")
        self.references.append(reference)
        return header

    def _check_client(self, request: web.Request, app_handle: str) -> None:
        """/auth_token: the HTTP Basic client credentials are the app's."""
        app = self._apps.get(app_handle)
        given = basic_credentials(request.headers.get("Authorization", ""))
        if (
            given is None
            or app is None
            or app.client_secret is None
            or app.client_id != given[0]
            or not hmac.compare_digest(app.client_secret.encode(), given[1].encode())
        ):
            raise Refusal(401, "invalid client credentials")

    def _authenticate(self, request: web.Request, raw: bytes, header: Mapping[str, Any]) -> _User:
        """The user a read is for, once its token or both of its signatures check out."""
        app_handle = header["app_handle"]
        app = self._apps.get(app_handle)
        user = self._users.get((app_handle, str(header.get("user_handle"))))
        scheme, _, value = request.headers.get("Authorization", "").partition(" ")
        if scheme == "Bearer":
            if not self.tokens.valid(value, app_handle):
                raise Refusal(401, "invalid or expired access token")
        else:
            # The doc answers 403 for an absent signature or a signer not of app_handle.
            app_signature = request.headers.get("authsignature", "")
            if not app_signature or app is None or app.address is None:
                raise Refusal(403, "auth signature is absent or app_handle unknown")
            if recover_address(raw, app_signature) != app.address:
                raise Refusal(403, "derived address does not belong to app_handle")
            user_signature = request.headers.get("usersignature", "")
            if user is not None and recover_address(raw, user_signature) != user.address:
                raise Refusal(403, "user signature does not match user_handle")
        if user is None:
            raise Refusal(400, "user_handle is not registered with this app")
        return user

    # -- control endpoints ----------------------------------------------------------------------

    def control_routes(self, router: web.UrlDispatcher) -> None:
        """``POST /{action}``: the Python API method of that name (see ``_ACTIONS``)."""
        router.add_post("/{action}", self._c_action)

    async def _c_action(self, request: web.Request) -> web.Response:
        action = request.match_info["action"]
        fields = read_fields(await read_object(request), _ACTIONS[action])
        return json_response({"result": getattr(self, action)(**fields)})


def _wallet(user: _User) -> dict[str, object]:
    """The /get_wallet answer in the user's field family."""
    wallet = {"nickname": "default", "default": True, "blockchain_address": user.address}
    answer: dict[str, object] = {"wallet": wallet, "is_whitelisted": user.whitelisted}
    if user.family == "doc":
        return answer | {"available_balance": user.available, "pending_balance": user.pending}
    return answer | {
        "sila_balance": user.available,
        "sila_available_balance": user.available,
        "sila_pending_balance": user.pending,
    }


def _transactions(user: _User, filters: object, *, honour_types: bool) -> dict[str, object]:
    """One page of /get_transactions for ``search_filters``, newest first by default."""
    if not isinstance(filters, dict) or set(filters) - FILTERS:
        raise Refusal(400, f"search_filters: only {sorted(FILTERS)} are simulated")
    page, per_page = filters.get("page", 1), filters.get("per_page", DEFAULT_PER_PAGE)
    types = filters.get("transaction_types", list(TYPES))
    statuses = filters.get("statuses", list(STATUSES))
    ascending, tx_id = filters.get("sort_ascending", False), filters.get("transaction_id")
    if not _positive(page) or not _positive(per_page) or per_page > MAX_PER_PAGE:
        raise Refusal(400, "search_filters.page and per_page (1-100) must be integers")
    if not isinstance(types, list) or not set(types) <= set(TYPES):
        raise Refusal(400, "search_filters.transaction_types: unknown type")
    if not isinstance(statuses, list) or not isinstance(ascending, bool):
        raise Refusal(400, "search_filters.statuses or sort_ascending malformed")
    matching = sorted(
        (
            tx
            for tx in user.transactions.values()
            if (tx.type in types or not honour_types)
            and tx.status in statuses
            and tx_id in (None, tx.id)
        ),
        key=lambda tx: (tx.created_at, tx.seq),
        reverse=not ascending,
    )
    chunk = matching[(page - 1) * per_page : page * per_page]
    counts = {"returned_count": len(chunk), "total_count": len(matching)}
    pages = {"current_page": page, "total_pages": -(-len(matching) // per_page)}
    return {
        "page": page,
        **counts,
        "transactions": [api_item(user.handle, user.address, tx) for tx in chunk],
        "pagination": counts | pages,
    }


def _positive(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def _payload(raw: bytes) -> Mapping[str, Any]:
    try:
        data = load_json(raw)
    except ValueError as err:
        raise Refusal(400, "body is not JSON") from err
    if not isinstance(data, dict):
        raise Refusal(400, "body must be a JSON object")
    return data


_HANDLES = dict.fromkeys(("app_handle", "user_handle"), as_str)
_WALLET = dict.fromkeys(("available", "pending"), to_decimal) | {"whitelisted": as_bool}
_TEXTS = ("type", "status", "txid", "bank_account_name")
# Control actions: the Python API method each calls and how to read its fields.
_ACTIONS: Mapping[str, Mapping[str, Callable[[object], object]]] = {
    "add_app": dict.fromkeys(("app_handle", "address", "client_id", "client_secret"), as_str),
    "add_user": {**_HANDLES, "address": as_str, **_WALLET, "family": as_str},
    "set_wallet": {**_HANDLES, **_WALLET, "family": as_str},
    "add_transaction": {
        **_HANDLES,
        **dict.fromkeys(_TEXTS, as_str),
        "amount": to_decimal,
        "created_at": as_time,
    },
    "set_status": {**_HANDLES, "tx_id": as_str, "status": as_str},
    "revoke_tokens": {},
    "set_token_answer": {"shape": as_str, "expiration": as_str},
    "set_type_filter": {"honoured": as_bool},
}
