"""The reconciliation job: facts in through `FactsSource`, rows out through `RowSink`, debts through `DebtLedger`.

    full:         ReconcileJob.run(day=D)       every trip of the UTC day D
    incremental:  ReconcileJob.run(since=T)     trips with a fact since T, plus every pending trip

Both run every trip in scope through `table_rules` at once (the rules of `rules.py` as SQL over Arrow tables), so
a day of a million trips is a few queries rather than a million Python objects (`bench/reconcile.py`); `close_debt`
handles one debt with the dataclasses of `rules.py`.

Running it twice changes nothing: a trip row, debt or settlement is written only when it differs from the
current one, history only on a change of state, an alert only once per (trip, decline subtype) (its id derives
from them). The batch id is a hash of the rows written, so a batch retried after a crash overwrites its files.
The debt ledger is told first (its calls are idempotent), so a crash between ledger and lake repeats both.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager, ExitStack, nullcontext
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
        exclusive: Callable[[], AbstractContextManager[object]] = nullcontext,
    ) -> None:
        """`exclusive` is held for a whole run and for a debt's payoff, so a payoff never lands between a run's
        read of the debts and its write of them (across processes: a file lock where the lake is)."""
        self._facts, self._state, self._sink, self._ledger = facts, state, sink, ledger
        self._settings, self._clock, self._exclusive = settings, clock, exclusive

    def run(self, *, day: date | None = None, since: datetime | None = None) -> RunReport:
        with self._exclusive():
            return self._run(day, since)

    def _run(self, day: date | None, since: datetime | None) -> RunReport:
        with ExitStack() as staging:
            staged: dict[Table, Sequence[Mapping[str, object]]] = {}

            def stage(table: Table, rows: pa.Table) -> None:
                if rows.num_rows:
                    staged[table] = staging.enter_context(self._sink.stage(table, ArrowRows(rows)))

            return self._run_staged(day, since, stage, staged)

    def _run_staged(
        self,
        day: date | None,
        since: datetime | None,
        stage: Callable[[Table, pa.Table], None],
        staged: Mapping[Table, Sequence[Mapping[str, object]]],
    ) -> RunReport:
        """The run, with the trip and history rows `stage`d as soon as they leave DuckDB (their files are written
        while the debts, alerts and settlements are computed and the ledger is told) and published with the
        batch (in `staged` by then)."""
        now = self._clock()
        with self._facts.workspace(day=day, since=since) as workspace:
            self._state.attach(workspace.con)
            settings = replace(
                self._settings, check_reports=self._settings.check_reports and workspace.reports_available
            )
            outcome = table_rules.run(workspace.con, settings, now, stage)
        debts = outcome.debts
        blocking = debts.opened.filter(pc.is_valid(debts.opened.column("shopper_id")))
        if blocking.num_rows:
            self._ledger.open_many(table_rules.debts_of(blocking))
        closed = debts.closed.select(["shopping_trip_id", "status"]).to_pylist()
        for status in ("SETTLED", "WRITTEN_OFF"):
            trips = [str(row["shopping_trip_id"]) for row in closed if row["status"] == status]
            if trips:
                self._ledger.close_many(trips, status, now)
        batch: dict[Table, pa.Table] = {
            TRIP_RECONCILIATION: outcome.trip_rows,
            HISTORY: outcome.history_rows,
            BAD_DEBTS: _with(debts.rows, "updated_at", now),
            ALERTS: outcome.alerts,
            DAILY_SETTLEMENT: settlement_rows(outcome.settlements, now),
        }
        batch_id = self._write(
            {table: staged.get(table, ArrowRows(rows)) for table, rows in batch.items()}, outcome.digest
        )
        return RunReport(
            trips=outcome.trips,
            changed=outcome.trip_rows.num_rows,
            transitions=outcome.history_rows.num_rows,
            debts_opened=debts.opened.num_rows,
            debts_closed=debts.closed.num_rows,
            alerts=outcome.alerts.num_rows,
            settlements=outcome.settlements.num_rows,
            batch_id=batch_id,
            states=outcome.states,
        )

    def close_debt(
        self, shopping_trip_id: str, status: Literal["SETTLED", "WRITTEN_OFF"], amount: Decimal | None = None
    ) -> Debt:
        """Finance settles (a payoff of `amount`, default the whole balance) or writes off a trip's open debt: the
        shopper is let in again. A partial payoff keeps the debt open for the rest and is recorded in `paid`, so the
        next run keeps the balance at the trip's outstanding amount less what was paid."""
        with self._exclusive():
            return self._close_debt(shopping_trip_id, status, amount)

    def _close_debt(
        self, shopping_trip_id: str, status: Literal["SETTLED", "WRITTEN_OFF"], amount: Decimal | None
    ) -> Debt:
        now = self._clock()
        debt = self._state.current_debts([shopping_trip_id]).get(shopping_trip_id)
        if debt is None or debt.status != "OPEN":
            raise DebtNotFoundError(f"trip {shopping_trip_id} has no open debt")
        if status == "SETTLED" and amount is not None and amount < debt.amount:
            new = replace(debt, amount=debt.amount - amount, paid=debt.paid + amount)
        else:
            paid = debt.paid + (debt.amount if amount is None else amount) if status == "SETTLED" else debt.paid
            new = replace(debt, status=status, settled_at=now, paid=paid)
            self._ledger.close(shopping_trip_id, status, now)
        self._write({BAD_DEBTS: [debt_row(new, now)]})
        return new

    def _write(self, batch: Mapping[Table, Sequence[Mapping[str, object]]], hashed: str = "") -> str | None:
        """Publish the non-empty tables of `batch` under an id hashed from their rows; `hashed` stands for the trip
        and history rows, whose hash `table_rules.run` computed (those two are not hashed again)."""
        batch = {table: rows for table, rows in batch.items() if rows}
        if not batch:
            return None
        digest = hashlib.sha256(hashed.encode())
        for table in sorted(batch, key=lambda t: t.name):
            digest.update(table.name.encode())
            if hashed and table in (TRIP_RECONCILIATION, HISTORY):
                continue
            rows = batch[table]
            if isinstance(rows, ArrowRows) and len(rows.pieces) == 1:
                digest.update(_ipc_bytes(rows.table))
                continue
            for row in rows:
                digest.update(repr(sorted(row.items(), key=lambda kv: kv[0])).encode())
        batch_id = f"reconcile-{digest.hexdigest()[:32]}"
        self._sink.write_tables(batch, batch_id)
        return batch_id


def _ipc_bytes(table: pa.Table) -> memoryview:
    """An Arrow table as its IPC stream (one record batch), to hash: the same rows in the same order give the same
    bytes, without a Python object per value (a run's debts and alerts are tens of thousands of rows)."""
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table.combine_chunks())
    return memoryview(sink.getvalue())


def _with(table: pa.Table, name: str, value: datetime) -> pa.Table:
    return table.append_column(name, pa.array([value] * table.num_rows, pa.timestamp("us", tz="UTC")))


def settlement_rows(settlements: pa.Table, computed_at: datetime) -> pa.Table:
    """`daily_settlement` rows: the settlements with their day's midnight and the time they were computed."""
    days = pc.cast(settlements.column("business_date"), pa.timestamp("us", tz="UTC"))
    rows = settlements.append_column("day_start", days)
    return _with(rows, "computed_at", computed_at).cast(DAILY_SETTLEMENT.arrow_schema())
