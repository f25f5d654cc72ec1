"""Delivers the requests kept in the `RequestOutbox` to the `PaymentService`, at least once and without two senders
sending the same request at the same time (a claim hides it for a lease).

Per claimed request:
    2xx                                   → DELIVERED, with Amazon's answer (a business outcome is data in it)
    refused (400 errorMsg, other 4xx)     → FAILED with Amazon's message; never sent again
    unavailable (after the client's retries of 429 / 5xx / transport errors)
                                          → stays QUEUED, next try after an exponential backoff with jitter;
                                            FAILED ("gave up") after `max_attempts` deliveries

`on_outcome` (e.g. record a refund's answer in the warehouse) runs before the outbox records the outcome: if it
fails, the request is sent again when its lease ends (the Payment Service is idempotent on the request's key), so the
hook sees every final outcome at least once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from reconcile.errors import PaymentRejectedError, PaymentUnavailableError
from reconcile.payments import PaymentRequest, QueuedRequest, encode_json
from reconcile.ports import PaymentService, RequestOutbox

log = logging.getLogger("reconcile.payments")

Outcome = Literal["delivered", "failed", "queued"]


@dataclass(frozen=True)
class Delivery:
    request: PaymentRequest
    outcome: Outcome
    detail: str
    """Amazon's answer body (delivered), its errorMsg or why delivery was given up (failed), the problem (queued)."""
    attempts: int
    next_attempt_at: datetime | None = None


@dataclass(frozen=True)
class SenderPolicy:
    lease: timedelta = timedelta(seconds=120)
    """A claimed request is hidden from other senders this long (longer than one call with its retries)."""
    base_backoff: timedelta = timedelta(seconds=5)
    max_backoff: timedelta = timedelta(minutes=10)
    max_attempts: int = 200
    """Deliveries of one request before it is given up (FAILED); with the defaults, about a day and a half."""


class PaymentSender:
    def __init__(
        self,
        outbox: RequestOutbox,
        service: PaymentService,
        clock: Callable[[], datetime],
        policy: SenderPolicy = SenderPolicy(),
        *,
        on_outcome: Callable[[Delivery, datetime], None] | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self._outbox, self._service, self._clock, self._policy = outbox, service, clock, policy
        self._on_outcome = on_outcome
        self._rng = rng or random.Random()

    async def send(self, request_id: str) -> Delivery | None:
        """Try one request now (the CLI, right after queueing it). None when it is not due: already delivered or
        failed, or claimed by another sender."""
        claimed = self._outbox.claim(self._clock(), self._policy.lease, request_id=request_id, limit=1)
        return await self._deliver(claimed[0]) if claimed else None

    async def drain(self, limit: int = 50) -> list[Delivery]:
        """Every request due now (up to `limit`), one after the other."""
        out = []
        for queued in self._outbox.claim(self._clock(), self._policy.lease, limit=limit):
            delivery = await self._deliver(queued)
            if delivery is not None:
                out.append(delivery)
        return out

    async def run(self, every_seconds: float, stop: asyncio.Event) -> None:
        """Inside `jwo up`: drain every `every_seconds` until stopped; an error is logged and retried next time."""
        while not stop.is_set():
            try:
                for d in await self.drain():
                    level = logging.INFO if d.outcome == "delivered" else logging.WARNING
                    log.log(level, "payment request %s", d.outcome, extra=_fields(d))
            except Exception:
                log.exception("payment sender pass failed; retrying next interval")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), every_seconds)

    async def _deliver(self, queued: QueuedRequest) -> Delivery | None:
        request = queued.request
        try:
            reply = await self._service.call(request)
        except PaymentRejectedError as exc:
            delivery = Delivery(request, "failed", str(exc), queued.attempts)
        except PaymentUnavailableError as exc:
            if queued.attempts >= self._policy.max_attempts:
                detail = f"gave up after {queued.attempts} deliveries; last: {exc}"
                delivery = Delivery(request, "failed", detail, queued.attempts)
            else:
                delivery = Delivery(request, "queued", str(exc), queued.attempts, self._next_try(queued.attempts))
        else:
            delivery = Delivery(request, "delivered", encode_json(dict(reply.body)), queued.attempts)
        now = self._clock()
        if self._on_outcome is not None and delivery.outcome != "queued":
            try:
                self._on_outcome(delivery, now)
            except Exception:
                log.exception("recording a payment outcome failed; the request is sent again after its lease")
                return None
        if delivery.outcome == "delivered":
            self._outbox.delivered(request.request_id, delivery.detail, now)
        elif delivery.outcome == "failed":
            self._outbox.failed(request.request_id, delivery.detail, now)
        else:
            assert delivery.next_attempt_at is not None
            self._outbox.retry_at(request.request_id, delivery.detail, now, delivery.next_attempt_at)
        return delivery

    def _next_try(self, attempts: int) -> datetime:
        cap = self._policy.max_backoff.total_seconds()
        backoff = min(cap, self._policy.base_backoff.total_seconds() * 2 ** max(0, attempts - 1))
        return self._clock() + timedelta(seconds=backoff * self._rng.uniform(0.5, 1.0))


def _fields(d: Delivery) -> dict[str, object]:
    return {
        "request_id": d.request.request_id,
        "operation": d.request.operation,
        "store_id": d.request.store_id,
        "shopping_trip_id": d.request.shopping_trip_id,
        "attempts": d.attempts,
        "detail": d.detail,
    }
