"""The local-AWS layer against a real moto server on a free loopback port (one server per test)."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import threading
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from datetime import datetime
from typing import TYPE_CHECKING, Any

import pytest

from contracts.aws import AwsEndpoint
from jwo.aws_resources import (
    EmbeddedAws,
    ResourceMissingError,
    ResourceNames,
    Resources,
    provision,
    queue_depths,
    resolve,
)
from tests.aws_clients import shared_session

if TYPE_CHECKING:
    from types_aiobotocore_events import EventBridgeClient
    from types_aiobotocore_s3 import S3Client
    from types_aiobotocore_sns import SNSClient
    from types_aiobotocore_sqs import SQSClient

NAMES = ResourceNames()


@asynccontextmanager
async def clients(
    endpoint: AwsEndpoint,
) -> AsyncIterator[tuple[SQSClient, SNSClient, EventBridgeClient, S3Client]]:
    session = shared_session()
    kw = endpoint.client_kwargs()
    async with AsyncExitStack() as stack:
        yield (
            await stack.enter_async_context(session.create_client("sqs", **kw)),
            await stack.enter_async_context(session.create_client("sns", **kw)),
            await stack.enter_async_context(session.create_client("events", **kw)),
            await stack.enter_async_context(session.create_client("s3", **kw)),
        )


async def receive_all(sqs: SQSClient, url: str) -> list[dict[str, Any]]:
    """Whatever is visible now (no long poll: delivery in moto is synchronous with the send)."""
    response = await sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=0)
    return [json.loads(m["Body"]) for m in response.get("Messages", [])]


def test_provisioning_twice_gives_the_same_resources_and_duplicates_nothing(aws: EmbeddedAws) -> None:
    async def scenario() -> None:
        first = await provision(aws.endpoint, NAMES)
        second = await provision(aws.endpoint, NAMES)
        assert second == first

        async with clients(aws.endpoint) as (sqs, sns, events, s3):
            queues = (await sqs.list_queues())["QueueUrls"]
            assert len(queues) == 6
            subscriptions = (await sns.list_subscriptions_by_topic(TopicArn=first.reports_topic_arn))["Subscriptions"]
            assert [s["Protocol"] for s in subscriptions] == ["sqs"]
            targets = (await events.list_targets_by_rule(Rule=NAMES.event_rule, EventBusName=NAMES.event_bus))[
                "Targets"
            ]
            assert len(targets) == 1

            for queue in (first.events, first.reports, first.eventfeed):
                attrs = (await sqs.get_queue_attributes(QueueUrl=queue.url, AttributeNames=["All"]))["Attributes"]
                assert queue.dlq_url is not None
                dlq_arn = (await sqs.get_queue_attributes(QueueUrl=queue.dlq_url, AttributeNames=["QueueArn"]))[
                    "Attributes"
                ]["QueueArn"]
                redrive = json.loads(attrs["RedrivePolicy"])
                assert redrive["deadLetterTargetArn"] == dlq_arn
                assert int(redrive["maxReceiveCount"]) == 5
                assert (attrs["VisibilityTimeout"], attrs["ReceiveMessageWaitTimeSeconds"]) == ("30", "20")

            for bucket in (first.reports_bucket, first.lake_bucket):
                encryption = await s3.get_bucket_encryption(Bucket=bucket)
                rule = encryption["ServerSideEncryptionConfiguration"]["Rules"][0]
                assert rule["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"] == "AES256"

    asyncio.run(scenario())


def test_provisioning_again_restores_a_changed_queue_setting(aws: EmbeddedAws) -> None:
    async def scenario() -> None:
        resources = await provision(aws.endpoint, NAMES)
        async with clients(aws.endpoint) as (sqs, _, _, _):
            await sqs.set_queue_attributes(QueueUrl=resources.events.url, Attributes={"VisibilityTimeout": "7"})
            await provision(aws.endpoint, NAMES)
            attrs = await sqs.get_queue_attributes(QueueUrl=resources.events.url, AttributeNames=["VisibilityTimeout"])
            assert attrs["Attributes"]["VisibilityTimeout"] == "30"

    asyncio.run(scenario())


def test_a_message_received_five_times_without_delete_lands_in_the_dead_letter_queue(aws: EmbeddedAws) -> None:
    async def scenario() -> None:
        resources = await provision(aws.endpoint, NAMES)
        queue = resources.events
        assert queue.dlq_url is not None
        async with clients(aws.endpoint) as (sqs, _, _, _):
            await sqs.send_message(QueueUrl=queue.url, MessageBody="poison")
            assert await queue_depths(aws.endpoint, queue) == (1, 0)

            for attempt in range(1, 6):
                got = await sqs.receive_message(
                    QueueUrl=queue.url,
                    VisibilityTimeout=0,  # visible again at once: the consumer "crashed"
                    WaitTimeSeconds=0,
                    AttributeNames=["ApproximateReceiveCount"],
                )
                [message] = got["Messages"]
                assert message["Attributes"]["ApproximateReceiveCount"] == str(attempt)

            sixth = await sqs.receive_message(QueueUrl=queue.url, WaitTimeSeconds=0)
            assert sixth.get("Messages", []) == []
            dead = await sqs.receive_message(QueueUrl=queue.dlq_url, WaitTimeSeconds=0)
            assert [m["Body"] for m in dead["Messages"]] == ["poison"]
        assert await queue_depths(aws.endpoint, queue) == (0, 0)  # the DLQ message is in flight now

    asyncio.run(scenario())


def test_queue_depths_counts_the_queue_and_its_dead_letter_queue(aws: EmbeddedAws) -> None:
    async def scenario() -> None:
        resources = await provision(aws.endpoint, NAMES)
        assert resources.reports.dlq_url is not None
        async with clients(aws.endpoint) as (sqs, _, _, _):
            await sqs.send_message(QueueUrl=resources.reports.url, MessageBody="a")
            await sqs.send_message(QueueUrl=resources.reports.url, MessageBody="b")
            await sqs.send_message(QueueUrl=resources.reports.dlq_url, MessageBody="c")
        assert await queue_depths(aws.endpoint, resources.reports) == (2, 1)
        no_dlq = resources.reports.model_copy(update={"dlq_url": None})
        assert await queue_depths(aws.endpoint, no_dlq) == (2, 0)

    asyncio.run(scenario())


def test_a_payment_event_on_the_bus_reaches_the_eventfeed_queue_in_an_eventbridge_envelope(
    aws: EmbeddedAws,
) -> None:
    async def scenario() -> None:
        resources = await provision(aws.endpoint, NAMES)
        detail = {"shoppingTripId": "trip-1", "status": "DECLINED"}
        async with clients(aws.endpoint) as (sqs, _, events, _):
            put = await events.put_events(
                Entries=[
                    {
                        "Source": "jwo.eventfeed",
                        "DetailType": "PAYMENT",
                        "Detail": json.dumps(detail),
                        "EventBusName": resources.event_bus_name,
                    }
                ]
            )
            assert put["FailedEntryCount"] == 0
            [envelope] = await receive_all(sqs, resources.eventfeed.url)

        assert envelope["source"] == "jwo.eventfeed"
        assert envelope["detail-type"] == "PAYMENT"
        assert envelope["detail"] == detail
        assert envelope["id"] == put["Entries"][0]["EventId"]
        assert {"version", "time", "region", "resources"} <= envelope.keys()

    asyncio.run(scenario())


def test_the_rule_takes_every_detail_type_of_the_feed_source_and_nothing_else(aws: EmbeddedAws) -> None:
    async def scenario() -> None:
        resources = await provision(aws.endpoint, NAMES)

        def entry(source: str, detail_type: str) -> Any:
            return {
                "Source": source,
                "DetailType": detail_type,
                "Detail": json.dumps({"kind": f"{source}/{detail_type}"}),
                "EventBusName": resources.event_bus_name,
            }

        async with clients(aws.endpoint) as (sqs, _, events, _):
            await events.put_events(
                Entries=[
                    entry("jwo.eventfeed", "REFUND"),  # a detail-type we do not know yet: recorded downstream
                    entry("someone.else", "PAYMENT"),  # another source: not ours
                    entry("jwo.eventfeed", "CART"),
                ]
            )
            received = await receive_all(sqs, resources.eventfeed.url)

        assert sorted(e["detail"]["kind"] for e in received) == ["jwo.eventfeed/CART", "jwo.eventfeed/REFUND"]

    asyncio.run(scenario())


def test_a_publish_on_the_reports_topic_reaches_the_reports_queue_in_an_sns_envelope(aws: EmbeddedAws) -> None:
    async def scenario() -> None:
        resources = await provision(aws.endpoint, NAMES)
        s3_notification = {"Records": [{"eventSource": "aws:s3", "s3": {"object": {"key": "r/1.csv"}}}]}
        async with clients(aws.endpoint) as (sqs, sns, _, _):
            await sns.publish(
                TopicArn=resources.reports_topic_arn,
                Subject="Amazon S3 Notification",
                Message=json.dumps(s3_notification),
            )
            [envelope] = await receive_all(sqs, resources.reports.url)

        assert envelope["Type"] == "Notification"
        assert envelope["TopicArn"] == resources.reports_topic_arn
        assert envelope["Subject"] == "Amazon S3 Notification"
        assert json.loads(envelope["Message"]) == s3_notification

    asyncio.run(scenario())


def test_resolve_finds_what_provision_created_under_configured_names(aws: EmbeddedAws) -> None:
    names = ResourceNames(
        events_queue="t-events",
        reports_queue="t-reports",
        eventfeed_queue="t-feed",
        reports_bucket="t-reports-bucket",
        lake_bucket="t-lake-bucket",
        reports_topic="t-topic",
        event_bus="t-bus",
        event_rule="t-rule",
    )

    async def scenario() -> tuple[Resources, Resources]:
        return await provision(aws.endpoint, names), await resolve(aws.endpoint, names)

    provisioned, resolved = asyncio.run(scenario())
    assert resolved == provisioned
    assert resolved.events.name == "t-events"
    assert resolved.events.dlq_url is not None
    assert resolved.events.dlq_url.endswith("/t-events-dlq")
    assert resolved.reports_topic_arn.endswith(":t-topic")


def test_resolve_on_an_empty_server_names_everything_missing_and_creates_nothing(aws: EmbeddedAws) -> None:
    async def scenario() -> None:
        with pytest.raises(ResourceMissingError) as raised:
            await resolve(aws.endpoint, NAMES)
        assert len(raised.value.missing) == 6 + 2 + 1 + 1 + 1
        message = str(raised.value)
        for name in ("'jwo-events'", "'jwo-eventfeed-dlq'", "'jwo-lake'", "SNS topic", "'jwo-eventfeed-to-sqs'"):
            assert name in message
        async with clients(aws.endpoint) as (sqs, sns, _, s3):
            assert (await sqs.list_queues()).get("QueueUrls", []) == []
            assert (await sns.list_topics()).get("Topics", []) == []
            assert (await s3.list_buckets()).get("Buckets", []) == []

    asyncio.run(scenario())


def test_resolve_reports_only_the_missing_piece(aws: EmbeddedAws) -> None:
    async def scenario() -> None:
        resources = await provision(aws.endpoint, NAMES)
        async with clients(aws.endpoint) as (sqs, _, _, _):
            assert resources.reports.dlq_url is not None
            await sqs.delete_queue(QueueUrl=resources.reports.dlq_url)
        with pytest.raises(ResourceMissingError) as raised:
            await resolve(aws.endpoint, NAMES)
        assert raised.value.missing == ("SQS queue 'jwo-report-notifications-dlq'",)

    asyncio.run(scenario())


def _moto_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if "_server_entry" in t.name]


def test_stopping_the_server_releases_its_port_and_thread_and_forgets_its_resources() -> None:
    assert _moto_threads() == []
    server = EmbeddedAws().start()
    port = server.port
    assert server.endpoint.endpoint_url == f"http://127.0.0.1:{port}"
    asyncio.run(provision(server.endpoint, NAMES))
    assert len(_moto_threads()) == 1
    server.stop()
    server.stop()  # a second stop is harmless

    assert _moto_threads() == []
    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", port)) != 0  # refused: nobody listens any more
    with pytest.raises(RuntimeError, match="not running"):
        _ = server.endpoint

    with EmbeddedAws() as fresh, pytest.raises(ResourceMissingError):
        asyncio.run(resolve(fresh.endpoint, NAMES))


def test_starting_on_a_port_already_taken_raises_instead_of_hanging(aws: EmbeddedAws) -> None:
    with pytest.raises(OSError, match="in use"):
        EmbeddedAws(port=aws.port).start()
    assert len(_moto_threads()) == 1


def test_the_server_prints_and_logs_nothing_per_request(
    aws: EmbeddedAws, capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    asyncio.run(provision(aws.endpoint, NAMES))
    out, err = capfd.readouterr()
    assert (out, err) == ("", "")
    assert [r for r in caplog.records if r.name == "werkzeug"] == []


def test_queue_counts_follow_delays_receives_and_visibility_timeouts(aws: EmbeddedAws) -> None:
    """The queue's counts and the messages' timers through the emulator's faster clock (`_speed_up_moto_sqs`)."""

    async def scenario() -> None:
        resources = await provision(aws.endpoint, NAMES)
        url = resources.reports.url
        async with clients(aws.endpoint) as (sqs, _, _, _):

            async def counts() -> tuple[int, int, int]:
                """Visible, in flight, delayed."""
                got = await sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])
                attributes = got["Attributes"]
                return (
                    int(attributes["ApproximateNumberOfMessages"]),
                    int(attributes["ApproximateNumberOfMessagesNotVisible"]),
                    int(attributes["ApproximateNumberOfMessagesDelayed"]),
                )

            await sqs.send_message(QueueUrl=url, MessageBody="a")
            await sqs.send_message(QueueUrl=url, MessageBody="b")
            await sqs.send_message(QueueUrl=url, MessageBody="late", DelaySeconds=2)
            assert await counts() == (2, 0, 1)
            got = await sqs.receive_message(
                QueueUrl=url, MaxNumberOfMessages=1, VisibilityTimeout=1, AttributeNames=["SentTimestamp"]
            )
            [taken] = got["Messages"]
            assert int(taken["Attributes"]["SentTimestamp"]) == pytest.approx(time.time() * 1000, abs=5_000)
            assert await counts() == (1, 1, 1)
            await asyncio.sleep(2.2)  # the visibility timeout and the delay both run out
            assert await counts() == (3, 0, 0)
            again = await sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=0)
            assert sorted(m["Body"] for m in again["Messages"]) == ["a", "b", "late"]

    asyncio.run(scenario())


def test_the_emulators_attribute_names_and_clock_agree_with_motos_own() -> None:
    import moto.sqs.models
    from moto.core.utils import camelcase_to_underscores, unix_time, unix_time_millis

    from jwo.aws_resources import _speed_up_moto_sqs

    _speed_up_moto_sqs()
    names = vars(moto.sqs.models)
    for attribute in [*moto.sqs.models.Queue.BASE_ATTRIBUTES, *moto.sqs.models.Queue.FIFO_ATTRIBUTES, "", "aB"]:
        assert names["camelcase_to_underscores"](attribute) == camelcase_to_underscores(attribute)
    assert names["unix_time"]() == pytest.approx(unix_time(), abs=0.05)
    assert names["unix_time_millis"]() == pytest.approx(unix_time_millis(), abs=50)
    moment = datetime(2026, 12, 4, 4, 30, 1, 250_000)
    assert names["unix_time_millis"](moment) == unix_time_millis(moment)
    assert names["unix_time"](moment) == unix_time(moment)
