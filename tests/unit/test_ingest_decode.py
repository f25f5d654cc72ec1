"""Events-queue messages to warehouse rows (ingest.decode): pure, no queue, no files."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import orjson
import pytest

from contracts.messages import (
    AuthEvent,
    BadCart,
    BadCartItem,
    CancelCharge,
    MessageType,
    Payload,
    Purchase,
    PurchaseLine,
    encode_envelope,
    envelope_for,
    message_id_for,
)
from contracts.tables import AUTH_EVENTS, BAD_CARTS, CANCEL_CHARGES, PURCHASE_LINES, PURCHASES, TABLES, UNKNOWN_EVENTS
from ingest.decode import PoisonMessageError, rows_for_message
from warehouse.lake import to_arrow

SOURCE = "jwo-events"
QUEUE_ID = "sqs-message-id-1"
RECEIVED = datetime(2026, 11, 20, 12, 0, 5, tzinfo=UTC)
AT = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
START = datetime(2026, 11, 20, 11, 40, tzinfo=UTC)
END = datetime(2026, 11, 20, 11, 55, tzinfo=UTC)


def body_of(message_type: MessageType, key: str, payload: Payload) -> str:
    return encode_envelope(envelope_for(message_type, key, payload, occurred_at=AT, producer="test")).decode()


def decode(body: str) -> tuple[str, dict[str, list[dict[str, object]]]]:
    return rows_for_message(SOURCE, QUEUE_ID, body, RECEIVED)


def assert_rows_fit_their_tables(rows: dict[str, list[dict[str, object]]]) -> None:
    """Every row names exactly its table's columns, and the lake writer accepts it as it is."""
    for table_name, table_rows in rows.items():
        table = TABLES[table_name]
        for row in table_rows:
            assert set(row) == set(table.column_names), table_name
        assert to_arrow(table, table_rows).num_rows == len(table_rows)


def test_an_auth_event_becomes_one_auth_events_row_with_every_column() -> None:
    event = AuthEvent(
        event_id="3b241101-e2bb-4255-8caf-4136c566a962",
        request_id="6f6b8a4e-8a47-4e0f-9d0e-1d2c3b4a5f60",
        endpoint="identity_keys",
        store_id="store-001",
        occurred_at=AT,
        received_at=RECEIVED,
        location="ENTRY",
        channel="OPTICAL",
        outcome="ACCEPT",
        http_status=200,
        visitor_type="SHOPPER",
        shopper_id="shopper-1",
    )

    dedup_id, rows = decode(body_of(MessageType.AUTH_EVENT, "identity_keys:" + event.event_id, event))

    assert dedup_id == message_id_for(MessageType.AUTH_EVENT, "identity_keys:" + event.event_id)
    assert rows == {
        "auth_events": [
            {
                "event_id": "3b241101-e2bb-4255-8caf-4136c566a962",
                "request_id": "6f6b8a4e-8a47-4e0f-9d0e-1d2c3b4a5f60",
                "endpoint": "identity_keys",
                "store_id": "store-001",
                "occurred_at": AT,
                "received_at": RECEIVED,
                "location": "ENTRY",
                "channel": "OPTICAL",
                "outcome": "ACCEPT",
                "http_status": 200,
                "visitor_type": "SHOPPER",
                "shopper_id": "shopper-1",
            }
        ]
    }
    assert set(rows["auth_events"][0]) == set(AUTH_EVENTS.column_names)
    assert_rows_fit_their_tables(rows)


def test_a_get_shopper_miss_keeps_its_nulls() -> None:
    event = AuthEvent(
        event_id="req-9",
        request_id="req-9",
        endpoint="shopper",
        store_id="store-002",
        occurred_at=AT,
        received_at=RECEIVED,
        channel="PHONE_NUMBER",
        outcome="NOT_FOUND",
        http_status=404,
    )

    _, rows = decode(body_of(MessageType.AUTH_EVENT, "shopper:req-9", event))

    [row] = rows["auth_events"]
    assert (row["location"], row["visitor_type"], row["shopper_id"]) == (None, None, None)
    assert (row["outcome"], row["http_status"]) == ("NOT_FOUND", 404)
    assert_rows_fit_their_tables(rows)


def _purchase() -> Purchase:
    lines = [
        PurchaseLine(
            line_no=1,
            line_item_id="li-1",
            item_id="SKU-00001",
            item_type="SKU",
            sku="SKU-00001",
            name="Bananas",
            quantity=Decimal("0.455"),
            unit="KG",
            unit_price=Decimal("0.79"),
            amount=Decimal("0.36"),
            discount=Decimal("0.00"),
            tax=Decimal("0.00"),
            line_total=Decimal("0.36"),
            known=True,
        ),
        PurchaseLine(
            line_no=2,
            item_id="099999999993",
            item_type="SCANCODE",
            quantity=Decimal("1"),
            unit="EA",
            amount=Decimal("0.00"),
            discount=Decimal("0.00"),
            tax=Decimal("0.00"),
            line_total=Decimal("0.00"),
            known=False,
        ),
    ]
    return Purchase(
        shopping_trip_id="trip-1",
        purchase_id="purchase-1",
        store_id="store-001",
        entry_method="SCAN_CODE",
        shopper_id="shopper-1",
        start_time=START,
        end_time=END,
        currency="USD",
        subtotal=Decimal("0.36"),
        promotions=Decimal("0.00"),
        tax=Decimal("0.00"),
        total=Decimal("0.36"),
        line_count=2,
        unknown_item_count=1,
        created_at=RECEIVED,
        lines=lines,
    )


def test_a_purchase_becomes_a_purchases_row_and_one_purchase_lines_row_per_line() -> None:
    dedup_id, rows = decode(body_of(MessageType.PURCHASE, "trip-1", _purchase()))

    assert dedup_id == message_id_for(MessageType.PURCHASE, "trip-1")
    assert rows == {
        "purchases": [
            {
                "shopping_trip_id": "trip-1",
                "purchase_id": "purchase-1",
                "store_id": "store-001",
                "entry_method": "SCAN_CODE",
                "shopper_id": "shopper-1",
                "start_time": START,
                "end_time": END,
                "currency": "USD",
                "subtotal": Decimal("0.36"),
                "promotions": Decimal("0.00"),
                "tax": Decimal("0.00"),
                "total": Decimal("0.36"),
                "line_count": 2,
                "unknown_item_count": 1,
                "created_at": RECEIVED,
            }
        ],
        "purchase_lines": [
            {
                "shopping_trip_id": "trip-1",
                "line_no": 1,
                "line_item_id": "li-1",
                "item_id": "SKU-00001",
                "item_type": "SKU",
                "sku": "SKU-00001",
                "quantity": Decimal("0.455"),
                "unit": "KG",
                "unit_price": Decimal("0.79"),
                "amount": Decimal("0.36"),
                "discount": Decimal("0.00"),
                "tax": Decimal("0.00"),
                "line_total": Decimal("0.36"),
                "known": True,
                "end_time": END,
            },
            {
                "shopping_trip_id": "trip-1",
                "line_no": 2,
                "line_item_id": None,
                "item_id": "099999999993",
                "item_type": "SCANCODE",
                "sku": None,
                "quantity": Decimal("1"),
                "unit": "EA",
                "unit_price": None,
                "amount": Decimal("0.00"),
                "discount": Decimal("0.00"),
                "tax": Decimal("0.00"),
                "line_total": Decimal("0.00"),
                "known": False,
                "end_time": END,
            },
        ],
    }
    assert set(rows["purchases"][0]) == set(PURCHASES.column_names)
    assert set(rows["purchase_lines"][0]) == set(PURCHASE_LINES.column_names)
    assert_rows_fit_their_tables(rows)


def test_money_survives_the_queue_as_exact_decimals_never_floats() -> None:
    _, rows = decode(body_of(MessageType.PURCHASE, "trip-1", _purchase()))

    money = [rows["purchases"][0]["total"], *(line["line_total"] for line in rows["purchase_lines"])]
    assert all(type(value) is Decimal for value in money)
    assert rows["purchase_lines"][0]["quantity"] == Decimal("0.455")


def test_an_empty_cart_has_a_purchases_row_and_no_lines() -> None:
    empty = _purchase().model_copy(
        update={
            "purchase_id": "",
            "lines": [],
            "line_count": 0,
            "unknown_item_count": 0,
            "subtotal": Decimal(0),
            "total": Decimal(0),
        }
    )

    _, rows = decode(body_of(MessageType.PURCHASE, "trip-1", empty))

    assert rows["purchase_lines"] == []
    assert rows["purchases"][0]["purchase_id"] == ""
    assert_rows_fit_their_tables(rows)


def test_a_bad_cart_becomes_one_bad_carts_row_per_unknown_item() -> None:
    bad = BadCart(
        shopping_trip_id="trip-1",
        store_id="store-001",
        created_at=RECEIVED,
        items=[
            BadCartItem(item_id="SKU-NEW-1234", item_type="SKU", reason="unknown SKU 'SKU-NEW-1234'"),
            BadCartItem(item_id="099999999993", item_type="SCANCODE", reason="unknown barcode '099999999993'"),
        ],
    )

    dedup_id, rows = decode(body_of(MessageType.BAD_CART, "trip-1", bad))

    assert dedup_id == message_id_for(MessageType.BAD_CART, "trip-1")
    assert rows == {
        "bad_carts": [
            {
                "shopping_trip_id": "trip-1",
                "store_id": "store-001",
                "item_id": "SKU-NEW-1234",
                "item_type": "SKU",
                "reason": "unknown SKU 'SKU-NEW-1234'",
                "created_at": RECEIVED,
            },
            {
                "shopping_trip_id": "trip-1",
                "store_id": "store-001",
                "item_id": "099999999993",
                "item_type": "SCANCODE",
                "reason": "unknown barcode '099999999993'",
                "created_at": RECEIVED,
            },
        ]
    }
    assert set(rows["bad_carts"][0]) == set(BAD_CARTS.column_names)
    assert_rows_fit_their_tables(rows)


def test_a_cancel_charge_becomes_one_cancel_charges_row() -> None:
    cancel = CancelCharge(shopping_trip_id="trip-2", store_id="store-002", requested_at=RECEIVED)

    dedup_id, rows = decode(body_of(MessageType.CANCEL_CHARGE, "trip-2", cancel))

    assert dedup_id == message_id_for(MessageType.CANCEL_CHARGE, "trip-2")
    assert rows == {
        "cancel_charges": [
            {"shopping_trip_id": "trip-2", "store_id": "store-002", "requested_at": RECEIVED, "reason": "EMPTY_CART"}
        ]
    }
    assert set(rows["cancel_charges"][0]) == set(CANCEL_CHARGES.column_names)
    assert_rows_fit_their_tables(rows)


def test_the_same_message_delivered_twice_decodes_to_the_same_id_and_rows() -> None:
    body = body_of(MessageType.PURCHASE, "trip-1", _purchase())

    first = rows_for_message(SOURCE, "delivery-1", body, RECEIVED)
    second = rows_for_message(SOURCE, "delivery-2", body, RECEIVED)

    assert first == second


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ("this is not json {", "body is not JSON"),
        ("", "body is not JSON"),
        ("[1, 2, 3]", "body is not a JSON object"),
        ('{"hello": "world"}', "body is not an envelope"),
        (
            '{"message_id": "m-1", "type": "auth_event", "schema_version": 0, "occurred_at": "2026-11-20T12:00:00Z",'
            ' "producer": "p", "payload": {}}',
            "body is not an envelope",
        ),
    ],
    ids=["not-json", "empty", "json-array", "no-envelope-fields", "schema-version-0"],
)
def test_an_undecodable_body_is_kept_as_an_unknown_event_with_the_reason(body: str, reason: str) -> None:
    dedup_id, rows = decode(body)

    assert dedup_id == QUEUE_ID
    assert list(rows) == ["unknown_events"]
    [row] = rows["unknown_events"]
    assert {k: v for k, v in row.items() if k != "reason"} == {
        "source": SOURCE,
        "message_id": QUEUE_ID,
        "type": "undecodable",
        "received_at": RECEIVED,
        "body": body,
    }
    assert isinstance(row["reason"], str)
    assert row["reason"].startswith(reason)
    assert set(row) == set(UNKNOWN_EVENTS.column_names)
    assert_rows_fit_their_tables(rows)


def test_a_message_of_an_unknown_type_is_kept_as_an_unknown_event_under_its_own_id() -> None:
    envelope = {
        "message_id": "refund-msg-1",
        "type": "refund_requested",
        "schema_version": 3,
        "occurred_at": "2026-11-20T12:00:00Z",
        "producer": "portal",
        "payload": {"shopping_trip_id": "trip-1", "amount": "4.20"},
    }
    body = orjson.dumps(envelope).decode()

    dedup_id, rows = decode(body)

    assert dedup_id == "refund-msg-1"
    assert rows == {
        "unknown_events": [
            {
                "source": SOURCE,
                "message_id": "refund-msg-1",
                "type": "refund_requested",
                "received_at": RECEIVED,
                "body": body,
                "reason": "unknown message type 'refund_requested'",
            }
        ]
    }
    assert_rows_fit_their_tables(rows)


@pytest.mark.parametrize(
    ("message_type", "payload"),
    [
        (MessageType.AUTH_EVENT, {"event_id": "e-1"}),
        (MessageType.PURCHASE, {"shopping_trip_id": "trip-1", "lines": "not a list"}),
        (MessageType.BAD_CART, {"shopping_trip_id": "trip-1", "store_id": "s", "created_at": "yesterday", "items": []}),
        (MessageType.CANCEL_CHARGE, {"shopping_trip_id": "trip-1", "store_id": "s", "requested_at": 12.5, "x": 1}),
    ],
    ids=lambda v: v.value if isinstance(v, MessageType) else "",
)
def test_a_known_type_whose_payload_does_not_fit_its_model_is_a_poison_message(
    message_type: MessageType, payload: dict[str, object]
) -> None:
    body = orjson.dumps(
        {
            "message_id": "poison-1",
            "type": message_type.value,
            "schema_version": 1,
            "occurred_at": "2026-11-20T12:00:00Z",
            "producer": "test",
            "payload": payload,
        }
    ).decode()

    with pytest.raises(PoisonMessageError) as raised:
        decode(body)

    assert f"{message_type.value} message poison-1" in str(raised.value)
