"""In-memory fakes of reconciliation's ports, for unit and property tests."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any, Literal

from contracts.payment_tables import REFUNDS
from contracts.reconcile_tables import ALERTS, BAD_DEBTS, DAILY_SETTLEMENT, TRIP_RECONCILIATION
from contracts.tables import Table
from reconcile.errors import AlertDeliveryError, PaymentRejectedError, PaymentUnavailableError
from reconcile.payments import (
    PaymentReply,
    PaymentRequest,
    QueuedRequest,
    Refund,
    RefundableTrip,
    decode_json,
    refund_from_row,
    refunded_per_day,
)
from reconcile.rows import debt_from_row, settlement_from_row, trip_from_row
from reconcile.rules import Alert, Debt, PaymentEvent, Purchase, Settlement, TripFacts, TripResult


@dataclass
class MemoryFacts:
    """Facts as the warehouse views would show them; duplicates kept in, as a real feed delivers them."""

    purchases: list[Purchase] = field(default_factory=list)
    payments: list[PaymentEvent] = field(default_factory=list)
    reported: dict[str, tuple[Any, datetime]] = field(default_factory=dict)
    cancelled: dict[str, datetime] = field(default_factory=dict)

    def touched_trips(self, *, day: date | None = None, since: datetime | None = None) -> list[str]:
        ids = {p.shopping_trip_id for p in self.purchases} | {p.shopping_trip_id for p in self.payments}
        return sorted(ids)

    def facts(self, trip_ids: Sequence[str]) -> list[TripFacts]:
        wanted = set(trip_ids)
        purchases = {p.shopping_trip_id: p for p in self.purchases if p.shopping_trip_id in wanted}
        payments: dict[str, list[PaymentEvent]] = {}
        for event in self.payments:
            if event.shopping_trip_id in wanted:
                payments.setdefault(event.shopping_trip_id, []).append(event)
        out = []
        for trip in sorted(wanted):
            reported = self.reported.get(trip)
            out.append(
                TripFacts(
                    shopping_trip_id=trip,
                    purchase=purchases.get(trip),
                    payments=tuple(payments.get(trip, ())),
                    reported=reported[0] if reported else None,
                    reported_at=reported[1] if reported else None,
                    cancelled_at=self.cancelled.get(trip),
                )
            )
        return out

    def reports_available(self) -> bool:
        return bool(self.reported)


@dataclass
class MemoryLake:
    """The sink and the views over what it was given: newest version per key (`latest_by`)."""

    rows: dict[str, dict[tuple[object, ...], dict[str, object]]] = field(default_factory=dict)
    batches: list[str] = field(default_factory=list)
    appended: dict[str, int] = field(default_factory=dict)
    """Rows written per table, duplicates included."""

    def write_tables(self, batch: Mapping[Table, Sequence[Mapping[str, object]]], batch_id: str) -> object:
        self.batches.append(batch_id)
        for table, rows in batch.items():
            kept = self.rows.setdefault(table.name, {})
            self.appended[table.name] = self.appended.get(table.name, 0) + len(rows)
            for row in rows:
                key = tuple(row[k] for k in table.key)
                old = kept.get(key)
                if old is None or _newer(table, row, old):
                    kept[key] = dict(row)
        return None

    def table(self, name: str) -> list[dict[str, object]]:
        return list(self.rows.get(name, {}).values())

    def current_trips(self, trip_ids: Sequence[str]) -> dict[str, TripResult]:
        wanted = set(trip_ids)
        rows = self.table(TRIP_RECONCILIATION.name)
        return {str(r["shopping_trip_id"]): trip_from_row(r) for r in rows if r["shopping_trip_id"] in wanted}

    def trips_on(self, days: Sequence[date]) -> list[TripResult]:
        trips = [trip_from_row(r) for r in self.table(TRIP_RECONCILIATION.name)]
        return [t for t in trips if t.business_date in set(days)]

    def current_debts(self, trip_ids: Sequence[str] | None = None) -> dict[str, Debt]:
        debts = [debt_from_row(r) for r in self.table(BAD_DEBTS.name)]
        return {d.shopping_trip_id: d for d in debts if trip_ids is None or d.shopping_trip_id in set(trip_ids)}

    def alert_ids(self, trip_ids: Sequence[str]) -> set[str]:
        return {str(r["alert_id"]) for r in self.table(ALERTS.name) if r["shopping_trip_id"] in set(trip_ids)}

    def settlements(self, days: Sequence[date]) -> dict[tuple[date, str], Settlement]:
        rows = [settlement_from_row(r) for r in self.table(DAILY_SETTLEMENT.name)]
        return {(s.business_date, s.store_id): s for s in rows if s.business_date in set(days)}

    def refunded(self, days: Sequence[date]) -> dict[tuple[date, str], Decimal]:
        return {k: v for k, v in refunded_per_day(self.refunds()).items() if k[0] in set(days)}

    def refunds(self, shopping_trip_id: str | None = None) -> list[Refund]:
        rows = sorted((refund_from_row(r) for r in self.table(REFUNDS.name)), key=lambda r: r.requested_at)
        return [r for r in rows if shopping_trip_id is None or r.shopping_trip_id == shopping_trip_id]


def _newer(table: Table, row: Mapping[str, object], old: Mapping[str, object]) -> bool:
    for name in table.latest_by:
        a, b = row.get(name), old.get(name)
        if a != b and a is not None and b is not None:
            return bool(a > b)  # type: ignore[operator]
    return False


@dataclass
class MemoryLedger:
    """The identity store's debt list: which shoppers the gate refuses."""

    debts: dict[str, Debt] = field(default_factory=dict)
    calls: list[tuple[str, str]] = field(default_factory=list)

    def open(self, debt: Debt) -> bool:
        self.calls.append(("open", debt.shopping_trip_id))
        if debt.shopping_trip_id in self.debts:
            return False
        self.debts[debt.shopping_trip_id] = debt
        return True

    def close(self, shopping_trip_id: str, status: Literal["SETTLED", "WRITTEN_OFF"], at: datetime) -> bool:
        self.calls.append(("close", shopping_trip_id))
        debt = self.debts.get(shopping_trip_id)
        if debt is None or debt.status != "OPEN":
            return False
        self.debts[shopping_trip_id] = replace(debt, status=status, settled_at=at)
        return True

    def blocked(self) -> set[str]:
        return {d.shopper_id for d in self.debts.values() if d.status == "OPEN" and d.shopper_id}


@dataclass
class MemoryAlertSink:
    """An AlertSink that keeps what it was sent; `fail_sends` makes the next sends fail (transiently)."""

    sent: list[Alert] = field(default_factory=list)
    attempts: int = 0
    fail_sends: int = 0

    async def send(self, alert: Alert) -> None:
        self.attempts += 1
        if self.fail_sends:
            self.fail_sends -= 1
            raise AlertDeliveryError(f"fake sink: alert {alert.alert_id} not accepted")
        self.sent.append(alert)


@dataclass
class MemoryRefundSource:
    """`RefundSource` over a MemoryLake's refunds and a dict of the trips' captures."""

    lake: MemoryLake
    trips: dict[str, RefundableTrip] = field(default_factory=dict)

    def refundable(self, shopping_trip_id: str) -> RefundableTrip | None:
        trip = self.trips.get(shopping_trip_id)
        if trip is None:
            return None
        counted = [r for r in self.refunds(shopping_trip_id) if r.status in ("REQUESTED", "REFUNDED")]
        return replace(trip, refunded=sum((r.amount for r in counted), Decimal("0.00")))

    def refunds(self, shopping_trip_id: str | None = None) -> list[Refund]:
        return self.lake.refunds(shopping_trip_id)


@dataclass
class MemoryPaymentService:
    """A `PaymentService` that answers from memory. `unavailable` makes the next calls fail transiently,
    `reject` maps a request id to the errorMsg of a terminal refusal, `declines` refund ids answered DECLINED."""

    calls: list[PaymentRequest] = field(default_factory=list)
    unavailable: int = 0
    reject: dict[str, str] = field(default_factory=dict)
    declines: set[str] = field(default_factory=set)

    async def call(self, request: PaymentRequest) -> PaymentReply:
        if self.unavailable:
            self.unavailable -= 1
            raise PaymentUnavailableError("fake payment service: 503 after retries")
        if request.request_id in self.reject:
            raise PaymentRejectedError(self.reject[request.request_id], status_code=400)
        self.calls.append(request)
        if request.operation == "refund":
            body = decode_json(request.body)
            status = "DECLINED" if request.request_id in self.declines else "APPROVED"
            return PaymentReply(200, {"refundRequestId": body["refundRequestId"], "status": status})
        return PaymentReply(200, {})


@dataclass
class MemoryOutbox:
    """A `RequestOutbox` in memory, with the same claim/lease semantics as the SQLite one."""

    kept: dict[str, QueuedRequest] = field(default_factory=dict)

    def enqueue(self, request: PaymentRequest, now: datetime) -> bool:
        if request.request_id in self.kept:
            return False
        self.kept[request.request_id] = QueuedRequest(request, "QUEUED", 0, now, now)
        return True

    def claim(
        self, now: datetime, lease: timedelta, request_id: str | None = None, limit: int = 50
    ) -> list[QueuedRequest]:
        due = [
            q
            for q in sorted(self.kept.values(), key=lambda q: (q.next_attempt_at or now, q.queued_at))
            if q.status == "QUEUED"
            and (q.next_attempt_at is None or q.next_attempt_at <= now)
            and (request_id is None or q.request.request_id == request_id)
        ][:limit]
        out = []
        for q in due:
            claimed = replace(q, attempts=q.attempts + 1, next_attempt_at=now + lease)
            self.kept[q.request.request_id] = claimed
            out.append(claimed)
        return out

    def delivered(self, request_id: str, response: str, at: datetime) -> None:
        q = self.kept[request_id]
        self.kept[request_id] = replace(q, status="DELIVERED", finished_at=at, response=response, next_attempt_at=None)

    def failed(self, request_id: str, message: str, at: datetime) -> None:
        q = self.kept[request_id]
        self.kept[request_id] = replace(q, status="FAILED", finished_at=at, last_error=message, next_attempt_at=None)

    def retry_at(self, request_id: str, message: str, at: datetime, next_attempt_at: datetime) -> None:
        q = self.kept[request_id]
        self.kept[request_id] = replace(q, last_error=message, next_attempt_at=next_attempt_at)

    def get(self, request_id: str) -> QueuedRequest | None:
        return self.kept.get(request_id)

    def requests(self, status: str | None = None, limit: int = 1000) -> list[QueuedRequest]:
        rows = sorted(self.kept.values(), key=lambda q: q.queued_at, reverse=True)
        return [q for q in rows if status is None or q.status == status][:limit]
