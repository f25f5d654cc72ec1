"""Analyst SQL through in-memory readers over a real lake, with a writer publishing at the same time."""

from __future__ import annotations

import threading
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest

from contracts.tables import PURCHASES
from warehouse.errors import QueryError, ReadOnlyQueryError
from warehouse.lake import LakeWriter
from warehouse.query import open_reader, run_query
from warehouse.render import to_csv, to_json


def purchase(trip: str, total: str = "10.0000") -> dict[str, object]:
    return {
        "shopping_trip_id": trip,
        "store_id": "S1",
        "end_time": datetime(2024, 5, 1, 9, 15, tzinfo=UTC),
        "total": Decimal(total),
    }


def count_purchases(root: Path) -> int:
    con = open_reader(root)
    try:
        [(count,)] = con.sql("SELECT count(*) FROM purchases").fetchall()
    finally:
        con.close()
    assert isinstance(count, int)
    return count


@pytest.mark.parametrize(
    "sql",
    [
        "INSERT INTO purchases (shopping_trip_id) VALUES ('x')",
        "CREATE TABLE stolen AS SELECT * FROM purchases",
        "COPY purchases TO '{tmp}/out.csv'",
        "ATTACH '{tmp}/other.duckdb' AS other",
    ],
)
def test_run_query_refuses_statements_that_write(tmp_path: Path, sql: str) -> None:
    LakeWriter(tmp_path / "lake").write(PURCHASES, [purchase("t1")], "b1")

    with pytest.raises(ReadOnlyQueryError):
        run_query(tmp_path / "lake", sql.format(tmp=tmp_path))

    assert sorted(p.name for p in tmp_path.iterdir()) == ["lake"]


def test_a_reader_cannot_read_files_outside_the_lake(tmp_path: Path) -> None:
    secret = tmp_path / "secret.csv"
    secret.write_text("password\nhunter2\n")
    (tmp_path / "lake").mkdir()

    with pytest.raises(QueryError, match="Permission"):
        run_query(tmp_path / "lake", f"SELECT * FROM read_csv('{secret}')")


def test_a_reader_sees_files_published_after_the_last_reader_opened(tmp_path: Path) -> None:
    writer = LakeWriter(tmp_path)
    assert count_purchases(tmp_path) == 0

    writer.write(PURCHASES, [purchase("t1")], "b1")
    assert count_purchases(tmp_path) == 1

    writer.write(PURCHASES, [purchase("t2")], "b2")
    assert count_purchases(tmp_path) == 2


def test_query_results_format_as_csv_and_json(tmp_path: Path) -> None:
    LakeWriter(tmp_path).write(PURCHASES, [purchase("t1", "3.1400")], "b1")

    result = run_query(tmp_path, "SELECT shopping_trip_id, total, end_time, sum(total) OVER () AS s FROM purchases")

    assert to_csv(result) == ("shopping_trip_id,total,end_time,s\nt1,3.1400,2024-05-01T09:15:00+00:00,3.1400\n")
    assert to_json(result) == (
        '[{"shopping_trip_id": "t1", "total": "3.1400", "end_time": "2024-05-01T09:15:00+00:00", "s": "3.1400"}]'
    )


def test_integer_sums_come_back_as_integers(tmp_path: Path) -> None:
    LakeWriter(tmp_path).write(PURCHASES, [purchase("t1") | {"line_count": 2}, purchase("t2") | {"line_count": 3}], "b")

    result = run_query(tmp_path, "SELECT sum(line_count) AS lines FROM purchases")

    assert result.types == ("HUGEINT",)
    assert result.rows == [(5,)]
    assert isinstance(result.rows[0][0], int)


def test_a_bad_query_is_a_query_error(tmp_path: Path) -> None:
    with pytest.raises(QueryError, match="no_such_column"):
        run_query(tmp_path, "SELECT no_such_column FROM purchases")


def test_readers_in_a_loop_see_no_errors_while_a_writer_publishes_30_batches(tmp_path: Path) -> None:
    batches, per_batch = 30, 20
    writer = LakeWriter(tmp_path)
    done, a_read_finished = threading.Event(), threading.Event()
    writer_errors: list[BaseException] = []

    def write_batches() -> None:
        try:
            for b in range(batches):
                a_read_finished.clear()
                writer.write(PURCHASES, [purchase(f"t{b}-{i}") for i in range(per_batch)], f"b{b}")
                # Redeliver the previous batch too: replacing a published file must not disturb readers.
                if b:
                    writer.write(PURCHASES, [purchase(f"t{b - 1}-{i}") for i in range(per_batch)], f"b{b - 1}")
                # Let the reader overlap with every batch rather than finish before the second.
                a_read_finished.wait(timeout=5)
        except BaseException as exc:
            writer_errors.append(exc)
        finally:
            done.set()

    thread = threading.Thread(target=write_batches)
    reader_errors: list[Exception] = []
    counts: list[int] = []
    thread.start()
    while not done.is_set() or not counts:
        try:
            counts.append(count_purchases(tmp_path))
        except Exception as exc:
            reader_errors.append(exc)
        a_read_finished.set()
    thread.join()
    counts.append(count_purchases(tmp_path))

    assert writer_errors == []
    assert reader_errors == []
    assert counts == sorted(counts), "a reader saw rows disappear"
    assert all(count % per_batch == 0 for count in counts), "a reader saw part of a file"
    assert counts[-1] == batches * per_batch
    assert len(counts) > batches


def test_run_query_sees_every_replacement_of_a_file_at_once(tmp_path: Path) -> None:
    # run_query keeps its reader (and the Parquet footers it read) between queries: a file replaced under the same
    # name, many times within a second, must be read as it is now.
    writer = LakeWriter(tmp_path)
    for n in range(1, 21):
        writer.write(PURCHASES, [purchase(f"t{i}", f"{n}.0000") for i in range(n)], "b1")

        result = run_query(tmp_path, "SELECT count(*), sum(total) FROM purchases")

        assert result.rows == [(n, Decimal(n * n))]


def test_run_query_sees_a_table_gain_its_first_file_and_lose_its_last(tmp_path: Path) -> None:
    assert run_query(tmp_path, "SELECT count(*) FROM purchases").rows == [(0,)]

    [published] = LakeWriter(tmp_path).write(PURCHASES, [purchase("t1")], "b1")
    assert run_query(tmp_path, "SELECT count(*) FROM purchases").rows == [(1,)]

    published.unlink()
    assert run_query(tmp_path, "SELECT count(*) FROM purchases").rows == [(0,)]


def test_run_query_reads_in_utc_with_its_settings_locked(tmp_path: Path) -> None:
    run_query(tmp_path, "SELECT 1")  # the reader exists; the next statements run on cursors of it

    assert run_query(tmp_path, "SELECT current_setting('TimeZone')").rows == [("UTC",)]
    assert run_query(tmp_path, "SELECT current_setting('lock_configuration')").rows == [(True,)]
