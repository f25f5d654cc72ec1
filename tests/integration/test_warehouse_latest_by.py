"""Latest-wins de-duplication through the real views and compaction."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

from contracts.tables import INTRADAY_ORDER_LINES, PURCHASES
from warehouse.compact import compact_table
from warehouse.lake import LakeWriter
from warehouse.query import run_query

T0 = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)


def line(status: str, updated: int, published: int, source: str) -> dict[str, object]:
    return {
        "shopping_trip_id": "trip-1",
        "line_item_id": "li-1",
        "order_time": T0,
        "last_updated": T0.replace(minute=updated),
        "payment_status": status,
        "line_total": Decimal("1.00"),
        "source_key": source,
        "file_published_at": T0.replace(minute=published),
    }


def test_the_newest_last_updated_wins_then_the_newest_file_before_and_after_compaction(tmp_path: Path) -> None:
    writer = LakeWriter(tmp_path)
    writer.write(INTRADAY_ORDER_LINES, [line("settled", 20, 30, "a-newer-file-same-update")], "b1")
    writer.write(INTRADAY_ORDER_LINES, [line("settled", 20, 45, "z-newest-file")], "b2")
    writer.write(INTRADAY_ORDER_LINES, [line("pending", 5, 59, "pending-in-a-late-file")], "b3")
    sql = "select payment_status, source_key from intraday_order_lines"

    assert run_query(tmp_path, sql).rows == [("settled", "z-newest-file")]
    assert compact_table(tmp_path, INTRADAY_ORDER_LINES, min_rows=10)
    assert run_query(tmp_path, sql).rows == [("settled", "z-newest-file")]


def test_a_table_without_latest_by_still_keeps_the_row_that_sorts_first(tmp_path: Path) -> None:
    writer = LakeWriter(tmp_path)
    base = {"shopping_trip_id": "t", "end_time": T0, "created_at": T0}
    writer.write(PURCHASES, [{**base, "purchase_id": "p-b", "created_at": T0.replace(minute=59)}], "b1")
    writer.write(PURCHASES, [{**base, "purchase_id": "p-a"}], "b2")

    assert run_query(tmp_path, "select purchase_id from purchases").rows == [("p-a",)]
