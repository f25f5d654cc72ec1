"""The reports-queue path with fakes: each file version applied exactly once, retried when unreadable."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

from ingest.fakes import FakeSqsQueue, MemoryLanding, MemoryReportStore, RecordingSink
from ingest.intraday import FileId
from ingest.reports import ReportApplier, ReportConsumer
from ingest.settings import IntradaySettings
from simulator.intraday import s3_event, sns_envelope

FIXTURES = Path(__file__).resolve().parents[1] / "events" / "intraday"
AT = datetime(2026, 11, 20, 12, 15, tzinfo=UTC)
BUCKET = "amazon-jwo-reports"


def notification(key: str, etag: str, minute: int = 15) -> str:
    return sns_envelope("arn:topic", f"m-{key}-{etag}", s3_event(BUCKET, key, etag, 10, AT.replace(minute=minute)))


def setup(
    applied: tuple[FileId, ...] = (),
) -> tuple[FakeSqsQueue, MemoryReportStore, RecordingSink, ReportConsumer, MemoryLanding]:
    queue, store, sink, landing = (
        FakeSqsQueue(max_receive_count=5),
        MemoryReportStore(),
        RecordingSink(),
        MemoryLanding(),
    )
    applier = ReportApplier(sink, lambda: AT, columns=IntradaySettings().columns, applied=applied, landing=landing)
    return queue, store, sink, ReportConsumer("reports", queue, store, applier), landing


async def drain(queue: FakeSqsQueue, consumer: ReportConsumer, rounds: int = 10) -> None:
    for _ in range(rounds):
        for message in await queue.receive(10, 0):
            await consumer.process(message)
        queue.expire_visibility()


def test_duplicate_notifications_apply_a_file_once_in_one_batch_with_its_ledger_row_last() -> None:
    queue, store, sink, consumer, landing = setup()
    etag = store.put(BUCKET, "r1.csv", (FIXTURES / "bad_number.csv").read_bytes())
    for _ in range(3):
        queue.send(notification("r1.csv", etag))

    asyncio.run(drain(queue, consumer))

    assert queue.depth == 0
    [(rows, batch_id)] = sink.writes
    assert batch_id == FileId(BUCKET, "r1.csv", etag).batch_id()
    assert list(rows) == ["intraday_order_lines", "quarantine", "intraday_files"]
    assert len(rows["intraday_order_lines"]) == 2
    assert len(rows["quarantine"]) == 1
    [ledger] = rows["intraday_files"]
    assert (ledger["bucket"], ledger["key"], ledger["etag"], ledger["rows"], ledger["quarantined"]) == (
        BUCKET, "r1.csv", etag, 3, 1
    )  # fmt: skip
    assert ledger["published_at"] == AT
    assert list(landing.files) == [ledger["content_sha256"]]
    stats = consumer.stats
    assert (stats.files_applied, stats.files_skipped, stats.rows_in, stats.rows_upserted, stats.rows_quarantined) == (
        1, 2, 3, 2, 1
    )  # fmt: skip


def test_a_file_already_in_the_ledger_is_not_even_downloaded() -> None:
    queue, store, sink, consumer, _ = setup()
    etag = store.put(BUCKET, "r1.csv", (FIXTURES / "crlf.csv").read_bytes())
    queue, store, sink, consumer, _ = setup(applied=(FileId(BUCKET, "r1.csv", etag),))
    store.put(BUCKET, "r1.csv", (FIXTURES / "crlf.csv").read_bytes())
    queue.send(notification("r1.csv", etag))

    asyncio.run(drain(queue, consumer))

    assert (sink.writes, store.gets, queue.depth) == ([], 0, 0)


def test_a_file_republished_under_the_same_key_with_new_content_is_applied_again() -> None:
    queue, store, sink, consumer, _ = setup()
    first = store.put(BUCKET, "r1.csv", (FIXTURES / "crlf.csv").read_bytes())
    queue.send(notification("r1.csv", first))
    asyncio.run(drain(queue, consumer))
    second = store.put(BUCKET, "r1.csv", (FIXTURES / "quoted.csv").read_bytes())
    queue.send(notification("r1.csv", second, minute=30))
    queue.send(notification("r1.csv", first))  # a late duplicate of the old version

    asyncio.run(drain(queue, consumer))

    assert [batch for _, batch in sink.writes] == [
        FileId(BUCKET, "r1.csv", first).batch_id(),
        FileId(BUCKET, "r1.csv", second).batch_id(),
    ]
    assert queue.depth == 0


def test_an_unreadable_file_is_retried_then_dead_lettered_never_skipped() -> None:
    queue, store, sink, consumer, _ = setup()
    etag = store.put(BUCKET, "broken.csv.gz", b"\x1f\x8bnot gzip at all")
    queue.send(notification("broken.csv.gz", etag))
    queue.send("not a notification")

    asyncio.run(drain(queue, consumer))

    assert sink.writes == []
    assert len(queue.dead_letters) == 2
    assert consumer.stats.failures == 5
    assert consumer.stats.poison == 5


def test_a_transient_s3_failure_leaves_the_message_for_a_retry_that_applies_it() -> None:
    queue, store, sink, consumer, _ = setup()
    etag = store.put(BUCKET, "r1.csv", (FIXTURES / "crlf.csv").read_bytes())
    store.fail_gets = 2
    queue.send(notification("r1.csv", etag))

    asyncio.run(drain(queue, consumer))

    assert len(sink.writes) == 1
    assert queue.depth == 0
    assert queue.dead_letters == []
