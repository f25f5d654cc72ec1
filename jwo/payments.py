"""Wiring of the requests we send Amazon's Payment Service (SPEC §4, §5): the outbox in `JWO_HOME/payments.db`, the
SigV4 client, the refund facts over the lake, and the three things the CLI and `jwo up` do with them:

    settle_debt    a debt payoff closes the debt and, in an Amazon-managed fraud-and-abuse store, queues the
                   payment-status report (queued before the debt closes, so a crash in between repeats both)
    issue_refund   checks the refund, queues it, records it REQUESTED in `refunds`
    deliver        one try now (the CLI), or `run_sender` (every few seconds inside `jwo up`)

A refund's answer is recorded as a new version of its `refunds` row, and its business day's `daily_settlement` is
recomputed so `refunded` follows (refunds count on the trip's business day, once Amazon accepted them).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import threading
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

import botocore.session
import httpx
from botocore.credentials import Credentials, ReadOnlyCredentials

from connectors.ports import RetailerAdmin
from contracts.arrow_rows import ArrowRows
from contracts.payment_tables import REFUNDS
from contracts.reconcile_tables import DAILY_SETTLEMENT
from jwo.reconcile_facts import LakeFacts, build_job, utc_now
from jwo.settings import Settings
from reconcile.adapters.amazon_payments import AmazonPaymentService, CredentialSource
from reconcile.adapters.sqlite_requests import SqliteRequestOutbox
from reconcile.errors import RefundRefusedError
from reconcile.job import DebtNotFoundError, settlement_rows
from reconcile.payment_sender import Delivery, PaymentSender, SenderPolicy
from reconcile.payments import (
    PaymentRequest,
    QueuedRequest,
    Refund,
    RefundableTrip,
    check_refund,
    decode_json,
    payment_status_request,
    refund_answered,
    refund_from_row,
    refund_id,
    refund_request,
    refund_row,
    reports_payment_status,
)
from reconcile.rules import Debt
from warehouse.lake import LakeWriter
from warehouse.merge import file_lock
from warehouse.query import QueryResult, run_query
from warehouse.views import quote_literal

log = logging.getLogger("jwo.payments")


def _dicts(result: QueryResult) -> list[dict[str, Any]]:
    return [dict(zip(result.columns, row, strict=True)) for row in result.rows]


# --------------------------------------------------------------------------- the lake side of refunds


class LakeRefunds:
    """`RefundSource` over the lake: a trip's store, currency, business day and captures (purchases, payment_events)
    and the refunds already issued (`refunds`)."""

    def __init__(self, lake_root: Path) -> None:
        self._root = lake_root

    def _query(self, sql: str) -> list[dict[str, Any]]:
        return _dicts(run_query(self._root, sql))

    def refundable(self, shopping_trip_id: str) -> RefundableTrip | None:
        trip = quote_literal(shopping_trip_id)
        purchases = self._query(f"select store_id, currency, end_time from purchases where shopping_trip_id = {trip}")
        [pay] = self._query(
            "select any_value(store_id) as store_id, any_value(currency) as currency, min(event_time) as first_event, "
            "coalesce(sum(amount) filter (where sub_type = 'CaptureApproved'), 0) as captured, "
            "min(event_time) filter (where sub_type = 'CaptureApproved') as first_capture "
            f"from payment_events where shopping_trip_id = {trip}"
        )
        if not purchases and pay["first_event"] is None:
            return None
        if purchases:
            store, currency, charged = purchases[0]["store_id"], purchases[0]["currency"], purchases[0]["end_time"]
            day = charged.astimezone(UTC).date()
        else:  # a payment without a purchase: its business day is that of its first event, as reconciliation says
            store, currency, charged = pay["store_id"], pay["currency"], pay["first_capture"] or pay["first_event"]
            day = pay["first_event"].astimezone(UTC).date()
        counted = [r for r in self.refunds(shopping_trip_id) if r.status in ("REQUESTED", "REFUNDED")]
        return RefundableTrip(
            shopping_trip_id=shopping_trip_id,
            store_id=store,
            currency=currency,
            business_date=day,
            charged_at=charged,
            captured=Decimal(pay["captured"]).quantize(Decimal("0.01")),
            refunded=sum((r.amount for r in counted), Decimal("0.00")),
        )

    def refunds(self, shopping_trip_id: str | None = None) -> list[Refund]:
        where = "" if shopping_trip_id is None else f" where shopping_trip_id = {quote_literal(shopping_trip_id)}"
        rows = self._query(f"select * from {REFUNDS.name}{where} order by requested_at, refund_id")
        return [refund_from_row(r) for r in rows]

    def refund(self, refund_id: str) -> Refund | None:
        rows = self._query(f"select * from {REFUNDS.name} where refund_id = {quote_literal(refund_id)}")
        return refund_from_row(rows[0]) if rows else None


def _batch_id(prefix: str, rows: Sequence[dict[str, object]]) -> str:
    digest = hashlib.sha256(repr([sorted(r.items()) for r in rows]).encode()).hexdigest()[:32]
    return f"{prefix}-{digest}"


def write_refund(lake_root: Path, refund: Refund, now: datetime) -> None:
    row = refund_row(refund, now)
    LakeWriter(lake_root).write_tables({REFUNDS: [row]}, _batch_id("refund", [row]))


def resettle(lake_root: Path, days: Sequence[date], now: datetime) -> int:
    """Recompute the daily settlement of these days from the reconciled trips and the refunds; write what changed."""
    changed = LakeFacts(lake_root).settlement_changes(days)
    if changed.num_rows:
        rows = ArrowRows(settlement_rows(changed, now))
        LakeWriter(lake_root).write_tables({DAILY_SETTLEMENT: rows}, _batch_id("resettle", rows.rows()))
    return int(changed.num_rows)


class RefundOutcomes:
    """The sender's `on_outcome`: a refund's answer becomes a new version of its row and its day is resettled."""

    def __init__(self, lake_root: Path) -> None:
        self._root = lake_root

    def __call__(self, delivery: Delivery, now: datetime) -> None:
        if delivery.request.operation != "refund" or delivery.outcome == "queued":
            return
        refunds = LakeRefunds(self._root)
        refund = refunds.refund(delivery.request.request_id) or _refund_of(delivery.request, refunds, now)
        if refund.status != "REQUESTED":
            return  # already answered (this outcome was recorded before a crash)
        outcome: Literal["delivered", "failed"] = "delivered" if delivery.outcome == "delivered" else "failed"
        answered = refund_answered(refund, outcome, delivery.detail, now)
        write_refund(self._root, answered, now)
        resettle(self._root, [answered.business_date], now)


def _refund_of(request: PaymentRequest, refunds: LakeRefunds, now: datetime) -> Refund:
    """The refund a queued request stands for, when its row never reached the lake (a crash after queueing)."""
    body = decode_json(request.body)
    trip = refunds.refundable(request.shopping_trip_id)
    return Refund(
        refund_id=request.request_id,
        shopping_trip_id=request.shopping_trip_id,
        store_id=request.store_id,
        amount=Decimal(body["amount"]["amount"]).quantize(Decimal("0.01")),
        currency=body["amount"]["code"],
        reason_code=body["refundReasonCode"],
        status="REQUESTED",
        business_date=trip.business_date if trip is not None else now.date(),
        requested_at=now,
    )


# --------------------------------------------------------------------------- the client and the sender


def credentials(settings: Settings) -> CredentialSource:
    """The normal AWS chain (env, profile, SSO, container or instance role), or the keys in the settings."""
    if settings.aws_access_key_id and settings.aws_secret_access_key:
        fixed = ReadOnlyCredentials(settings.aws_access_key_id, settings.aws_secret_access_key, None)
        return lambda: fixed
    session = botocore.session.get_session()
    lock = threading.Lock()
    found: list[Credentials] = []

    def resolve() -> ReadOnlyCredentials | None:
        """Looked up once (the chain may ask an instance-metadata service), then frozen per signature, so
        refreshable credentials (roles, SSO) are renewed by botocore as they near expiry."""
        with lock:
            if not found:
                credentials = session.get_credentials()
                if credentials is None:
                    return None
                found.append(credentials)
            return found[0].get_frozen_credentials()

    return resolve


@contextlib.asynccontextmanager
async def payment_sender(
    settings: Settings, outbox: SqliteRequestOutbox, clock: Callable[[], datetime] = utc_now
) -> AsyncIterator[PaymentSender | None]:
    """A sender over the configured Payment Service; None when no endpoint is configured."""
    pay = settings.payments
    if not pay.endpoint_url:
        yield None
        return
    async with httpx.AsyncClient(timeout=pay.call_timeout_seconds, trust_env=False) as client:
        service = AmazonPaymentService(
            client,
            pay.endpoint_url,
            pay.region or settings.aws_region,
            credentials(settings),
            service_name=pay.service_name,
            attempts=pay.call_attempts,
            max_backoff_seconds=pay.call_max_backoff_seconds,
        )
        policy = SenderPolicy(
            lease=timedelta(seconds=pay.call_attempts * (pay.call_timeout_seconds + pay.call_max_backoff_seconds) + 30),
            base_backoff=timedelta(seconds=pay.retry_base_backoff_seconds),
            max_backoff=timedelta(seconds=pay.retry_max_backoff_seconds),
            max_attempts=pay.max_deliveries,
        )
        yield PaymentSender(outbox, service, clock, policy, on_outcome=RefundOutcomes(settings.lake_dir))


async def deliver_now(settings: Settings, request_id: str) -> Delivery | None:
    """One try of one queued request (the CLI right after queueing); None without an endpoint or when not due."""
    with open_outbox(settings) as outbox:
        async with payment_sender(settings, outbox) as sender:
            return None if sender is None else await sender.send(request_id)


async def drain_now(settings: Settings) -> list[Delivery] | None:
    with open_outbox(settings) as outbox:
        async with payment_sender(settings, outbox) as sender:
            return None if sender is None else await sender.drain(limit=1000)


@contextlib.contextmanager
def open_outbox(settings: Settings) -> Iterator[SqliteRequestOutbox]:
    outbox = SqliteRequestOutbox(settings.payments_db)
    try:
        yield outbox
    finally:
        outbox.close()


async def run_sender(settings: Settings, stop: asyncio.Event) -> None:
    """Inside `jwo up`: the sender on its own thread and event loop (its SQLite and lake work never blocks the
    connectors' loop), until `stop`."""
    if not settings.payments.endpoint_url:
        log.info("no Payment Service endpoint (JWO_PAYMENTS__ENDPOINT_URL): payment requests stay queued")
        return
    halt = threading.Event()

    async def loop() -> None:
        try:
            await send_until_halted()
        except Exception:
            log.exception("the payment sender stopped; queued requests wait for the next start")
            raise

    async def send_until_halted() -> None:
        with open_outbox(settings) as outbox:
            async with payment_sender(settings, outbox) as sender:
                assert sender is not None
                inner_stop = asyncio.Event()

                async def watch() -> None:
                    await asyncio.to_thread(halt.wait)
                    inner_stop.set()

                watcher = asyncio.create_task(watch())
                await sender.run(settings.payments.sender_interval_seconds, inner_stop)
                await watcher

    thread = asyncio.create_task(asyncio.to_thread(asyncio.run, loop()))
    try:
        await stop.wait()
    finally:
        halt.set()
        await thread


# --------------------------------------------------------------------------- what the CLI does


class PayoffError(ValueError):
    pass


@dataclass(frozen=True)
class Payoff:
    debt: Debt
    """The debt after the payoff (SETTLED, or OPEN with the rest)."""
    request: PaymentRequest | None
    """The payment-status report queued for Amazon; None when the store's fraud and abuse is not Amazon's."""


def settle_debt(settings: Settings, store: RetailerAdmin, trip: str, amount: Decimal | None) -> Payoff:
    """A payoff of `amount` (default: the whole balance). Raises DebtNotFoundError, PayoffError."""
    job = build_job(settings.lake_dir, store, settings.reconcile)
    debt = LakeFacts(settings.lake_dir).current_debts([trip]).get(trip)
    if debt is None or debt.status != "OPEN":
        raise DebtNotFoundError(f"trip {trip} has no open debt")
    paid = debt.amount if amount is None else amount
    if not paid.is_finite() or paid <= 0 or paid != paid.quantize(Decimal("0.01")):
        raise PayoffError(f"a payoff must be a positive amount in cents, not {amount}")
    if paid > debt.amount:
        raise PayoffError(f"trip {trip}: the balance is {debt.amount} {debt.currency}; {paid} is more than it")
    request = None
    if reports_payment_status(debt.store_id, settings.payments.fraud_abuse_stores):
        request = payment_status_request(debt, paid, utc_now())
        with open_outbox(settings) as outbox:
            outbox.enqueue(request, utc_now())
    closed = job.close_debt(trip, "SETTLED", paid)
    return Payoff(closed, request)


def _refund_lock(settings: Settings) -> contextlib.AbstractContextManager[None]:
    """One refund decision at a time per JWO_HOME (the over-refund check and the queueing are one step)."""
    return file_lock(settings.home / "refunds.lock")


@dataclass(frozen=True)
class Issued:
    refund: Refund
    request: PaymentRequest
    new: bool
    """False: the same refund (same trip, amount, reason and key) was issued before; nothing new was queued."""
    queued: QueuedRequest | None


def issue_refund(
    settings: Settings, trip: str, amount: Decimal, reason: str, key: str = "", now: datetime | None = None
) -> Issued:
    """Check, queue and record a refund. Raises RefundRefusedError saying why a refund is not sent."""
    now = now or utc_now()
    refunds = LakeRefunds(settings.lake_dir)
    window = timedelta(days=settings.payments.refund_window_days)
    with _refund_lock(settings), open_outbox(settings) as outbox:
        facts = refunds.refundable(trip)
        try:
            refund = check_refund(facts, trip, amount, reason, now, window, key)
        except RefundRefusedError:
            earlier = outbox.get(refund_id(trip, amount, reason, key)) if amount.is_finite() else None
            if earlier is None:
                raise
            # The same refund again (e.g. after a crash or a lost answer): not a second refund.
            kept = refunds.refund(earlier.request.request_id) or _refund_of(earlier.request, refunds, now)
            if refunds.refund(kept.refund_id) is None:
                write_refund(settings.lake_dir, kept, now)
            return Issued(kept, earlier.request, False, earlier)
        request = refund_request(refund)
        new = outbox.enqueue(request, now)
        if new or refunds.refund(refund.refund_id) is None:
            write_refund(settings.lake_dir, refund, now)
        return Issued(refunds.refund(refund.refund_id) or refund, request, new, outbox.get(request.request_id))
