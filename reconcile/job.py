"""The reconciliation job: facts in through `FactsSource`, rows out through `RowSink`, debts through `DebtLedger`.

    full:         ReconcileJob.run(day=D)       every trip of the UTC day D
    incremental:  ReconcileJob.run(since=T)     trips with a fact since T, plus every pending trip

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

from contracts.reconcile_tables import ALERTS, BAD_DEBTS, DAILY_SETTLEMENT, TRIP_RECONCILIATION
from contracts.reconcile_tables import TRIP_RECONCILIATION_HISTORY as HISTORY
from contracts.tables import Table
from reconcile.ports import DebtLedger, FactsSource, RowSink, StateSource
from reconcile.rows import Row, alert_row, debt_row, history_row, settlement_row, trip_row
from reconcile.rules import (
    Debt,
    RuleSettings,
    Settlement,
    TripResult,
    decide_debt,
    decline_alerts,
    reconcile_trip,
    settle,
)


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
        ids = sorted(set(self._facts.touched_trips(day=day, since=since)))
        settings = replace(
            self._settings, check_reports=self._settings.check_reports and self._facts.reports_available()
        )
        current = self._state.current_trips(ids)
        debts = self._state.current_debts(ids)
        known_alerts = self._state.alert_ids(ids)

        batch: dict[Table, list[Row]] = {TRIP_RECONCILIATION: [], HISTORY: [], BAD_DEBTS: [], ALERTS: []}
        results: dict[str, TripResult] = {}
        opened = closed = 0
        for facts in self._facts.facts(ids):
            result = reconcile_trip(facts, settings, now)
            if result is None:
                continue
            old = current.get(result.shopping_trip_id)
            if old is not None:
                result = replace(result, first_seen_at=old.first_seen_at)
            results[result.shopping_trip_id] = result
            if old is None or not result.same_outcome(old):
                batch[TRIP_RECONCILIATION].append(trip_row(result, now))
                if old is None or old.state != result.state:
                    cause = result.reason if old is None else f"{old.reason} → {result.reason}"
                    from_state = None if old is None else old.state
                    batch[HISTORY].append(history_row(result.shopping_trip_id, from_state, result.state, cause, now))
            debt = decide_debt(result, debts.get(result.shopping_trip_id), now)
            if debt is not None:
                opened, closed = self._tell_ledger(debt, debts.get(result.shopping_trip_id), opened, closed, now)
                batch[BAD_DEBTS].append(debt_row(debt, now))
            for alert in decline_alerts(facts.payments):
                if alert.alert_id not in known_alerts:
                    known_alerts.add(alert.alert_id)
                    batch[ALERTS].append(alert_row(alert))

        changed_days = sorted({r.business_date for r in results.values()})
        batch[DAILY_SETTLEMENT] = [settlement_row(s, now) for s in self._settlements(changed_days, results)]
        batch_id = self._write(batch)
        states: dict[str, int] = {}
        for r in results.values():
            states[r.state] = states.get(r.state, 0) + 1
        return RunReport(
            trips=len(results),
            changed=len(batch[TRIP_RECONCILIATION]),
            transitions=len(batch[HISTORY]),
            debts_opened=opened,
            debts_closed=closed,
            alerts=len(batch[ALERTS]),
            settlements=len(batch[DAILY_SETTLEMENT]),
            batch_id=batch_id,
            states=dict(sorted(states.items())),
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

    def _tell_ledger(self, debt: Debt, old: Debt | None, opened: int, closed: int, now: datetime) -> tuple[int, int]:
        if old is None and debt.status == "OPEN":
            self._ledger.open(debt)
            return opened + 1, closed
        if old is not None and old.status == "OPEN" and debt.status != "OPEN":
            self._ledger.close(debt.shopping_trip_id, "SETTLED" if debt.status == "SETTLED" else "WRITTEN_OFF", now)
            return opened, closed + 1
        return opened, closed

    def _settlements(self, days: Sequence[date], results: Mapping[str, TripResult]) -> list[Settlement]:
        if not days:
            return []
        trips = {t.shopping_trip_id: t for t in self._state.trips_on(days)}
        trips.update(results)
        current = self._state.settlements(days)
        refunded = self._state.refunded(days)
        return [s for s in settle(list(trips.values()), refunded) if current.get((s.business_date, s.store_id)) != s]

    def _write(self, batch: Mapping[Table, Sequence[Row]]) -> str | None:
        batch = {table: rows for table, rows in batch.items() if rows}
        if not batch:
            return None
        digest = hashlib.sha256()
        for table in sorted(batch, key=lambda t: t.name):
            digest.update(table.name.encode())
            for row in batch[table]:
                digest.update(repr(sorted(row.items(), key=lambda kv: kv[0])).encode())
        batch_id = f"reconcile-{digest.hexdigest()[:32]}"
        self._sink.write_tables(batch, batch_id)
        return batch_id
