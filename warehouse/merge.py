"""Merge on write: one de-duplicated current-state file per day of a latest-wins table.

A reader pays for every row of every file it reads, because the view keeps one row per key (`views.py`).
When a table is written in batches that mostly restate rows already there (an Intra-Day report repeats each
line in ~4 files), the writer calls `merge_partition` after publishing a batch: the day's current file
(`part-current.parquet`) and the other files of that day become one new current file holding exactly the rows
the view would show (newest per key by `Table.latest_by`, then the same tie-break on the other columns, nulls
last), sorted by key, so a reader reads one file per day.

Crash safety is compaction's argument (`compact.py`): the new current file goes to a hidden temp file, is
fsynced and renamed over the old one (one rename: there is never more than one current file), the folder is
fsynced, and only then are the merged inputs removed. A crash before the rename leaves the old current file
and the inputs; after it, the new current file and inputs whose rows it already holds. Either way the view,
which still de-duplicates, shows the same rows, and the next merge takes whatever files are there. Merging is
a pure function of the set of rows (the newest row per key under a total order), so the current file's bytes
do not depend on how the merges were grouped, only on which rows were published.

Merges of one partition are serialised by an exclusive `flock` on `.merge.lock` in its folder, which
compaction takes too, so two threads or processes never merge the same day at once.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from contracts.tables import Table
from warehouse.errors import LakeWriteError
from warehouse.lake import COMPRESSION, fsync_dir

CURRENT_NAME = "part-current.parquet"
CURRENT_TEMP = f".{CURRENT_NAME}.tmp"
"""Matches the lake's temp-file pattern, so the janitor removes one a crash left."""
LOCK_NAME = ".merge.lock"


@dataclass(frozen=True)
class Merge:
    directory: Path
    inputs: int
    """Files merged into the current file besides the previous current file."""
    rows_in: int
    rows_out: int


@contextlib.contextmanager
def partition_lock(directory: Path) -> Iterator[None]:
    """Hold the partition's merge lock (blocking); across threads and processes."""
    fd = os.open(directory / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def merge_partition(table: Table, directory: Path) -> Merge | None:
    """Merge the partition's files into its current file; None when there is nothing besides it."""
    if not directory.is_dir():
        return None
    with partition_lock(directory):
        current = directory / CURRENT_NAME
        inputs = sorted(p for p in directory.glob("*.parquet") if p.is_file() and p.name != CURRENT_NAME)
        if not inputs:
            return None
        schema = table.arrow_schema()
        try:
            base = read_as(schema, current) if current.is_file() else schema.empty_table()
            new = pa.concat_tables([read_as(schema, p) for p in inputs])
        except (OSError, pa.ArrowException) as exc:
            raise LakeWriteError(f"could not read {directory} to merge it: {exc}") from exc
        merged = merge_rows(table, base, new)
        publish(merged, directory)
        for path in inputs:
            path.unlink(missing_ok=True)
        fsync_dir(directory)
        return Merge(directory, len(inputs), base.num_rows + new.num_rows, merged.num_rows)


def merge_table(root: Path, table: Table) -> list[Merge]:
    """Merge every day of the table that has files besides its current one (e.g. left by a crash)."""
    done = []
    for directory in sorted(p for p in (root / table.name).glob("date=*") if p.is_dir()):
        result = merge_partition(table, directory)
        if result is not None:
            done.append(result)
    return done


def read_as(schema: pa.Schema, path: Path) -> pa.Table:
    """A Parquet file of the table as exactly `schema`: columns in order, missing ones null, types cast."""
    frame = pq.read_table(path)
    if frame.schema.equals(schema):
        return frame
    columns = [
        frame.column(f.name).cast(f.type) if f.name in frame.column_names else pa.nulls(frame.num_rows, f.type)
        for f in schema
    ]
    return pa.Table.from_arrays(columns, schema=schema)


def merge_rows(table: Table, base: pa.Table, new: pa.Table) -> pa.Table:
    """The rows the view shows over `base` (one row per key already) and `new`, sorted by key.

    Only the keys `new` touches are decided again: the base rows with other keys stay as they are. Sorted by
    key (unique by then), the result depends on the rows only, never on their order in the inputs.
    """
    key = list(table.key)
    schema = table.arrow_schema()
    if base.num_rows:
        frame = _frame(base)
        touched = _frame(new.select(key)).unique()
        kept = frame.join(touched, on=key, how="anti", nulls_equal=True)
        contested = pa.concat_tables(
            [frame.join(touched, on=key, how="semi", nulls_equal=True).to_arrow().cast(schema), new]
        )
    else:
        kept, contested = _frame(base), new
    rows = pl.concat([kept, _frame(newest_per_key(table, contested))]).sort(key, nulls_last=True, maintain_order=True)
    return rows.to_arrow().cast(schema)


def newest_per_key(table: Table, rows: pa.Table) -> pa.Table:
    """One row per key, chosen as the views choose it (`views._first_per_key`): largest `latest_by` values first,
    then smallest other columns in schema order, nulls last throughout."""
    if rows.num_rows == 0:
        return rows
    key = list(table.key)
    order = [(k, "ascending", "at_end") for k in key]
    order += [(c, "descending", "at_end") for c in table.latest_by]
    decided = {*table.key, *table.latest_by}
    order += [(c.name, "ascending", "at_end") for c in table.columns if c.name not in decided]
    ranked = rows.take(pc.sort_indices(rows, sort_keys=order))
    first = _frame(ranked.select(key)).select(pl.struct(key).is_first_distinct()).to_series().to_arrow()
    return ranked.filter(first)


def _frame(rows: pa.Table) -> pl.DataFrame:
    frame = pl.from_arrow(rows)
    assert isinstance(frame, pl.DataFrame)
    return frame


def publish(rows: pa.Table, directory: Path) -> Path:
    """Write the current file atomically: temp file, fsync, rename over the old one, fsync the folder."""
    final = directory / CURRENT_NAME
    temp = directory / CURRENT_TEMP
    try:
        with open(temp, "wb") as out:
            pq.write_table(rows, out, compression=COMPRESSION)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temp, final)
        fsync_dir(directory)
    except OSError as exc:
        with contextlib.suppress(OSError):
            temp.unlink(missing_ok=True)
        raise LakeWriteError(f"could not publish {final}: {exc}") from exc
    return final
