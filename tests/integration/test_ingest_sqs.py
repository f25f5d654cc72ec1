"""The events-queue consumer against the embedded moto server, landing into a real Parquet lake."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING

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
)
from contracts.tables import AUTH_EVENTS, CANCEL_CHARGES
from ingest.adapters.sqs_receiver import SqsReceiver
from ingest.consumer import Consumer
from ingest.ports import RowsRejectedError
from jwo.aws_resources import EmbeddedAws, ResourceNames, Resources, provision
from jwo.runtime import LakeSink
from tests.aws_clients import sqs_client
from warehouse.duck_writer import WarehouseDb
from warehouse.lake import LakeWriter, parquet_files
from warehouse.query import run_query

if TYPE_CHECKING:
    from types_aiobotocore_sqs import SQSClient

# Short visibility timeout and two receives before the dead-letter queue: a poison message is
# dead-lettered in ~2 s instead of 5 x 30 s.
NAMES = ResourceNames(visibility_timeout_seconds=1, max_receive_count=2, receive_wait_seconds=0)
AT = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)


def body(message_type: MessageType, key: str, payload: Payload) -> str:
    return encode_envelope(envelope_for(message_type, key, payload, occurred_at=AT, producer="test")).decode()


def auth_body(n: int) -> str:
    event = AuthEvent(
        event_id=f"event-{n}",
        request_id=f"request-{n}",
        endpoint="scan",
        store_id="store-001",
        occurred_at=AT,
        received_at=AT,
        location="ENTRY",
        channel="OPTICAL",
        outcome="ACCEPT",
        http_status=200,
        visitor_type="SHOPPER",
        shopper_id=f"shopper-{n}",
    )
    return body(MessageType.AUTH_EVENT, f"scan:event-{n}", event)


def purchase_body() -> str:
    line = PurchaseLine(
        line_no=1,
        line_item_id="li-1",
        item_id="SKU-00001",
        item_type="SKU",
        sku="SKU-00001",
        name="Whole Milk 1gal",
        quantity=Decimal("2"),
        unit="EA",
        unit_price=Decimal("3.49"),
        amount=Decimal("6.98"),
        discount=Decimal("0.70"),
        tax=Decimal("0.39"),
        line_total=Decimal("6.67"),
        known=True,
    )
    unknown = PurchaseLine(
        line_no=2,
        item_id="SKU-NEW-1234",
        item_type="SKU",
        quantity=Decimal("1"),
        unit="EA",
        amount=Decimal("0"),
        discount=Decimal("0"),
        tax=Decimal("0"),
        line_total=Decimal("0"),
        known=False,
    )
    purchase = Purchase(
        shopping_trip_id="trip-1",
        purchase_id="purchase-1",
        store_id="store-001",
        entry_method="SCAN_CODE",
        shopper_id="shopper-1",
        start_time=datetime(2026, 11, 20, 11, 30, tzinfo=UTC),
        end_time=datetime(2026, 11, 20, 11, 50, tzinfo=UTC),
        currency="USD",
        subtotal=Decimal("6.98"),
        promotions=Decimal("0.70"),
        tax=Decimal("0.39"),
        total=Decimal("6.67"),
        line_count=2,
        unknown_item_count=1,
        created_at=AT,
        lines=[line, unknown],
    )
    return body(MessageType.PURCHASE, "trip-1", purchase)


def bad_cart_body() -> str:
    bad = BadCart(
        shopping_trip_id="trip-1",
        store_id="store-001",
        created_at=AT,
        items=[BadCartItem(item_id="SKU-NEW-1234", item_type="SKU", reason="unknown SKU")],
    )
    return body(MessageType.BAD_CART, "trip-1", bad)


def cancel_body(trip: str) -> str:
    return body(
        MessageType.CANCEL_CHARGE, trip, CancelCharge(shopping_trip_id=trip, store_id="store-002", requested_at=AT)
    )


POISON = orjson.dumps(
    {
        "message_id": "poison-1",
        "type": "purchase",
        "schema_version": 1,
        "occurred_at": "2026-11-20T12:00:00Z",
        "producer": "test",
        "payload": {"shopping_trip_id": "trip-x"},
    }
).decode()

REFUND = orjson.dumps(
    {
        "message_id": "m-9",
        "type": "refund",
        "schema_version": 1,
        "occurred_at": "2026-11-20T12:00:00Z",
        "producer": "portal",
        "payload": {},
    }
).decode()

UNWRITABLE = orjson.dumps(  # valid for the model, but a time without a zone cannot be partitioned
    {
        "message_id": "naive-1",
        "type": "cancel_charge",
        "schema_version": 1,
        "occurred_at": "2026-11-20T12:00:00Z",
        "producer": "test",
        "payload": {"shopping_trip_id": "trip-naive", "store_id": "store-002", "requested_at": "2026-11-20T12:00:00"},
    }
).decode()


async def send_all(sqs: SQSClient, url: str, bodies: list[str]) -> None:
    for start in range(0, len(bodies), 10):
        chunk = bodies[start : start + 10]
        result = await sqs.send_message_batch(
            QueueUrl=url, Entries=[{"Id": str(i), "MessageBody": b} for i, b in enumerate(chunk)]
        )
        assert not result.get("Failed")


async def on_queue(sqs: SQSClient, url: str) -> int:
    """Messages visible or in flight."""
    attrs = (
        await sqs.get_queue_attributes(
            QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
        )
    )["Attributes"]
    return int(attrs["ApproximateNumberOfMessages"]) + int(attrs["ApproximateNumberOfMessagesNotVisible"])


async def _empty(sqs: SQSClient, url: str) -> bool:
    return await on_queue(sqs, url) == 0


def lake_consumer(sqs: SQSClient, resources: Resources, sink: LakeSink) -> Consumer:
    return Consumer(
        resources.events.name,
        SqsReceiver(sqs, resources.events.url),
        sink,
        lambda: datetime.now(UTC),
        receivers=2,
        batch_max=100,
        linger_seconds=0.05,
        wait_seconds=1,
    )


async def consume_until(worker: Consumer, done: Callable[[], Awaitable[bool]], within: float) -> None:
    """Run the consumer until `done()`, then stop it; fails if it stopped by itself or never got there."""
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop))
    try:
        async with asyncio.timeout(within):
            while not await done():
                assert not task.done(), "the consumer stopped by itself"
                await asyncio.sleep(0.05)
    finally:
        stop.set()
        await asyncio.wait_for(task, 10.0)


def scalar(lake: Path, sql: str) -> object:
    [(value,)] = run_query(lake, sql).rows
    return value


def test_every_message_type_lands_in_its_table_and_the_queue_is_emptied(aws: EmbeddedAws, tmp_path: Path) -> None:
    lake = tmp_path / "lake"
    bodies = [
        *(auth_body(n) for n in range(12)),
        purchase_body(),
        bad_cart_body(),
        cancel_body("trip-2"),
        auth_body(3),  # Amazon retried, the relay re-sent: the same envelope again
        REFUND,  # a type this consumer does not know
        "not an envelope",
    ]

    async def scenario() -> None:
        resources = await provision(aws.endpoint, NAMES)
        with WarehouseDb(tmp_path, lake) as db:
            sink = LakeSink(LakeWriter(lake), db)
            async with sqs_client(aws) as sqs:
                await send_all(sqs, resources.events.url, bodies)
                worker = lake_consumer(sqs, resources, sink)
                await consume_until(worker, lambda: _empty(sqs, resources.events.url), within=15)
                assert resources.events.dlq_url is not None
                assert await on_queue(sqs, resources.events.dlq_url) == 0
            assert worker.stats.consumed == len(bodies)
            assert worker.stats.poison == 0
            [(views,)] = db.connection.sql("select count(*) from auth_events").fetchall()
            assert views == 12  # the writer's DuckDB file sees what the lake holds

    asyncio.run(scenario())

    assert scalar(lake, "select count(*) from auth_events") == 12
    assert scalar(lake, "select count(distinct event_id) from auth_events") == 12
    assert scalar(lake, "select shopper_id from auth_events where event_id = 'event-7'") == "shopper-7"
    assert run_query(lake, "select shopping_trip_id, total, line_count from purchases").rows == [
        ("trip-1", Decimal("6.6700"), 2)
    ]
    assert run_query(lake, "select line_no, sku, known from purchase_lines order by line_no").rows == [
        (1, "SKU-00001", True),
        (2, None, False),
    ]
    assert run_query(lake, "select item_id, reason from bad_carts").rows == [("SKU-NEW-1234", "unknown SKU")]
    assert run_query(lake, "select shopping_trip_id, reason from cancel_charges").rows == [("trip-2", "EMPTY_CART")]
    assert run_query(lake, "select type, message_id = 'm-9' from unknown_events order by type").rows == [
        ("refund", True),
        ("undecodable", False),
    ]


def test_received_messages_carry_their_receive_count_and_send_time(aws: EmbeddedAws) -> None:
    async def scenario() -> None:
        resources = await provision(aws.endpoint, NAMES)
        async with sqs_client(aws) as sqs:
            await sqs.send_message(QueueUrl=resources.events.url, MessageBody="hello")
            receiver = SqsReceiver(sqs, resources.events.url)
            [first] = await receiver.receive(10, 0)
            await receiver.extend([first], 0)  # visible again at once
            [second] = await receiver.receive(10, 0)
            assert (first.message_id, first.body) == (second.message_id, "hello")
            assert (first.receive_count, second.receive_count) == (1, 2)
            assert first.sent_at is not None
            assert abs((datetime.now(UTC) - first.sent_at).total_seconds()) < 60
            assert first.receipt != second.receipt
            await receiver.delete([second])
            assert await on_queue(sqs, resources.events.url) == 0

    asyncio.run(scenario())


def test_a_poison_message_is_dead_lettered_after_max_receive_count_while_its_batch_mates_land(
    aws: EmbeddedAws, tmp_path: Path
) -> None:
    lake = tmp_path / "lake"

    async def scenario() -> None:
        resources = await provision(aws.endpoint, NAMES)
        dlq = resources.events.dlq_url
        assert dlq is not None
        async with sqs_client(aws) as sqs:
            await send_all(sqs, resources.events.url, [POISON, UNWRITABLE, *(auth_body(n) for n in range(5))])
            worker = lake_consumer(sqs, resources, LakeSink(LakeWriter(lake), None))

            async def dead_lettered() -> bool:
                return await on_queue(sqs, dlq) == 2 and await on_queue(sqs, resources.events.url) == 0

            await consume_until(worker, dead_lettered, within=20)
            dead = await sqs.receive_message(QueueUrl=dlq, MaxNumberOfMessages=10, WaitTimeSeconds=0)
        assert sorted(m["Body"] for m in dead["Messages"]) == sorted([POISON, UNWRITABLE])
        assert worker.stats.poison == 2 * NAMES.max_receive_count  # each received exactly that often

    asyncio.run(scenario())

    assert scalar(lake, "select count(*) from auth_events") == 5
    assert scalar(lake, "select count(*) from cancel_charges") == 0
    assert scalar(lake, "select count(*) from purchases") == 0


def test_the_lake_sink_publishes_nothing_of_a_batch_with_a_row_that_does_not_fit(tmp_path: Path) -> None:
    lake = tmp_path / "lake"
    sink = LakeSink(LakeWriter(lake), None)
    good = {"event_id": "e-1", "occurred_at": AT, "outcome": "ACCEPT"}
    naive = {"shopping_trip_id": "t", "requested_at": datetime(2026, 11, 20, 12, 0)}

    with pytest.raises(RowsRejectedError, match="timezone-aware"):
        sink.write({"auth_events": [good], "cancel_charges": [naive]}, "batch-1")

    assert parquet_files(lake, AUTH_EVENTS) == []
    assert parquet_files(lake, CANCEL_CHARGES) == []
    sink.write({"auth_events": [good]}, "batch-2")
    assert scalar(lake, "select count(*) from auth_events") == 1
