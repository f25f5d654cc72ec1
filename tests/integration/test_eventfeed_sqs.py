"""The Event Feed end to end on the embedded moto server: the simulator publishes on the EventBridge bus, the rule
routes to the eventfeed queue, the consumer with the eventfeed decode lands the events in a real Parquet lake."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from contracts.eventfeed import dumps_exact, loads_exact
from ingest.adapters.sqs_receiver import SqsReceiver
from ingest.consumer import Consumer
from ingest.eventfeed import decode_event_batch
from jwo.aws_resources import EmbeddedAws, ResourceNames, Resources, provision
from jwo.runtime import LakeSink
from simulator.eventfeed import Delivery, FeedConfig, build_feed, play_feed, publish_events
from simulator.scenario import ScenarioConfig, build_scenario
from simulator.truth import build_answer_key
from tests.aws_clients import sqs_client
from warehouse.duck_writer import WarehouseDb
from warehouse.lake import LakeWriter
from warehouse.query import run_query

if TYPE_CHECKING:
    from types_aiobotocore_sqs import SQSClient

# A 1 s visibility timeout and two receives before the dead-letter queue: a poison event is dead-lettered in ~2 s.
NAMES = ResourceNames(visibility_timeout_seconds=1, max_receive_count=2, receive_wait_seconds=0)
CLEAN_NAMES = ResourceNames(receive_wait_seconds=0)
SETTLED_SQL = "select shopping_trip_id, amount from payment_events where sub_type <> 'AuthorizationApproved'"


async def on_queue(sqs: SQSClient, url: str) -> int:
    """Messages visible or in flight."""
    attrs = (
        await sqs.get_queue_attributes(
            QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
        )
    )["Attributes"]
    return int(attrs["ApproximateNumberOfMessages"]) + int(attrs["ApproximateNumberOfMessagesNotVisible"])


def feed_consumer(sqs: SQSClient, resources: Resources, sink: LakeSink) -> Consumer:
    return Consumer(
        resources.eventfeed.name,
        SqsReceiver(sqs, resources.eventfeed.url),
        sink,
        lambda: datetime.now(UTC),
        decode=decode_event_batch,
        receivers=2,
        batch_max=25,  # several batches, so duplicates also meet across batches
        linger_seconds=0.05,
        wait_seconds=1,
    )


async def consume_until(worker: Consumer, done: Callable[[], Awaitable[bool]], within: float) -> None:
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


def test_a_feed_played_through_the_bus_lands_as_the_key_says_with_duplicates_collapsed(
    aws: EmbeddedAws, tmp_path: Path
) -> None:
    lake = tmp_path / "lake"
    scenario = build_scenario(ScenarioConfig(seed=5, shoppers=40, stores=2, card_entry_share=0.5))
    key = build_answer_key(scenario)
    feed = build_feed(
        scenario, key, FeedConfig(duplicate_share=0.2, reorder_window=4, malformed_share=0.15, decline_share=0.3)
    )
    assert feed.key.duplicates > 0
    assert {d.kind for d in feed.deliveries} >= {"bad_json", "unknown_detail_type", "unknown_sub_type"}

    async def scenario_run() -> None:
        resources = await provision(aws.endpoint, CLEAN_NAMES)  # nothing is redelivered by a visibility timeout
        report = await play_feed(aws.endpoint, resources.event_bus_name, resources.eventfeed.url, feed)
        assert report.failures == ()
        assert report.published + report.delivered == len(feed.deliveries)
        assert report.published == sum(
            d.delivery_no == 1 and d.detail_type in ("CART", "PAYMENT") for d in feed.deliveries
        )
        with WarehouseDb(tmp_path, lake) as db:
            async with sqs_client(aws) as sqs:
                worker = feed_consumer(sqs, resources, LakeSink(LakeWriter(lake), db))

                async def drained() -> bool:
                    return await on_queue(sqs, resources.eventfeed.url) == 0

                await consume_until(worker, drained, within=20)
                assert resources.eventfeed.dlq_url is not None
                assert await on_queue(sqs, resources.eventfeed.dlq_url) == 0
        # Every delivery was consumed; SQS may redeliver one whose visibility lapsed on a loaded machine
        # (at least once), which the table counts below show collapsed.
        assert worker.stats.consumed >= len(feed.deliveries)
        assert worker.stats.poison == 0

    asyncio.run(scenario_run())

    counts = {table: scalar(lake, f"select count(*) from {table}") for table in feed.key.table_counts()}
    assert counts == feed.key.table_counts()
    assert scalar(lake, "select count(distinct event_id) from payment_events") == feed.key.payment_events
    by_sub_type = run_query(lake, "select sub_type, count(*) from payment_events group by 1 order by 1").rows
    assert dict(by_sub_type) == feed.key.payments_by_sub_type
    # Money crossed the bus (which re-encodes JSON numbers) and came out exact:
    captured = {t.shopping_trip_id: t.total for t in key.trips if t.entry_method == "FINANCIAL" and t.line_count}
    landed = dict(run_query(lake, SETTLED_SQL).rows)
    assert landed == captured
    lines = dict(
        run_query(lake, "select shopping_trip_id, sum(price - promotion_total + tax) from cart_events group by 1").rows
    )
    assert lines == {t.shopping_trip_id: t.total for t in key.trips if t.line_count}
    assert all(isinstance(v, Decimal) for v in lines.values())


def test_publish_events_puts_every_entry_and_a_cart_without_items_field_is_dead_lettered(
    aws: EmbeddedAws, tmp_path: Path
) -> None:
    lake = tmp_path / "lake"
    at = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)

    def cart(n: int, *, poison: bool = False) -> Delivery:
        detail: dict[str, object] = {"shoppingTripId": f"trip-{n}", "storeId": "store-001", "eventTime": at}
        if not poison:
            detail["cartItems"] = [{"merchantSku": "SKU-1", "quantityValue": 1, "priceValue": Decimal("2.50")}]
        return Delivery(kind="cart", body="", time=at, detail_type="CART", detail=dumps_exact(detail))

    events = [cart(n) for n in range(11)] + [cart(99, poison=True)]  # two PutEvents calls

    async def scenario_run() -> None:
        resources = await provision(aws.endpoint, NAMES)
        result = await publish_events(aws.endpoint, resources.event_bus_name, NAMES.event_source, events)
        assert result.failures == ()
        assert len(set(result.event_ids)) == len(events)
        with pytest.raises(ValueError, match="cannot be put on a bus"):
            await publish_events(
                aws.endpoint,
                resources.event_bus_name,
                NAMES.event_source,
                [Delivery(kind="bad_json", body="{", time=at)],
            )
        dlq = resources.eventfeed.dlq_url
        assert dlq is not None
        async with sqs_client(aws) as sqs:
            worker = feed_consumer(sqs, resources, LakeSink(LakeWriter(lake), None))

            async def dead_lettered() -> bool:
                return await on_queue(sqs, dlq) == 1 and await on_queue(sqs, resources.eventfeed.url) == 0

            await consume_until(worker, dead_lettered, within=15)
            dead = await sqs.receive_message(QueueUrl=dlq, WaitTimeSeconds=0)
        [message] = dead["Messages"]
        envelope = loads_exact(message["Body"])
        assert envelope["detail"]["shoppingTripId"] == "trip-99"
        assert envelope["id"] == result.event_ids[-1]
        assert worker.stats.poison == NAMES.max_receive_count

    asyncio.run(scenario_run())

    assert scalar(lake, "select count(*) from cart_events") == 11
    assert scalar(lake, "select sum(price) from cart_events") == Decimal("27.5000")
