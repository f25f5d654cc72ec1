"""Queue messages → warehouse rows. Pure: values in, values out."""

from __future__ import annotations

from datetime import datetime

from pydantic import ValidationError

from contracts.messages import (
    AuthEvent,
    BadCart,
    CancelCharge,
    MessageDecodeError,
    Purchase,
    decode_envelope,
)
from ingest.ports import Rows


class PoisonMessageError(ValueError):
    """A message of a known type whose payload does not fit its schema: it is retried, then dead-lettered."""


def unknown_rows(source: str, message_id: str, kind: str, body: str, received_at: datetime, reason: str) -> Rows:
    """The `unknown_events` row for a message we could not type: kept with the reason, never dropped."""
    row: dict[str, object] = {
        "source": source,
        "message_id": message_id,
        "type": kind,
        "received_at": received_at,
        "body": body,
        "reason": reason,
    }
    return {"unknown_events": [row]}


def rows_for_message(source: str, queue_message_id: str, body: str, received_at: datetime) -> tuple[str, Rows]:
    """(dedup id, rows by table) for one events-queue message. Raises PoisonMessageError."""
    try:
        envelope = decode_envelope(body)
    except MessageDecodeError as exc:
        return queue_message_id, unknown_rows(source, queue_message_id, "undecodable", body, received_at, str(exc))
    try:
        payload = envelope.typed_payload()
    except ValidationError as exc:
        raise PoisonMessageError(f"{envelope.type} message {envelope.message_id}: {exc}") from exc
    if payload is None:
        reason = f"unknown message type {envelope.type!r}"
        return envelope.message_id, unknown_rows(source, envelope.message_id, envelope.type, body, received_at, reason)
    return envelope.message_id, payload_rows(payload)


def payload_rows(payload: AuthEvent | Purchase | BadCart | CancelCharge) -> Rows:
    if isinstance(payload, AuthEvent):
        return {"auth_events": [payload.model_dump()]}
    if isinstance(payload, Purchase):
        purchase = payload.model_dump(exclude={"lines"})
        lines = [
            {
                **line.model_dump(exclude={"name"}),
                "shopping_trip_id": payload.shopping_trip_id,
                "end_time": payload.end_time,
            }
            for line in payload.lines
        ]
        return {"purchases": [purchase], "purchase_lines": lines}
    if isinstance(payload, BadCart):
        return {
            "bad_carts": [
                {
                    "shopping_trip_id": payload.shopping_trip_id,
                    "store_id": payload.store_id,
                    "item_id": item.item_id,
                    "item_type": item.item_type,
                    "reason": item.reason,
                    "created_at": payload.created_at,
                }
                for item in payload.items
            ]
        }
    return {"cancel_charges": [payload.model_dump()]}
