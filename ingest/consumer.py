"""Long-polls a queue, lands messages in micro-batches, deletes only what is durably written.

The same loop serves every queue; what a batch of bodies means is the `decode` function it is given
(`ingest.decode.decode_batch` for the events queue, `ingest.eventfeed.decode_event_batch` for the Event Feed).

Several receives are in flight at once; a batch is written when it is full or has waited long
enough. A message that fails is left on the queue: it comes back after its visibility timeout and
the queue's redrive policy moves it to the dead-letter queue after 5 receives.

Every message the consumer holds (buffered or being written) is kept invisible: a third of the way into the
queue's visibility timeout, counted from the receive call that took it, its visibility is extended, and again
a third of the way into each extension, until it is deleted or given back.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import math
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Coroutine, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from itertools import repeat
from operator import attrgetter
from typing import Any

from ingest.decode import decode_batch
from ingest.ports import (
    DecodeBatch,
    PoisonMessageError,
    QueueReceiver,
    Received,
    RowsRejectedError,
    TableRows,
    TableSink,
)

log = logging.getLogger("jwo.ingest.consumer")
_RECEIPT = attrgetter("receipt")


@dataclass
class ConsumerStats:
    received: int = 0
    consumed: int = 0
    duplicates: int = 0
    poison: int = 0
    batches: int = 0
    write_failures: int = 0
    last_batch_seconds: float = 0.0
    last_decode_seconds: float = 0.0
    oldest_age_seconds: float = 0.0


def batch_id_for(ids: list[str]) -> str:
    """Deterministic file name part: the same set of messages always lands under the same name."""
    digest = hashlib.sha256("\n".join(sorted(ids)).encode()).hexdigest()
    return digest[:32]


class Heartbeat:
    """Keeps the messages a consumer holds invisible to other consumers until it lets them go.

    A message is due a third of the way into the queue's visibility timeout after the receive that took it;
    a due message's visibility is set to `extend_to` seconds from now (at least the timeout, so an extension
    never shortens it), and it is due again a third of the way into that.
    """

    def __init__(self, receiver: QueueReceiver, visibility_timeout: float, extension: int) -> None:
        self._receiver = receiver
        self._first = max(visibility_timeout, 0.0) / 3
        self.extend_to = max(extension, math.ceil(visibility_timeout), 1)
        self._held: dict[str, tuple[Received, float]] = {}
        """By receipt handle (a new one for every receive): the message and when it is next due."""
        self._changed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._wake_at = -math.inf
        """When the heartbeat next looks at what it holds (-inf while it is looking)."""
        self.extensions = 0
        """ChangeMessageVisibility calls made (each for every held message that was due)."""

    def hold(self, messages: Sequence[Received], received_at: float) -> None:
        """Hold messages received by a receive call that started at `received_at` (`time.monotonic()`);
        a message already held keeps its schedule."""
        due = received_at + self._first
        # setdefault for each message, looped in C (a Python loop cost ~0.5 us per message at 100k messages/s)
        deque(map(self._held.setdefault, map(_RECEIPT, messages), zip(messages, repeat(due))), maxlen=0)
        if messages and due < self._wake_at:  # sooner than the heartbeat means to look again
            self._changed.set()

    def release(self, messages: Sequence[Received]) -> None:
        deque(map(self._held.pop, map(_RECEIPT, messages), repeat(None)), maxlen=0)

    @contextlib.asynccontextmanager
    async def beating(self) -> AsyncIterator[None]:
        """Extend what is held while inside (nested uses share one task)."""
        if self._task is not None:
            yield
            return
        self._task = asyncio.create_task(self._run())
        try:
            yield
        finally:
            task, self._task = self._task, None
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def _run(self) -> None:
        while True:
            now = time.monotonic()
            due = [message for message, at in self._held.values() if at <= now]
            if due:
                await self._extend(due)
                continue
            self._changed.clear()
            self._wake_at = min((at for _, at in self._held.values()), default=math.inf)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), None if self._wake_at == math.inf else self._wake_at - now)
            self._wake_at = -math.inf  # awake: whatever is held now is seen on the next pass

    async def _extend(self, due: list[Received]) -> None:
        try:
            await self._receiver.extend(due, self.extend_to)
            self.extensions += 1
            again = self.extend_to / 3
        except Exception as exc:
            log.warning("visibility extension of %d messages failed: %s", len(due), exc)
            again = min(1.0, self.extend_to / 3)
        at = time.monotonic() + again
        for message in due:
            if message.receipt in self._held:
                self._held[message.receipt] = (message, at)


class Consumer:
    def __init__(
        self,
        source: str,
        receiver: QueueReceiver,
        sink: TableSink,
        clock: Callable[[], datetime],
        *,
        decode: DecodeBatch = decode_batch,
        receivers: int = 4,
        batch_max: int = 1000,
        linger_seconds: float = 0.5,
        wait_seconds: int = 1,
        visibility_timeout: float = 30.0,
        visibility_extension: int = 60,
        writes_in_flight: int = 2,
    ) -> None:
        """`visibility_timeout` is the queue's (how long a receive hides a message); `visibility_extension` how
        long each extension hides a held message (at least the timeout). Up to `writes_in_flight` batches are
        written at once: the next batch is decoded while the last one's Parquet files are written."""
        self.source = source
        self._receiver = receiver
        self._sink = sink
        self._clock = clock
        self._decode = decode
        self._receivers = receivers
        self._batch_max = batch_max
        self._linger = linger_seconds
        self._wait = wait_seconds
        self._writes_in_flight = max(1, writes_in_flight)
        self.heartbeat = Heartbeat(receiver, visibility_timeout, visibility_extension)
        self.stats = ConsumerStats()

    def decode_batch(self, messages: list[Received]) -> tuple[TableRows, list[str], list[Received]]:
        """Rows of the batch (de-duplicated by dedup id), their ids, and the messages that were fine."""
        decoded = self._decode(self.source, messages, self._clock())
        ids = [o for o in decoded.outcomes if type(o) is str]
        good = messages
        if len(ids) < len(messages):
            good = []
            for message, outcome in zip(messages, decoded.outcomes, strict=True):
                if isinstance(outcome, PoisonMessageError):
                    self.stats.poison += 1
                    log.error("poison message %s (receive %d): %s", message.message_id, message.receive_count, outcome)
                else:
                    good.append(message)
        distinct = set(ids)
        self.stats.duplicates += len(ids) - len(distinct)
        return decoded.rows, sorted(distinct), good

    async def process(self, messages: list[Received]) -> int:
        """Write one batch and delete what was written; returns how many messages were consumed.

        Messages not received through `run` count as received now, for their visibility."""
        if not messages:
            return 0
        self.heartbeat.hold(messages, time.monotonic())
        try:
            async with self.heartbeat.beating():
                return await self._process(messages)
        finally:
            self.heartbeat.release(messages)

    async def process_all(self, batches: Iterable[list[Received]]) -> int:
        """Process batches in order as `run` does, the next decoded while earlier ones are written (at most
        `writes_in_flight` at once); returns how many messages were consumed."""
        writes = _Writes(self.process, self._writes_in_flight)
        async with self.heartbeat.beating():
            for batch in batches:
                await writes.submit(batch)
            return await writes.drain()

    async def _process(self, messages: list[Received]) -> int:
        started = time.perf_counter()
        rows, ids, good = self.decode_batch(messages)
        self.stats.last_decode_seconds = time.perf_counter() - started
        if ids:
            try:
                await asyncio.to_thread(self._sink.write, rows, batch_id_for(ids))
            except RowsRejectedError as exc:
                if len(good) == 1:
                    self.stats.poison += 1
                    log.error("message %s: the warehouse rejects its rows: %s", good[0].message_id, exc)
                    return 0
                # One message's rows can never be written: land the others one by one, so only it is retried.
                log.warning("batch of %d rejected (%s); writing its messages one at a time", len(good), exc)
                return sum([await self._process([message]) for message in good])
            except Exception:
                self.stats.write_failures += 1
                log.exception("batch write failed; %d messages stay on the queue", len(messages))
                return 0
        self.heartbeat.release(good)
        try:
            await self._receiver.delete(good)
        except Exception:
            # Landed but still on the queue: they come back and land again under the same keys.
            log.exception("deleting %d landed messages failed; they will be redelivered", len(good))
        elapsed = time.perf_counter() - started
        now = self._clock()
        sent = min((m.sent_at for m in messages if m.sent_at is not None), default=None)
        self.stats.consumed += len(good)
        self.stats.batches += 1
        self.stats.last_batch_seconds = elapsed
        self.stats.oldest_age_seconds = 0.0 if sent is None else (now - sent).total_seconds()
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

    async def run(self, stop: asyncio.Event) -> None:
        buffer: list[Received] = []
        lock = asyncio.Lock()
        flushed = asyncio.Event()
        filled = asyncio.Event()

        async def poll() -> None:
            while not stop.is_set():
                asked_at = time.monotonic()
                try:
                    got = await self._receiver.receive(10, self._wait)
                except Exception as exc:
                    log.warning("receive from %s failed: %s", self.source, exc)
                    await asyncio.sleep(1.0)
                    continue
                self.heartbeat.hold(got, asked_at)
                self.stats.received += len(got)
                async with lock:
                    buffer.extend(got)
                    full = len(buffer) >= self._batch_max
                if full:
                    flushed.clear()
                    filled.set()
                    await flushed.wait()

        async with self.heartbeat.beating():
            writes = _Writes(self.process, self._writes_in_flight)
            pollers = [asyncio.create_task(poll()) for _ in range(self._receivers)]
            try:
                while not stop.is_set() or buffer:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(filled.wait(), self._linger)
                    filled.clear()
                    async with lock:
                        batch, buffer[:] = buffer[:], []
                    flushed.set()
                    await writes.submit(batch)
                    if stop.is_set():
                        break
            finally:
                for task in pollers:
                    task.cancel()
                await asyncio.gather(*pollers, return_exceptions=True)
                await writes.drain()
                async with lock:
                    leftover, buffer[:] = buffer[:], []
                await self.process(leftover)


class _Writes:
    """Batches being processed, at most `limit` at once, started in the order submitted."""

    def __init__(self, process: Callable[[list[Received]], Coroutine[Any, Any, int]], limit: int) -> None:
        self._process = process
        self._limit = limit
        self._tasks: set[asyncio.Task[int]] = set()
        self.consumed = 0

    async def submit(self, batch: list[Received]) -> None:
        if not batch:
            return
        while len(self._tasks) >= self._limit:
            await asyncio.wait(self._tasks, return_when=asyncio.FIRST_COMPLETED)
        task = asyncio.create_task(self._process(batch))
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[int]) -> None:
        self._tasks.discard(task)
        if task.cancelled():
            return
        if task.exception() is not None:
            log.error("processing a batch failed", exc_info=task.exception())
        else:
            self.consumed += task.result()

    async def drain(self) -> int:
        """Wait for every batch submitted; returns how many messages they consumed in all."""
        while self._tasks:
            await asyncio.wait(self._tasks)
        return self.consumed
