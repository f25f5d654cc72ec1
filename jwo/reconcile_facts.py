"""Wiring of reconciliation: its ports over the lake (read with `warehouse.query.run_query`, written with the
`LakeWriter`) and the identity store's debt list (`SqliteRetailerStore`), and `build_job` for the CLI and `jwo up`.
"""

from __future__ import annotations

import asyncio
import contextlib
import html
import logging
import shutil
import tempfile
import time
import weakref
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from functools import partial
from pathlib import Path
from typing import Any, Literal, cast

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from connectors.ports import BadDebt, RetailerAdmin
from contracts.payment_tables import REFUNDS
from contracts.reconcile_tables import ALERTS, BAD_DEBTS, DAILY_SETTLEMENT, TRIP_RECONCILIATION
from contracts.tables import INTRADAY_ORDER_LINES, PAYMENT_EVENTS, PURCHASES, Table
from reconcile import table_rules
from reconcile.job import ReconcileJob
from reconcile.ports import Workspace
from reconcile.rows import debt_from_row
from reconcile.rules import Debt
from reconcile.settings import ReconcileSettings
from simulator.settlement import SettlementKey
from warehouse.errors import QueryError
from warehouse.lake import LakeWriter, parquet_files
from warehouse.merge import file_lock
from warehouse.query import (
    VANISHED_FILE_RETRIES,
    QueryResult,
    file_vanished,
    lock_down,
    merged_file_state,
    open_reader,
    run_query,
    segments_as_they_are,
)
from warehouse.render import render
from warehouse.views import empty_select_sql, parquet_glob, quote_literal

log = logging.getLogger("jwo.reconcile")

RECONCILE_LOCK = ".reconcile.lock"
"""Held by a reconcile run and a debt payoff (`ReconcileJob`'s `exclusive`), in the lake's root folder."""


def _ids(trip_ids: Sequence[str]) -> str:
    """A SQL list of the ids, for `shopping_trip_id IN (SELECT unnest(<list>))`."""
    return "[" + ", ".join(quote_literal(t) for t in trip_ids) + "]::VARCHAR[]"


def _dicts(result: QueryResult) -> list[dict[str, Any]]:
    return [dict(zip(result.columns, row, strict=True)) for row in result.rows]


def _cents(amount: Decimal) -> Decimal:
    return amount.quantize(Decimal("0.01"))


def _ts(moment: datetime) -> str:
    return f"TIMESTAMPTZ {quote_literal(moment.astimezone(UTC).isoformat())}"


def _state_columns(columns: Sequence[str]) -> str:
    """The columns of `trip_reconciliation` as STATE_SCHEMA has them (`business_date` as its UTC date)."""
    return ", ".join(
        f"{table_rules.utc_date(name)} as business_date" if name == "business_date" else name for name in columns
    )


def _has_table(con: duckdb.DuckDBPyConnection, name: str) -> bool:
    [(found,)] = con.execute(
        "select count(*) from duckdb_tables() where temporary and table_name = ?", [name]
    ).fetchall()
    return bool(found)


Step = str | Callable[[duckdb.DuckDBPyConnection], None]
"""A statement to run on a reader, or a function that runs several."""


def _unless_none(probe: str, statement: str) -> Step:
    """A step that runs `statement` only when the query `probe` finds a row (a DELETE or an INSERT that would find
    nothing to do still builds the hash table of its anti join)."""

    def step(con: duckdb.DuckDBPyConnection) -> None:
        if con.execute(probe).fetchall():
            con.execute(statement)

    return step


class LakeFacts:
    """`FactsSource` and `StateSource` over the lake's views; every call reads what is published right now, with
    one in-memory DuckDB reader (`warehouse.query.open_reader`) that is given the run's trip ids as an Arrow table."""

    def __init__(self, lake_root: Path, memory_limit_mb: int = 1024) -> None:
        self._root = lake_root
        self._memory_limit_mb = memory_limit_mb

    def _query(self, sql: str) -> list[dict[str, Any]]:
        return _dicts(run_query(self._root, sql))

    @contextlib.contextmanager
    def workspace(self, *, day: date | None = None, since: datetime | None = None) -> Iterator[Workspace]:
        """A reader (`warehouse.query.open_reader`: in memory, may read the lake only) holding the facts of the
        trips in scope as temp tables, read once."""
        purchases, payments = table_rules.PURCHASES_SCHEMA.names, table_rules.PAYMENTS_SCHEMA.names
        read = [
            self._latest(PURCHASES, "_purchases", purchases if day is not None else [*purchases, "created_at"]),
            self._latest(PAYMENT_EVENTS, "_payments", payments),
            self._latest(TRIP_RECONCILIATION, "_trips", table_rules.STATE_SCHEMA.names),
            self._latest(
                INTRADAY_ORDER_LINES, "_reported", ["shopping_trip_id", "line_total", "last_updated"],
                # `reported` as REPORTED_SCHEMA has it (the rules' arithmetic stays in 64-bit decimals)
                "select shopping_trip_id, cast(sum(line_total) as decimal(18,4)) as reported, "
                "max(last_updated) as reported_at "
                "from ({rows}) group by shopping_trip_id",
            ),
        ]  # fmt: skip
        out_of_scope = "not exists (select 1 from scope s where s.shopping_trip_id = {table}.shopping_trip_id)"
        if day is not None:
            # Each trip once without a DISTINCT of every id: the day's purchases (one row per trip), the payments'
            # trips of the day with no purchase at all, the day's reconciled trips not among those.
            on_day = partial(table_rules.on_utc_day, day=day)
            scope = [
                f"create temp table scope as select shopping_trip_id from _purchases where {on_day('end_time')} "
                "and shopping_trip_id is not null",
                "insert into scope select distinct shopping_trip_id from _payments p "
                f"where {on_day('event_time')} and shopping_trip_id is not null "
                "and not exists (select 1 from _purchases q where q.shopping_trip_id = p.shopping_trip_id)",
                _unless_none(
                    f"select 1 from _trips where {on_day('business_date')} limit 1",
                    "insert into scope select distinct shopping_trip_id from _trips t "
                    f"where {on_day('business_date')} and shopping_trip_id is not null "
                    f"and {out_of_scope.format(table='t')}",
                ),
            ]
            # A purchase is in scope if it ends on the day, or (rarely) by its trip's reconciled business day.
            outside = f"({on_day('end_time')} is not true or shopping_trip_id is null)"
            narrow_purchases = _unless_none(
                f"select 1 from _purchases where {outside} limit 1",
                f"delete from _purchases where {outside} and {out_of_scope.format(table='_purchases')}",
            )
        else:
            if since is not None:
                t = _ts(since)
                union = (
                    f"select shopping_trip_id from _purchases where created_at >= {t} "
                    f"union all select shopping_trip_id from _payments where event_time >= {t} "
                    f"union all select shopping_trip_id from cancel_charges where requested_at >= {t} "
                    f"union all select shopping_trip_id from intraday_order_lines where last_updated >= {t} "
                    "union all select shopping_trip_id from _trips where state = 'pending'"
                )
            else:
                union = "select shopping_trip_id from _purchases union all select shopping_trip_id from _payments"
            scope = [
                f"create temp table scope as select distinct shopping_trip_id from ({union}) "
                "where shopping_trip_id is not null"
            ]
            narrow_purchases = f"delete from _purchases where {out_of_scope.format(table='_purchases')}"
        con = self._open(
            [
                *read,
                *scope,
                # Narrowed in place (a full day keeps nearly every row: a copy would cost more than the delete).
                narrow_purchases,
                *([] if day is not None else ["alter table _purchases drop column created_at"]),
                "alter table _purchases rename to purchased",
                f"delete from _payments where {out_of_scope.format(table='_payments')}",
                "alter table _payments rename to payments",
                "create temp table cancelled as select shopping_trip_id, requested_at as cancelled_at "
                "from cancel_charges where shopping_trip_id in (select shopping_trip_id from scope)",
            ]
        )
        try:
            available = con.sql("select count(*) from (select 1 from _reported limit 1)").fetchall()[0][0] > 0
            self._run(
                con,
                [
                    f"delete from _reported where {out_of_scope.format(table='_reported')}",
                    "alter table _reported rename to reported",
                ],
            )
            yield Workspace(con, reports_available=available)
        finally:
            con.close()

    def attach(self, con: duckdb.DuckDBPyConnection) -> None:
        """The current rows of the trips in scope and of every trip of their possible business days (the UTC days
        of their end times and payment events), read once (the current trips were read with the facts, as
        `_trips`, when `con` is this source's workspace)."""
        columns = table_rules.STATE_SCHEMA.names
        state = _state_columns(columns)
        days = "select day from _business_days"
        in_scope = "shopping_trip_id in (select shopping_trip_id from scope)"
        utc_date = table_rules.utc_date
        self._run(
            con,
            [
                *([] if _has_table(con, "_trips") else [self._latest(TRIP_RECONCILIATION, "_trips", columns)]),
                # Found once (a scan of every purchase and payment event), used three times.
                f"create temp table _business_days as select distinct {utc_date('end_time')} as day from purchased "
                f"union select distinct {utc_date('event_time')} from payments",
                f"create temp table current_trips as select {state} from _trips "
                f"where {in_scope} or {utc_date('business_date')} in ({days})",
                "drop table _trips",
                f"create temp table current_debts as select {', '.join(table_rules.DEBT_SCHEMA.names)} "
                f"from {BAD_DEBTS.name} where {in_scope}",
                f"create temp table known_alerts as select alert_id from {ALERTS.name} where {in_scope}",
                "create temp table current_settlements as select "
                f"{', '.join(table_rules.SETTLEMENT_SCHEMA.names)} from {DAILY_SETTLEMENT.name} "
                f"where business_date in ({days})",
                self._refunded_step(days),
                "drop table _business_days",
            ],
        )

    def _open(self, statements: Sequence[Step]) -> duckdb.DuckDBPyConnection:
        """A reader on which `statements` ran. A file that compaction removed between listing and reading makes
        the whole read run again on a new reader."""
        for attempt in range(VANISHED_FILE_RETRIES + 1):
            con = self._reader()
            try:
                self._run(con, statements)
                return con
            except QueryError as exc:
                con.close()
                if attempt < VANISHED_FILE_RETRIES and file_vanished(exc):
                    time.sleep(0.02 * (attempt + 1))
                    continue
                raise
            except BaseException:
                con.close()
                raise
        raise AssertionError("unreachable")

    def _reader(self) -> duckdb.DuckDBPyConnection:
        """`open_reader`'s views and sandbox (read the lake, nothing else), within `memory_limit_mb`: beyond it
        DuckDB spills to a temp folder (removed when the connection closes, or by the OS's tmp cleaning)."""
        con = open_reader(self._root, sandbox=False)
        spill = Path(tempfile.mkdtemp(prefix="jwo-reconcile-"))
        weakref.finalize(con, shutil.rmtree, spill, True)
        try:
            con.execute(f"SET memory_limit = '{self._memory_limit_mb}MB'")
            con.execute(f"SET temp_directory = {quote_literal(spill.as_posix())}")
            lock_down(con, [self._root, spill])
        except BaseException:
            con.close()
            raise
        return con

    @staticmethod
    def _run(con: duckdb.DuckDBPyConnection, steps: Sequence[Step]) -> None:
        for step in steps:
            try:
                con.execute(step) if isinstance(step, str) else step(con)
            except duckdb.Error as exc:
                raise QueryError(str(exc)) from exc

    def _latest(self, table: Table, name: str, columns: Sequence[str], shape: str | None = None) -> Step:
        """A step that makes a temp table `name` of the table's `columns` (passed through `shape`, a query over
        `{rows}`), holding exactly the rows its view holds, more cheaply: a key that occurs once is its own row (no
        sort); only the rows of keys that occur more than once are ordered as the view orders them
        (`warehouse.views`: the `latest_by` columns newest first, then the other non-key columns, nulls last) and
        the first is kept. Keys are told apart by their hash first, as the merged views do (a collision only sends
        a key to the ranking, which partitions by the key itself).

        Without `shape` the Parquet files are read once: the rows, with the other columns the ranking needs, go
        into the temp table, the ranking's losers are deleted from it and those columns dropped. With a `shape`
        (an aggregate, whose input rows are not kept) the keys are counted in one read and the rows taken in
        another; only when a key repeats are its rows read a third time, whole, to be ranked. Either way the ranking
        stops at the last of `columns` in it."""
        listed = ", ".join(columns)
        if not parquet_files(self._root, table):
            rows = f"select {listed} from {table.name}"
            return f"create temp table {name} as " + (rows if shape is None else shape.format(rows=rows))
        keys = ", ".join(table.key)
        key_hash = f"hash({keys})"
        files = quote_literal(parquet_glob(table, self._root.resolve()))
        raw = (
            f"(select * from ({empty_select_sql(table)} union all by name select * from read_parquet({files}, "
            "hive_partitioning = false, union_by_name = true)))"
        )
        ranked = [*table.latest_by, *(c for c in table.column_names if c not in table.key and c not in table.latest_by)]
        # Rows of a key that tie on the ranking up to the last of `columns` in it hold the same `columns`, whichever
        # of them the whole ranking keeps: the columns after that one are neither read nor sorted.
        ranked = ranked[: max((n + 1 for n, c in enumerate(ranked) if c in columns), default=0)]
        order = ", ".join(
            [f"{c} desc nulls last" for c in ranked if c in table.latest_by]
            + [f"{c} asc nulls last" for c in ranked if c not in table.latest_by]
        )
        first = f"row_number() over (partition by {keys}{f' order by {order}' if order else ''})"
        held_twice = f"select key_hash from {name}_dups"

        def cast(c: str) -> str:
            return f"cast({c} as {table.column(c).duckdb_type}) as {c}"

        def read_once(con: duckdb.DuckDBPyConnection) -> None:
            extra = [c for c in (*table.key, *ranked) if c not in columns]
            con.execute(
                f"create temp table {name} as select {', '.join(map(cast, [*columns, *extra]))}, "
                f"{key_hash} as _key_hash from {raw}"
            )
            con.execute(
                f"create temp table {name}_dups as select _key_hash as key_hash from {name} "
                "group by all having count(*) > 1"
            )
            [(dups,)] = con.execute(f"select count(*) from {name}_dups").fetchall()
            if dups:
                con.execute(
                    f"delete from {name} where rowid in (select rowid from {name} where _key_hash in ({held_twice}) "
                    f"qualify {first} > 1)"
                )
            for c in [*extra, "_key_hash"]:
                con.execute(f"alter table {name} drop column {c}")
            con.execute(f"drop table {name}_dups")

        def read_shaped(con: duckdb.DuckDBPyConnection) -> None:
            assert shape is not None
            plain = segments_as_they_are(self._root, table)
            if plain is not None:  # every key in one segment: the rows as they are, read once, nothing to rank
                segments, state = plain
                con.execute(f"create temp table {name} as " + shape.format(rows=f"select {listed} from ({segments})"))
                if merged_file_state(self._root, table) == state:
                    return
                con.execute(f"drop table {name}")  # a merge ran meanwhile: read it as any lake is read
            con.execute(
                f"create temp table {name}_dups as select {key_hash} as key_hash from {raw} "
                "group by all having count(*) > 1"
            )
            [(dups,)] = con.execute(f"select count(*) from {name}_dups").fetchall()
            rows = f"select {', '.join(map(cast, columns))} from {raw}"
            if dups:
                typed = ", ".join(map(cast, table.column_names))
                rows += (
                    f" where {key_hash} not in ({held_twice}) union all select {listed} from (select {typed} "
                    f"from {raw} where {key_hash} in ({held_twice}) qualify {first} = 1)"
                )
            con.execute(f"create temp table {name} as " + shape.format(rows=rows))
            con.execute(f"drop table {name}_dups")

        return read_once if shape is None else read_shaped

    def current_debts(self, trip_ids: Sequence[str] | None = None) -> dict[str, Debt]:
        where = "" if trip_ids is None else f" where shopping_trip_id in (select unnest({_ids(trip_ids)}))"
        if trip_ids is not None and not trip_ids:
            return {}
        return {r["shopping_trip_id"]: debt_from_row(r) for r in self._query(f"select * from {BAD_DEBTS.name}{where}")}

    def settlement_changes(self, days: Sequence[date]) -> pa.Table:
        """The daily settlements of these days recomputed from the stored trip states and the refunds, where they
        differ from the current rows (SETTLEMENT_SCHEMA): what a refund's answer changes without a reconcile run."""
        if not days:
            return table_rules.empty(table_rules.SETTLEMENT_SCHEMA)
        listed = ", ".join(f"DATE {quote_literal(d.isoformat())}" for d in days)
        columns = table_rules.STATE_SCHEMA.names
        con = self._open(
            [
                self._latest(TRIP_RECONCILIATION, "_trips", columns),
                f"create temp table trips as select {_state_columns(columns)}, cast(null as varchar) as debt_reason "
                f"from _trips where {table_rules.utc_date('business_date')} in ({listed})",
                self._refunded_step(listed),
                "create temp table current_settlements as select "
                f"{', '.join(table_rules.SETTLEMENT_SCHEMA.names)} from {DAILY_SETTLEMENT.name} "
                f"where business_date in ({listed})",
            ]
        )
        try:
            return table_rules.changed_settlements(con)
        finally:
            con.close()

    @staticmethod
    def _refunded_step(days: str) -> str:
        """`refunded` (REFUNDED_SCHEMA): Σ of REFUNDED refunds per (the trip's business day, store) of `days`."""
        return (
            "create temp table refunded as select business_date, store_id, sum(amount) as refunded "
            f"from {REFUNDS.name} where status = 'REFUNDED' and business_date in ({days}) group by all"
        )


class RetailerDebtLedger:
    """`DebtLedger` over the identity store: an open debt for an app-entry shopper refuses them at the gate.

    Card-entry debts have no shopper to block; they live in the `bad_debts` table only."""

    def __init__(self, store: RetailerAdmin) -> None:
        self._store = store

    def open(self, debt: Debt) -> bool:
        return self.open_many([debt]) == 1

    def close(self, shopping_trip_id: str, status: Literal["SETTLED", "WRITTEN_OFF"], at: datetime) -> bool:
        return self._store.close_debt(shopping_trip_id, status, at)

    def open_many(self, debts: Sequence[Debt]) -> int:
        """The app-entry debts, in one write of the identity store."""
        return self._store.open_debts([_bad_debt(d, d.shopper_id) for d in debts if d.shopper_id is not None])

    def close_many(
        self, shopping_trip_ids: Sequence[str], status: Literal["SETTLED", "WRITTEN_OFF"], at: datetime
    ) -> int:
        return self._store.close_debts(shopping_trip_ids, status, at)


def _bad_debt(debt: Debt, shopper_id: str) -> BadDebt:
    return BadDebt(
        debt_id=debt.debt_id,
        shopper_id=shopper_id,
        shopping_trip_id=debt.shopping_trip_id,
        store_id=debt.store_id,
        amount=Decimal(debt.amount),
        currency=debt.currency,
        reason=debt.reason,
        status="OPEN",
        opened_at=debt.opened_at,
    )


def utc_now() -> datetime:
    return datetime.now(UTC)


def build_job(
    lake_root: Path,
    store: RetailerAdmin,
    settings: ReconcileSettings,
    clock: Callable[[], datetime] = utc_now,
) -> ReconcileJob:
    facts = LakeFacts(lake_root, settings.memory_limit_mb)
    return ReconcileJob(
        facts,
        facts,
        LakeWriter(lake_root),
        RetailerDebtLedger(store),
        settings.rules(),
        clock,
        exclusive=partial(file_lock, lake_root / RECONCILE_LOCK),
    )


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
