"""The reconciliation job over a real lake (Parquet + DuckDB views) and the SQLite identity store."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from connectors.adapters.sqlite_retailer import SqliteRetailerStore
from contracts.tables import TABLES, Table
from jwo import reconcile_facts
from jwo.reconcile_facts import LakeFacts, build_job, score, settlement_report
from reconcile.settings import ReconcileSettings
from simulator.settlement import SettlementDay, SettlementDayConfig, build_settlement_day
from warehouse.lake import LakeWriter
from warehouse.merge import merge_table
from warehouse.query import merged_file_state, run_query, segments_as_they_are


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


def newer_report_lines(day: SettlementDay) -> list[dict[str, object]]:
    """Six of the day's report lines restated five minutes later at 1.00."""
    return [
        {**r, "line_total": Decimal("1.00"), "last_updated": r["last_updated"] + timedelta(minutes=5)}  # type: ignore[operator]
        for r in day.intraday_order_lines[:6]
    ]


def assert_reported_as_the_view_sums(lake: Path) -> None:
    """The workspace's `reported` sums are the de-duplicating view's, the restated lines' included."""
    with LakeFacts(lake).workspace() as workspace:
        got = sorted(map(str, workspace.con.sql("select * from reported").fetchall()))
    expected = run_query(
        lake, "select shopping_trip_id, sum(line_total), max(last_updated) from intraday_order_lines group by all"
    ).rows
    assert got == sorted(map(str, expected))
    assert any("1.0000" in row for row in got)


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
    # Rewritten in columns the workspace does not read only (the ranking stops before them), or in those and one
    # it reads; a purchase rewritten in a column it does not read and one it does.
    unread = [{**r, "brand": "AMEX", "status": "ZZZ"} for r in day.payment_events[12:15]]
    both = [{**r, "brand": "AMEX", "currency": "AAA"} for r in day.payment_events[15:18]]
    writer.write_tables({TABLES["payment_events"]: [*unread, *both]}, "facts-unread")
    purchases = [
        {**day.purchases[0], "unknown_item_count": 7},
        {**day.purchases[1], "purchase_id": "", "subtotal": Decimal("0.02")},
    ]
    writer.write_tables({TABLES["purchases"]: purchases}, "facts-purchases")
    newer = newer_report_lines(day)
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
    assert any("AAA" in row for row in got["payments"])
    assert any("0.0200" in row for row in got["purchased"])


def test_a_days_workspace_holds_the_trips_of_that_day_and_their_facts_as_the_views_define_them(
    tmp_path: Path,
) -> None:
    """In scope of `day=D`: trips whose purchase ends on D, trips with a payment event on D and no purchase at all,
    and trips with a reconciliation row of business day D; the facts are every row of those trips (checked against
    the views, over a lake holding the days before and after too)."""
    lake = tmp_path / "lake"
    writer = LakeWriter(lake)
    d = date(2025, 3, 14)
    days = {
        n: build_settlement_day(SettlementDayConfig(seed=n, business_date=d + timedelta(days=n))) for n in (-1, 0, 1)
    }
    for n, built in days.items():
        writer.write_tables({TABLES[name]: rows for name, rows in built.tables().items()}, f"facts{n + 1}")
    before, after = days[-1], days[1]
    # A trip of the day before captured on D, and an orphan's second event on D (its first is the day before).
    late = [
        {**before.payment_events[1], "event_id": "late-capture", "event_time": datetime.combine(d, time(1), UTC)},
    ]
    orphans = {t.shopping_trip_id for t in before.key.trips if t.state == "orphan_payment"} if before.key else set()
    first = next(r for r in before.payment_events if r["shopping_trip_id"] in orphans)
    late.append({**first, "event_id": "orphan-late", "event_time": datetime.combine(d, time(2), UTC)})
    writer.write_tables({TABLES["payment_events"]: late}, "facts-late")
    # Reconciled rows of business day D: one of a trip whose purchase ends the day after, one of a trip with no facts.
    moved = str(after.purchases[0]["shopping_trip_id"])
    midnight = datetime.combine(d, time(), UTC)
    stored = [
        {
            "shopping_trip_id": trip, "store_id": "S1", "state": "pending", "purchase_total": Decimal("1.0000"),
            "authorized": Decimal(0), "captured": Decimal(0), "declined": Decimal(0), "reported": None,
            "outstanding": Decimal(0), "pending_amount": Decimal("1.0000"), "currency": "USD",
            "entry_method": "FINANCIAL", "shopper_id": None, "reason": "stored", "business_date": midnight,
            "subtotal": Decimal("1.0000"), "promotions": Decimal(0), "tax": Decimal(0),
            "first_seen_at": midnight, "updated_at": midnight,
        }
        for trip in (moved, "no-facts-trip")
    ]  # fmt: skip
    writer.write_tables({TABLES["trip_reconciliation"]: stored}, "stored-1")

    day = f"DATE '{d.isoformat()}'"
    scope_sql = (
        f"select shopping_trip_id from purchases where cast(end_time as date) = {day} "
        f"union select shopping_trip_id from payment_events where cast(event_time as date) = {day} "
        "and shopping_trip_id not in (select shopping_trip_id from purchases) "
        f"union select shopping_trip_id from trip_reconciliation where cast(business_date as date) = {day}"
    )
    in_scope = f"shopping_trip_id in ({scope_sql})"
    views = {
        "scope": scope_sql,
        "purchased": "select shopping_trip_id, store_id, entry_method, shopper_id, currency, subtotal, promotions, "
        f"tax, total, line_count, end_time from purchases where {in_scope}",
        "payments": "select event_id, shopping_trip_id, store_id, sub_type, amount, currency, event_time "
        f"from payment_events where {in_scope}",
        "reported": "select shopping_trip_id, sum(line_total), max(last_updated) from intraday_order_lines "
        f"where {in_scope} group by shopping_trip_id",
        "cancelled": f"select shopping_trip_id, requested_at from cancel_charges where {in_scope}",
        "current_trips": "select * exclude (updated_at) replace (cast(business_date as date) as business_date) "
        f"from trip_reconciliation where {in_scope} or cast(business_date as date) in "
        f"(select distinct cast(end_time as date) from purchases where {in_scope} "
        f"union select distinct cast(event_time as date) from payment_events where {in_scope})",
    }
    source = LakeFacts(lake)
    with source.workspace(day=d) as workspace:
        source.attach(workspace.con)
        got = {name: sorted(map(str, workspace.con.sql(f"select * from {name}").fetchall())) for name in views}
        scope = {str(t) for (t,) in workspace.con.sql("select shopping_trip_id from scope").fetchall()}
    for name, sql in views.items():
        assert got[name] == sorted(map(str, run_query(lake, sql).rows)), name
    assert days[0].key is not None
    assert scope == {t.shopping_trip_id for t in days[0].key.trips} | {
        moved,
        "no-facts-trip",
        first["shopping_trip_id"],
    }
    assert len(got["scope"]) == len(scope)  # each trip once
    # The day before's trip is not in scope for its capture on D; the orphan's events of both days are.
    assert not any("late-capture" in row for row in got["payments"])
    assert sum(first["shopping_trip_id"] in row for row in got["payments"]) == 3  # its two events and the late one


@pytest.mark.parametrize("merged_meanwhile", [False, True])
def test_the_workspace_reads_merged_report_lines_as_they_are_and_again_ranked_if_a_merge_ran_meanwhile(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, merged_meanwhile: bool
) -> None:
    """With the marker and no batch file, the Intra-Day lines' segments are the table (one read, no ranking); if
    the files changed while they were read, the read runs again as for any lake. Either way: the view's sums."""
    day = build_settlement_day(SettlementDayConfig(per_anomaly=2))
    lake = tmp_path / "lake"
    writer = LakeWriter(lake)
    writer.write_tables({TABLES[name]: rows for name, rows in day.tables().items()}, "facts-1")
    newer = newer_report_lines(day)
    writer.write_tables({TABLES["intraday_order_lines"]: newer}, "facts-newer")
    merge_table(lake, TABLES["intraday_order_lines"])
    assert segments_as_they_are(lake, TABLES["intraday_order_lines"]) is not None
    calls: list[object] = []

    def state_after(root: Path, table: Table) -> object:
        calls.append(table)
        return "changed" if merged_meanwhile else merged_file_state(root, table)

    monkeypatch.setattr(reconcile_facts, "merged_file_state", state_after)
    assert_reported_as_the_view_sums(lake)
    assert calls == [TABLES["intraday_order_lines"]]  # the segments were read as they are, and checked once


def test_merged_report_lines_with_a_batch_file_waiting_are_read_ranked(tmp_path: Path) -> None:
    """The marker says every key is in one segment once the batch files are merged: with one waiting, its rows
    and the segments' are ranked, as the view does."""
    day = build_settlement_day(SettlementDayConfig(per_anomaly=2))
    lake = tmp_path / "lake"
    writer = LakeWriter(lake)
    writer.write_tables({TABLES[name]: rows for name, rows in day.tables().items()}, "facts-1")
    merge_table(lake, TABLES["intraday_order_lines"])
    newer = newer_report_lines(day)
    writer.write_tables({TABLES["intraday_order_lines"]: newer}, "facts-newer")  # not merged yet
    assert segments_as_they_are(lake, TABLES["intraday_order_lines"]) is None
    assert_reported_as_the_view_sums(lake)
