"""Wiring of the Intra-Day report ingest: the reports-queue consumer, `jwo ingest intraday` and the ledger.

The ledger of applied files is the `intraday_files` table in the lake; a `ReportApplier` starts with what it
holds (read through `warehouse.query.run_query`, never the writer's DuckDB file).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from aiobotocore.config import AioConfig
from aiobotocore.session import get_session

from contracts.aws import AwsEndpoint
from contracts.tables import INTRADAY_FILES
from ingest.adapters.fs_landing import LandingDir
from ingest.adapters.s3_reports import S3Reports
from ingest.adapters.sqs_receiver import SqsReceiver
from ingest.intraday import FileId
from ingest.ports import TableSink
from ingest.reports import IntradayStats, ReportApplier, ReportConsumer
from ingest.settings import IngestSettings
from warehouse.query import run_query

log = logging.getLogger("jwo.intraday")

LANDING_DIR = "_landing"


def utc_now() -> datetime:
    return datetime.now(UTC)


def applied_files(lake_dir: Path) -> set[FileId]:
    """Every file version the ledger says was applied."""
    result = run_query(lake_dir, "select bucket, key, etag from intraday_files", tables=[INTRADAY_FILES])
    return {FileId(str(b), str(k), str(e)) for b, k, e in result.rows}


def build_applier(ingest: IngestSettings, lake_dir: Path, sink: TableSink) -> ReportApplier:
    landing = LandingDir(lake_dir / LANDING_DIR) if ingest.intraday.keep_raw_files else None
    return ReportApplier(
        sink, utc_now, columns=ingest.intraday.columns, applied=applied_files(lake_dir), landing=landing
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
    config = AioConfig(
        connect_timeout=2, read_timeout=ingest.wait_seconds + 10, retries={"max_attempts": 3, "mode": "standard"}
    )
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
