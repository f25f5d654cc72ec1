"""Wiring of the Intra-Day report ingest: the reports-queue consumer, `jwo ingest intraday`, the ledger, and
`jwo replay intraday`.

The ledger of applied files is the `intraday_files` table in the lake; a `ReportApplier` starts with what it
holds (read through `warehouse.query.run_query`, never the writer's DuckDB file).

`intraday_order_lines` is merged on write (`MergingSink`, `warehouse.merge`): after a file's lines and its ledger
row are published, the lines are merged into the de-duplicated segment file of each UTC hour (of `order_time`)
they touch, and every key is then in exactly one segment of the whole table: a reader takes the segments as they
are, and a file costs a rewrite of the hours it covers (about two), not of the whole day.

`replay_day` re-applies the files the ledger says were published on a UTC day, from their raw bytes in
`lake/_landing/`, into another lake, with the clock set to each file's recorded `applied_at`: the replayed
tables are the same files with the same bytes.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pyarrow as pa
from aiobotocore.session import get_session

from contracts.arrow_rows import ArrowRows
from contracts.aws import AwsEndpoint
from contracts.tables import INTRADAY_FILES, INTRADAY_ORDER_LINES, TABLES
from ingest.adapters.fs_landing import LandingDir
from ingest.adapters.s3_reports import S3Reports
from ingest.adapters.sqs_receiver import SqsReceiver
from ingest.intraday import FileId
from ingest.ports import StagingSink, TableSink
from ingest.reports import LEDGER_TABLE, LINES_TABLE, IntradayStats, ReportApplier, ReportConsumer
from ingest.settings import IngestSettings, IntradaySettings
from jwo.aws_resources import receive_config
from warehouse.lake import LakeWriter, partition_dir, published_name, split_by_day
from warehouse.merge import TableMerger
from warehouse.query import run_query

log = logging.getLogger("jwo.intraday")

LANDING_DIR = "_landing"


def utc_now() -> datetime:
    return datetime.now(UTC)


def applied_files(lake_dir: Path) -> set[FileId]:
    """Every file version the ledger says was applied."""
    result = run_query(lake_dir, "select bucket, key, etag from intraday_files", tables=[INTRADAY_FILES])
    return {FileId(str(b), str(k), str(e)) for b, k, e in result.rows}


class MergingSink:
    """A TableSink over the lake's sink that keeps `intraday_order_lines` merged on write (`warehouse.merge`).

    A report file's batch is published in two steps: its lines (a batch file per day of `order_time`) and
    quarantined rows, then its ledger row; the lines are merged into the table's segments meanwhile
    (`TableMerger.merge`, handed the rows so it need not read them back), which replaces a segment only once
    the lines are durable, and removes the batch files at the end. A crash before the ledger row leaves the file
    unapplied (it is applied again under the same batch id, rewriting the same files; merging its rows twice
    changes nothing); a crash after it leaves batch files the readers rank against the segments, merged by the
    next file or the next start (`build_applier`).
    """

    def __init__(self, sink: TableSink, lake_dir: Path, *, merge_each_file: bool = True) -> None:
        self._sink = sink
        self._lake_dir = lake_dir
        self._merge_each_file = merge_each_file
        self._merger = TableMerger(lake_dir, INTRADAY_ORDER_LINES)
        self._threads = ThreadPoolExecutor(2, thread_name_prefix="intraday-publish")

    def write(self, rows: Mapping[str, Sequence[Mapping[str, object]]], batch_id: str) -> None:
        ledger = rows.get(LEDGER_TABLE)
        batch = {name: table_rows for name, table_rows in rows.items() if name != LEDGER_TABLE}
        if not self._merge_each_file:
            self._sink.write(batch, batch_id)
            if ledger:
                self._sink.write({LEDGER_TABLE: ledger}, batch_id)
            return
        lines = batch.get(LINES_TABLE, ())
        held: dict[Path, pa.Table] = {}
        if isinstance(lines, ArrowRows):
            for day, frame in split_by_day(INTRADAY_ORDER_LINES, lines.table):
                held[partition_dir(self._lake_dir, INTRADAY_ORDER_LINES, day) / published_name(batch_id)] = frame
        # The ledger row's file is written (not published) meanwhile, when the sink can stage it: once the batch is
        # durable, publishing it is a rename.
        with self._staged(ledger) as ledger_rows:
            self._publish_and_merge(batch, ledger_rows, held, batch_id)

    def _staged(
        self, ledger: Sequence[Mapping[str, object]] | None
    ) -> contextlib.AbstractContextManager[Sequence[Mapping[str, object]] | None]:
        if ledger and isinstance(self._sink, StagingSink):
            return self._sink.stage(LEDGER_TABLE, ledger)
        return contextlib.nullcontext(ledger)

    def _publish_and_merge(
        self,
        batch: Mapping[str, Sequence[Mapping[str, object]]],
        ledger: Sequence[Mapping[str, object]] | None,
        held: dict[Path, pa.Table],
        batch_id: str,
    ) -> None:
        # The merge works out the new segments (and writes their temp files) while the batch is being published;
        # it replaces a segment only once `ready` has seen the batch durable and sent the ledger row on its way.
        published = self._threads.submit(self._sink.write, batch, batch_id)
        ledger_written: list[Future[None]] = []

        def ready() -> None:
            published.result()
            if ledger and not ledger_written:
                ledger_written.append(self._threads.submit(self._sink.write, {LEDGER_TABLE: ledger}, batch_id))

        try:
            self._merger.merge(held, ready=ready)
        finally:
            ready()
            for written in ledger_written:
                written.result()

    def merge(self) -> None:
        """Merge whatever batch files are waiting (left by a crash, or a backfill's)."""
        self._merger.merge()


def build_applier(
    ingest: IngestSettings, lake_dir: Path, sink: TableSink, *, merge_each_file: bool = True
) -> ReportApplier:
    """The applier over the lake's ledger, with lines merged on write; days a crash left unmerged merged first.

    A backfill of many files passes `merge_each_file=False` and calls `merge_table` once at the end: until
    then the view still de-duplicates the day's files, and a crash is merged by the next start."""
    landing = LandingDir(lake_dir / LANDING_DIR) if ingest.intraday.keep_raw_files else None
    merging = MergingSink(sink, lake_dir, merge_each_file=merge_each_file)
    merging.merge()
    return ReportApplier(
        merging,
        utc_now,
        columns=ingest.intraday.columns,
        applied=applied_files(lake_dir),
        landing=landing,
    )


async def run_reports_consumer(
    ingest: IngestSettings,
    lake_dir: Path,
    endpoint: AwsEndpoint,
    queue_name: str,
    queue_url: str,
    sink: TableSink,
    stop: asyncio.Event,
    started: Callable[[ReportConsumer], None] = lambda _: None,
) -> None:
    """The reports-queue consumer's whole life: run until `stop` is set."""
    config = receive_config(ingest.wait_seconds)
    session = get_session()
    kwargs = endpoint.client_kwargs()
    applier = await asyncio.to_thread(build_applier, ingest, lake_dir, sink)
    async with (
        session.create_client("sqs", config=config, **kwargs) as sqs,
        session.create_client("s3", config=config, **kwargs) as s3,
    ):
        consumer = ReportConsumer(
            queue_name,
            SqsReceiver(sqs, queue_url),
            S3Reports(s3),
            applier,
            wait_seconds=ingest.wait_seconds,
            visibility_extension=ingest.visibility_extension_seconds,
        )
        started(consumer)
        await consumer.run(stop)


# --------------------------------------------------------------------------- jwo ingest intraday


def local_files(paths: list[Path]) -> list[Path]:
    """The files named, and every `*.csv` / `*.csv.gz` under the folders named, sorted."""
    found: list[Path] = []
    for path in paths:
        if path.is_dir():
            found += sorted(p for p in path.rglob("*") if p.is_file() and p.name.endswith((".csv", ".csv.gz")))
        else:
            found.append(path)
    return found


def apply_local(applier: ReportApplier, path: Path) -> None:
    """Apply one local file; its identity is its absolute path and the SHA-256 of its content."""
    content = path.read_bytes()
    file = FileId("", str(path.resolve()), hashlib.sha256(content).hexdigest())
    published = datetime.fromtimestamp(path.stat().st_mtime, UTC)
    applier.apply_bytes(file, content, published)


async def ingest_sources(
    applier: ReportApplier,
    sources: list[str],
    endpoint: AwsEndpoint | None,
    progress: Callable[[int, int], None] = lambda done, total: None,
) -> IntradayStats:
    """Apply local files/folders and `s3://bucket/prefix` backfills, oldest key first; returns the counts."""
    s3_sources = [s for s in sources if s.startswith("s3://")]
    paths = local_files([Path(s) for s in sources if not s.startswith("s3://")])
    listed: list[tuple[str, str]] = []
    if s3_sources:
        if endpoint is None:
            raise ValueError("an s3:// source needs an AWS endpoint")
        async with get_session().create_client("s3", **endpoint.client_kwargs()) as s3:
            store = S3Reports(s3)
            for source in s3_sources:
                bucket, _, prefix = source.removeprefix("s3://").partition("/")
                listed += [(bucket, key) for key in await store.list(bucket, prefix)]
            total = len(paths) + len(listed)
            for done, (bucket, key) in enumerate(listed, start=1):
                stored = await store.get(bucket, key)
                file = FileId(bucket, key, stored.etag)
                await asyncio.to_thread(applier.apply_bytes, file, stored.content, stored.last_modified or utc_now())
                progress(done, total)
    total = len(paths) + len(listed)
    done = len(listed)
    for path in paths:
        await asyncio.to_thread(apply_local, applier, path)
        done += 1
        progress(done, total)
    return applier.stats


# --------------------------------------------------------------------------- jwo replay intraday


class ReplayError(RuntimeError):
    """The day cannot be replayed (a raw file missing from the landing zone, or the target is the source)."""


class _LakeTablesSink:
    """The plain lake TableSink (Parquet files only; `jwo.runtime.LakeSink` without the DuckDB views)."""

    def __init__(self, writer: LakeWriter) -> None:
        self._writer = writer

    def write(self, rows: Mapping[str, Sequence[Mapping[str, object]]], batch_id: str) -> None:
        self._writer.write_tables({TABLES[name]: batch for name, batch in rows.items() if batch}, batch_id)


class _LedgerClock:
    """The replay's clock: the `applied_at` the ledger recorded for the file being applied."""

    def __init__(self) -> None:
        self.at = datetime.fromtimestamp(0, UTC)

    def __call__(self) -> datetime:
        return self.at


def day_ledger(lake_dir: Path, day: date) -> list[tuple[FileId, datetime, str, datetime]]:
    """(file, published_at, content_sha256, applied_at) of every file published on the UTC day, in publication
    order (then application order)."""
    start = datetime.combine(day, datetime.min.time(), UTC)
    end = start + timedelta(days=1)
    sql = (
        "select bucket, key, etag, published_at, content_sha256, applied_at from intraday_files"
        f" where published_at >= '{start.isoformat()}'::timestamptz and published_at < '{end.isoformat()}'::timestamptz"
        " order by published_at, applied_at, bucket, key, etag"
    )
    rows = run_query(lake_dir, sql, tables=[INTRADAY_FILES]).rows
    found = []
    for bucket, key, etag, published_at, sha, applied_at in rows:
        assert isinstance(published_at, datetime)
        assert isinstance(applied_at, datetime)
        found.append((FileId(str(bucket), str(key), str(etag)), published_at, str(sha), applied_at))
    return found


def replay_day(
    lake_dir: Path,
    day: date,
    into: Path,
    *,
    columns: Mapping[str, str] | None = None,
    progress: Callable[[int, int], None] = lambda done, total: None,
) -> IntradayStats:
    """Re-apply the files published on the UTC `day` (per the ledger) from `lake_dir/_landing` into the lake `into`.

    Each file is applied as it was first applied: same (bucket, key, ETag), publication time and `applied_at`,
    in publication order, merged on write. Into a fresh lake this gives the original `intraday_order_lines`,
    `quarantine` and `intraday_files` files byte for byte when the original lake holds that day only (a later
    day's late rows land in the same partitions); replaying every day in turn into one lake gives the whole
    lake. Files already in `into`'s ledger are skipped, so an interrupted replay can be run again.
    Raises ReplayError when a raw file is missing or altered, or `into` is `lake_dir`.
    """
    if into.resolve() == lake_dir.resolve():
        raise ReplayError("replay into another folder than the lake itself")
    ledger = day_ledger(lake_dir, day)
    landing = LandingDir(lake_dir / LANDING_DIR)
    sources: list[tuple[FileId, datetime, Path, datetime]] = []
    for file, published_at, sha, applied_at in ledger:
        path = landing.find(sha)
        if path is None:
            raise ReplayError(f"{file.source_key} (sha256 {sha}) is not in {landing.directory}")
        sources.append((file, published_at, path, applied_at))
    into.mkdir(parents=True, exist_ok=True)
    clock = _LedgerClock()
    applier = ReportApplier(
        MergingSink(_LakeTablesSink(LakeWriter(into)), into),
        clock,
        columns=IntradaySettings().columns if columns is None else columns,
        applied=applied_files(into),
        landing=LandingDir(into / LANDING_DIR),
    )
    for done, (file, published_at, path, applied_at) in enumerate(sources, start=1):
        content = path.read_bytes()
        if hashlib.sha256(content).hexdigest() != path.name.split(".", 1)[0]:
            raise ReplayError(f"{path} does not hold the content its name says")
        clock.at = applied_at
        applier.apply_bytes(file, content, published_at)
        progress(done, len(sources))
    log.info("intraday day replayed", extra={"day": day.isoformat(), "files": len(sources), "into": str(into)})
    return applier.stats
