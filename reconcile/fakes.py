"""In-memory fakes of reconciliation's ports, for unit and property tests."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any, Literal

import duckdb
import pyarrow as pa

from contracts.payment_tables import REFUNDS
from contracts.reconcile_tables import ALERTS, BAD_DEBTS, DAILY_SETTLEMENT, TRIP_RECONCILIATION
from contracts.tables import Table
from reconcile import table_rules
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
from reconcile.ports import Workspace
from reconcile.rows import debt_from_row, trip_from_row
from reconcile.rules import Alert, Debt, PaymentEvent, Purchase, TripFacts


@dataclass
class MemoryFacts:
    """Facts as the warehouse views would show them; duplicates kept in, as a real feed delivers them."""

    purchases: list[Purchase] = field(default_factory=list)
    payments: list[PaymentEvent] = field(default_factory=list)
    reported: dict[str, tuple[Any, datetime]] = field(default_factory=dict)
    cancelled: dict[str, datetime] = field(default_factory=dict)

    @contextmanager
    def workspace(self, *, day: date | None = None, since: datetime | None = None) -> Iterator[Workspace]:
        """Every trip (the fake ignores `day` and `since`)."""
        ids = sorted({p.shopping_trip_id for p in self.purchases} | {p.shopping_trip_id for p in self.payments})
        purchases = {p.shopping_trip_id: p for p in self.purchases}
        trips = [
            TripFacts(
                shopping_trip_id=trip,
                purchase=purchases.get(trip),
                payments=tuple(p for p in self.payments if p.shopping_trip_id == trip),
                reported=self.reported[trip][0] if trip in self.reported else None,
                reported_at=self.reported[trip][1] if trip in self.reported else None,
                cancelled_at=self.cancelled.get(trip),
            )
            for trip in ids
        ]
        facts = table_rules.facts_of(trips)
        with table_rules.calculator(
            scope=_ids(ids),
            purchased=facts.purchases,
            payments=facts.payments,
            reported=facts.reported,
            cancelled=facts.cancelled,
        ) as con:
            yield Workspace(con, reports_available=bool(self.reported))


def _ids(trip_ids: list[str]) -> pa.Table:
    return pa.table({"shopping_trip_id": pa.array(trip_ids, pa.string())})


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

    @contextmanager
    def stage(self, table: Table, rows: Sequence[Mapping[str, object]]) -> Iterator[Sequence[Mapping[str, object]]]:
        yield rows

    def table(self, name: str) -> list[dict[str, object]]:
        return list(self.rows.get(name, {}).values())

    def attach(self, con: duckdb.DuckDBPyConnection) -> None:
        """Every current row (the fake does not narrow them to the run's trips)."""
        trips = [trip_from_row(r) for r in self.table(TRIP_RECONCILIATION.name)]
        debts = list(self.current_debts().values())
        alerts = [str(r["alert_id"]) for r in self.table(ALERTS.name)]
        settlements = [
            {name: r[name] for name in table_rules.SETTLEMENT_SCHEMA.names} for r in self.table(DAILY_SETTLEMENT.name)
        ]
        con.register("current_trips", table_rules.table_of(trips, table_rules.STATE_SCHEMA))
        con.register("current_debts", table_rules.table_of(debts, table_rules.DEBT_SCHEMA))
        con.register("known_alerts", pa.table({"alert_id": pa.array(alerts, pa.string())}))
        con.register("current_settlements", pa.Table.from_pylist(settlements, schema=table_rules.SETTLEMENT_SCHEMA))
        refunded = [
            {"business_date": d, "store_id": s, "refunded": v} for (d, s), v in refunded_per_day(self.refunds()).items()
        ]
        con.register("refunded", pa.Table.from_pylist(refunded, schema=table_rules.REFUNDED_SCHEMA))

    def current_debts(self, trip_ids: Sequence[str] | None = None) -> dict[str, Debt]:
        debts = [debt_from_row(r) for r in self.table(BAD_DEBTS.name)]
        return {d.shopping_trip_id: d for d in debts if trip_ids is None or d.shopping_trip_id in set(trip_ids)}

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
        return self._open(debt)

    def close(self, shopping_trip_id: str, status: Literal["SETTLED", "WRITTEN_OFF"], at: datetime) -> bool:
        self.calls.append(("close", shopping_trip_id))
        return self._close(shopping_trip_id, status, at)

    def _open(self, debt: Debt) -> bool:
        if debt.shopping_trip_id in self.debts:
            return False
        self.debts[debt.shopping_trip_id] = debt
        return True

    def _close(self, shopping_trip_id: str, status: Literal["SETTLED", "WRITTEN_OFF"], at: datetime) -> bool:
        debt = self.debts.get(shopping_trip_id)
        if debt is None or debt.status != "OPEN":
            return False
        self.debts[shopping_trip_id] = replace(debt, status=status, settled_at=at)
        return True

    def open_many(self, debts: Sequence[Debt]) -> int:
        self.calls.append(("open_many", str(len(debts))))
        return sum(self._open(debt) for debt in debts)

    def close_many(
        self, shopping_trip_ids: Sequence[str], status: Literal["SETTLED", "WRITTEN_OFF"], at: datetime
    ) -> int:
        self.calls.append(("close_many", str(len(shopping_trip_ids))))
        return sum(self._close(trip, status, at) for trip in shopping_trip_ids)

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
