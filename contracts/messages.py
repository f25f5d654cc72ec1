"""The queue message envelope and one typed model per message type (SPEC §2.6).

A message's id derives from its type and the idempotency key of the request that produced it, so a
redelivered or re-published message carries the same id and every consumer can de-duplicate on it.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field

SCHEMA_VERSION = 1
MAX_MESSAGE_BYTES = 256 * 1024
"""SQS refuses bodies over 256 KiB; the producer refuses them first, with a clear error."""

_NAMESPACE = uuid.UUID("6f1c1f0e-2b1a-4f5e-9a43-0c7d2b7e9a10")


class MessageType(StrEnum):
    AUTH_EVENT = "auth_event"
    PURCHASE = "purchase"
    BAD_CART = "bad_cart"
    CANCEL_CHARGE = "cancel_charge"


class MessageTooLargeError(ValueError):
    """A message body over the queue's limit: the producer refuses it."""

    def __init__(self, message_id: str, size: int) -> None:
        super().__init__(
            f"message {message_id} is {size} bytes once encoded; the queue accepts at most "
            f"{MAX_MESSAGE_BYTES} bytes (256 KiB)"
        )
        self.message_id = message_id
        self.size = size


class MessageDecodeError(ValueError):
    """A body that is not an envelope of ours (bad JSON, missing fields, wrong types)."""


def message_id_for(message_type: MessageType | str, idempotency_key: str) -> str:
    """The stable id of the message a request with this idempotency key produces."""
    return str(uuid.uuid5(_NAMESPACE, f"{message_type}:{idempotency_key}"))


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class AuthEvent(_Model):
    """An accepted identity call, from any of the three identity endpoints. Never the raw key."""

    event_id: str
    request_id: str
    endpoint: Literal["scan", "identity_keys", "shopper"]
    store_id: str
    occurred_at: datetime
    received_at: datetime
    location: str | None = None
    channel: str | None = None
    outcome: Literal["ACCEPT", "REJECT", "NOT_FOUND"]
    http_status: int
    visitor_type: str | None = None
    shopper_id: str | None = None


class PurchaseLine(_Model):
    line_no: int
    line_item_id: str | None = None
    item_id: str
    item_type: Literal["SKU", "SCANCODE"]
    sku: str | None = None
    name: str | None = None
    quantity: Decimal
    unit: str
    unit_price: Decimal | None = None
    amount: Decimal
    discount: Decimal
    tax: Decimal
    line_total: Decimal
    known: bool


class Purchase(_Model):
    """A priced cart, as the Ordering Connector recorded it."""

    shopping_trip_id: str
    purchase_id: str
    store_id: str
    entry_method: Literal["FINANCIAL", "SCAN_CODE"]
    shopper_id: str | None = None
    start_time: datetime
    end_time: datetime
    currency: str
    subtotal: Decimal
    promotions: Decimal
    tax: Decimal
    total: Decimal
    line_count: int
    unknown_item_count: int
    created_at: datetime
    lines: list[PurchaseLine]


class BadCartItem(_Model):
    item_id: str
    item_type: Literal["SKU", "SCANCODE"]
    reason: str


class BadCart(_Model):
    """The unknown items of one cart, routed to bad-cart handling; the cart itself succeeded."""

    shopping_trip_id: str
    store_id: str
    created_at: datetime
    items: list[BadCartItem]


class CancelCharge(_Model):
    """An empty cart: the pre-authorization must be cancelled (Payment Service Cancel Charge)."""

    shopping_trip_id: str
    store_id: str
    requested_at: datetime
    reason: str = "EMPTY_CART"


PAYLOAD_MODELS: dict[MessageType, type[_Model]] = {
    MessageType.AUTH_EVENT: AuthEvent,
    MessageType.PURCHASE: Purchase,
    MessageType.BAD_CART: BadCart,
    MessageType.CANCEL_CHARGE: CancelCharge,
}

Payload = AuthEvent | Purchase | BadCart | CancelCharge


class Envelope(BaseModel):
    """What travels on the events queue. `type` stays a string so unknown types survive decoding."""

    model_config = ConfigDict(frozen=True)

    message_id: str = Field(min_length=1)
    type: str = Field(min_length=1)
    schema_version: int = Field(ge=1)
    occurred_at: datetime
    producer: str
    payload: dict[str, Any]
    part: int = Field(default=1, ge=1)
    """A payload too large for one message travels as `parts` messages, each a valid payload with a slice
    of its one list (a purchase's lines, a bad cart's items); the other fields repeat in every part."""
    parts: int = Field(default=1, ge=1)

    def typed_payload(self) -> Payload | None:
        """The payload as its model, or None when the type is not one we know."""
        try:
            model = PAYLOAD_MODELS[MessageType(self.type)]
        except ValueError:
            return None
        return model.model_validate(self.payload)  # type: ignore[return-value]


def envelope_for(
    message_type: MessageType,
    idempotency_key: str,
    payload: Payload,
    *,
    occurred_at: datetime,
    producer: str,
) -> Envelope:
    return Envelope(
        message_id=message_id_for(message_type, idempotency_key),
        type=message_type.value,
        schema_version=SCHEMA_VERSION,
        occurred_at=occurred_at,
        producer=producer,
        payload=payload.model_dump(mode="json"),
    )


def encode_envelope(envelope: Envelope) -> bytes:
    """The JSON body for the queue; refuses anything over the queue's size limit."""
    body = orjson.dumps(envelope.model_dump(mode="json"))
    if len(body) > MAX_MESSAGE_BYTES:
        raise MessageTooLargeError(envelope.message_id, len(body))
    return body


def encode_parts(envelope: Envelope) -> list[tuple[Envelope, bytes]]:
    """(envelope, body) pairs for the queue: the envelope itself when it fits, else its payload's list
    split over as few parts as fit (each part's id derives from the whole's id, so retries match).

    Raises MessageTooLargeError when even one list element per part does not fit.
    """
    body = orjson.dumps(envelope.model_dump(mode="json"))
    if len(body) <= MAX_MESSAGE_BYTES:
        return [(envelope, body)]
    lists = [name for name, value in envelope.payload.items() if isinstance(value, list)]
    if len(lists) != 1 or len(envelope.payload[lists[0]]) < 2:
        raise MessageTooLargeError(envelope.message_id, len(body))
    name, items = lists[0], envelope.payload[lists[0]]
    count = max(2, -(-len(body) // MAX_MESSAGE_BYTES))
    while count <= len(items):
        size = -(-len(items) // count)
        chunks = [items[i : i + size] for i in range(0, len(items), size)]
        parts = [
            envelope.model_copy(
                update={
                    "message_id": message_id_for(envelope.type, f"{envelope.message_id}#{n}/{len(chunks)}"),
                    "payload": {**envelope.payload, name: chunk},
                    "part": n,
                    "parts": len(chunks),
                }
            )
            for n, chunk in enumerate(chunks, start=1)
        ]
        bodies = [orjson.dumps(part.model_dump(mode="json")) for part in parts]
        if all(len(b) <= MAX_MESSAGE_BYTES for b in bodies):
            return list(zip(parts, bodies, strict=True))
        count *= 2
    raise MessageTooLargeError(envelope.message_id, len(body))


def decode_envelope(body: bytes | str) -> Envelope:
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise MessageDecodeError(f"body is not JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise MessageDecodeError("body is not a JSON object")
    try:
        return Envelope.model_validate(data)
    except ValueError as exc:
        raise MessageDecodeError(f"body is not an envelope: {exc}") from exc
