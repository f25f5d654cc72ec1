"""Wiring of reconciliation: its ports over the lake (read with `warehouse.query.run_query`, written with the
`LakeWriter`) and the identity store's debt list (`SqliteRetailerStore`), and `build_job` for the CLI and `jwo up`.
"""

from __future__ import annotations

import asyncio
import contextlib
import html
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal, cast

import pyarrow as pa
import pyarrow.parquet as pq

from connectors.ports import BadDebt, RetailerAdmin
from contracts.payment_tables import REFUNDS
from contracts.reconcile_tables import ALERTS, BAD_DEBTS, DAILY_SETTLEMENT, TRIP_RECONCILIATION
from reconcile.job import ReconcileJob
from reconcile.rows import debt_from_row, settlement_from_row, trip_from_row
from reconcile.rules import Debt, PaymentEvent, Purchase, Settlement, TripFacts, TripResult
from reconcile.settings import ReconcileSettings
from simulator.settlement import SettlementKey
from warehouse.lake import LakeWriter
from warehouse.query import QueryResult, run_query
from warehouse.render import render
from warehouse.views import quote_literal

log = logging.getLogger("jwo.reconcile")


def _ids(trip_ids: Sequence[str]) -> str:
    """A SQL list of the ids, for `shopping_trip_id IN (SELECT unnest(<list>))`."""
    return "[" + ", ".join(quote_literal(t) for t in trip_ids) + "]::VARCHAR[]"


def _dicts(result: QueryResult) -> list[dict[str, Any]]:
    return [dict(zip(result.columns, row, strict=True)) for row in result.rows]


def _cents(amount: Decimal) -> Decimal:
    return amount.quantize(Decimal("0.01"))


def _ts(moment: datetime) -> str:
    return f"TIMESTAMPTZ {quote_literal(moment.astimezone(UTC).isoformat())}"


class LakeFacts:
    """`FactsSource` and `StateSource` over the lake's views; every call reads what is published right now."""

    def __init__(self, lake_root: Path) -> None:
        self._root = lake_root

    def _query(self, sql: str) -> list[dict[str, Any]]:
        return _dicts(run_query(self._root, sql))

    def touched_trips(self, *, day: date | None = None, since: datetime | None = None) -> list[str]:
        if day is not None:
            d = f"DATE {quote_literal(day.isoformat())}"
            sql = (
                f"select shopping_trip_id from purchases where cast(end_time as date) = {d} "
                f"union select shopping_trip_id from payment_events where cast(event_time as date) = {d} "
                f"and shopping_trip_id not in (select shopping_trip_id from purchases) "
                f"union select shopping_trip_id from trip_reconciliation where cast(business_date as date) = {d}"
            )
        elif since is not None:
            t = _ts(since)
            sql = (
                f"select shopping_trip_id from purchases where created_at >= {t} "
                f"union select shopping_trip_id from payment_events where event_time >= {t} "
                f"union select shopping_trip_id from cancel_charges where requested_at >= {t} "
                f"union select shopping_trip_id from intraday_order_lines where last_updated >= {t} "
                "union select shopping_trip_id from trip_reconciliation where state = 'pending'"
            )
        else:
            sql = "select shopping_trip_id from purchases union select shopping_trip_id from payment_events"
        return sorted(str(r["shopping_trip_id"]) for r in self._query(sql) if r["shopping_trip_id"] is not None)

    def facts(self, trip_ids: Sequence[str]) -> list[TripFacts]:
        if not trip_ids:
            return []
        where = f"shopping_trip_id in (select unnest({_ids(trip_ids)}))"
        purchases = {
            r["shopping_trip_id"]: Purchase(
                shopping_trip_id=r["shopping_trip_id"],
                store_id=r["store_id"],
                entry_method=r["entry_method"],
                shopper_id=r["shopper_id"],
                currency=r["currency"],
                subtotal=r["subtotal"],
                promotions=r["promotions"],
                tax=r["tax"],
                total=r["total"],
                line_count=int(r["line_count"]),
                end_time=r["end_time"],
            )
            for r in self._query(
                "select shopping_trip_id, store_id, entry_method, shopper_id, currency, subtotal, promotions, tax, "
                f"total, line_count, end_time from purchases where {where}"
            )
        }
        payments: dict[str, list[PaymentEvent]] = {}
        for r in self._query(
            "select event_id, shopping_trip_id, store_id, sub_type, amount, currency, event_time "
            f"from payment_events where {where} order by event_time, event_id"
        ):
            payments.setdefault(r["shopping_trip_id"], []).append(PaymentEvent(**r))
        reported = {
            r["shopping_trip_id"]: (r["reported"], r["reported_at"])
            for r in self._query(
                "select shopping_trip_id, sum(line_total) as reported, max(last_updated) as reported_at "
                f"from intraday_order_lines where {where} group by shopping_trip_id"
            )
        }
        cancelled = {
            r["shopping_trip_id"]: r["requested_at"]
            for r in self._query(f"select shopping_trip_id, requested_at from cancel_charges where {where}")
        }
        out: list[TripFacts] = []
        for trip in trip_ids:
            report = reported.get(trip)
            out.append(
                TripFacts(
                    shopping_trip_id=trip,
                    purchase=purchases.get(trip),
                    payments=tuple(payments.get(trip, ())),
                    reported=report[0] if report else None,
                    reported_at=report[1] if report else None,
                    cancelled_at=cancelled.get(trip),
                )
            )
        return out

    def reports_available(self) -> bool:
        return bool(self._query("select 1 as one from intraday_order_lines limit 1"))

    def current_trips(self, trip_ids: Sequence[str]) -> dict[str, TripResult]:
        if not trip_ids:
            return {}
        rows = self._query(
            f"select * from {TRIP_RECONCILIATION.name} where shopping_trip_id in (select unnest({_ids(trip_ids)}))"
        )
        return {r["shopping_trip_id"]: trip_from_row(r) for r in rows}

    def trips_on(self, days: Sequence[date]) -> list[TripResult]:
        listed = ", ".join(f"DATE {quote_literal(d.isoformat())}" for d in days)
        rows = self._query(f"select * from {TRIP_RECONCILIATION.name} where cast(business_date as date) in ({listed})")
        return [trip_from_row(r) for r in rows]

    def current_debts(self, trip_ids: Sequence[str] | None = None) -> dict[str, Debt]:
        where = "" if trip_ids is None else f" where shopping_trip_id in (select unnest({_ids(trip_ids)}))"
        if trip_ids is not None and not trip_ids:
            return {}
        return {r["shopping_trip_id"]: debt_from_row(r) for r in self._query(f"select * from {BAD_DEBTS.name}{where}")}

    def alert_ids(self, trip_ids: Sequence[str]) -> set[str]:
        if not trip_ids:
            return set()
        rows = self._query(
            f"select alert_id from {ALERTS.name} where shopping_trip_id in (select unnest({_ids(trip_ids)}))"
        )
        return {str(r["alert_id"]) for r in rows}

    def settlements(self, days: Sequence[date]) -> dict[tuple[date, str], Settlement]:
        listed = ", ".join(f"DATE {quote_literal(d.isoformat())}" for d in days)
        rows = self._query(f"select * from {DAILY_SETTLEMENT.name} where business_date in ({listed})")
        return {(s.business_date, s.store_id): s for s in map(settlement_from_row, rows)}

    def refunded(self, days: Sequence[date]) -> dict[tuple[date, str], Decimal]:
        """Σ REFUNDED refunds per (the trip's business day, store): `daily_settlement.refunded`."""
        if not days:
            return {}
        listed = ", ".join(f"DATE {quote_literal(d.isoformat())}" for d in days)
        rows = self._query(
            f"select business_date, store_id, sum(amount) as refunded from {REFUNDS.name} "
            f"where status = 'REFUNDED' and business_date in ({listed}) group by all"
        )
        return {(r["business_date"], r["store_id"]): _cents(r["refunded"]) for r in rows}


class RetailerDebtLedger:
    """`DebtLedger` over the identity store: an open debt for an app-entry shopper refuses them at the gate.

    Card-entry debts have no shopper to block; they live in the `bad_debts` table only."""

    def __init__(self, store: RetailerAdmin) -> None:
        self._store = store

    def open(self, debt: Debt) -> bool:
        if debt.shopper_id is None:
            return False
        return self._store.open_debt(
            BadDebt(
                debt_id=debt.debt_id,
                shopper_id=debt.shopper_id,
                shopping_trip_id=debt.shopping_trip_id,
                store_id=debt.store_id,
                amount=Decimal(debt.amount),
                currency=debt.currency,
                reason=debt.reason,
                status="OPEN",
                opened_at=debt.opened_at,
            )
        )

    def close(self, shopping_trip_id: str, status: Literal["SETTLED", "WRITTEN_OFF"], at: datetime) -> bool:
        return self._store.close_debt(shopping_trip_id, status, at)


def utc_now() -> datetime:
    return datetime.now(UTC)


def build_job(
    lake_root: Path,
    store: RetailerAdmin,
    settings: ReconcileSettings,
    clock: Callable[[], datetime] = utc_now,
) -> ReconcileJob:
    facts = LakeFacts(lake_root)
    return ReconcileJob(facts, facts, LakeWriter(lake_root), RetailerDebtLedger(store), settings.rules(), clock)


# --------------------------------------------------------------------------- CLI, schedule and demo helpers


async def run_on_schedule(
    job: ReconcileJob,
    interval_seconds: float,
    stop: asyncio.Event,
    clock: Callable[[], datetime] = utc_now,
    lookback: timedelta = timedelta(hours=1),
) -> None:
    """Inside `jwo up`: an incremental run every `interval_seconds` (facts since the last run, less a lookback
    for events that arrive after their event time), off the event loop; a failed run is logged and retried."""
    since: datetime | None = None
    while not stop.is_set():
        started = clock()
        try:
            report = await asyncio.to_thread(job.run, since=since)
        except Exception:
            log.exception("reconcile run failed; retrying next interval")
        else:
            since = started - lookback
            if report.batch_id is not None:
                log.info(
                    "reconciled", extra={"trips": report.trips, "changed": report.changed, "states": report.states}
                )
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), interval_seconds)


SettlementFormat = Literal["csv", "parquet", "html", "table", "json"]


def settlement_report(lake_root: Path, day: date, store_id: str | None, fmt: SettlementFormat) -> bytes:
    """`jwo report settlement`: the day's settlement rows (one per store) followed, for csv/html/table, by the
    exception trips finance works through. Parquet: the settlement rows only."""
    where = f"business_date = DATE {quote_literal(day.isoformat())}"
    if store_id is not None:
        where += f" and store_id = {quote_literal(store_id)}"
    columns = ", ".join(c.name for c in DAILY_SETTLEMENT.columns if c.name not in ("day_start", "computed_at"))
    summary = run_query(lake_root, f"select {columns} from {DAILY_SETTLEMENT.name} where {where} order by store_id")
    exceptions = run_query(
        lake_root,
        "select store_id, shopping_trip_id, state, purchase_total, captured, outstanding, reason "
        f"from {TRIP_RECONCILIATION.name} where cast(business_date as date) = DATE {quote_literal(day.isoformat())}"
        + (f" and store_id = {quote_literal(store_id)}" if store_id is not None else "")
        + " and state in ('amount_mismatch', 'declined', 'partially_captured', 'missing_capture',"
        " 'missing_from_report', 'orphan_payment') order by store_id, state, shopping_trip_id",
    )
    if fmt == "parquet":
        sink = pa.BufferOutputStream()
        frame = pa.table({name: [row[i] for row in summary.rows] for i, name in enumerate(summary.columns)})
        pq.write_table(frame, sink)
        return bytes(sink.getvalue().to_pybytes())
    if fmt == "html":
        return (_html_table("Daily settlement", summary) + _html_table("Exceptions", exceptions)).encode()
    text = render(summary, fmt) + ("\n" if fmt != "csv" else "") + render(exceptions, fmt)
    return text.encode()


def _html_table(title: str, result: QueryResult) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in result.columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape('' if v is None else str(v))}</td>" for v in row) + "</tr>"
        for row in result.rows
    )
    return f"<h2>{html.escape(title)}</h2><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>\n"


@dataclass(frozen=True)
class Score:
    in_expected_state: int
    trips: int
    money_difference: Decimal
    """Σ |expected - actual| over purchase_total, captured and outstanding of every trip in the key."""

    def line(self) -> str:
        share = 100 * self.in_expected_state / self.trips if self.trips else 100.0
        return (
            f"reconciliation: {self.in_expected_state}/{self.trips} trips in the expected state ({share:.1f}%), "
            f"money difference {self.money_difference:.2f}"
        )


def score(lake_root: Path, key: SettlementKey) -> Score:
    """The demo's score: the answer key's trips against `trip_reconciliation`."""
    rows = {
        str(r[0]): r
        for r in run_query(
            lake_root, "select shopping_trip_id, state, purchase_total, captured, outstanding from trip_reconciliation"
        ).rows
    }
    good, diff = 0, Decimal("0.00")
    for trip in key.trips:
        row = rows.get(trip.shopping_trip_id)
        if row is None:
            diff += abs(trip.purchase_total) + abs(trip.captured) + abs(trip.outstanding)
            continue
        good += row[1] == trip.state
        actual = [cast(Decimal, v) for v in row[2:5]]
        diff += sum(
            (abs(e - a) for e, a in zip((trip.purchase_total, trip.captured, trip.outstanding), actual, strict=True)),
            Decimal("0.00"),
        )
    return Score(good, len(key.trips), diff)
