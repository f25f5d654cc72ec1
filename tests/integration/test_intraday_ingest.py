"""Intra-Day reports into a real lake: any order, any duplicates, restarts → the answer key; and the whole
notification path through the embedded S3 → SNS → SQS."""

from __future__ import annotations

import asyncio
import csv
import gzip
import hashlib
import io
import itertools
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

from aiobotocore.session import get_session
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from contracts.tables import INTRADAY_ORDER_LINES
from ingest.adapters.s3_reports import S3Reports
from ingest.adapters.sqs_receiver import SqsReceiver
from ingest.fakes import MemoryReportStore
from ingest.intraday import ReportObject
from ingest.reports import ReportApplier, ReportConsumer
from ingest.settings import IngestSettings
from jwo.aws_resources import EmbeddedAws, ResourceNames, provision
from jwo.intraday import MergingSink, applied_files, build_applier
from jwo.runtime import LakeSink
from simulator.intraday import IntradayConfig, IntradayDay, build_day, publish_day
from warehouse.lake import LakeWriter
from warehouse.query import run_query

DAY = build_day(
    IntradayConfig(
        seed=3, files=6, orders_per_step=3, late_orders=2, moved_orders=3, malformed_rows=3, gzip_share=0.5, stores=2
    )
)
FOUR = Decimal("0.0001")
COLUMNS = ", ".join(INTRADAY_ORDER_LINES.column_names)


def expected_table(day: IntradayDay) -> list[tuple[object, ...]]:
    return sorted(tuple(row[c] for c in INTRADAY_ORDER_LINES.column_names) for row in day.expected_lines)


def table_digest(rows: list[tuple[object, ...]]) -> str:
    """Sorted rows hashed, decimals at the table's four places (3.49 and 3.4900 are the same amount)."""
    normal = sorted(tuple(_canonical(v) for v in row) for row in rows)
    return hashlib.sha256(repr(normal).encode()).hexdigest()


def _canonical(value: object) -> str:
    if isinstance(value, Decimal):
        return str(value.quantize(FOUR))
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat()
    return repr(value)


def the_table(lake: Path) -> list[tuple[object, ...]]:
    return run_query(lake, f"select {COLUMNS} from intraday_order_lines").rows


def counts(lake: Path) -> tuple[object, ...]:
    sql = "select (select count(*) from quarantine), (select count(*) from intraday_files)"
    [row] = run_query(lake, sql).rows
    return row


def test_the_answer_key_has_status_changes_late_orders_and_malformed_rows() -> None:
    statuses = {row["payment_status"] for row in DAY.expected_lines}
    assert statuses == {"pending", "settled"} or statuses == {"settled"}
    assert any(row["order_time"] < DAY.files[0].published_at.replace(hour=0) for row in DAY.expected_lines)  # type: ignore[operator]
    assert sum(f.malformed for f in DAY.files) == DAY.expected_quarantined == 3
    assert len(DAY.deliveries) > len(DAY.files)
    assert moved_keys(DAY)  # some keys change their hour of order_time between versions


def moved_keys(day: IntradayDay) -> set[tuple[str, str]]:
    """The keys whose versions, over the day's files, fall in more than one (day, hour) of `order_time`."""
    hours: dict[tuple[str, str], set[str]] = {}
    for file in day.files:
        content = gzip.decompress(file.content) if file.content[:2] == b"\x1f\x8b" else file.content
        for row in csv.DictReader(io.StringIO(content.decode("utf-8-sig"), newline="")):
            if row["shopping_trip_id"] and len(row["order_time"]) >= 13:
                hours.setdefault((row["shopping_trip_id"], row["line_item_id"]), set()).add(row["order_time"][:13])
    return {key for key, seen in hours.items() if len(seen) > 1}


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    order=st.permutations(range(len(DAY.files))),
    duplicates=st.lists(st.tuples(st.integers(0, len(DAY.files) - 1), st.integers(0, 20)), max_size=6),
    restart_at=st.integers(0, 20),
)
def test_any_order_with_any_duplicates_and_a_restart_gives_the_answer_key(
    order: list[int], duplicates: list[tuple[int, int]], restart_at: int
) -> None:
    deliveries = list(order)
    for index, position in duplicates:
        deliveries.insert(min(position, len(deliveries)), index)
    store = MemoryReportStore()
    etags = [store.put("b", f.key, f.content) for f in DAY.files]
    with tempfile.TemporaryDirectory() as tmp:
        lake = Path(tmp)
        sink = MergingSink(LakeSink(LakeWriter(lake), None), lake)  # lines merged on write, as jwo wires it

        def fresh() -> ReportApplier:  # a restarted process reads the ledger back from the lake
            return ReportApplier(sink, time_now, columns=IngestSettings().intraday.columns, applied=applied_files(lake))

        async def play() -> None:
            applier = fresh()
            for n, index in enumerate(deliveries):
                if n == restart_at:
                    applier = fresh()
                file = DAY.files[index]
                obj = ReportObject("b", file.key, etags[index], len(file.content), file.published_at)
                await applier.apply_object(store, obj)

        asyncio.run(play())
        got = the_table(lake)
        assert table_digest(got) == table_digest(expected_for_bucket("b"))
        assert counts(lake) == (DAY.expected_quarantined, len(DAY.files))


def expected_for_bucket(bucket: str) -> list[tuple[object, ...]]:
    rows = []
    for row in DAY.expected_lines:
        fixed = {**row, "source_key": str(row["source_key"]).replace(f"s3://{DAY.config.bucket}/", f"s3://{bucket}/")}
        rows.append(tuple(fixed[c] for c in INTRADAY_ORDER_LINES.column_names))
    return sorted(rows)


def time_now() -> datetime:
    return datetime.now(UTC)


async def until(done: Callable[[], bool], within: float) -> None:
    deadline = time.perf_counter() + within
    for _ in itertools.count():
        if done():
            return
        assert time.perf_counter() < deadline, "not within the time allowed"
        await asyncio.sleep(0.05)


NAMES = ResourceNames(visibility_timeout_seconds=2, receive_wait_seconds=0)


def test_one_file_goes_from_notification_to_queryable_within_5_seconds(aws: EmbeddedAws, tmp_path: Path) -> None:
    day = build_day(IntradayConfig(files=1, orders_per_step=5, late_orders=0, malformed_rows=1, duplicate_share=1.0))
    lake = tmp_path / "lake"

    async def scenario() -> float:
        resources = await provision(aws.endpoint, NAMES)
        session = get_session()
        kwargs = aws.endpoint.client_kwargs()
        async with session.create_client("sqs", **kwargs) as sqs, session.create_client("s3", **kwargs) as s3:
            applier = build_applier(IngestSettings(), lake, LakeSink(LakeWriter(lake), None))
            consumer = ReportConsumer(
                resources.reports.name, SqsReceiver(sqs, resources.reports.url), S3Reports(s3), applier, wait_seconds=1
            )
            stop = asyncio.Event()
            task = asyncio.create_task(consumer.run(stop))
            started = time.perf_counter()
            await publish_day(aws.endpoint, resources.reports_bucket, resources.reports_topic_arn, day)
            try:
                await until(lambda: counts(lake) == (1, 1), within=5)
                elapsed = time.perf_counter() - started
                await until(lambda: consumer.stats.files_skipped >= 1, within=5)  # the duplicate is skipped
            finally:
                stop.set()
                await asyncio.wait_for(task, 10)
            return elapsed

    elapsed = asyncio.run(scenario())

    assert elapsed < 5
    assert table_digest(the_table(lake)) == table_digest(expected_table(day))
    assert len(list((lake / "_landing").iterdir())) == 1
