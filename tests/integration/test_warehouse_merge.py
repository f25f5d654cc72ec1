"""Merge on write: a day's files become hourly segments showing exactly the rows the plain view showed over every
file (keys in two days' or hours' files included); a crash between publishing the segments and removing their
inputs changes nothing readers see."""

from __future__ import annotations

import random
import shutil
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

from contracts.tables import INTRADAY_ORDER_LINES
from warehouse.compact import compact_table
from warehouse.lake import LakeWriter, parquet_files
from warehouse.merge import is_segment, merge_table
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
        "order_time": rng.choice([T0, T0 + timedelta(minutes=90), T0 - timedelta(days=1)]),
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
    for trial in range(15):
        plain, merged = tmp_path / f"plain{trial}", tmp_path / f"merged{trial}"
        for n in range(5):
            batch = [a_line(rng) for _ in range(rng.randint(0, 6))]
            LakeWriter(plain).write(INTRADAY_ORDER_LINES, batch, f"b{n}")
            LakeWriter(merged).write(INTRADAY_ORDER_LINES, batch, f"b{n}")
            if rng.random() < 0.6:
                merge_table(merged, INTRADAY_ORDER_LINES)
            assert view(merged) == plain_view(plain)
            assert view(plain) == plain_view(plain)  # unmerged batch files: keys held many times, ranked
        merge_table(merged, INTRADAY_ORDER_LINES)
        assert view(merged) == plain_view(plain)
        assert all(is_segment(p) for p in merged.glob("intraday_order_lines/*/*.parquet"))


def test_the_segments_bytes_depend_on_the_rows_only_not_on_order_or_merge_grouping(tmp_path: Path) -> None:
    rng = random.Random(11)
    batches = [[a_line(rng) for _ in range(rng.randint(1, 6))] for _ in range(8)]
    snapshots = []
    for trial in range(3):
        lake = tmp_path / f"lake{trial}"
        for n in rng.sample(range(len(batches)), len(batches)):
            LakeWriter(lake).write(INTRADAY_ORDER_LINES, batches[n] + batches[n][:1], f"b{n}")  # a repeated row too
            if trial == 0 or rng.random() < 0.5:
                merge_table(lake, INTRADAY_ORDER_LINES)
        merge_table(lake, INTRADAY_ORDER_LINES)
        files = sorted(lake.glob("intraday_order_lines/*/*.parquet"))
        snapshots.append({p.relative_to(lake).as_posix(): p.read_bytes() for p in files})
    assert len(snapshots[0]) >= 3  # two days, two hours of the first
    assert snapshots[1] == snapshots[0]
    assert snapshots[2] == snapshots[0]


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
