"""Compaction merges a day's small files into one without changing what readers see."""

from __future__ import annotations

import shutil
import threading
from datetime import UTC, datetime
from pathlib import Path

import pyarrow.parquet as pq

from contracts.tables import PURCHASES
from tests.integration.test_warehouse_lake import purchase, purchases_in_view
from warehouse.compact import compact_partition, compact_table
from warehouse.lake import LakeWriter, janitor, parquet_files
from warehouse.query import run_query

DAY = datetime(2026, 11, 20, 15, 0, tzinfo=UTC)


def _write_batches(root: Path, batches: int, per_batch: int) -> None:
    writer = LakeWriter(root)
    for b in range(batches):
        rows = [purchase(f"trip-{b:03d}-{n:03d}", end_time=DAY) for n in range(per_batch)]
        rows.append(purchase("trip-shared", end_time=DAY))  # the same row in every batch
        writer.write(PURCHASES, rows, f"batch-{b:03d}")


def test_small_files_become_one_file_and_readers_see_the_same_rows(tmp_path: Path) -> None:
    root = tmp_path / "lake"
    _write_batches(root, batches=40, per_batch=25)
    before = purchases_in_view(root)
    assert len(parquet_files(root, PURCHASES)) == 40

    (done,) = compact_table(root, PURCHASES)

    files = parquet_files(root, PURCHASES)
    assert files == [done.output]
    assert (done.inputs, done.rows_in, done.rows_out) == (40, 40 * 26, 40 * 25 + 1)  # duplicates merged
    assert purchases_in_view(root) == before
    metadata = pq.ParquetFile(done.output).metadata
    assert metadata.num_row_groups == 1
    assert compact_table(root, PURCHASES) == []  # nothing left to merge


def test_files_that_are_already_large_are_left_alone(tmp_path: Path) -> None:
    root = tmp_path / "lake"
    _write_batches(root, batches=3, per_batch=50)
    big = parquet_files(root, PURCHASES)[0]
    directory = big.parent
    done = compact_partition(PURCHASES, directory, min_rows=52)  # the first file has 51 rows: small
    assert done is not None
    assert done.inputs == 3
    _write_batches(tmp_path / "other", batches=2, per_batch=100)
    kept = parquet_files(tmp_path / "other", PURCHASES)
    assert compact_partition(PURCHASES, kept[0].parent, min_rows=50) is None
    assert parquet_files(tmp_path / "other", PURCHASES) == kept


def test_a_crash_between_publishing_and_removing_the_inputs_changes_nothing_for_readers(tmp_path: Path) -> None:
    root = tmp_path / "lake"
    _write_batches(root, batches=10, per_batch=5)
    before = purchases_in_view(root)
    saved = tmp_path / "saved"
    shutil.copytree(root, saved)
    (done,) = compact_table(root, PURCHASES)
    # The crash: the merged file is published but the inputs are still there.
    for path in parquet_files(saved, PURCHASES):
        shutil.copy(path, done.output.parent / path.name)
    assert purchases_in_view(root) == before
    (again,) = compact_table(root, PURCHASES)
    assert again.inputs == 11
    assert parquet_files(root, PURCHASES) == [again.output]
    assert purchases_in_view(root) == before
    assert janitor(root) == 0


def test_readers_querying_in_a_loop_during_writes_and_compactions_never_fail(tmp_path: Path) -> None:
    root = tmp_path / "lake"
    writer = LakeWriter(root)
    writer.write(PURCHASES, [purchase("trip-first", end_time=DAY)], "batch-first")
    stop = threading.Event()
    errors: list[BaseException] = []
    counts: list[list[int]] = [[], []]

    def read(seen: list[int]) -> None:
        while not stop.is_set():
            try:
                result = run_query(root, "SELECT count(*) FROM purchases")
                seen.append(int(result.rows[0][0]))  # type: ignore[call-overload]
            except BaseException as exc:
                errors.append(exc)

    readers = [threading.Thread(target=read, args=(seen,)) for seen in counts]
    for thread in readers:
        thread.start()
    try:
        for b in range(60):
            writer.write(PURCHASES, [purchase(f"trip-{b:03d}-{n}", end_time=DAY) for n in range(3)], f"batch-{b:03d}")
            if b % 5 == 4:
                compact_table(root, PURCHASES)
    finally:
        stop.set()
        for thread in readers:
            thread.join()
    assert errors == []
    for seen in counts:
        assert seen
        assert seen == sorted(seen)  # rows only ever appear, never vanish or double
        assert seen[-1] <= 181
    assert run_query(root, "SELECT count(*) FROM purchases").rows == [(181,)]
