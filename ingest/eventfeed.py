"""Event Feed messages (EventBridge envelopes on the eventfeed queue) → warehouse rows. Pure: values in, values out.

- CART → one `cart_events` row per cart line; PAYMENT → one `payment_events` row.
- The envelope `id` is the dedup id: EventBridge delivers at least once, and a redelivery carries the same id.
- A body that is not JSON or not an envelope, an unknown `detail-type` or an unknown PAYMENT `subType` becomes an
  `unknown_events` row with the reason (never dropped). The stored body keeps no more than the last four digits
  of a card number.
- A CART or PAYMENT event whose required fields are missing or invalid raises `PoisonMessageError`: it stays on
  the queue and is dead-lettered after its receives. Error texts never quote the offending values.
"""

from __future__ import annotations

import re
from datetime import datetime
from decimal import Decimal

from pydantic import ValidationError

from contracts.eventfeed import CartDetail, DetailType, EventEnvelope, PaymentDetail, PaymentSubType, loads_exact
from ingest.decode import PoisonMessageError, one_at_a_time, unknown_rows
from ingest.ports import Rows

_SUB_TYPES = frozenset(s.value for s in PaymentSubType)
_NON_DIGITS = re.compile(r"\D")
_CARD_FIELD = re.compile(r'("cardLastFourDigits"\s*:\s*)("(?:[^"\\]|\\.)*"|-?\d[\d.eE+-]*)')
_CARD_NUMBER = re.compile(r"(?<!\d)\d{13,19}(?!\d)")


def rows_for_event(source: str, queue_message_id: str, body: str, received_at: datetime) -> tuple[str, Rows]:
    """(dedup id, rows by table) for one eventfeed-queue message. Raises PoisonMessageError."""

    def unknown(message_id: str, kind: str, reason: str) -> tuple[str, Rows]:
        return message_id, unknown_rows(source, message_id, kind, redact_card_numbers(body), received_at, reason)

    try:
        data = loads_exact(body)
    except (ValueError, RecursionError) as exc:
        return unknown(queue_message_id, "undecodable", f"body is not JSON: {exc}")
    if not isinstance(data, dict):
        return unknown(queue_message_id, "undecodable", "body is not a JSON object")
    try:
        envelope = EventEnvelope.model_validate(data)
    except ValidationError as exc:
        return unknown(queue_message_id, "undecodable", f"body is not an EventBridge envelope: {problems(exc)}")

    if envelope.detail_type == DetailType.CART:
        return envelope.id, {"cart_events": cart_rows(envelope)}
    if envelope.detail_type == DetailType.PAYMENT:
        sub_type = envelope.detail.get("subType")
        if isinstance(sub_type, str) and sub_type not in _SUB_TYPES:
            return unknown(envelope.id, f"PAYMENT/{sub_type}", f"unknown PAYMENT subType {sub_type!r}")
        return envelope.id, {"payment_events": [payment_row(envelope)]}
    return unknown(envelope.id, envelope.detail_type, f"unknown detail-type {envelope.detail_type!r}")


def cart_rows(envelope: EventEnvelope) -> list[dict[str, object]]:
    try:
        detail = CartDetail.model_validate(envelope.detail)
    except ValidationError as exc:
        raise PoisonMessageError(f"CART event {envelope.id}: {problems(exc)}") from None
    return [
        {
            "event_id": envelope.id,
            "line_no": line_no,
            "shopping_trip_id": detail.shopping_trip_id,
            "store_id": detail.store_id,
            "event_time": detail.event_time,
            "merchant_sku": item.merchant_sku,
            "quantity": item.quantity_value,
            "price": item.price_value,
            "tax": item.tax_value,
            "list_price": item.list_price_value,
            "promotion_total": sum((p.amount for p in item.promotion_infos), Decimal(0)),
        }
        for line_no, item in enumerate(detail.cart_items, start=1)
    ]


def payment_row(envelope: EventEnvelope) -> dict[str, object]:
    try:
        detail = PaymentDetail.model_validate(envelope.detail)
    except ValidationError as exc:
        raise PoisonMessageError(f"PAYMENT event {envelope.id}: {problems(exc)}") from None
    return {
        "event_id": envelope.id,
        "shopping_trip_id": detail.shopping_trip_id,
        "store_id": detail.store_id,
        "event_time": detail.event_time,
        "sub_type": detail.sub_type.value,
        "amount": detail.amount.value,
        "currency": detail.amount.currency_code,
        "brand": detail.brand,
        "card_last_four": last_four(detail.card_last_four_digits),
        "reconciliation_id": detail.reconciliation_id,
        "status": detail.status,
    }


def last_four(card: str | None) -> str | None:
    """The last four digits of whatever card text was sent (`4242`, `************4242`, a full number); None
    when it holds fewer than four digits. Never more than four digits are kept."""
    digits = _NON_DIGITS.sub("", card or "")
    return digits[-4:] if len(digits) >= 4 else None


def redact_card_numbers(text: str) -> str:
    """The text with every `cardLastFourDigits` value cut to its last four digits and every other run of 13-19
    digits that passes the Luhn check (a card number) masked but for its last four."""

    def field(match: re.Match[str]) -> str:
        kept = last_four(match.group(2))
        return f'{match.group(1)}"{kept}"' if kept is not None else match.group(0)

    def number(match: re.Match[str]) -> str:
        digits = match.group(0)
        return "*" * (len(digits) - 4) + digits[-4:] if _luhn(digits) else digits

    return _CARD_NUMBER.sub(number, _CARD_FIELD.sub(field, text))


def problems(exc: ValidationError) -> str:
    """What failed validation and why, without the values (which may hold card data)."""
    return "; ".join(
        f"{'.'.join(str(part) for part in error['loc']) or '(body)'}: {error['msg']}"
        for error in exc.errors(include_url=False, include_input=False, include_context=False)
    )


def _luhn(digits: str) -> bool:
    total = 0
    for index, char in enumerate(reversed(digits)):
        value = int(char)
        if index % 2 == 1:
            value = value * 2 - 9 if value > 4 else value * 2
        total += value
    return total % 10 == 0


decode_event_batch = one_at_a_time(rows_for_event)
"""The eventfeed consumer's `DecodeBatch`: `rows_for_event` on each message."""
