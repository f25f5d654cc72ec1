"""Alert sinks against real receivers: the webhook against a local HTTP server, SNS against the embedded moto server
(a topic with an SQS subscription), and the decline path end to end: a CaptureDeclined PAYMENT event on the
eventfeed queue → the consumer → the `alerts` table in a real Parquet lake and the sinks, within 1 s."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import httpx
import pytest
from aiobotocore.session import get_session
from aiohttp import web

from contracts.eventfeed import dumps_exact, loads_exact
from ingest.consumer import Consumer
from ingest.eventfeed import decode_event_batch
from ingest.fakes import FakeSqsQueue
from ingest.ports import Received
from jwo.alerts import lake_backlog, open_alerting
from jwo.aws_resources import EmbeddedAws
from jwo.runtime import LakeSink
from reconcile.adapters.sns_alerts import SnsAlertSink
from reconcile.adapters.webhook_alerts import WebhookAlertSink
from reconcile.alerts import alert_payload, decline_alerts_for_rows
from reconcile.errors import AlertDeliveryError
from reconcile.fakes import MemoryAlertSink
from reconcile.rules import Alert
from reconcile.settings import AlertSettings
from warehouse.lake import LakeWriter
from warehouse.query import run_query

EVENTS = Path(__file__).resolve().parents[1] / "events"


def declined_alert() -> Alert:
    row = {
        "event_id": "e-1",
        "shopping_trip_id": "trip-1",
        "store_id": "store-1",
        "event_time": datetime(2026, 11, 20, 12, 3, 14, tzinfo=UTC),
        "sub_type": "CaptureDeclined",
        "amount": Decimal("7.04"),
        "currency": "USD",
    }
    [alert] = decline_alerts_for_rows([row])
    return alert


@asynccontextmanager
async def receiver(statuses: list[int]) -> AsyncIterator[tuple[str, list[tuple[dict[str, str], str]]]]:
    """A webhook receiver on 127.0.0.1 (free port): answers with `statuses` in turn (then 200), records what came."""
    got: list[tuple[dict[str, str], str]] = []

    async def hook(request: web.Request) -> web.Response:
        got.append((await request.json(), request.headers.get("Idempotency-Key", "")))
        return web.Response(status=statuses.pop(0) if statuses else 200)

    app = web.Application()
    app.router.add_post("/hook", hook)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}/hook", got
    finally:
        await runner.cleanup()


def test_the_webhook_receives_the_alert_as_json_after_a_retry() -> None:
    alert = declined_alert()

    async def scenario() -> list[tuple[dict[str, str], str]]:
        async with receiver([503]) as (url, got), httpx.AsyncClient(timeout=2.0) as client:
            await WebhookAlertSink(client, url, backoff_seconds=0.01).send(alert)
            return got

    got = asyncio.run(scenario())
    assert [body for body, _ in got] == [alert_payload(alert)] * 2
    assert got[-1][1] == alert.alert_id


def test_a_webhook_that_refuses_the_alert_raises_a_terminal_error() -> None:
    async def scenario() -> None:
        async with receiver([400]) as (url, _), httpx.AsyncClient(timeout=2.0) as client:
            await WebhookAlertSink(client, url).send(declined_alert())

    with pytest.raises(AlertDeliveryError) as caught:
        asyncio.run(scenario())
    assert not caught.value.transient


def test_an_unreachable_webhook_fails_within_its_attempts() -> None:
    async def scenario() -> None:
        async with receiver([]) as (url, _):
            pass  # closed: nothing listens on the port any more
        async with httpx.AsyncClient(timeout=0.5) as client:
            await WebhookAlertSink(client, url, attempts=2, backoff_seconds=0.01).send(declined_alert())

    started = time.monotonic()
    with pytest.raises(AlertDeliveryError) as caught:
        asyncio.run(scenario())
    assert caught.value.transient
    assert time.monotonic() - started < 3


def test_the_sns_sink_publishes_to_the_topic_and_the_subscribed_queue_gets_it(aws: EmbeddedAws) -> None:
    alert = declined_alert()
    kwargs = aws.endpoint.client_kwargs()

    async def scenario() -> dict[str, str]:
        session = get_session()
        async with session.create_client("sns", **kwargs) as sns, session.create_client("sqs", **kwargs) as sqs:
            topic = (await sns.create_topic(Name="jwo-alerts"))["TopicArn"]
            url = (await sqs.create_queue(QueueName="oncall"))["QueueUrl"]
            arn = (await sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"]))["Attributes"]["QueueArn"]
            await sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=arn)
            await SnsAlertSink(sns, topic).send(alert)
            got = await sqs.receive_message(QueueUrl=url, WaitTimeSeconds=1, MaxNumberOfMessages=1)
            envelope = json.loads(got["Messages"][0]["Body"])  # SNS-wrapped
            assert envelope["MessageAttributes"]["kind"]["Value"] == "decline_capture"
            return dict(json.loads(envelope["Message"]))

    assert asyncio.run(scenario()) == alert_payload(alert)


def test_the_sns_sink_reports_a_missing_topic(aws: EmbeddedAws) -> None:
    async def scenario() -> None:
        async with get_session().create_client("sns", **aws.endpoint.client_kwargs()) as sns:
            await SnsAlertSink(sns, "arn:aws:sns:us-east-1:123456789012:nope").send(declined_alert())

    with pytest.raises(AlertDeliveryError):
        asyncio.run(scenario())


async def until(done: Callable[[], bool], within: float = 5.0) -> None:
    async with asyncio.timeout(within):
        while not done():  # noqa: ASYNC110
            await asyncio.sleep(0.005)


class TimedQueue(FakeSqsQueue):
    """Records when the consumer received each message."""

    def __init__(self) -> None:
        super().__init__()
        self.received_at: dict[str, float] = {}

    async def receive(self, max_messages: int, wait_seconds: int) -> list[Received]:
        got = await super().receive(max_messages, wait_seconds)
        for message in got:
            self.received_at.setdefault(message.body, time.monotonic())
        return got


class TimedSink(MemoryAlertSink):
    def __init__(self) -> None:
        super().__init__()
        self.sent_at: list[float] = []

    async def send(self, alert: Alert) -> None:
        await super().send(alert)
        self.sent_at.append(time.monotonic())


def test_a_capture_decline_on_the_queue_is_alerted_once_within_a_second(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    event = loads_exact((EVENTS / "eventbridge_payment.json").read_text())
    event["detail"].update(subType="CaptureDeclined", status="DECLINED")
    body = dumps_exact(event)
    queue, memory = TimedQueue(), TimedSink()
    lake = tmp_path / "lake"

    async def scenario() -> None:
        async with open_alerting(
            AlertSettings(), LakeSink(LakeWriter(lake), None), extra_sinks={"memory": memory}
        ) as a:
            consumer = Consumer("eventfeed", queue, a.sink, lambda: datetime.now(UTC), decode=decode_event_batch,
                                receivers=1, linger_seconds=0.2, wait_seconds=0)  # fmt: skip
            stop = asyncio.Event()
            tasks = [asyncio.create_task(consumer.run(stop)), asyncio.create_task(a.run(stop))]
            queue.send(body)
            await until(lambda: bool(memory.sent))
            queue.send(body)  # EventBridge delivers at least once: the same event again
            await until(lambda: queue.depth == 0)
            await asyncio.sleep(0.1)
            stop.set()
            await asyncio.gather(*tasks)

    with caplog.at_level(logging.WARNING, logger="jwo.alerts"):
        asyncio.run(scenario())
    assert len(memory.sent) == 1
    assert memory.sent_at[0] - queue.received_at[body] < 1.0
    assert [r for r in caplog.records if r.getMessage().startswith("ALERT decline_capture")]
    rows = run_query(lake, "select alert_id, kind, shopping_trip_id, message from alerts").rows
    assert rows == [
        (memory.sent[0].alert_id, "decline_capture", event["detail"]["shoppingTripId"], memory.sent[0].message)
    ]
    assert "7.04" in memory.sent[0].message
    assert "store-001" in memory.sent[0].message


def test_the_backlog_counts_purchases_not_yet_reconciled(tmp_path: Path) -> None:
    assert lake_backlog(tmp_path / "lake", timedelta(minutes=10), datetime.now(UTC)) == 0
