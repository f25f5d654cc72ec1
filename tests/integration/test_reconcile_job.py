"""The reconciliation job over a real lake (Parquet + DuckDB views) and the SQLite identity store."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from connectors.adapters.sqlite_retailer import SqliteRetailerStore
from contracts.tables import TABLES
from jwo.reconcile_facts import LakeFacts, build_job, score, settlement_report
from reconcile.settings import ReconcileSettings
from simulator.settlement import SettlementDayConfig, build_settlement_day
from warehouse.lake import LakeWriter
from warehouse.query import run_query


def test_the_job_reconciles_a_day_in_the_lake_and_a_rerun_changes_nothing(tmp_path: Path) -> None:
    day = build_settlement_day(SettlementDayConfig(per_anomaly=1))
    assert day.key is not None
    key = day.key
    lake = tmp_path / "lake"
    writer = LakeWriter(lake)
    writer.write_tables({TABLES[name]: rows for name, rows in day.tables().items()}, "facts-1")
    writer.write_tables({TABLES["payment_events"]: day.payment_events[:5]}, "facts-redelivered")
    store = SqliteRetailerStore(tmp_path / "retailer.db")
    try:
        first = build_job(lake, store, ReconcileSettings(), clock=lambda: key.as_of).run(day=key.business_date)
        states = dict(
            (str(t), str(s)) for t, s in run_query(lake, "select shopping_trip_id, state from trip_reconciliation").rows
        )
        assert states == {t.shopping_trip_id: t.state for t in key.trips}
        [(bad,)] = run_query(
            lake,
            "select count(*) from trip_reconciliation where purchase_total <> captured + outstanding + pending_amount",
        ).rows
        assert bad == 0
        blocked = {d.shopper_id for d in store.debts() if d.status == "OPEN"}
        assert blocked == {t.shopper_id for t in key.trips if t.debt and t.shopper_id}
        [(alerts,)] = run_query(lake, "select count(*) from alerts").rows
        assert alerts == sum(t.decline_alerts for t in key.trips)
        settlement = run_query(
            lake, "select store_id, net_sales, captured, outstanding from daily_settlement order by store_id"
        ).rows
        for store_id, net_sales, captured, outstanding in settlement:
            totals = key.totals(str(store_id))
            assert (net_sales, captured, outstanding) == (
                totals["net_sales"],
                totals["captured"],
                totals["outstanding"],
            )

        assert score(lake, key).line().endswith("(100.0%), money difference 0.00")
        csv = settlement_report(lake, key.business_date, "S1", "csv").decode()
        assert all(t.shopping_trip_id in csv for t in key.trips if t.store_id == "S1" and t.state == "declined")
        assert settlement_report(lake, key.business_date, None, "parquet").startswith(b"PAR1")

        files = sorted(p.name for p in lake.rglob("*.parquet"))
        later = build_job(lake, store, ReconcileSettings(), clock=lambda: key.as_of + timedelta(hours=1))
        again = later.run(day=key.business_date)
        assert first.batch_id is not None
        assert (again.batch_id, again.changed) == (None, 0)
        assert sorted(p.name for p in lake.rglob("*.parquet")) == files

        owed = next(t for t in key.trips if t.debt and t.shopper_id)
        later.close_debt(owed.shopping_trip_id, "WRITTEN_OFF")
        [(status,)] = run_query(
            lake, f"select status from bad_debts where shopping_trip_id = '{owed.shopping_trip_id}'"
        ).rows
        assert status == "WRITTEN_OFF"
        assert owed.shopper_id not in {d.shopper_id for d in store.debts() if d.status == "OPEN"}
        assert later.run(since=key.as_of - timedelta(days=10)).batch_id is None
        assert Decimal(str(first.trips)) == len(key.trips)
    finally:
        store.close()


def test_a_run_that_fails_after_its_trip_rows_were_staged_leaves_no_file_and_the_retry_publishes_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    day = build_settlement_day(SettlementDayConfig(per_anomaly=1))
    assert day.key is not None
    key = day.key
    lake = tmp_path / "lake"
    LakeWriter(lake).write_tables({TABLES[name]: rows for name, rows in day.tables().items()}, "facts-1")
    store = SqliteRetailerStore(tmp_path / "retailer.db")
    try:
        job = build_job(lake, store, ReconcileSettings(), clock=lambda: key.as_of)

        def store_down(*_: object) -> int:
            raise OSError("identity store unavailable")

        monkeypatch.setattr(store, "open_debts", store_down)
        with pytest.raises(OSError, match="unavailable"):
            job.run(day=key.business_date)
        assert [p for p in lake.glob("trip_reconciliation*/**/*") if p.is_file()] == []  # the day folders may stay
        assert list(lake.glob("*/*/.*.tmp")) == []
        monkeypatch.undo()

        report = job.run(day=key.business_date)
        [(trips,)] = run_query(lake, "select count(*) from trip_reconciliation").rows
        assert (report.changed, trips) == (len(key.trips), len(key.trips))
        assert list(lake.glob("*/*/.*.tmp")) == []
    finally:
        store.close()


def test_the_workspace_reads_exactly_what_the_views_hold_however_often_a_key_was_written(tmp_path: Path) -> None:
    """LakeFacts de-duplicates only keys written more than once, through the view: the same rows as the views."""
    day = build_settlement_day(SettlementDayConfig(per_anomaly=2))
    assert day.key is not None
    lake = tmp_path / "lake"
    writer = LakeWriter(lake)
    writer.write_tables({TABLES[name]: rows for name, rows in day.tables().items()}, "facts-1")
    # A redelivery, a payment event rewritten with other values under its id, and newer report line versions.
    writer.write_tables({TABLES["payment_events"]: day.payment_events[:7]}, "facts-redelivered")
    changed = [{**r, "amount": Decimal("0.01"), "store_id": "S0"} for r in day.payment_events[7:12]]
    writer.write_tables({TABLES["payment_events"]: changed}, "facts-changed")
    newer = [
        {**r, "line_total": Decimal("1.00"), "last_updated": r["last_updated"] + timedelta(minutes=5)}  # type: ignore[operator]
        for r in day.intraday_order_lines[:6]
    ]
    writer.write_tables({TABLES["intraday_order_lines"]: newer}, "facts-newer")
    source = LakeFacts(lake)
    with source.workspace() as workspace:
        source.attach(workspace.con)
        got = {
            name: sorted(map(str, workspace.con.sql(f"select * from {name}").fetchall()))
            for name in ("purchased", "payments", "reported")
        }
    views = {
        "purchased": "select shopping_trip_id, store_id, entry_method, shopper_id, currency, subtotal, promotions, "
        "tax, total, line_count, end_time from purchases",
        "payments": "select event_id, shopping_trip_id, store_id, sub_type, amount, currency, event_time "
        "from payment_events",
        "reported": "select shopping_trip_id, sum(line_total), max(last_updated) from intraday_order_lines "
        "group by shopping_trip_id",
    }
    for name, sql in views.items():
        assert got[name] == sorted(map(str, run_query(lake, sql).rows)), name
    assert any("0.0100" in row for row in got["payments"])  # the rewritten events are in (the view picked them)
