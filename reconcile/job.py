"""The reconciliation job: facts in through `FactsSource`, rows out through `RowSink`, debts through `DebtLedger`.

    full:         ReconcileJob.run(day=D)       every trip of the UTC day D
    incremental:  ReconcileJob.run(since=T)     trips with a fact since T, plus every pending trip

Both run every trip in scope through `table_rules` at once (the rules of `rules.py` as SQL over Arrow tables), so
a day of a million trips takes seconds; `close_debt` handles one debt with the dataclasses of `rules.py`.
Running it twice changes nothing: a trip row, debt or settlement is written only when it differs from the
current one, history only on a change of state, an alert only once per (trip, decline subtype) (its id derives
from them). The batch id is a hash of the rows written, so a batch retried after a crash overwrites its files.
The debt ledger is told first (its calls are idempotent), so a crash between ledger and lake repeats both.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import date, datetime
from decimal import Decimal
from typing import Literal

import pyarrow as pa
import pyarrow.compute as pc

from contracts.arrow_rows import ArrowRows
from contracts.reconcile_tables import ALERTS, BAD_DEBTS, DAILY_SETTLEMENT, TRIP_RECONCILIATION
from contracts.reconcile_tables import TRIP_RECONCILIATION_HISTORY as HISTORY
from contracts.tables import Table
from reconcile import table_rules
from reconcile.ports import DebtLedger, FactsSource, RowSink, StateSource
from reconcile.rows import debt_row
from reconcile.rules import Debt, RuleSettings


@dataclass(frozen=True)
class RunReport:
    trips: int
    """Trips looked at."""
    changed: int
    transitions: int
    debts_opened: int
    debts_closed: int
    alerts: int
    settlements: int
    batch_id: str | None
    """None when nothing changed (nothing written)."""
    states: dict[str, int]
    """Trips looked at, per state."""


class DebtNotFoundError(LookupError):
    pass


class ReconcileJob:
    def __init__(
        self,
        facts: FactsSource,
        state: StateSource,
        sink: RowSink,
        ledger: DebtLedger,
        settings: RuleSettings,
        clock: Callable[[], datetime],
    ) -> None:
        self._facts, self._state, self._sink, self._ledger = facts, state, sink, ledger
        self._settings, self._clock = settings, clock

    def run(self, *, day: date | None = None, since: datetime | None = None) -> RunReport:
        now = self._clock()
        scoped = self._facts.facts(day=day, since=since)
        settings = replace(self._settings, check_reports=self._settings.check_reports and scoped.reports_available)
        results = table_rules.reconcile_trips(scoped.facts, settings, now)
        days = sorted(pc.unique(results.column("business_date")).to_pylist())
        trips = table_rules.trip_changes(results, self._state.trips(scoped.trip_ids, days), now)

        debts = table_rules.decide_debts(trips.results, self._state.debts(scoped.trip_ids), now)
        for debt in table_rules.debts_of(debts.opened):
            self._ledger.open(debt)
        for debt in table_rules.debts_of(debts.closed):
            self._ledger.close(debt.shopping_trip_id, "SETTLED" if debt.status == "SETTLED" else "WRITTEN_OFF", now)

        alerts = table_rules.decline_alerts(scoped.facts.payments)
        known = self._state.alert_ids(scoped.trip_ids)
        alerts = alerts.filter(pa.array([a not in known for a in alerts.column("alert_id").to_pylist()], pa.bool_()))

        settlements = table_rules.changed_settlements(
            table_rules.settle(trips.day_trips), self._state.settlements(days)
        )
        batch: dict[Table, pa.Table] = {
            TRIP_RECONCILIATION: trips.trip_rows,
            HISTORY: trips.history_rows,
            BAD_DEBTS: _with(debts.rows, "updated_at", now),
            ALERTS: alerts,
            DAILY_SETTLEMENT: _settlement_rows(settlements, now),
        }
        batch_id = self._write({table: ArrowRows(rows) for table, rows in batch.items()})
        states = results.group_by("state").aggregate([("state", "count")]).to_pylist()
        return RunReport(
            trips=results.num_rows,
            changed=trips.trip_rows.num_rows,
            transitions=trips.history_rows.num_rows,
            debts_opened=debts.opened.num_rows,
            debts_closed=debts.closed.num_rows,
            alerts=alerts.num_rows,
            settlements=settlements.num_rows,
            batch_id=batch_id,
            states=dict(sorted((str(s["state"]), int(s["state_count"])) for s in states)),
        )

    def close_debt(
        self, shopping_trip_id: str, status: Literal["SETTLED", "WRITTEN_OFF"], amount: Decimal | None = None
    ) -> Debt:
        """Finance settles (a payoff of `amount`, default the whole debt) or writes off a trip's open debt: the
        shopper is let in again. A partial payoff keeps the debt open for the rest."""
        now = self._clock()
        debt = self._state.current_debts([shopping_trip_id]).get(shopping_trip_id)
        if debt is None or debt.status != "OPEN":
            raise DebtNotFoundError(f"trip {shopping_trip_id} has no open debt")
        if status == "SETTLED" and amount is not None and amount < debt.amount:
            new = replace(debt, amount=debt.amount - amount)
        else:
            new = replace(debt, status=status, settled_at=now)
            self._ledger.close(shopping_trip_id, status, now)
        self._write({BAD_DEBTS: [debt_row(new, now)]})
        return new

    def _write(self, batch: Mapping[Table, Sequence[Mapping[str, object]]]) -> str | None:
        batch = {table: rows for table, rows in batch.items() if rows}
        if not batch:
            return None
        digest = hashlib.sha256()
        for table in sorted(batch, key=lambda t: t.name):
            digest.update(table.name.encode())
            rows = batch[table]
            if isinstance(rows, ArrowRows):  # the bytes of its columns, in the table's schema
                digest.update(_arrow_bytes(rows.table.cast(table.arrow_schema()).combine_chunks()))
            else:
                for row in rows:
                    digest.update(repr(sorted(row.items(), key=lambda kv: kv[0])).encode())
        batch_id = f"reconcile-{digest.hexdigest()[:32]}"
        self._sink.write_tables(batch, batch_id)
        return batch_id


def _arrow_bytes(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return bytes(sink.getvalue())


def _with(table: pa.Table, name: str, value: datetime) -> pa.Table:
    return table.append_column(name, pa.array([value] * table.num_rows, pa.timestamp("us", tz="UTC")))


def _settlement_rows(settlements: pa.Table, computed_at: datetime) -> pa.Table:
    """`daily_settlement` rows: the settlements with their day's midnight and the time they were computed."""
    days = pc.cast(settlements.column("business_date"), pa.timestamp("us", tz="UTC"))
    rows = settlements.append_column("day_start", days)
    return _with(rows, "computed_at", computed_at).cast(DAILY_SETTLEMENT.arrow_schema())
