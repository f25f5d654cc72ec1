"""The queue envelope: stable ids, the size limit, and payloads too large for one message."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest

from contracts.messages import (
    MAX_MESSAGE_BYTES,
    BadCart,
    BadCartItem,
    MessageTooLargeError,
    MessageType,
    Purchase,
    PurchaseLine,
    decode_envelope,
    encode_envelope,
    encode_parts,
    envelope_for,
    message_id_for,
)

AT = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)


def _line(n: int, name_len: int = 10) -> PurchaseLine:
    return PurchaseLine(
        line_no=n, line_item_id=f"line-{n:06d}", item_id="x" * name_len, item_type="SKU", sku="SKU-1", name=None,
        quantity=Decimal(1), unit="each", unit_price=Decimal("1.00"), amount=Decimal("1.00"),
        discount=Decimal("0.00"), tax=Decimal("0.00"), line_total=Decimal("1.00"), known=True,
    )  # fmt: skip


def _purchase(lines: int, name_len: int = 10) -> Purchase:
    return Purchase(
        shopping_trip_id="trip-1", purchase_id="p-1", store_id="store-1", entry_method="FINANCIAL",
        shopper_id=None, start_time=AT, end_time=AT, currency="USD", subtotal=Decimal(lines),
        promotions=Decimal(0), tax=Decimal(0), total=Decimal(lines), line_count=lines, unknown_item_count=0,
        created_at=AT, lines=[_line(n, name_len) for n in range(1, lines + 1)],
    )  # fmt: skip


def test_the_message_id_derives_from_the_type_and_the_idempotency_key() -> None:
    assert message_id_for(MessageType.PURCHASE, "trip-1") == message_id_for("purchase", "trip-1")
    assert message_id_for(MessageType.PURCHASE, "trip-1") != message_id_for(MessageType.BAD_CART, "trip-1")
    envelope = envelope_for(MessageType.PURCHASE, "trip-1", _purchase(1), occurred_at=AT, producer="test")
    assert envelope.message_id == message_id_for(MessageType.PURCHASE, "trip-1")


def test_a_small_payload_is_one_message_that_decodes_to_the_same_payload() -> None:
    envelope = envelope_for(MessageType.PURCHASE, "trip-1", _purchase(5), occurred_at=AT, producer="test")
    ((part, body),) = encode_parts(envelope)
    assert part == envelope
    assert (part.part, part.parts) == (1, 1)
    assert decode_envelope(body).typed_payload() == _purchase(5)


def test_a_cart_too_large_for_one_message_is_split_into_parts_that_hold_every_line_once() -> None:
    purchase = _purchase(3000, name_len=100)
    envelope = envelope_for(MessageType.PURCHASE, "trip-1", purchase, occurred_at=AT, producer="test")
    with pytest.raises(MessageTooLargeError):
        encode_envelope(envelope)
    parts = encode_parts(envelope)
    assert len(parts) >= 2
    assert all(len(body) <= MAX_MESSAGE_BYTES for _, body in parts)
    assert [p.part for p, _ in parts] == list(range(1, len(parts) + 1))
    assert {p.parts for p, _ in parts} == {len(parts)}
    assert len({p.message_id for p, _ in parts}) == len(parts)
    payloads = [decode_envelope(body).typed_payload() for _, body in parts]
    lines = [line for payload in payloads if isinstance(payload, Purchase) for line in payload.lines]
    assert [line.line_no for line in lines] == list(range(1, 3001))
    header = purchase.model_copy(update={"lines": []})
    assert all(isinstance(p, Purchase) and p.model_copy(update={"lines": []}) == header for p in payloads)
    assert encode_parts(envelope) == parts  # the same request splits the same way: retries match


def test_a_bad_cart_splits_on_its_items() -> None:
    items = [BadCartItem(item_id=f"{n:0200d}", item_type="SKU", reason="unknown SKU " * 20) for n in range(2000)]
    bad = BadCart(shopping_trip_id="trip-1", store_id="store-1", created_at=AT, items=items)
    parts = encode_parts(envelope_for(MessageType.BAD_CART, "trip-1", bad, occurred_at=AT, producer="test"))
    assert len(parts) >= 2
    decoded = [decode_envelope(body).typed_payload() for _, body in parts]
    assert sum(len(p.items) for p in decoded if isinstance(p, BadCart)) == 2000


def test_one_element_larger_than_a_message_is_refused_with_a_clear_error() -> None:
    purchase = _purchase(2, name_len=MAX_MESSAGE_BYTES)
    envelope = envelope_for(MessageType.PURCHASE, "trip-1", purchase, occurred_at=AT, producer="test")
    with pytest.raises(MessageTooLargeError, match=envelope.message_id):
        encode_parts(envelope)
