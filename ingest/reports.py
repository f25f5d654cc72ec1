"""The reports queue: S3 notifications of Intra-Day report files → each file version applied exactly once.

For each message: read the SNS-wrapped S3 notification (`ingest.intraday.parse_notification`), and for each
file it announces, unless the ledger says that (bucket, key, ETag) was applied already: read the object from
the `ReportStore`, parse it, keep its raw bytes (`RawLanding`), and publish its `intraday_order_lines` rows,
its `quarantine` rows and its `intraday_files` ledger row through the `TableSink` as one batch whose id
derives from (bucket, key, ETag), ledger row last. The lines go as `ArrowRows`: the lake writes the parsed
Arrow table as it is; any other sink sees row dicts. Then the message is deleted.

Exactly once: a duplicate notification or a re-run finds the file in the ledger and does nothing; a crash
mid-apply leaves no ledger row, so the file is applied again on redelivery under the same batch id, which
rewrites the same Parquet files rather than adding rows (and the views keep one row per key anyway). A file
re-published under the same key has a new ETag and is applied again. A message whose file cannot be read or
written is not deleted: the queue redelivers it and dead-letters it after its receives.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from ingest.intraday import (
    FileId,
    NotificationError,
    ParsedReport,
    ReportObject,
    parse_notification,
    parse_report,
)
from ingest.ports import ObjectSupersededError, QueueReceiver, RawLanding, Received, ReportStore, TableSink

log = logging.getLogger("jwo.ingest.reports")

LINES_TABLE = "intraday_order_lines"
QUARANTINE_TABLE = "quarantine"
LEDGER_TABLE = "intraday_files"


@dataclass
class IntradayStats:
    files_applied: int = 0
    files_skipped: int = 0
    """Already applied (a duplicate notification or a re-run)."""
    files_superseded: int = 0
    rows_in: int = 0
    rows_upserted: int = 0
    rows_quarantined: int = 0
    failures: int = 0
    poison: int = 0


@dataclass(frozen=True)
class FileOutcome:
    file: FileId
    applied: bool
    rows_in: int = 0
    rows_upserted: int = 0
    rows_quarantined: int = 0


def file_rows(
    parsed: ParsedReport, file: FileId, published_at: datetime, applied_at: datetime, content_sha256: str
) -> Mapping[str, Sequence[Mapping[str, object]]]:
    """The batch of one file: its lines, its quarantined rows, and its ledger row (last, so a ledger row
    that exists means everything before it was published)."""
    ledger: dict[str, object] = {
        "bucket": file.bucket,
        "key": file.key,
        "etag": file.etag,
        "published_at": published_at,
        "rows": parsed.rows_in,
        "quarantined": len(parsed.quarantine),
        "content_sha256": content_sha256,
        "applied_at": applied_at,
    }
    return {LINES_TABLE: parsed.arrow_rows, QUARANTINE_TABLE: parsed.quarantine, LEDGER_TABLE: [ledger]}


class ReportApplier:
    """Applies report files exactly once per (bucket, key, ETag), given the files applied before it started."""

    def __init__(
        self,
        sink: TableSink,
        clock: Callable[[], datetime],
        *,
        columns: Mapping[str, str],
        applied: Iterable[FileId] = (),
        landing: RawLanding | None = None,
    ) -> None:
        self._sink = sink
        self._clock = clock
        self._columns = dict(columns)
        self._applied = set(applied)
        self._landing = landing
        self._lock = threading.Lock()
        self._in_flight: dict[FileId, asyncio.Task[FileOutcome]] = {}
        self.stats = IntradayStats()

    def is_applied(self, file: FileId) -> bool:
        with self._lock:
            return file in self._applied

    def apply_bytes(self, file: FileId, content: bytes, published_at: datetime) -> FileOutcome:
        """Apply one file version (blocking); a version applied before is skipped. Raises ReportFileError
        when the file cannot be read, and whatever the sink raises when it cannot be written."""
        if self.is_applied(file):
            self.stats.files_skipped += 1
            return FileOutcome(file, applied=False)
        applied_at = self._clock()
        parsed = parse_report(content, file, published_at, applied_at, self._columns)
        sha = hashlib.sha256(content).hexdigest()
        if self._landing is not None:
            self._landing.keep(content, sha)
        self._sink.write(file_rows(parsed, file, published_at, applied_at, sha), file.batch_id())
        with self._lock:
            self._applied.add(file)
        outcome = FileOutcome(file, True, parsed.rows_in, parsed.table.num_rows, len(parsed.quarantine))
        self.stats.files_applied += 1
        self.stats.rows_in += outcome.rows_in
        self.stats.rows_upserted += outcome.rows_upserted
        self.stats.rows_quarantined += outcome.rows_quarantined
        log.info(
            "report file applied",
            extra={
                "source_key": file.source_key,
                "etag": file.etag,
                "rows": outcome.rows_in,
                "upserted": outcome.rows_upserted,
                "quarantined": outcome.rows_quarantined,
            },
        )
        return outcome

    async def apply_object(self, store: ReportStore, obj: ReportObject) -> FileOutcome:
        """Read the announced object from the store and apply it; concurrent calls for one file share one apply."""
        file = FileId(obj.bucket, obj.key, obj.etag)
        if obj.etag and self.is_applied(file):
            self.stats.files_skipped += 1
            return FileOutcome(file, applied=False)
        running = self._in_flight.get(file)
        if running is not None:
            await asyncio.shield(running)
            self.stats.files_skipped += 1
            return FileOutcome(file, applied=False)
        task = asyncio.ensure_future(self._fetch_and_apply(store, obj))
        self._in_flight[file] = task
        try:
            return await asyncio.shield(task)
        finally:
            if task.done():
                self._in_flight.pop(file, None)
            else:
                task.add_done_callback(lambda _: self._in_flight.pop(file, None))

    async def _fetch_and_apply(self, store: ReportStore, obj: ReportObject) -> FileOutcome:
        try:
            stored = await store.get(obj.bucket, obj.key, obj.etag or None)
        except ObjectSupersededError:
            # The key holds a newer version now; its own notification applies it. This version's content
            # is gone from S3, so there is nothing left to apply.
            self.stats.files_superseded += 1
            log.warning("report file superseded before it was read", extra={"bucket": obj.bucket, "key": obj.key})
            return FileOutcome(FileId(obj.bucket, obj.key, obj.etag), applied=False)
        file = FileId(obj.bucket, obj.key, obj.etag or stored.etag)
        published_at = obj.event_time or stored.last_modified or self._clock()
        return await asyncio.to_thread(self.apply_bytes, file, stored.content, published_at)


class ReportConsumer:
    """Long-polls the reports queue; deletes a message only when every file it announces is applied."""

    def __init__(
        self,
        source: str,
        receiver: QueueReceiver,
        store: ReportStore,
        applier: ReportApplier,
        *,
        wait_seconds: int = 1,
        visibility_extension: int = 60,
    ) -> None:
        self.source = source
        self._receiver = receiver
        self._store = store
        self.applier = applier
        self._wait = wait_seconds
        self._extension = visibility_extension

    @property
    def stats(self) -> IntradayStats:
        return self.applier.stats

    async def process(self, message: Received) -> bool:
        """Apply the message's files, then delete it; False when it stays on the queue (to be retried)."""
        try:
            objects = parse_notification(message.body)
        except NotificationError as exc:
            self.stats.poison += 1
            log.error("reports message %s (receive %d): %s", message.message_id, message.receive_count, exc)
            return False
        heartbeat = asyncio.create_task(self._keep_invisible(message))
        try:
            for obj in objects:
                await self.applier.apply_object(self._store, obj)
        except Exception:
            self.stats.failures += 1
            log.exception(
                "report file not applied; the message stays on the queue",
                extra={"message_id": message.message_id, "receive_count": message.receive_count},
            )
            return False
        finally:
            heartbeat.cancel()
        try:
            await self._receiver.delete([message])
        except Exception:
            log.exception("deleting reports message %s failed; its redelivery is skipped", message.message_id)
        return True

    async def _keep_invisible(self, message: Received) -> None:
        while True:
            await asyncio.sleep(self._extension / 2)
            try:
                await self._receiver.extend([message], self._extension)
            except Exception as exc:
                log.warning("visibility extension failed: %s", exc)

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                got = await self._receiver.receive(10, self._wait)
            except Exception as exc:
                log.warning("receive from %s failed: %s", self.source, exc)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), 1.0)
                continue
            if got:
                await asyncio.gather(*(self.process(m) for m in got))


def utc_from_timestamp(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)
