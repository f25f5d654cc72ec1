"""Merge on write: a day's files become a current and a recent file showing exactly the rows the plain view showed
over every file (keys in two days' files included); a crash between publishing the current file and removing
its inputs changes nothing readers see."""

from __future__ import annotations

import random
import shutil
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

from contracts.tables import INTRADAY_ORDER_LINES
from warehouse.compact import compact_table
from warehouse.lake import LakeWriter, parquet_files
from warehouse.merge import CURRENT_NAME, RECENT_NAME, merge_partition, merge_table
from warehouse.query import run_query
from warehouse.views import parquet_glob, parquet_select_sql

T0 = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
COLUMNS = ", ".join(INTRADAY_ORDER_LINES.column_names)


def a_line(rng: random.Random) -> dict[str, object]:
    """Few keys (a null one too) and few values, so versions tie on last_updated and file time and the
    tie-break decides."""
    return {
        "shopping_trip_id": rng.choice(["trip-a", "trip-b", "trip-c", None]),
        "line_item_id": rng.choice(["1", "2"]),
        "order_time": rng.choice([T0, T0 - timedelta(days=1)]),
        "last_updated": rng.choice([T0, T0 + timedelta(minutes=1), None]),
        "file_published_at": rng.choice([T0, T0 + timedelta(minutes=5)]),
        "payment_status": rng.choice(["pending", "settled", None]),
        "line_total": rng.choice([Decimal("1.5"), Decimal("-2"), Decimal("10"), None]),
        "item_name": rng.choice(["x", "X", "é", None]),
    }


def view(lake: Path) -> list[str]:
    return sorted(map(repr, run_query(lake, f"select {COLUMNS} from intraday_order_lines").rows))


def plain_view(lake: Path) -> list[str]:
    """What the plain view (every row ranked, `parquet_select_sql`) shows: the merged-on-write view must agree."""
    if not parquet_files(lake, INTRADAY_ORDER_LINES):
        return []
    plain = parquet_select_sql(INTRADAY_ORDER_LINES, parquet_glob(INTRADAY_ORDER_LINES, lake))
    return sorted(map(repr, run_query(lake, f"select {COLUMNS} from ({plain})").rows))


def test_merging_after_any_batches_shows_what_the_view_showed_over_every_file(tmp_path: Path) -> None:
    rng = random.Random(7)
    recent_kept = 0
    for trial in range(15):
        plain, merged = tmp_path / f"plain{trial}", tmp_path / f"merged{trial}"
        for n in range(5):
            batch = [a_line(rng) for _ in range(rng.randint(0, 6))]
            LakeWriter(plain).write(INTRADAY_ORDER_LINES, batch, f"b{n}")
            LakeWriter(merged).write(INTRADAY_ORDER_LINES, batch, f"b{n}")
            if rng.random() < 0.6:  # into the recent file, folded when it outgrows a random share of the current
                for day in merged.glob("intraday_order_lines/date=*"):
                    merge_partition(INTRADAY_ORDER_LINES, day, fold_fraction=rng.choice([0.0, 0.5, 2.0, 100.0]))
            assert view(merged) == plain_view(plain)
            assert view(plain) == plain_view(plain)  # unmerged batch files: keys held many times, ranked
        recent_kept += len(list(merged.glob(f"intraday_order_lines/*/{RECENT_NAME}")))
        merge_table(merged, INTRADAY_ORDER_LINES)
        assert view(merged) == plain_view(plain)
        assert {p.name for p in merged.glob("intraday_order_lines/*/*.parquet")} <= {CURRENT_NAME}
    assert recent_kept >= 3  # the view was checked over current and recent files, not only current ones


def test_a_crash_after_the_rename_leaves_inputs_that_change_nothing_and_are_merged_next(tmp_path: Path) -> None:
    rng = random.Random(3)
    writer = LakeWriter(tmp_path)
    writer.write(INTRADAY_ORDER_LINES, [{**a_line(rng), "order_time": T0} for _ in range(8)], "b1")
    [delta] = tmp_path.glob("intraday_order_lines/*/part-b1.parquet")
    kept = tmp_path / "kept.parquet"
    shutil.copy(delta, kept)
    merge_table(tmp_path, INTRADAY_ORDER_LINES)
    before = view(tmp_path)
    shutil.copy(kept, delta)  # as if the process died before removing the merged input
    kept.unlink()

    assert view(tmp_path) == before
    assert compact_table(tmp_path, INTRADAY_ORDER_LINES, min_rows=1000) == []  # merged days are left to merges
    [done] = merge_table(tmp_path, INTRADAY_ORDER_LINES)
    assert done.inputs == 1
    assert not delta.exists()
    assert view(tmp_path) == before
