"""Every key in exactly one segment of the whole table: a key whose `order_time` moves between versions (to a
later or an earlier hour, to another day), an older version arriving after the newer one, duplicates, a crash
in the middle of a merge, and a lake written before the invariant."""

from __future__ import annotations

import shutil
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from contracts.tables import INTRADAY_ORDER_LINES
from tests.integration.test_warehouse_merge import plain_view, view
from warehouse import merge, query
from warehouse.lake import LakeWriter, partition_dir
from warehouse.merge import (
    MARKER_NAME,
    batch_files,
    merge_table,
    newest_per_key,
    read_as,
    read_marker,
    schema_fingerprint,
    segment_files,
    segment_name,
    write_sorted,
)
from warehouse.query import run_query

T0 = datetime(2026, 11, 20, 12, 10, tzinfo=UTC)
HOUR_A = T0  # 12:xx
HOUR_B = T0 + timedelta(hours=1)  # 13:xx
DAY_BEFORE = T0 - timedelta(days=1)
TABLE = INTRADAY_ORDER_LINES


def version(order_time: datetime, updated_minutes: int, status: str, *, trip: str = "trip-1") -> dict[str, object]:
    return {
        "shopping_trip_id": trip,
        "line_item_id": "1",
        "order_time": order_time,
        "last_updated": T0 + timedelta(minutes=updated_minutes),
        "file_published_at": T0 + timedelta(minutes=updated_minutes),
        "payment_status": status,
    }


def where_keys_are(lake: Path) -> dict[tuple[object, object], list[str]]:
    """Each key of the segment files, read straight from them, and the segments (day/file) that hold it."""
    found: dict[tuple[object, object], list[str]] = {}
    for path in segment_files(lake, TABLE):
        rows = duckdb.sql(f"select shopping_trip_id, line_item_id from read_parquet('{path.as_posix()}')").fetchall()
        for trip, item in rows:
            found.setdefault((trip, item), []).append(f"{path.parent.name}/{path.name}")
    return found


def apply(lake: Path, batch_id: str, rows: list[dict[str, object]]) -> None:
    LakeWriter(lake).write(TABLE, rows, batch_id)
    merge_table(lake, TABLE)


def statuses(lake: Path) -> list[tuple[object, ...]]:
    return run_query(lake, "select shopping_trip_id, order_time, payment_status from intraday_order_lines").rows


def segment(day_time: datetime) -> str:
    return f"date={day_time.date().isoformat()}/{segment_name(day_time.hour)}"


def test_a_key_moving_to_a_later_hour_leaves_its_old_segment(tmp_path: Path) -> None:
    apply(tmp_path, "b1", [version(HOUR_A, 0, "pending")])
    apply(tmp_path, "b2", [version(HOUR_B, 5, "settled")])

    assert where_keys_are(tmp_path) == {("trip-1", "1"): [segment(HOUR_B)]}
    assert statuses(tmp_path) == [("trip-1", HOUR_B, "settled")]
    assert not (partition_dir(tmp_path, TABLE, HOUR_A.date()) / segment_name(HOUR_A.hour)).exists()  # left empty


def test_a_key_moving_to_an_earlier_hour_leaves_its_old_segment(tmp_path: Path) -> None:
    apply(tmp_path, "b1", [version(HOUR_B, 0, "pending"), version(HOUR_B, 0, "pending", trip="trip-2")])
    apply(tmp_path, "b2", [version(HOUR_A, 5, "settled")])

    assert where_keys_are(tmp_path) == {("trip-1", "1"): [segment(HOUR_A)], ("trip-2", "1"): [segment(HOUR_B)]}
    assert sorted(statuses(tmp_path)) == [("trip-1", HOUR_A, "settled"), ("trip-2", HOUR_B, "pending")]


def test_a_key_moving_to_another_day_leaves_the_first_day(tmp_path: Path) -> None:
    apply(tmp_path, "b1", [version(HOUR_A, 0, "pending")])
    apply(tmp_path, "b2", [version(DAY_BEFORE, 5, "settled")])
    apply(tmp_path, "b3", [version(HOUR_B, 9, "refunded")])

    assert where_keys_are(tmp_path) == {("trip-1", "1"): [segment(HOUR_B)]}
    assert statuses(tmp_path) == [("trip-1", HOUR_B, "refunded")]


def test_an_older_version_arriving_after_the_newer_one_in_another_hour_is_not_inserted(tmp_path: Path) -> None:
    apply(tmp_path, "b2", [version(HOUR_B, 5, "settled")])
    before = {p: p.read_bytes() for p in segment_files(tmp_path, TABLE)}
    apply(tmp_path, "b1", [version(HOUR_A, 0, "pending")])  # older, of another hour
    apply(tmp_path, "b0", [version(DAY_BEFORE, 0, "pending")])  # older, of another day
    apply(tmp_path, "b2", [version(HOUR_B, 5, "settled")])  # the same batch again

    assert where_keys_are(tmp_path) == {("trip-1", "1"): [segment(HOUR_B)]}
    assert {p: p.read_bytes() for p in segment_files(tmp_path, TABLE)} == before
    assert statuses(tmp_path) == [("trip-1", HOUR_B, "settled")]


def test_versions_in_one_batch_and_moves_within_it_keep_one_copy(tmp_path: Path) -> None:
    rows = [version(HOUR_A, 0, "pending"), version(HOUR_B, 5, "settled"), version(DAY_BEFORE, 1, "pending")]
    apply(tmp_path, "b1", rows + rows)

    assert where_keys_are(tmp_path) == {("trip-1", "1"): [segment(HOUR_B)]}


def test_a_crash_between_two_segment_renames_leaves_the_key_covered_by_its_batch(tmp_path: Path) -> None:
    """A merge that moved the key A→B renamed B and died before rewriting A: the key is in two segments, but its
    batch file is still there, so the readers rank it; the next merge finishes the move."""
    apply(tmp_path, "b1", [version(HOUR_A, 0, "pending"), version(HOUR_A, 0, "pending", trip="trip-2")])
    old_a = tmp_path / "old-a.parquet"
    shutil.copy(segment_files(tmp_path, TABLE)[0], old_a)
    LakeWriter(tmp_path).write(TABLE, [version(HOUR_B, 5, "settled")], "b2")
    [batch] = batch_files(tmp_path, TABLE)
    kept_batch = tmp_path / "b2.parquet"
    shutil.copy(batch, kept_batch)
    merge_table(tmp_path, TABLE)
    a = partition_dir(tmp_path, TABLE, HOUR_A.date()) / segment_name(HOUR_A.hour)
    shutil.copy(old_a, a)  # A as it was before the merge: the crash came before its rename
    shutil.copy(kept_batch, batch)  # and before the batch file was removed
    assert len(where_keys_are(tmp_path)[("trip-1", "1")]) == 2

    expected = [("trip-1", HOUR_B, "settled"), ("trip-2", HOUR_A, "pending")]
    assert sorted(statuses(tmp_path)) == expected  # the batch's key ranked against both copies
    [done] = merge_table(tmp_path, TABLE)  # the recovery the ingester runs at start
    assert done.inputs == 1
    assert where_keys_are(tmp_path) == {("trip-1", "1"): [segment(HOUR_B)], ("trip-2", "1"): [segment(HOUR_A)]}
    assert sorted(statuses(tmp_path)) == expected


def test_a_lake_written_before_the_invariant_is_read_de_duplicated_then_migrated(tmp_path: Path) -> None:
    """Segments of the previous layout hold a moved key in both hours and no marker: the view ranks them; the
    first merge takes every key held twice in, then writes the marker."""
    schema = TABLE.arrow_schema()
    old = LakeWriter(tmp_path / "old")
    old.write(TABLE, [version(HOUR_A, 0, "pending"), version(HOUR_A, 0, "pending", trip="trip-2")], "a")
    old.write(TABLE, [version(HOUR_B, 5, "settled")], "b")
    for path in sorted((tmp_path / "old").glob("intraday_order_lines/*/*.parquet")):
        rows = newest_per_key(TABLE, read_as(schema, path))
        stamp = rows.column("order_time")[0].as_py()
        directory = partition_dir(tmp_path / "lake", TABLE, stamp.date())
        directory.mkdir(parents=True, exist_ok=True)
        write_sorted(rows, directory, segment_name(stamp.hour))
    lake = tmp_path / "lake"
    assert len(where_keys_are(lake)[("trip-1", "1")]) == 2
    assert not (lake / TABLE.name / MARKER_NAME).exists()
    expected = [("trip-1", HOUR_B, "settled"), ("trip-2", HOUR_A, "pending")]
    assert sorted(statuses(lake)) == expected

    assert merge_table(lake, TABLE) != []
    assert (lake / TABLE.name / MARKER_NAME).exists()
    assert where_keys_are(lake) == {("trip-1", "1"): [segment(HOUR_B)], ("trip-2", "1"): [segment(HOUR_A)]}
    assert sorted(statuses(lake)) == expected
    assert merge_table(lake, TABLE) == []  # nothing more to do


def test_with_the_marker_and_no_batch_file_the_reader_takes_the_segments_as_they_are(tmp_path: Path) -> None:
    apply(tmp_path, "b1", [version(HOUR_A, 0, "pending"), version(HOUR_B, 0, "pending", trip="trip-2")])
    sql = "select sql from duckdb_views() where view_name = 'intraday_order_lines'"
    [(text,)] = run_query(tmp_path, sql, tables=[TABLE]).rows
    assert "QUALIFY" not in str(text)
    assert "part-current-" in str(text)
    LakeWriter(tmp_path).write(TABLE, [version(HOUR_B, 5, "settled")], "b2")  # waiting to be merged
    expected = [("trip-1", HOUR_B, "settled"), ("trip-2", HOUR_B, "pending")]
    assert (
        sorted(
            run_query(
                tmp_path,
                "select shopping_trip_id, order_time, payment_status from intraday_order_lines",
                tables=[TABLE],
            ).rows
        )
        == expected
    )


HOURS = [HOUR_A, HOUR_A + timedelta(minutes=30), HOUR_B, DAY_BEFORE, DAY_BEFORE + timedelta(hours=5)]
A_VERSION = st.fixed_dictionaries(
    {
        "shopping_trip_id": st.sampled_from(["trip-a", "trip-b", "trip-c", None]),
        "line_item_id": st.sampled_from(["1", "2"]),
        "order_time": st.sampled_from(HOURS),
        "last_updated": st.sampled_from([T0, T0 + timedelta(minutes=1), T0 + timedelta(minutes=2), None]),
        "file_published_at": st.sampled_from([T0, T0 + timedelta(minutes=5)]),
        "payment_status": st.sampled_from(["pending", "settled", None]),
    }
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    batches=st.lists(st.lists(A_VERSION, min_size=1, max_size=5), min_size=1, max_size=6),
    order=st.randoms(use_true_random=False),
    merges=st.lists(st.booleans(), min_size=12, max_size=12),
)
def test_any_order_grouping_and_duplicates_of_moving_keys_give_one_segment_per_key_and_the_same_bytes(
    batches: list[list[dict[str, object]]], order: object, merges: list[bool]
) -> None:
    import random

    assert isinstance(order, random.Random)
    deliveries = list(range(len(batches))) + [order.randrange(len(batches)) for _ in range(2)]
    order.shuffle(deliveries)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        reference, lake, plain = root / "reference", root / "lake", root / "plain"
        LakeWriter(reference).write(TABLE, [row for batch in batches for row in batch], "all")
        merge_table(reference, TABLE)
        for n, index in enumerate(deliveries):
            LakeWriter(lake).write(TABLE, batches[index], f"b{index}")
            LakeWriter(plain).write(TABLE, batches[index], f"b{index}")
            if merges[n % len(merges)]:
                merge_table(lake, TABLE)
                assert all(len(held) == 1 for held in where_keys_are(lake).values())
            assert view(lake) == plain_view(plain)
        merge_table(lake, TABLE)
        assert all(len(held) == 1 for held in where_keys_are(lake).values())
        assert view(lake) == plain_view(plain)
        files = {p.relative_to(lake).as_posix(): p.read_bytes() for p in segment_files(lake, TABLE)}
        assert files == {p.relative_to(reference).as_posix(): p.read_bytes() for p in segment_files(reference, TABLE)}
        assert batch_files(lake, TABLE) == []


def test_a_segment_written_before_the_schema_changed_is_read_by_name_then_rewritten(tmp_path: Path) -> None:
    apply(tmp_path, "b1", [version(HOUR_A, 0, "pending")])
    [path] = segment_files(tmp_path, TABLE)
    rows = read_as(TABLE.arrow_schema(), path)
    write_sorted(rows.drop_columns(["item_name"]), path.parent, path.name)  # as an older schema wrote it
    (tmp_path / TABLE.name / MARKER_NAME).write_text('{"schema": "an older one"}\n')
    assert statuses(tmp_path) == [("trip-1", HOUR_A, "pending")]
    assert run_query(tmp_path, "select item_name from intraday_order_lines").rows == [(None,)]

    assert merge_table(tmp_path, TABLE) != []
    assert pq.read_schema(path).remove_metadata().equals(TABLE.arrow_schema())
    assert read_marker(tmp_path, TABLE) == schema_fingerprint(TABLE)
    assert statuses(tmp_path) == [("trip-1", HOUR_A, "pending")]


def test_a_query_during_which_the_tables_files_changed_runs_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    apply(tmp_path, "b1", [version(HOUR_A, 0, "pending")])
    real, runs = query.fetch, []

    def fetch_then_publish(con: duckdb.DuckDBPyConnection, sql: str) -> query.QueryResult:
        result = real(con, sql)
        if not runs:  # a batch lands while the first run reads: its rows were not seen
            LakeWriter(tmp_path).write(TABLE, [version(HOUR_B, 5, "settled")], "b2")
        runs.append(sql)
        return result

    monkeypatch.setattr(query, "fetch", fetch_then_publish)
    assert statuses(tmp_path) == [("trip-1", HOUR_B, "settled")]
    assert len(runs) == 2


def test_a_backfill_merged_a_group_of_batch_files_at_a_time_gives_the_same_segments(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(merge, "GROUP_ROWS", 2)  # a group of one or two batch files
    rows = [
        version(HOUR_A, 0, "pending"),
        version(HOUR_B, 5, "settled"),
        version(DAY_BEFORE, 9, "refunded"),
        version(HOUR_A, 1, "pending", trip="trip-2"),
        version(DAY_BEFORE, 0, "pending", trip="trip-2"),
        version(HOUR_B, 2, "pending", trip="trip-3"),
    ]
    for n, row in enumerate(rows):
        LakeWriter(tmp_path / "lake").write(TABLE, [row], f"b{n}")
    LakeWriter(tmp_path / "reference").write(TABLE, rows, "all")
    merge_table(tmp_path / "reference", TABLE)

    [done] = merge_table(tmp_path / "lake", TABLE)

    assert done.inputs == len(rows)
    assert batch_files(tmp_path / "lake", TABLE) == []
    assert all(len(held) == 1 for held in where_keys_are(tmp_path / "lake").values())
    got = {p.relative_to(tmp_path / "lake").as_posix(): p.read_bytes() for p in segment_files(tmp_path / "lake", TABLE)}
    reference = tmp_path / "reference"
    assert got == {p.relative_to(reference).as_posix(): p.read_bytes() for p in segment_files(reference, TABLE)}
