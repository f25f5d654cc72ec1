"""In-memory fakes for ingest's ports: a queue with SQS semantics and a recording table sink.

`FakeSqsQueue` behaves like one standard SQS queue as the consumer sees it:
- `receive` returns at most 10 visible messages, long-polls up to `wait_seconds`, hides what it returns
  for the visibility timeout, counts receives and hands out a fresh receipt handle on every receive;
- `delete` removes a message only with its current receipt handle (an older handle, from before a
  redelivery, deletes nothing and is recorded in `stale_deletes`);
- `extend` changes the visibility of in-flight messages (ChangeMessageVisibility);
- a message that is not deleted becomes visible again once its visibility timeout has passed;
- with `max_receive_count`, a message received that many times and still not deleted moves to
  `dead_letters` at its next receive attempt (a redrive policy, as SQS and moto do it).
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from ingest.ports import ObjectSupersededError, Received, RowsRejectedError, StoredObject


@dataclass
class _Stored:
    message_id: str
    body: str
    sent_at: datetime
    receive_count: int = 0
    visible_at: float = 0.0
    receipt: str | None = None


class FakeSqsQueue:
    def __init__(
        self,
        *,
        visibility_timeout: float = 30.0,
        max_receive_count: int | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.visibility_timeout = visibility_timeout
        self.max_receive_count = max_receive_count
        self._clock = clock
        self._messages: dict[str, _Stored] = {}
        self._receipts = itertools.count(1)
        self.dead_letters: list[str] = []
        """Bodies moved to the dead-letter queue, in the order they were moved."""
        self.deleted: list[str] = []
        """Message ids deleted, in order."""
        self.stale_deletes: list[str] = []
        self.receive_calls = 0
        self.fail_deletes = 0
        """The next this-many `delete` calls raise (a transient SQS error), deleting nothing."""

    # -- what a producer and a test see ----------------------------------------------------------------

    def send(self, body: str) -> str:
        message_id = str(uuid.uuid4())
        self._messages[message_id] = _Stored(message_id, body, datetime.now(UTC), visible_at=self._clock())
        return message_id

    @property
    def depth(self) -> int:
        """Messages on the queue, visible or in flight (not counting dead letters)."""
        return len(self._messages)

    def in_flight(self) -> int:
        now = self._clock()
        return sum(1 for m in self._messages.values() if m.visible_at > now)

    def expire_visibility(self) -> None:
        """Make every in-flight message visible now, as if its visibility timeout had passed."""
        now = self._clock()
        for stored in self._messages.values():
            stored.visible_at = min(stored.visible_at, now)

    # -- QueueReceiver ----------------------------------------------------------------------------------

    async def receive(self, max_messages: int, wait_seconds: int) -> list[Received]:
        self.receive_calls += 1
        deadline = self._clock() + wait_seconds
        while True:
            got = self._take(min(max_messages, 10))
            if got or self._clock() >= deadline:
                await asyncio.sleep(0)  # a real receive always yields to the loop
                return got
            await asyncio.sleep(0.005)

    def _take(self, limit: int) -> list[Received]:
        now = self._clock()
        out: list[Received] = []
        for stored in list(self._messages.values()):
            if len(out) == limit:
                break
            if stored.visible_at > now:
                continue
            if self.max_receive_count is not None and stored.receive_count >= self.max_receive_count:
                del self._messages[stored.message_id]
                self.dead_letters.append(stored.body)
                continue
            stored.receive_count += 1
            stored.visible_at = now + self.visibility_timeout
            stored.receipt = f"receipt-{next(self._receipts)}"
            out.append(Received(stored.message_id, stored.receipt, stored.body, stored.receive_count, stored.sent_at))
        return out

    async def delete(self, messages: Sequence[Received]) -> None:
        await asyncio.sleep(0)
        if self.fail_deletes:
            self.fail_deletes -= 1
            raise ConnectionError("fake SQS: DeleteMessageBatch failed")
        for message in messages:
            stored = self._messages.get(message.message_id)
            if stored is None or stored.receipt != message.receipt:
                self.stale_deletes.append(message.message_id)
                continue
            del self._messages[message.message_id]
            self.deleted.append(message.message_id)

    async def extend(self, messages: Sequence[Received], seconds: int) -> None:
        await asyncio.sleep(0)
        now = self._clock()
        for message in messages:
            stored = self._messages.get(message.message_id)
            if stored is not None and stored.receipt == message.receipt:
                stored.visible_at = now + seconds


class SinkWriteError(OSError):
    """What the fake sink raises when told to fail (a transient fault such as a full disk)."""


class RecordingSink:
    """A TableSink that keeps every successful write.

    `fail_writes` makes the next writes raise a transient error; `reject` names values that can never be
    written: a write holding one of them raises RowsRejectedError, as the real sink does for rows that do
    not fit their table.
    """

    def __init__(self) -> None:
        self.writes: list[tuple[dict[str, list[dict[str, object]]], str]] = []
        self.attempts = 0
        self.fail_writes = 0
        self.fail_with: type[Exception] = SinkWriteError
        self.on_write: Callable[[], None] | None = None
        self.reject: set[object] = set()

    def write(self, rows: Mapping[str, Sequence[Mapping[str, object]]], batch_id: str) -> None:
        self.attempts += 1
        if self.on_write is not None:
            self.on_write()
        if self.fail_writes:
            self.fail_writes -= 1
            raise self.fail_with("fake sink: write failed")
        bad = [v for table_rows in rows.values() for row in table_rows for v in row.values() if v in self.reject]
        if bad:
            raise RowsRejectedError(f"fake sink: {bad[0]!r} does not fit")
        self.writes.append(({table: [dict(r) for r in table_rows] for table, table_rows in rows.items()}, batch_id))

    def rows(self, table: str) -> list[dict[str, object]]:
        return [row for written, _ in self.writes for row in written.get(table, [])]


class MemoryReportStore:
    """A ReportStore holding objects in memory; `fail_gets` makes the next reads raise a transient error."""

    def __init__(self) -> None:
        self.objects: dict[tuple[str, str], StoredObject] = {}
        self.gets = 0
        self.fail_gets = 0

    def put(self, bucket: str, key: str, content: bytes, last_modified: datetime | None = None) -> str:
        etag = hashlib.md5(content, usedforsecurity=False).hexdigest()
        self.objects[(bucket, key)] = StoredObject(content, etag, last_modified)
        return etag

    async def get(self, bucket: str, key: str, etag: str | None = None) -> StoredObject:
        await asyncio.sleep(0)
        self.gets += 1
        if self.fail_gets:
            self.fail_gets -= 1
            raise ConnectionError("fake S3: GetObject failed")
        stored = self.objects.get((bucket, key))
        if stored is None:
            raise KeyError(f"fake S3: no object s3://{bucket}/{key}")
        if etag and stored.etag != etag:
            raise ObjectSupersededError(f"s3://{bucket}/{key} no longer has ETag {etag}")
        return stored

    async def list(self, bucket: str, prefix: str) -> list[str]:
        return sorted(k for b, k in self.objects if b == bucket and k.startswith(prefix))


class MemoryLanding:
    """A RawLanding keeping the bytes by their SHA-256."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}

    def keep(self, content: bytes, sha256: str) -> None:
        self.files[sha256] = content
