"""What each connector endpoint decides, and the idempotency that wraps every decision.

`ConnectorService` turns a validated request into an answer (status + JSON body) and the queue
messages it produces. The answer and its messages are made durable together in the outbox before
the caller responds; a retry of the same idempotency key gets the stored answer and no new effect.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any, Literal

import orjson
from pydantic import BaseModel

from connectors import models
from connectors.directory import phone_digits
from connectors.encode import records, uuid5
from connectors.errors import OutboxUnavailableError
from connectors.ports import Outbox, OutboxRecord, RetailerDirectory, Shopper, StoredResponse
from connectors.pricing import UNKNOWN_LINE, CatalogItem, PricedLine, price_line
from contracts.messages import MessageType

Route = Literal["scan", "identity_keys", "shopper", "purchases"]
_PURCHASE_NAMESPACE = uuid.UUID("1d0f4a52-3c1e-4b8e-b1a5-7f3f6e0f2c11").bytes
_UUID = re.compile(models.UUID_PATTERN)
_PRICED_KEPT = 4096
"""Priced lines kept (`ConnectorService._price`): a store's catalog in its usual quantities."""
_SCAN_TYPES = {"SHOPPER": "SHOPPER", "ASSOCIATE": "ASSOCIATE", "CASH_SHOPPER": "CASH"}


@dataclass(frozen=True)
class Answer:
    status: int
    body: bytes


@dataclass(frozen=True)
class _Decision:
    status: int
    body: dict[str, Any]
    records: list[OutboxRecord]
    """The queue messages, encoded (`connectors.encode`)."""


_FINGERPRINT = "2:"
"""Marks this version's fingerprints, which an idempotency record made before it does not have."""


def fingerprint(request: BaseModel) -> str:
    """Hash of the request as its model serializes it to JSON: the fields in their declared order, without
    unknown fields (dropped when parsed) and without `requestId` (excluded by the models)."""
    return _FINGERPRINT + hashlib.sha256(request.__pydantic_serializer__.to_json(request)).hexdigest()


def legacy_fingerprint(request: BaseModel) -> str:
    """The fingerprint of records made before `_FINGERPRINT` (sorted-key JSON of the Python dump): they are
    kept 48 hours, and a retry of one must still match it."""
    canonical = orjson.dumps(request.model_dump(mode="json", exclude={"requestId"}), option=orjson.OPT_SORT_KEYS)
    return hashlib.sha256(canonical).hexdigest()


def same_request(stored_fingerprint: str, fp: str, request: BaseModel) -> bool:
    """Whether a stored record's request is `request` (whose `fingerprint` is `fp`)."""
    if stored_fingerprint == fp:
        return True
    return not stored_fingerprint.startswith(_FINGERPRINT) and stored_fingerprint == legacy_fingerprint(request)


def decode_key(value: str) -> str | None:
    """A Base64 scan or identity key, decoded and trimmed; None when it is not Base64 text."""
    try:
        return base64.b64decode(value.strip(), validate=True).decode("utf-8").strip()
    except (binascii.Error, ValueError):
        return None


def _scan_event_id(key: str, scan_id: str) -> str:
    """The auth event's id for a scan: the idempotency key, hashed when `scanEvent.id` is not a UUID
    (the vendor FAQ puts the static Base64 QR payload there, and messages never carry identity keys)."""
    if _UUID.fullmatch(scan_id):
        return key
    return "sha256:" + hashlib.sha256(key.encode("utf-8")).hexdigest()


def purchase_id_for(shopping_trip_id: str) -> str:
    return uuid5(_PURCHASE_NAMESPACE, shopping_trip_id)


def _settle(waiters: list[asyncio.Future[StoredResponse | None]], stored: StoredResponse | None) -> None:
    """Give the first attempt's recorded answer (None: it failed) to the requests waiting for it."""
    for waiter in waiters:
        if not waiter.done():  # a waiter cancelled meanwhile
            waiter.set_result(stored)


def _json(body: dict[str, Any]) -> bytes:
    return orjson.dumps(body)


class ConnectorService:
    def __init__(
        self,
        directory: RetailerDirectory,
        outbox: Outbox,
        clock: Callable[[], datetime],
        *,
        producer: str = "connectors",
        default_currency: str = "USD",
    ) -> None:
        self._directory = directory
        self._outbox = outbox
        self._clock = clock
        self._producer = producer
        self._default_currency = default_currency
        self._inflight: dict[tuple[str, str], list[asyncio.Future[StoredResponse | None]]] = {}
        """The keys being decided and committed, each with the futures of the same key's requests that came
        meanwhile (nearly always none: a future is made only for one that has to wait)."""
        self._priced: dict[tuple[int, str, str], tuple[CatalogItem | None, PricedLine, dict[str, Any]]] = {}
        """`_price`'s lines: (id of the catalog item, quantity, unit) → (the item, its price, its fields)."""

    # -- idempotency ------------------------------------------------------------------------------

    async def _once(self, route: Route, key: str, request: BaseModel, decide: Callable[[], _Decision]) -> Answer:
        fp = fingerprint(request)
        stored = self._outbox.recall(route, key)
        if stored is not None:
            return self._replay(stored, fp, key, request)
        inflight = self._inflight.get((route, key))
        if inflight is not None:  # the same key in flight: wait for the first attempt's answer
            waiter: asyncio.Future[StoredResponse | None] = asyncio.get_running_loop().create_future()
            inflight.append(waiter)
            winner = await waiter
            if winner is None:
                raise OutboxUnavailableError("the first attempt with this key failed to record")
            return self._replay(winner, fp, key, request)
        waiters: list[asyncio.Future[StoredResponse | None]] = []
        self._inflight[(route, key)] = waiters
        try:
            decision = decide()
            stored = await self._outbox.commit(
                route, key, StoredResponse(fp, decision.status, _json(decision.body)), decision.records
            )
        except BaseException:
            _settle(waiters, None)
            raise
        finally:
            del self._inflight[(route, key)]
        _settle(waiters, stored)
        return self._replay(stored, fp, key, request)

    @staticmethod
    def _replay(stored: StoredResponse, fp: str, key: str, request: BaseModel) -> Answer:
        if not same_request(stored.fingerprint, fp, request):
            message = f"idempotency key {key!r} was already used with a different request body"
            return Answer(400, _json({"message": message}))
        return Answer(stored.status, stored.body)

    # -- identity ---------------------------------------------------------------------------------

    def _admit(self, shopper: Shopper | None) -> tuple[bool, str]:
        if shopper is None:
            return False, "identity key not recognised"
        if shopper.status != "active":
            return False, "shopper is blocked"
        if self._directory.has_open_debt(shopper.shopper_id):
            return False, "shopper has an outstanding balance"
        return True, ""

    def _auth_event(
        self,
        endpoint: Literal["scan", "identity_keys", "shopper"],
        event_key: str,
        request_id: str,
        store_id: str,
        occurred_at: datetime,
        *,
        location: str | None,
        channel: str | None,
        outcome: Literal["ACCEPT", "REJECT", "NOT_FOUND"],
        status: int,
        shopper: Shopper | None,
    ) -> list[OutboxRecord]:
        """The `contracts.messages.AuthEvent` message of an identity call."""
        now = self._clock()
        event = {
            "event_id": event_key,
            "request_id": request_id,
            "endpoint": endpoint,
            "store_id": store_id,
            "occurred_at": occurred_at,
            "received_at": now,
            "location": location,
            "channel": channel,
            "outcome": outcome,
            "http_status": status,
            "visitor_type": shopper.visitor_type if shopper else None,
            "shopper_id": shopper.shopper_id if shopper else None,
        }
        return records(
            MessageType.AUTH_EVENT, f"{endpoint}:{event_key}", event, occurred_at=now, producer=self._producer
        )

    async def resolve_scan(self, req: models.ResolveScanRequest) -> Answer:
        scan = req.scanEvent
        key = f"{scan.id.strip()}|{scan.timestamp.isoformat()}"

        def decide() -> _Decision:
            value = scan.value.strip() if scan.channel == "RADIO" else decode_key(scan.value)
            shopper = self._directory.shopper_by_key(value) if value else None
            if shopper is None:
                fallback = decode_key(scan.id)
                shopper = self._directory.shopper_by_key(fallback) if fallback else None
            admitted, _ = self._admit(shopper)
            body = {
                "id": shopper.shopper_id if shopper else "",
                "type": _SCAN_TYPES[shopper.visitor_type] if shopper else "SHOPPER",
                "action": "ACCEPT" if admitted else "REJECT",
            }
            event = self._auth_event(
                "scan", _scan_event_id(key, scan.id.strip()), req.requestId, req.storeId, scan.timestamp,
                location=scan.location, channel=scan.channel,
                outcome="ACCEPT" if admitted else "REJECT", status=200, shopper=shopper,
            )  # fmt: skip
            return _Decision(200, body, event)

        return await self._once("scan", key, req, decide)

    async def verify_identity_keys(self, req: models.VerifyIdentityKeysRequest) -> Answer:
        auth = req.authEvent

        def decide() -> _Decision:
            decoded = decode_key(req.identityKey)
            shopper = self._directory.shopper_by_key(decoded) if decoded else None
            admitted, reason = self._admit(shopper)
            status = 200 if admitted else 401
            body: dict[str, Any] = (
                {"visitorDetails": {"id": shopper.shopper_id, "type": shopper.visitor_type}}
                if admitted and shopper
                else {"message": reason}
            )
            event = self._auth_event(
                "identity_keys", auth.id, req.requestId, req.storeId, auth.timestamp,
                location=auth.location, channel=req.keyChannel,
                outcome="ACCEPT" if admitted else "REJECT", status=status, shopper=shopper,
            )  # fmt: skip
            return _Decision(status, body, event)

        return await self._once("identity_keys", auth.id, req, decide)

    async def get_shopper(self, req: models.GetShopperRequest) -> Answer:
        def decide() -> _Decision:
            if req.shopperKeyType == "PHONE_NUMBER":
                shopper = self._directory.shopper_by_phone(phone_digits(req.shopperKey))
            else:
                decoded = decode_key(req.shopperKey)
                shopper = self._directory.shopper_by_key(decoded) if decoded else None
            status = 201 if shopper else 404
            body = {"shopperId": shopper.shopper_id} if shopper else {"message": "no such shopper"}
            event = self._auth_event(
                "shopper", req.requestId, req.requestId, req.storeId, req.timestamp,
                location=None, channel=req.shopperKeyType,
                outcome="ACCEPT" if shopper else "NOT_FOUND", status=status, shopper=shopper,
            )  # fmt: skip
            return _Decision(status, body, event)

        return await self._once("shopper", req.requestId, req, decide)

    # -- ordering ---------------------------------------------------------------------------------

    def _price(self, item: CatalogItem | None, value: str, unit: str) -> tuple[PricedLine, dict[str, Any]]:
        """A line's price, and its message fields from `sku` to `known`: the same for every cart with this
        catalog item in this quantity, so kept for the ones seen last. A hit is checked by identity, so an
        item the catalog has changed since (a new object) is priced again."""
        key = (id(item), value, unit)
        hit = self._priced.get(key)
        if hit is not None and hit[0] is item:
            return hit[1], hit[2]
        quantity = Decimal(value)
        priced = price_line(item, quantity) if item else UNKNOWN_LINE
        fields = {
            "sku": item.sku if item else None,
            "name": item.name if item else None,
            "quantity": str(quantity),
            "unit": unit,
            "unit_price": str(item.unit_price) if item else None,
            "amount": str(priced.amount),
            "discount": str(priced.discount),
            "tax": str(priced.tax),
            "line_total": str(priced.line_total),
            "known": item is not None,
        }
        if len(self._priced) >= _PRICED_KEPT:
            self._priced.clear()
        self._priced[key] = (item, priced, fields)
        return priced, fields

    def _lookup(self, store_id: str, item: models.CartItem) -> CatalogItem | None:
        if item.type == "SKU":
            return self._directory.item_by_sku(store_id, item.id)
        return self._directory.item_by_barcode(store_id, item.id)

    async def create_purchase(self, req: models.CreatePurchasesRequest) -> Answer:
        trip_id = req.idempotentShoppingTripId

        def decide() -> _Decision:
            now = self._clock()
            lines: list[dict[str, Any]] = []
            unknown: list[dict[str, Any]] = []
            currency: str | None = None
            subtotal = promotions = tax = total = Decimal(0)
            for n, cart_item in enumerate(req.cartItems, start=1):
                found = self._lookup(req.storeId, cart_item)
                priced, fields = self._price(found, cart_item.quantity.value, cart_item.quantity.unit)
                if found is None:
                    what = "SKU" if cart_item.type == "SKU" else "barcode"
                    unknown.append(
                        {
                            "item_id": cart_item.id,
                            "item_type": cart_item.type,
                            "reason": f"unknown {what} {cart_item.id!r} in store {req.storeId!r}",
                        }
                    )
                elif currency is None:
                    currency = found.currency
                subtotal += priced.amount
                promotions += priced.discount
                tax += priced.tax
                total += priced.line_total
                line = {  # a contracts.messages.PurchaseLine
                    "line_no": n,
                    "line_item_id": cart_item.lineItemId,
                    "item_id": cart_item.id,
                    "item_type": cart_item.type,
                }
                line.update(fields)
                lines.append(line)
            scan_events = [a for a in req.shoppingTrip.authEvents if a.payloadType == "SCAN_CODE"]
            shopper_id = next((a.scanResult.id for a in scan_events if a.scanResult and a.scanResult.id), None)
            if shopper_id is None and scan_events and req.shopperIdentity:
                shopper_id = req.shopperIdentity.id or None
            empty = not req.cartItems
            purchase_id = "" if empty else purchase_id_for(trip_id)
            purchase = {  # a contracts.messages.Purchase
                "shopping_trip_id": trip_id,
                "purchase_id": purchase_id,
                "store_id": req.storeId,
                "entry_method": "SCAN_CODE" if scan_events else "FINANCIAL",
                "shopper_id": shopper_id,
                "start_time": req.shoppingTrip.startTime,
                "end_time": req.shoppingTrip.endTime,
                "currency": currency or self._default_currency,
                "subtotal": str(subtotal),
                "promotions": str(promotions),
                "tax": str(tax),
                "total": str(total),
                "line_count": len(lines),
                "unknown_item_count": len(unknown),
                "created_at": now,
                "lines": lines,
            }
            producer = self._producer
            messages = records(MessageType.PURCHASE, trip_id, purchase, occurred_at=now, producer=producer)
            if unknown:
                bad = {"shopping_trip_id": trip_id, "store_id": req.storeId, "created_at": now, "items": unknown}
                messages += records(MessageType.BAD_CART, trip_id, bad, occurred_at=now, producer=producer)
            if empty:
                cancel = {
                    "shopping_trip_id": trip_id,
                    "store_id": req.storeId,
                    "requested_at": now,
                    "reason": "EMPTY_CART",
                }
                messages += records(MessageType.CANCEL_CHARGE, trip_id, cancel, occurred_at=now, producer=producer)
            return _Decision(201, {"purchaseId": purchase_id}, messages)

        return await self._once("purchases", trip_id, req, decide)
