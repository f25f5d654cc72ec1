"""In-memory fakes of reconciliation's ports, for unit and property tests."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import date, datetime
from typing import Any, Literal

from contracts.reconcile_tables import ALERTS, BAD_DEBTS, DAILY_SETTLEMENT, TRIP_RECONCILIATION
from contracts.tables import Table
from reconcile.errors import AlertDeliveryError
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
