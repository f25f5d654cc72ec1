"""In-memory fakes of reconciliation's ports, for unit and property tests."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import date, datetime
from typing import Any, Literal

import duckdb
import pyarrow as pa

from contracts.reconcile_tables import ALERTS, BAD_DEBTS, DAILY_SETTLEMENT, TRIP_RECONCILIATION
from contracts.tables import Table
from reconcile import table_rules
from reconcile.errors import AlertDeliveryError
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
        con.register("refunded", table_rules.empty(table_rules.REFUNDED_SCHEMA))

    def current_debts(self, trip_ids: Sequence[str] | None = None) -> dict[str, Debt]:
        debts = [debt_from_row(r) for r in self.table(BAD_DEBTS.name)]
        return {d.shopping_trip_id: d for d in debts if trip_ids is None or d.shopping_trip_id in set(trip_ids)}


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
