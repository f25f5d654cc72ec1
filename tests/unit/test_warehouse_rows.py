"""Rows to Arrow and to partitions: pure, no files."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

import pyarrow as pa
import pytest

from contracts.tables import PURCHASE_LINES, PURCHASES
from warehouse.errors import InvalidBatchIdError, RowSchemaError
from warehouse.lake import check_batch_id, group_by_day, partition_dir, split_by_day, temp_name, to_arrow


def _purchase(trip: str, end_time: datetime, **extra: object) -> dict[str, object]:
    return {"shopping_trip_id": trip, "store_id": "S1", "end_time": end_time, **extra}


def test_the_arrow_table_has_exactly_the_contract_schema() -> None:
    frame = to_arrow(PURCHASES, [_purchase("t1", datetime(2024, 5, 1, 12, tzinfo=UTC))])

    assert frame.schema == PURCHASES.arrow_schema()


def test_missing_columns_become_nulls() -> None:
    frame = to_arrow(PURCHASES, [_purchase("t1", datetime(2024, 5, 1, 12, tzinfo=UTC))])

    assert frame.column("total").to_pylist() == [None]
    assert frame.column("created_at").null_count == 1


def test_decimals_are_rounded_half_even_to_four_places() -> None:
    rows = [
        _purchase("t1", datetime(2024, 5, 1, tzinfo=UTC), total=Decimal("1.00005")),
        _purchase("t2", datetime(2024, 5, 1, tzinfo=UTC), total=Decimal("1.00015")),
        _purchase("t3", datetime(2024, 5, 1, tzinfo=UTC), total=Decimal("7")),
        _purchase("t4", datetime(2024, 5, 1, tzinfo=UTC), total=3),
    ]

    frame = to_arrow(PURCHASES, rows)

    assert frame.column("total").to_pylist() == [
        Decimal("1.0000"),
        Decimal("1.0002"),
        Decimal("7.0000"),
        Decimal("3.0000"),
    ]


def test_timestamps_are_stored_in_utc() -> None:
    plus_two = timezone(timedelta(hours=2))
    frame = to_arrow(PURCHASES, [_purchase("t1", datetime(2024, 5, 1, 1, 30, tzinfo=plus_two))])

    assert frame.column("end_time").to_pylist() == [datetime(2024, 4, 30, 23, 30, tzinfo=UTC)]


def test_a_float_amount_is_refused() -> None:
    with pytest.raises(RowSchemaError, match=r"purchases\.total"):
        to_arrow(PURCHASES, [_purchase("t1", datetime(2024, 5, 1, tzinfo=UTC), total=1.5)])


def test_an_amount_too_large_for_decimal_18_4_is_refused() -> None:
    with pytest.raises(RowSchemaError, match=r"purchases\.total"):
        to_arrow(PURCHASES, [_purchase("t1", datetime(2024, 5, 1, tzinfo=UTC), total=Decimal("1e20"))])


def test_a_naive_timestamp_is_refused() -> None:
    with pytest.raises(RowSchemaError, match="timezone-aware"):
        to_arrow(PURCHASES, [_purchase("t1", datetime(2024, 5, 1, tzinfo=UTC), created_at=datetime(2024, 5, 1))])


def test_an_unknown_column_is_refused_rather_than_dropped() -> None:
    with pytest.raises(RowSchemaError, match="totl"):
        to_arrow(PURCHASES, [_purchase("t1", datetime(2024, 5, 1, tzinfo=UTC), totl=Decimal("1"))])


def test_a_string_where_an_integer_belongs_is_refused() -> None:
    row = {"shopping_trip_id": "t1", "line_no": "one", "end_time": datetime(2024, 5, 1, tzinfo=UTC)}

    with pytest.raises(RowSchemaError, match=r"purchase_lines\.line_no"):
        to_arrow(PURCHASE_LINES, [row])


def test_rows_are_grouped_by_the_utc_date_of_the_partition_column() -> None:
    minus_five = timezone(timedelta(hours=-5))
    late_evening_in_new_york = datetime(2024, 5, 1, 21, 0, tzinfo=minus_five)
    rows = [
        _purchase("t1", datetime(2024, 5, 1, 23, 59, tzinfo=UTC)),
        _purchase("t2", late_evening_in_new_york),
        _purchase("t3", datetime(2024, 5, 1, 0, 0, tzinfo=UTC)),
    ]

    groups = group_by_day(PURCHASES, rows)

    assert {day: [r["shopping_trip_id"] for r in day_rows] for day, day_rows in groups.items()} == {
        date(2024, 5, 1): ["t1", "t3"],
        date(2024, 5, 2): ["t2"],
    }


@pytest.mark.parametrize("in_day_order", [True, False])
def test_a_frame_is_split_into_its_utc_days_with_each_days_rows_in_their_order(in_day_order: bool) -> None:
    days = [date(2024, 5, 1), date(2024, 5, 2), date(2024, 5, 4)]
    rows = [_purchase(f"t{i}", datetime.combine(days[i % 3], datetime.min.time(), UTC) + timedelta(hours=i % 24))
            for i in range(30)]  # fmt: skip
    if in_day_order:
        rows.sort(key=lambda row: row["end_time"].date())  # type: ignore[attr-defined]
    frame = to_arrow(PURCHASES, rows)
    chunked = pa.Table.from_batches(frame.to_batches(max_chunksize=7))  # as DuckDB hands a result over: in chunks

    split = split_by_day(PURCHASES, chunked)

    assert [day for day, _ in split] == days
    for day, part in split:
        expected = [r["shopping_trip_id"] for r in rows if r["end_time"].date() == day]  # type: ignore[attr-defined]
        assert part.column("shopping_trip_id").to_pylist() == expected
        assert part.schema == PURCHASES.arrow_schema()


def test_a_row_without_its_partition_time_is_refused() -> None:
    with pytest.raises(RowSchemaError, match="end_time"):
        group_by_day(PURCHASES, [{"shopping_trip_id": "t1"}])


def test_a_row_with_a_naive_partition_time_is_refused() -> None:
    with pytest.raises(RowSchemaError, match="timezone-aware"):
        group_by_day(PURCHASES, [_purchase("t1", datetime(2024, 5, 1))])


def test_partition_folders_and_temp_names_follow_the_lake_layout() -> None:
    root = Path("/lake")

    assert partition_dir(root, PURCHASES, date(2024, 5, 1)) == Path("/lake/purchases/date=2024-05-01")
    assert temp_name("b1") == ".part-b1.parquet.tmp"
    assert not temp_name("b1").endswith(".parquet")


@pytest.mark.parametrize("batch_id", ["", ".hidden", "a/b", "../x", "a b", "x" * 201])
def test_a_batch_id_that_cannot_name_a_file_is_refused(batch_id: str) -> None:
    with pytest.raises(InvalidBatchIdError):
        check_batch_id(batch_id)


@pytest.mark.parametrize("batch_id", ["b1", "sqs-7f1c.2", "s3=bucket.key-etag_1"])
def test_ordinary_batch_ids_are_accepted(batch_id: str) -> None:
    check_batch_id(batch_id)


def test_an_empty_batch_gives_an_empty_table_with_the_schema() -> None:
    frame = to_arrow(PURCHASES, [])

    assert frame.num_rows == 0
    assert frame.schema == PURCHASES.arrow_schema()
    assert isinstance(frame, pa.Table)
