"""Event Feed messages to warehouse rows (ingest.eventfeed): pure, no queue, no files; and the consumer serving
the eventfeed queue through its decode parameter."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from contracts.eventfeed import dumps_exact, loads_exact
from contracts.tables import CART_EVENTS, PAYMENT_EVENTS, TABLES, UNKNOWN_EVENTS
from ingest.consumer import Consumer
from ingest.decode import PoisonMessageError
from ingest.eventfeed import decode_event_batch, last_four, redact_card_numbers, rows_for_event
from ingest.fakes import FakeSqsQueue, RecordingSink
from warehouse.lake import to_arrow

EVENTS = Path(__file__).resolve().parents[1] / "events"
SOURCE = "jwo-eventfeed"
QUEUE_ID = "sqs-message-id-1"
RECEIVED = datetime(2026, 11, 20, 12, 5, tzinfo=UTC)
TRIP = "0f9c5a0e-8b7d-4a43-9a31-5c1e2d3f4a5b"
CART_ID = "6a7e8feb-b491-4cf7-a9f1-bf3703467718"
PAYMENT_ID = "c1d2e3f4-0a1b-4c2d-8e3f-9a0b1c2d3e4f"


def fixture(name: str) -> str:
    return (EVENTS / name).read_text(encoding="utf-8")


CART = fixture("eventbridge_cart.json")
PAYMENT = fixture("eventbridge_payment.json")


def edited(body: str, edit: Any) -> str:
    """The body with `edit(envelope)` applied; numbers stay exact (parsed and written as Decimals)."""
    data = loads_exact(body)
    edit(data)
    return dumps_exact(data)


def decode(body: str) -> tuple[str, dict[str, list[dict[str, object]]]]:
    return rows_for_event(SOURCE, QUEUE_ID, body, RECEIVED)


# --- CART ----------------------------------------------------------------------------------------------------


def test_a_cart_event_becomes_one_cart_events_row_per_line_with_exact_decimals() -> None:
    dedup_id, rows = decode(CART)

    assert dedup_id == CART_ID
    assert list(rows) == ["cart_events"]
    at = datetime(2026, 11, 20, 11, 56, tzinfo=UTC)
    common = {"event_id": CART_ID, "shopping_trip_id": TRIP, "store_id": "store-001", "event_time": at}
    assert rows["cart_events"] == [
        common
        | {
            "line_no": 1,
            "merchant_sku": "SKU-00005",
            "quantity": Decimal("2"),
            "price": Decimal("6.98"),
            "tax": Decimal("0.00"),
            "list_price": Decimal("3.49"),
            "promotion_total": Decimal("0.30"),
        },
        common
        | {
            "line_no": 2,
            "merchant_sku": "SKU-00001",
            "quantity": Decimal("0.455"),
            "price": Decimal("0.36"),
            "tax": Decimal("0.00"),
            "list_price": Decimal("0.79"),
            "promotion_total": Decimal("0"),
        },
        common
        | {
            "line_no": 3,
            "merchant_sku": "SKU-NEW-1234",
            "quantity": Decimal("1"),
            "price": Decimal("0"),
            "tax": None,
            "list_price": None,
            "promotion_total": Decimal("0"),
        },
    ]


def test_money_is_never_a_float_so_promotions_add_up_exactly() -> None:
    [first, *_] = decode(CART)[1]["cart_events"]

    # 0.10 + 0.20 is 0.30000000000000004 in binary floating point
    assert isinstance(first["promotion_total"], Decimal)
    assert str(first["promotion_total"]) == "0.30"
    assert all(not isinstance(value, float) for row in decode(CART)[1]["cart_events"] for value in row.values())


def test_numbers_too_long_for_a_float_keep_every_digit() -> None:
    def big(data: dict[str, Any]) -> None:
        data["detail"]["cartItems"][0]["priceValue"] = Decimal("12345678901234.5678")

    body = edited(CART, big)
    assert '"priceValue":12345678901234.5678' in body  # a JSON number, not a string

    [first, *_] = decode(body)[1]["cart_events"]
    assert first["price"] == Decimal("12345678901234.5678")
    assert float(first["price"]) != first["price"]  # a float could not have carried it


def test_rows_fit_their_tables() -> None:
    for body, table in ((CART, CART_EVENTS), (PAYMENT, PAYMENT_EVENTS)):
        rows = decode(body)[1][table.name]
        assert to_arrow(table, rows).num_rows == len(rows)
        assert set(rows[0]) == set(TABLES[table.name].column_names)


def test_an_empty_cart_gives_no_rows_but_is_still_recognised_by_its_id() -> None:
    body = edited(CART, lambda d: d["detail"].update(cartItems=[]))

    assert decode(body) == (CART_ID, {"cart_events": []})


# --- PAYMENT -------------------------------------------------------------------------------------------------


def test_a_payment_event_becomes_one_payment_events_row() -> None:
    dedup_id, rows = decode(PAYMENT)

    assert dedup_id == PAYMENT_ID
    assert rows == {
        "payment_events": [
            {
                "event_id": PAYMENT_ID,
                "shopping_trip_id": TRIP,
                "store_id": "store-001",
                "event_time": datetime(2026, 11, 20, 12, 3, 14, tzinfo=UTC),
                "sub_type": "CaptureApproved",
                "amount": Decimal("7.04"),
                "currency": "USD",
                "brand": "VISA",
                "card_last_four": "4242",
                "reconciliation_id": "RCN-20261120-000123",
                "status": "APPROVED",
            }
        ]
    }


@pytest.mark.parametrize(
    "sub_type", ["AuthorizationApproved", "AuthorizationDeclined", "CaptureApproved", "CaptureDeclined"]
)
def test_every_known_payment_sub_type_is_a_payment_event(sub_type: str) -> None:
    body = edited(PAYMENT, lambda d: d["detail"].update(subType=sub_type))

    [row] = decode(body)[1]["payment_events"]
    assert row["sub_type"] == sub_type


@pytest.mark.parametrize(
    ("sent", "kept"),
    [
        ("4242", "4242"),
        ("************4242", "4242"),
        ("4111111111114242", "4242"),
        ("4111 1111 1111 4242", "4242"),
        ("xxxx-xxxx-xxxx-0042", "0042"),
        ("42", None),
        ("", None),
    ],
)
def test_only_the_last_four_card_digits_are_ever_stored(sent: str, kept: str | None) -> None:
    body = edited(PAYMENT, lambda d: d["detail"].update(cardLastFourDigits=sent))

    [row] = decode(body)[1]["payment_events"]
    assert row["card_last_four"] == kept
    assert last_four(sent) == kept


def test_optional_payment_fields_may_be_missing() -> None:
    def strip(data: dict[str, Any]) -> None:
        for name in ("brand", "cardLastFourDigits", "reconciliationId", "status"):
            del data["detail"][name]

    [row] = decode(edited(PAYMENT, strip))[1]["payment_events"]
    assert (row["brand"], row["card_last_four"], row["reconciliation_id"], row["status"]) == (None,) * 4
    assert row["amount"] == Decimal("7.04")


def test_amounts_may_arrive_as_strings() -> None:
    body = edited(PAYMENT, lambda d: d["detail"]["amount"].update(value="1234.5600"))

    [row] = decode(body)[1]["payment_events"]
    assert row["amount"] == Decimal("1234.56")


# --- tolerance -----------------------------------------------------------------------------------------------


def test_unknown_fields_anywhere_are_ignored() -> None:
    def extra(data: dict[str, Any]) -> None:
        data["new-envelope-field"] = {"nested": [1, 2]}
        data["detail"]["loyaltyTier"] = "GOLD"
        data["detail"]["cartItems"][0]["weightUnit"] = "KG"
        data["detail"]["cartItems"][0]["promotionInfos"][0]["stackable"] = True

    assert decode(edited(CART, extra)) == decode(CART)
    with_extra = edited(PAYMENT, lambda d: d["detail"]["amount"].update(minorUnits=704))
    assert decode(with_extra) == decode(PAYMENT)


def test_the_envelope_needs_only_id_detail_type_and_detail() -> None:
    data = loads_exact(PAYMENT)
    bare = dumps_exact({"id": data["id"], "detail-type": "PAYMENT", "detail": data["detail"]})

    assert decode(bare) == decode(PAYMENT)


def test_a_redelivery_gives_the_same_id_and_the_same_rows() -> None:
    first = rows_for_event(SOURCE, "sqs-1", PAYMENT, RECEIVED)
    again = rows_for_event(SOURCE, "sqs-2", PAYMENT, RECEIVED)

    assert first == again


# --- unknown events ------------------------------------------------------------------------------------------


def test_an_unknown_detail_type_is_kept_as_an_unknown_event_under_its_event_id() -> None:
    body = edited(CART, lambda d: d.update({"detail-type": "SHOPPER"}))

    dedup_id, rows = decode(body)

    assert dedup_id == CART_ID
    assert rows == {
        "unknown_events": [
            {
                "source": SOURCE,
                "message_id": CART_ID,
                "type": "SHOPPER",
                "received_at": RECEIVED,
                "body": body,
                "reason": "unknown detail-type 'SHOPPER'",
            }
        ]
    }
    assert to_arrow(UNKNOWN_EVENTS, rows["unknown_events"]).num_rows == 1


def test_an_unknown_payment_sub_type_is_kept_with_no_more_than_four_card_digits() -> None:
    def refund(data: dict[str, Any]) -> None:
        data["detail"].update(subType="RefundApproved", cardLastFourDigits="4111111111114242")
        data["detail"]["note"] = "card 4000056655665556 on file"  # a Luhn-valid card number in free text

    body = edited(PAYMENT, refund)
    dedup_id, rows = decode(body)

    [row] = rows["unknown_events"]
    assert dedup_id == row["message_id"] == PAYMENT_ID
    assert row["type"] == "PAYMENT/RefundApproved"
    assert row["reason"] == "unknown PAYMENT subType 'RefundApproved'"
    stored = str(row["body"])
    assert "4111111111114242" not in stored
    assert "4000056655665556" not in stored
    assert '"cardLastFourDigits":"4242"' in stored
    assert "************5556" in stored
    assert '"shoppingTripId":"0f9c5a0e-8b7d-4a43-9a31-5c1e2d3f4a5b"' in stored  # the rest is as it came


def test_redaction_leaves_numbers_that_are_not_card_numbers_alone() -> None:
    text = '{"upc": "012345678905", "n": 1234567890123456, "cardLastFourDigits": "12"}'  # 16 digits, not Luhn

    assert redact_card_numbers(text) == text


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ("not json", "body is not JSON"),
        (CART[: len(CART) // 2], "body is not JSON"),
        ('{"id": "x", "detail-type": "CART", "detail": {"n": NaN}}', "body is not JSON"),
        ("[1, 2]", "body is not a JSON object"),
        ('{"Service": "Amazon S3", "Event": "s3:TestEvent"}', "body is not an EventBridge envelope"),
        ('{"id": "", "detail-type": "CART", "detail": {}}', "body is not an EventBridge envelope: id"),
        ('{"id": "x", "detail-type": "CART", "detail": "text"}', "body is not an EventBridge envelope: detail"),
    ],
)
def test_a_body_that_is_not_an_event_is_kept_as_an_unknown_event_under_the_queue_message_id(
    body: str, reason: str
) -> None:
    dedup_id, rows = decode(body)

    [row] = rows["unknown_events"]
    assert dedup_id == row["message_id"] == QUEUE_ID
    assert row["type"] == "undecodable"
    assert str(row["reason"]).startswith(reason)
    assert row["body"] == body


# --- poison --------------------------------------------------------------------------------------------------


def _drop(*path: str | int) -> Any:
    def edit(data: dict[str, Any]) -> None:
        target = data["detail"]
        for part in path[:-1]:
            target = target[part]
        del target[path[-1]]

    return edit


def _set(value: object, *path: str | int) -> Any:
    def edit(data: dict[str, Any]) -> None:
        target = data["detail"]
        for part in path[:-1]:
            target = target[part]
        target[path[-1]] = value

    return edit


@pytest.mark.parametrize(
    ("base", "edit", "problem"),
    [
        (CART, _drop("cartItems"), "cartItems: Field required"),
        (CART, _drop("shoppingTripId"), "shoppingTripId: Field required"),
        (CART, _drop("cartItems", 0, "merchantSku"), "cartItems.0.merchantSku: Field required"),
        (CART, _drop("cartItems", 1, "quantityValue"), "cartItems.1.quantityValue"),
        (CART, _set("two", "cartItems", 0, "quantityValue"), "cartItems.0.quantityValue"),
        (CART, _set(Decimal("6.98001"), "cartItems", 0, "priceValue"), "does not fit DECIMAL(18,4)"),
        (CART, _set("NaN", "cartItems", 0, "taxValue"), "cartItems.0.taxValue"),
        (CART, _drop("cartItems", 0, "promotionInfos", 0, "amount"), "promotionInfos.0.amount"),
        (CART, _set("2026-11-20T11:56:00", "eventTime"), "eventTime"),
        (PAYMENT, _drop("amount"), "amount: Field required"),
        (PAYMENT, _drop("amount", "currencyCode"), "amount.currencyCode"),
        (PAYMENT, _set("usd", "amount", "currencyCode"), "amount.currencyCode"),
        (PAYMENT, _drop("subType"), "subType"),
        (PAYMENT, _set(3, "subType"), "subType"),
        (PAYMENT, _set("", "storeId"), "storeId"),
        (PAYMENT, _set("yesterday", "eventTime"), "eventTime"),
    ],
)
def test_a_cart_or_payment_event_with_a_missing_or_invalid_required_field_is_poison(
    base: str, edit: Any, problem: str
) -> None:
    body = edited(base, edit)

    with pytest.raises(PoisonMessageError, match=r"^(CART|PAYMENT) event ") as raised:
        decode(body)
    assert problem in str(raised.value)


def test_a_poison_error_never_quotes_the_card_number() -> None:
    body = edited(PAYMENT, _set(4111111111114242, "cardLastFourDigits"))  # a number, not a string

    with pytest.raises(PoisonMessageError) as raised:
        decode(body)
    assert "cardLastFourDigits" in str(raised.value)
    assert "4111111111114242" not in str(raised.value)


# --- the consumer on the eventfeed queue ---------------------------------------------------------------------


def test_the_consumer_lands_feed_events_once_each_with_the_eventfeed_decode() -> None:
    queue, sink = FakeSqsQueue(max_receive_count=5), RecordingSink()
    poison = edited(PAYMENT, _drop("amount"))
    other_payment = edited(PAYMENT, lambda d: d.update(id="another-payment"))
    for body in (CART, PAYMENT, PAYMENT, other_payment, "not json", poison):  # PAYMENT delivered twice
        queue.send(body)
    worker = Consumer(
        SOURCE,
        queue,
        sink,
        lambda: RECEIVED,
        decode=decode_event_batch,
        receivers=1,
        batch_max=10,
        linger_seconds=0.01,
        wait_seconds=0,
    )

    async def scenario() -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(worker.run(stop))
        async with asyncio.timeout(5):
            while True:
                if len(queue.deleted) == 5:  # all but the poison message landed and were deleted
                    break
                await asyncio.sleep(0.01)
        stop.set()
        await asyncio.wait_for(task, 5)

    asyncio.run(scenario())

    assert len(sink.rows("cart_events")) == 3
    assert sorted(str(r["event_id"]) for r in sink.rows("payment_events")) == ["another-payment", PAYMENT_ID]
    assert [r["type"] for r in sink.rows("unknown_events")] == ["undecodable"]
    assert worker.stats.duplicates == 1
    assert worker.stats.poison >= 1
    assert queue.depth == 1  # the poison message stays for the redrive policy


def test_the_consumer_still_decodes_events_queue_messages_by_default() -> None:
    queue, sink = FakeSqsQueue(), RecordingSink()
    queue.send(CART)  # an eventfeed body on the events queue is no envelope of ours
    worker = Consumer("jwo-events", queue, sink, lambda: RECEIVED)

    async def scenario() -> int:
        return await worker.process(await queue.receive(10, 0))

    assert asyncio.run(scenario()) == 1
    [row] = sink.rows("unknown_events")
    assert row["type"] == "undecodable"
