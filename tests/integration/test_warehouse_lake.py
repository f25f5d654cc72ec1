"""Parquet files in tmp_path read back through the DuckDB views."""

from __future__ import annotations

import errno
import os
import random
import tempfile
from collections.abc import Callable, Mapping
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from contracts.tables import PURCHASES, TABLES, Kind, Table
from warehouse.errors import LakeWriteError
from warehouse.lake import ROW_GROUP_ROWS, LakeWriter, janitor, parquet_file_stats, parquet_files, temp_name
from warehouse.query import QueryResult, run_query

Row = Mapping[str, object]


def purchase(trip: str, *, total: str = "10.0000", end_time: datetime | None = None, **extra: object) -> Row:
    return {
        "shopping_trip_id": trip,
        "purchase_id": f"p-{trip}",
        "store_id": "S1",
        "entry_method": "FINANCIAL",
        "start_time": datetime(2024, 5, 1, 9, 0, tzinfo=UTC),
        "end_time": end_time or datetime(2024, 5, 1, 9, 15, tzinfo=UTC),
        "currency": "USD",
        "total": Decimal(total),
        "line_count": 2,
        **extra,
    }


def purchases_in_view(root: Path) -> QueryResult:
    return run_query(root, "SELECT shopping_trip_id, total, end_time FROM purchases ORDER BY shopping_trip_id")


def test_rows_read_back_through_the_view_with_exact_decimals_and_utc_times(tmp_path: Path) -> None:
    plus_two = timezone(timedelta(hours=2))
    LakeWriter(tmp_path).write(
        PURCHASES,
        [
            purchase("t1", total="0.1000", end_time=datetime(2024, 5, 2, 1, 30, tzinfo=plus_two)),
            purchase("t2", total="12345678901234.5678"),
        ],
        "b1",
    )

    result = purchases_in_view(tmp_path)

    assert result.rows == [
        ("t1", Decimal("0.1000"), datetime(2024, 5, 1, 23, 30, tzinfo=UTC)),
        ("t2", Decimal("12345678901234.5678"), datetime(2024, 5, 1, 9, 15, tzinfo=UTC)),
    ]
    assert result.types == ("VARCHAR", "DECIMAL(18,4)", "TIMESTAMP WITH TIME ZONE")


def test_a_batch_is_one_zstd_file_per_utc_day(tmp_path: Path) -> None:
    rows = [
        purchase("t1", end_time=datetime(2024, 5, 1, 23, 59, tzinfo=UTC)),
        purchase("t2", end_time=datetime(2024, 5, 2, 0, 0, tzinfo=UTC)),
    ]

    files = LakeWriter(tmp_path).write(PURCHASES, rows, "b1")

    assert files == [
        tmp_path / "purchases" / "date=2024-05-01" / "part-b1.parquet",
        tmp_path / "purchases" / "date=2024-05-02" / "part-b1.parquet",
    ]
    metadata = pq.ParquetFile(files[0]).metadata
    assert metadata.row_group(0).column(0).compression == "ZSTD"
    assert pq.read_schema(files[0]).remove_metadata() == PURCHASES.arrow_schema()


def test_a_large_file_is_written_in_row_groups_duckdb_can_read_in_parallel(tmp_path: Path) -> None:
    rows = 2 * ROW_GROUP_ROWS + 5
    frame = pa.table(
        {
            "shopping_trip_id": [f"t{i}" for i in range(rows)],
            "end_time": pa.array([datetime(2024, 5, 1, 12, tzinfo=UTC)] * rows, pa.timestamp("us", tz="UTC")),
        }
    )
    frame = pa.Table.from_arrays(
        [
            frame.column(f.name) if f.name in frame.column_names else pa.nulls(rows, f.type)
            for f in PURCHASES.arrow_schema()
        ],
        schema=PURCHASES.arrow_schema(),
    )

    [file] = LakeWriter(tmp_path).write_arrow(PURCHASES, frame, "big")

    metadata = pq.ParquetFile(file).metadata
    assert [metadata.row_group(i).num_rows for i in range(metadata.num_row_groups)] == [
        ROW_GROUP_ROWS,
        ROW_GROUP_ROWS,
        5,
    ]
    assert ROW_GROUP_ROWS >= 100_000


def test_writing_no_rows_publishes_nothing(tmp_path: Path) -> None:
    assert LakeWriter(tmp_path).write(PURCHASES, [], "b1") == []
    assert not (tmp_path / "purchases").exists()


def test_the_same_batch_written_twice_gives_no_duplicate_rows(tmp_path: Path) -> None:
    writer = LakeWriter(tmp_path)
    rows = [purchase("t1"), purchase("t2")]

    first = writer.write(PURCHASES, rows, "b1")
    second = writer.write(PURCHASES, rows, "b1")

    assert first == second
    assert parquet_files(tmp_path, PURCHASES) == first
    assert [r[0] for r in purchases_in_view(tmp_path).rows] == ["t1", "t2"]


def test_two_batches_sharing_a_key_show_one_row_per_key(tmp_path: Path) -> None:
    writer = LakeWriter(tmp_path)
    writer.write(PURCHASES, [purchase("t1"), purchase("t2")], "b1")
    writer.write(PURCHASES, [purchase("t2"), purchase("t3")], "b2")

    result = run_query(tmp_path, "SELECT shopping_trip_id, count(*) FROM purchases GROUP BY 1 ORDER BY 1")

    assert result.rows == [("t1", 1), ("t2", 1), ("t3", 1)]


def test_which_row_wins_a_shared_key_does_not_depend_on_the_order_of_writing(tmp_path: Path) -> None:
    one, other = tmp_path / "one", tmp_path / "other"
    LakeWriter(one).write(PURCHASES, [purchase("t1", total="5.0000")], "a")
    LakeWriter(one).write(PURCHASES, [purchase("t1", total="7.0000")], "b")
    LakeWriter(other).write(PURCHASES, [purchase("t1", total="7.0000")], "a")
    LakeWriter(other).write(PURCHASES, [purchase("t1", total="5.0000")], "b")

    assert purchases_in_view(one).rows == purchases_in_view(other).rows
    assert [r[1] for r in purchases_in_view(one).rows] == [Decimal("5.0000")]


def test_a_table_without_files_is_an_empty_view_with_the_contract_types(tmp_path: Path) -> None:
    counted = run_query(tmp_path, "SELECT count(*) FROM purchases")
    described = run_query(tmp_path, "DESCRIBE purchases")

    assert counted.rows == [(0,)]
    assert [(r[0], r[1]) for r in described.rows] == [
        (c.name, {"TIMESTAMPTZ": "TIMESTAMP WITH TIME ZONE"}.get(c.duckdb_type, c.duckdb_type))
        for c in PURCHASES.columns
    ]


def minimal_row(table: Table) -> Row:
    """The key and the partition time filled in, everything else missing."""
    key_values = {
        Kind.STRING: "k",
        Kind.INT: 1,
        Kind.TIMESTAMP: datetime(2024, 5, 1, 12, tzinfo=UTC),
        Kind.DATE: date(2024, 5, 1),
    }
    row: dict[str, object] = {name: key_values[table.column(name).kind] for name in table.key}
    row[table.partition_by] = datetime(2024, 5, 1, 12, tzinfo=UTC)
    return row


def test_every_contract_table_can_be_written_and_read(tmp_path: Path) -> None:
    writer = LakeWriter(tmp_path)
    for table in TABLES.values():
        writer.write(table, [minimal_row(table)], "b1")

    for table in TABLES.values():
        assert run_query(tmp_path, f"SELECT count(*) FROM {table.name}").rows == [(1,)], table.name


def test_columns_an_older_file_lacks_read_as_null(tmp_path: Path) -> None:
    day = tmp_path / "purchases" / "date=2024-05-01"
    day.mkdir(parents=True)
    old = pa.table(
        {
            "shopping_trip_id": ["old"],
            "end_time": pa.array([datetime(2024, 5, 1, tzinfo=UTC)], pa.timestamp("us", tz="UTC")),
        }
    )
    pq.write_table(old, day / "part-old.parquet")
    LakeWriter(tmp_path).write(PURCHASES, [purchase("new")], "b1")

    result = run_query(tmp_path, "SELECT shopping_trip_id, total FROM purchases ORDER BY 1")

    assert result.rows == [("new", Decimal("10.0000")), ("old", None)]


def test_temp_files_are_ignored_by_readers_and_removed_by_the_janitor(tmp_path: Path) -> None:
    writer = LakeWriter(tmp_path)
    [published] = writer.write(PURCHASES, [purchase("t1")], "b1")
    for name in ("b2", "b3"):
        pq.write_table(pa.table({"shopping_trip_id": ["ghost"]}), published.parent / temp_name(name))

    assert [r[0] for r in purchases_in_view(tmp_path).rows] == ["t1"]
    assert janitor(tmp_path) == 2
    assert sorted(p.name for p in published.parent.iterdir()) == ["part-b1.parquet"]
    assert janitor(tmp_path) == 0


def test_the_janitor_spares_temp_files_younger_than_asked(tmp_path: Path) -> None:
    day = tmp_path / "purchases" / "date=2024-05-01"
    day.mkdir(parents=True)
    (day / temp_name("old")).write_bytes(b"x")
    (day / temp_name("young")).write_bytes(b"x")
    os.utime(day / temp_name("old"), (1_000, 1_000))
    os.utime(day / temp_name("young"), (1_990, 1_990))

    assert janitor(tmp_path, older_than_seconds=60, now=2_000) == 1
    assert [p.name for p in day.iterdir()] == [temp_name("young")]


class Crash(BaseException):
    """Stands for the process dying: nothing after it runs, no cleanup handler catches it."""


def crash(*_: object) -> None:
    raise Crash


def test_a_crash_before_the_rename_leaves_no_file_under_a_published_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(os, "replace", crash)

    with pytest.raises(Crash):
        LakeWriter(tmp_path).write(PURCHASES, [purchase("t1")], "b1")
    monkeypatch.undo()

    day = tmp_path / "purchases" / "date=2024-05-01"
    assert [p.name for p in day.iterdir()] == [temp_name("b1")]
    assert parquet_files(tmp_path, PURCHASES) == []
    assert purchases_in_view(tmp_path).rows == []
    assert janitor(tmp_path) == 1


def test_a_crash_while_rewriting_a_batch_keeps_the_previous_version(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    writer = LakeWriter(tmp_path)
    writer.write(PURCHASES, [purchase("t1", total="1.0000")], "b1")
    monkeypatch.setattr(os, "replace", crash)

    with pytest.raises(Crash):
        writer.write(PURCHASES, [purchase("t1", total="2.0000")], "b1")
    monkeypatch.undo()

    assert [r[1] for r in purchases_in_view(tmp_path).rows] == [Decimal("1.0000")]


def test_a_failed_write_removes_its_temp_file_and_is_a_transient_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def disk_full(_: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", disk_full)

    with pytest.raises(LakeWriteError, match="No space left"):
        LakeWriter(tmp_path).write(PURCHASES, [purchase("t1")], "b1")
    monkeypatch.undo()

    assert list(tmp_path.glob("purchases/*/*")) == []


def test_staged_rows_are_unseen_until_their_batch_renames_them_into_place(tmp_path: Path) -> None:
    writer = LakeWriter(tmp_path)
    next_day = datetime(2024, 5, 2, 0, 5, tzinfo=UTC)

    with writer.stage(PURCHASES, [purchase("t1"), purchase("t2", end_time=next_day)]) as staged:
        assert purchases_in_view(tmp_path).rows == []
        assert parquet_files(tmp_path, PURCHASES) == []
        paths = writer.write_tables({PURCHASES: staged, TABLES["payment_events"]: []}, "b1")
        assert [p.name for p in paths] == ["part-b1.parquet", "part-b1.parquet"]

    assert [r[0] for r in purchases_in_view(tmp_path).rows] == ["t1", "t2"]
    assert list(tmp_path.glob("purchases/*/.*")) == []


def test_staged_rows_left_unpublished_leave_no_file(tmp_path: Path) -> None:
    writer = LakeWriter(tmp_path)

    with writer.stage(PURCHASES, [purchase("t1")]):
        pass

    assert list(tmp_path.glob("purchases/*/*")) == []
    assert janitor(tmp_path) == 0


def test_a_failed_staged_write_fails_its_batch_and_publishes_nothing_of_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def disk_full(_: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    writer = LakeWriter(tmp_path)
    monkeypatch.setattr(os, "fsync", disk_full)
    with writer.stage(PURCHASES, [purchase("t1")]) as staged, pytest.raises(LakeWriteError, match="No space left"):
        writer.write_tables({PURCHASES: staged}, "b1")
    monkeypatch.undo()

    assert list(tmp_path.glob("purchases/*/*")) == []


batches = st.lists(
    st.lists(st.sampled_from(["t1", "t2", "t3", "t4"]), min_size=1, max_size=3, unique=True),
    min_size=1,
    max_size=4,
)


@settings(max_examples=15, deadline=None)
@given(batches=batches, order=st.randoms(use_true_random=False), repeats=st.integers(min_value=1, max_value=2))
def test_writing_batches_in_any_order_any_number_of_times_gives_the_same_view(
    batches: list[list[str]], order: random.Random, repeats: int
) -> None:
    def written(arrange: Callable[[list[int]], list[int]]) -> QueryResult:
        with tempfile.TemporaryDirectory() as folder:
            writer = LakeWriter(Path(folder))
            for index in arrange(list(range(len(batches)))):
                writer.write(PURCHASES, [purchase(trip) for trip in batches[index]], f"b{index}")
            return purchases_in_view(Path(folder))

    def shuffled(indexes: list[int]) -> list[int]:
        order.shuffle(indexes)
        return indexes * repeats

    in_order = written(lambda indexes: indexes)

    assert in_order == written(shuffled)
    assert [row[0] for row in in_order.rows] == sorted({trip for batch in batches for trip in batch})


def test_the_partition_date_is_the_utc_date(tmp_path: Path) -> None:
    new_york = timezone(timedelta(hours=-4))
    [published] = LakeWriter(tmp_path).write(
        PURCHASES, [purchase("t1", end_time=datetime(2024, 5, 1, 22, 0, tzinfo=new_york))], "b1"
    )

    assert published.parent.name == f"date={date(2024, 5, 2).isoformat()}"


def test_the_files_listed_with_their_stat_are_the_files_a_view_reads(tmp_path: Path) -> None:
    assert parquet_file_stats(tmp_path, PURCHASES) == []
    folder = tmp_path / PURCHASES.name
    for day in ("date=2026-11-20", "date=2026-11-21"):
        (folder / day).mkdir(parents=True)
        (folder / day / "part-b.parquet").write_bytes(b"x")
        (folder / day / "part-a.parquet").write_bytes(b"yy")
        (folder / day / temp_name("c")).write_bytes(b"z")
        (folder / day / "notes.txt").write_bytes(b"z")
        (folder / day / "odd.parquet").mkdir()
    (folder / "top.parquet").write_bytes(b"x")  # not in a day's folder
    (folder / "date=2026-11-22").write_bytes(b"x")  # a file, not a folder

    listed = parquet_file_stats(tmp_path, PURCHASES)

    assert [path for path, _ in listed] == parquet_files(tmp_path, PURCHASES)
    assert len(listed) == 4
    assert all(info.st_size == path.stat().st_size and info.st_ino == path.stat().st_ino for path, info in listed)
