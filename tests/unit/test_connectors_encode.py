"""`connectors.encode` writes exactly the bytes the contracts' pydantic models would: every message the
service produces re-encodes to itself through `contracts.messages`, and ids match `uuid.uuid5`."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import orjson
import pytest
from fastapi.testclient import TestClient

from connectors.app import create_app
from connectors.directory import CachedDirectory
from connectors.encode import message_id, records, uuid5
from connectors.fakes import MemoryOutbox, MemorySource
from connectors.pricing import CatalogItem
from connectors.service import ConnectorService
from connectors.settings import ConnectorSettings
from contracts.messages import (
    MAX_MESSAGE_BYTES,
    Envelope,
    MessageTooLargeError,
    MessageType,
    Purchase,
    decode_envelope,
    encode_parts,
    envelope_for,
    message_id_for,
)
from tests.conftest import (
    NOW,
    b64,
    cart_item,
    identity_keys_body,
    new_id,
    purchase_body,
    scan_body,
    shopper_body,
)

NAMES = ["", "trip-1", "scan:abc|2026-11-20T11:30:00+00:00", "ünïcødé ✓", "x" * 1000, "\x00\ud7ff"]


@pytest.mark.parametrize("name", NAMES)
def test_uuid5_is_the_standard_librarys(name: str) -> None:
    namespace = uuid.UUID("1d0f4a52-3c1e-4b8e-b1a5-7f3f6e0f2c11")
    assert uuid5(namespace.bytes, name) == str(uuid.uuid5(namespace, name))


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("kind", list(MessageType))
def test_message_ids_are_the_contracts(kind: MessageType, name: str) -> None:
    assert message_id(kind, name) == message_id_for(kind, name)


def _reencoded(body: bytes) -> bytes:
    """The body as `contracts.messages` encodes the same message: typed payload validated and dumped."""
    envelope = decode_envelope(body)
    typed = envelope.typed_payload()
    assert typed is not None
    again = envelope.model_copy(update={"payload": typed.model_dump(mode="json")})
    return orjson.dumps(again.model_dump(mode="json"))


@pytest.fixture
def shop(source: MemorySource, outbox: MemoryOutbox) -> TestClient:
    source.items += [
        (CatalogItem("store-1", "sku-nuts", "Nuts (kg)", Decimal("7.25"), "USD", Decimal("0.0825")), ["4011"]),
        (CatalogItem("store-1", "sku-tea", "Tea", Decimal("105"), "JPY", Decimal("0.10"), Decimal("5")), []),
    ]
    clock = iter(NOW + timedelta(microseconds=n * 123_457) for n in range(1000))
    service = ConnectorService(CachedDirectory(source), outbox, lambda: next(clock))
    return TestClient(create_app(service, ConnectorSettings()))


def test_every_message_the_service_makes_is_what_the_contracts_would_encode(
    shop: TestClient, outbox: MemoryOutbox
) -> None:
    requests: list[tuple[str, dict[str, Any]]] = [
        ("/v1/identity/scan", scan_body()),
        ("/v1/identity/scan", scan_body(b64("key-blocked"), event_id=b64("static-qr"))),
        ("/v1/identity/scan", scan_body("key-1", channel="RADIO", timestamp="2026-11-20T12:30:00.5+01:00")),
        ("/v1/identity/identity-keys", identity_keys_body()),
        ("/v1/identity/identity-keys", identity_keys_body(b64("nobody"))),
        ("/v1/identity/shopper", shopper_body()),
        ("/v1/identity/shopper", shopper_body("+1 (617) 555-1234", "PHONE_NUMBER")),
        ("/v1/identity/shopper", shopper_body(b64("nobody"))),
        ("/v1/order/purchases", purchase_body()),
        ("/v1/order/purchases", purchase_body([])),  # empty: a cancel-charge too
        ("/v1/order/purchases", purchase_body(payload_type="FINANCIAL", shopper_id=None)),
        (
            "/v1/order/purchases",
            purchase_body(
                [
                    cart_item("sku-apple", "3"),
                    cart_item("sku-cheese", "0.455"),
                    cart_item("sku-nuts", "1.000"),
                    cart_item("4011", "007", item_type="SCANCODE"),
                    cart_item("sku-tea"),
                    cart_item("sku-unknown", "2"),  # a bad cart too
                    cart_item("999", item_type="SCANCODE", line="line-ü"),
                ]
            ),
        ),
    ]
    for path, body in requests:
        assert shop.post(path, json=body).status_code in (200, 201, 401, 404)
    kinds = {decode_envelope(m.body).type for m in outbox.messages}
    assert kinds == {t.value for t in MessageType}
    for message in outbox.messages:
        assert _reencoded(message.body) == message.body
        assert decode_envelope(message.body).message_id == message.message_id


def _purchase_payload(lines: int, name_len: int) -> dict[str, Any]:
    at = datetime(2026, 11, 20, 12, 0, 0, 250_000, tzinfo=UTC)
    line = {
        "line_item_id": None, "item_id": "sku", "item_type": "SKU", "sku": "sku", "name": "n" * name_len,
        "quantity": "1", "unit": "EA", "unit_price": "1.00", "amount": "1.00", "discount": "0", "tax": "0",
        "line_total": "1.00", "known": True,
    }  # fmt: skip
    return {
        "shopping_trip_id": "trip-1", "purchase_id": new_id(), "store_id": "store-1", "entry_method": "FINANCIAL",
        "shopper_id": None, "start_time": at, "end_time": at.astimezone(timezone(timedelta(hours=-5))),
        "currency": "USD", "subtotal": str(lines), "promotions": "0", "tax": "0", "total": str(lines),
        "line_count": lines, "unknown_item_count": 0, "created_at": at,
        "lines": [{"line_no": n, **line} for n in range(1, lines + 1)],
    }  # fmt: skip


@pytest.mark.parametrize("lines", [1, 3000])
def test_records_are_the_contracts_encode_parts_small_or_split(lines: int) -> None:
    payload = _purchase_payload(lines, name_len=100)
    at = datetime(2026, 11, 20, 12, 0, 1, tzinfo=UTC)
    made = records(MessageType.PURCHASE, "trip-1", payload, occurred_at=at, producer="connectors")
    envelope = envelope_for(
        MessageType.PURCHASE, "trip-1", Purchase.model_validate(payload), occurred_at=at, producer="connectors"
    )
    expected = encode_parts(envelope)
    assert [(r.message_id, r.body) for r in made] == [(p.message_id, body) for p, body in expected]
    assert (len(made) > 1) == (lines > 1)
    assert all(len(r.body) <= MAX_MESSAGE_BYTES for r in made)


def test_a_payload_that_cannot_be_split_small_enough_is_refused() -> None:
    payload = _purchase_payload(2, name_len=MAX_MESSAGE_BYTES)
    with pytest.raises(MessageTooLargeError, match=message_id_for(MessageType.PURCHASE, "trip-1")):
        records(MessageType.PURCHASE, "trip-1", payload, occurred_at=NOW, producer="connectors")


def test_an_envelope_written_here_decodes_as_an_envelope() -> None:
    [record] = records(MessageType.CANCEL_CHARGE, "t", {"shopping_trip_id": "t", "store_id": "s",
                       "requested_at": NOW, "reason": "EMPTY_CART"}, occurred_at=NOW, producer="p")  # fmt: skip
    assert decode_envelope(record.body) == Envelope(
        message_id=message_id_for(MessageType.CANCEL_CHARGE, "t"), type="cancel_charge", schema_version=1,
        occurred_at=NOW, producer="p",
        payload={"shopping_trip_id": "t", "store_id": "s", "requested_at": "2026-11-20T12:00:00Z",
                 "reason": "EMPTY_CART"},
    )  # fmt: skip
