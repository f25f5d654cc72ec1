"""Long-polls a queue, lands messages in micro-batches, deletes only what is durably written.

The same loop serves every queue; what a body means is the `decode` function it is given
(`ingest.decode.rows_for_message` for the events queue, `ingest.eventfeed.rows_for_event` for the Event Feed).

Several receives are in flight at once; a batch is written when it is full or has waited long
enough. A message that fails is left on the queue: it comes back after its visibility timeout and
the queue's redrive policy moves it to the dead-letter queue after 5 receives.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from ingest.decode import PoisonMessageError, rows_for_message
from ingest.ports import Decode, QueueReceiver, Received, Rows, RowsRejectedError, TableSink

log = logging.getLogger("jwo.ingest.consumer")


@dataclass
class ConsumerStats:
    received: int = 0
    consumed: int = 0
    duplicates: int = 0
    poison: int = 0
    batches: int = 0
    write_failures: int = 0
    last_batch_seconds: float = 0.0
    oldest_age_seconds: float = 0.0


def batch_id_for(ids: list[str]) -> str:
    """Deterministic file name part: the same set of messages always lands under the same name."""
    digest = hashlib.sha256("\n".join(sorted(ids)).encode()).hexdigest()
    return digest[:32]


class Consumer:
    def __init__(
        self,
        source: str,
        receiver: QueueReceiver,
        sink: TableSink,
        clock: Callable[[], datetime],
        *,
        decode: Decode = rows_for_message,
        receivers: int = 4,
        batch_max: int = 1000,
        linger_seconds: float = 0.5,
        wait_seconds: int = 1,
        visibility_extension: int = 60,
    ) -> None:
        self.source = source
        self._receiver = receiver
        self._sink = sink
        self._clock = clock
        self._decode = decode
        self._receivers = receivers
        self._batch_max = batch_max
        self._linger = linger_seconds
        self._wait = wait_seconds
        self._extension = visibility_extension
        self.stats = ConsumerStats()

    def decode_batch(self, messages: list[Received]) -> tuple[Rows, list[str], list[Received]]:
        """Rows of the batch (de-duplicated by message id), their ids, and the messages that were fine."""
        now = self._clock()
        rows: Rows = {}
        seen: set[str] = set()
        good: list[Received] = []
        for message in messages:
            try:
                dedup_id, message_rows = self._decode(self.source, message.message_id, message.body, now)
            except PoisonMessageError as exc:
                self.stats.poison += 1
                log.error("poison message %s (receive %d): %s", message.message_id, message.receive_count, exc)
                continue
            good.append(message)
            if dedup_id in seen:
                self.stats.duplicates += 1
                continue
            seen.add(dedup_id)
            for table, table_rows in message_rows.items():
                rows.setdefault(table, []).extend(table_rows)
        return rows, sorted(seen), good

    async def process(self, messages: list[Received]) -> int:
        """Write one batch and delete what was written; returns how many messages were consumed."""
        if not messages:
            return 0
        started = time.perf_counter()
        rows, ids, good = self.decode_batch(messages)
        if ids:
            heartbeat = asyncio.create_task(self._keep_invisible(messages))
            try:
                await asyncio.to_thread(self._sink.write, rows, batch_id_for(ids))
            except RowsRejectedError as exc:
                if len(good) == 1:
                    self.stats.poison += 1
                    log.error("message %s: the warehouse rejects its rows: %s", good[0].message_id, exc)
                    return 0
                # One message's rows can never be written: land the others one by one, so only it is retried.
                log.warning("batch of %d rejected (%s); writing its messages one at a time", len(good), exc)
                return sum([await self.process([message]) for message in good])
            except Exception:
                self.stats.write_failures += 1
                log.exception("batch write failed; %d messages stay on the queue", len(messages))
                return 0
            finally:
                heartbeat.cancel()
        try:
            await self._receiver.delete(good)
        except Exception:
            # Landed but still on the queue: they come back and land again under the same keys.
            log.exception("deleting %d landed messages failed; they will be redelivered", len(good))
        elapsed = time.perf_counter() - started
        now = self._clock()
        ages = [(now - m.sent_at).total_seconds() for m in messages if m.sent_at is not None]
        self.stats.consumed += len(good)
        self.stats.batches += 1
        self.stats.last_batch_seconds = elapsed
        self.stats.oldest_age_seconds = max(ages, default=0.0)
        log.info(
            "batch",
            extra={
                "source": self.source,
                "messages": len(messages),
                "consumed": len(good),
                "rows": {t: len(r) for t, r in rows.items()},
                "write_ms": round(elapsed * 1000, 2),
            },
        )
        return len(good)

    async def _keep_invisible(self, messages: list[Received]) -> None:
        """Extend the visibility of a batch whose write takes long, so no other consumer takes it."""
        while True:
            await asyncio.sleep(self._extension / 2)
            try:
                await self._receiver.extend(messages, self._extension)
            except Exception as exc:
                log.warning("visibility extension failed: %s", exc)

    async def run(self, stop: asyncio.Event) -> None:
        buffer: list[Received] = []
        lock = asyncio.Lock()
        flushed = asyncio.Event()
        filled = asyncio.Event()

        async def poll() -> None:
            while not stop.is_set():
                try:
                    got = await self._receiver.receive(10, self._wait)
                except Exception as exc:
                    log.warning("receive from %s failed: %s", self.source, exc)
                    await asyncio.sleep(1.0)
                    continue
                self.stats.received += len(got)
                async with lock:
                    buffer.extend(got)
                    full = len(buffer) >= self._batch_max
                if full:
                    flushed.clear()
                    filled.set()
                    await flushed.wait()

        pollers = [asyncio.create_task(poll()) for _ in range(self._receivers)]
        try:
            while not stop.is_set() or buffer:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(filled.wait(), self._linger)
                filled.clear()
                async with lock:
                    batch, buffer[:] = buffer[:], []
                flushed.set()
                await self.process(batch)
                if stop.is_set():
                    break
        finally:
            for task in pollers:
                task.cancel()
            await asyncio.gather(*pollers, return_exceptions=True)
            async with lock:
                leftover, buffer[:] = buffer[:], []
            await self.process(leftover)
