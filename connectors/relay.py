"""Drains the outbox to the queue: SendMessageBatch (10 per call, several in flight), retries with
exponential backoff and full jitter, marks what was accepted. SQS being slow or down only delays
delivery; answers never wait for it and nothing answered is lost. A message the queue refuses for good
(its own fault: sent again, it fails again) is parked in the outbox with the reason and logged as an error,
so it neither blocks the messages behind it nor is lost."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Sequence
from dataclasses import dataclass, field

from connectors.ports import OutboxQueue, PendingMessage, QueuePublisher, Sent

log = logging.getLogger("jwo.connectors.relay")
SQS_BATCH = 10


@dataclass
class RelayStats:
    sent: int = 0
    parked: int = 0
    errors: int = 0
    batches: int = 0
    last_error: str | None = field(default=None)


class Relay:
    def __init__(
        self,
        outbox: OutboxQueue,
        publisher: QueuePublisher,
        *,
        in_flight: int = 4,
        idle_seconds: float = 0.25,
        base_backoff: float = 0.1,
        max_backoff: float = 10.0,
        rng: random.Random | None = None,
    ) -> None:
        self._outbox = outbox
        self._publisher = publisher
        self._in_flight = in_flight
        self._idle = idle_seconds
        self._base_backoff = base_backoff
        self._max_backoff = max_backoff
        self._rng = rng or random.Random()
        self._wake = asyncio.Event()
        self.stats = RelayStats()

    def wake(self) -> None:
        """Called after the outbox committed something new (from any thread via the loop)."""
        self._wake.set()

    async def _send(self, batch: Sequence[PendingMessage]) -> Sent:
        try:
            return await self._publisher.send_batch(batch)
        except Exception as exc:  # any transport fault: the batch stays pending and is retried
            self.stats.errors += 1
            self.stats.last_error = f"{type(exc).__name__}: {exc}"
            log.warning("relay send failed: %s", self.stats.last_error)
            return Sent([])

    async def _send_and_mark(self, batch: Sequence[PendingMessage]) -> int:
        """Send one batch and mark what the queue accepted at once (a crash re-sends as little as possible);
        returns how many messages left the pending ones (sent or parked)."""
        result = await self._send(batch)
        if result.accepted:
            await asyncio.to_thread(self._outbox.mark_sent, result.accepted)
            self.stats.sent += len(result.accepted)
        if result.refused:
            await asyncio.to_thread(self._outbox.park, result.refused)
            self.stats.parked += len(result.refused)
            ids = {m.seq: m.message_id for m in batch}
            for seq, reason in result.refused:
                log.error("the queue refused a message for good; parked in the outbox",
                          extra={"seq": seq, "message_id": ids.get(seq), "reason": reason})  # fmt: skip
        self.stats.batches += 1
        return len(result.accepted) + len(result.refused)

    async def pump_once(self) -> int:
        """Send what is pending now; returns how many messages it took off the pending ones (sent or parked)."""
        pending = await asyncio.to_thread(self._outbox.pending, SQS_BATCH * self._in_flight)
        if not pending:
            return 0
        batches = [pending[i : i + SQS_BATCH] for i in range(0, len(pending), SQS_BATCH)]
        sent = sum(await asyncio.gather(*(self._send_and_mark(b) for b in batches)))
        if sent < len(pending):
            raise _PartialFailure(len(pending) - sent)
        return sent

    async def run(self, stop: asyncio.Event) -> None:
        """Until `stop`: send, back off after failures, never end on an error (the outbox keeps everything)."""
        failures = 0
        while not stop.is_set():
            try:
                sent = await self.pump_once()
                failures = 0
            except Exception as exc:  # a partial send, or the outbox itself (e.g. "database is locked")
                if not isinstance(exc, _PartialFailure):
                    self.stats.errors += 1
                    self.stats.last_error = f"{type(exc).__name__}: {exc}"
                    log.warning("relay pass failed: %s", self.stats.last_error)
                failures += 1
                delay = self._rng.uniform(0, min(self._max_backoff, self._base_backoff * 2**failures))
                await _sleep_or_stop(stop, delay)
                continue
            if sent == 0:
                self._wake.clear()
                waiter = asyncio.ensure_future(self._wake.wait())
                stopper = asyncio.ensure_future(stop.wait())
                await asyncio.wait({waiter, stopper}, timeout=self._idle, return_when=asyncio.FIRST_COMPLETED)
                waiter.cancel()
                stopper.cancel()

    async def drain(self, within: float) -> bool:
        """Send everything pending (shutdown); returns whether the outbox is empty."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        while (remaining := deadline - loop.time()) > 0:
            try:
                if await asyncio.wait_for(self.pump_once(), remaining) == 0:
                    return True
            except TimeoutError:
                return False  # a hung send: what it carried stays pending for the next start
            except Exception:
                await asyncio.sleep(0.2)
        return False


class _PartialFailure(Exception):
    def __init__(self, unsent: int) -> None:
        super().__init__(f"{unsent} message(s) not accepted")


async def _sleep_or_stop(stop: asyncio.Event, delay: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout=delay)
