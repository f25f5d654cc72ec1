"""Merge on write, LSM-style: a day of a latest-wins table kept as one large current file and one small recent file.

A reader pays for every row of every file it reads, because the view keeps one row per key (`views.py`).
When a table is written in batches that mostly restate rows already there (an Intra-Day report repeats each
line in ~4 files), the writer calls `merge_partition` after publishing a batch. A day's folder then holds:

- `part-current.parquet`: one row per key (the newest by `Table.latest_by`, then the same tie-break on the
  other columns as the view, nulls last), sorted by key;
- `part-recent.parquet`, maybe: the same, over the rows published since the current file was last written;
- briefly, the batch files just published (and whatever a crash left), which the next merge takes in.

`merge_partition` folds the batch files into the recent file, which stays small, and folds the recent file into
the current one only when it holds more than `fold_fraction` of the current file's rows (or when asked to, or
when there is no current file yet). So a batch costs a rewrite of the recent file, and the current file is
rewritten only after its size has grown by that fraction: the rewrite volume is bounded by a constant factor
of the rows kept instead of growing with the square of the day. `merge_table` folds every day completely: a
backfill ends with it, and so does `jwo replay intraday`.

The view reads the current files as they are (they are unique per key) and decides again only the keys that
the other files hold (`views.merged_select_sql`). Both files are the newest rows per key over some of the day's
published rows, and "newest per key" does not depend on grouping or order: the recent file may be older or
newer than the current file for a key, and the view and the next fold choose the same row. After a complete
fold the current file holds the newest row per key over every row of the day, sorted by key and written in
fixed row groups, so its bytes depend on the set of published rows only (not on arrival order or on when the
folds happened).

Crash safety is compaction's argument (`compact.py`): each output goes to a hidden temp file, is fsynced and
renamed over the old one (one rename: there is never more than one current or recent file), the folder is
fsynced, and only then are the merged inputs removed (and the folder fsynced again). A crash before the rename
leaves the old files and the inputs; after it, the new file and inputs whose rows it already holds. Either way
the view shows the same rows, and the next merge takes whatever files are there.

A fold holds the current file's Arrow columns (not a copy of them) and writes the new one a row group at a
time, so its memory is about one current file plus one row group.

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
RECENT_NAME = "part-recent.parquet"
LOCK_NAME = ".merge.lock"
FOLD_FRACTION = 0.25
"""The recent file is folded into the current one when it holds more rows than this share of it."""
ROW_GROUP_ROWS = 131_072
"""Rows per row group of the current and recent files: fixed, so the bytes depend on the rows only."""
MERGED_ON_WRITE = frozenset({"intraday_order_lines"})
"""Tables whose days are kept merged on write (the views read their current files without re-sorting them)."""


@dataclass(frozen=True)
class Merge:
    directory: Path
    inputs: int
    """Batch files merged besides the current and recent files."""
    rows_in: int
    """Rows read: the batch files', the recent file's, and the current file's when it was folded."""
    rows_out: int
    """Rows of the file written (the recent file, or the current file when folded)."""
    folded: bool
    """Whether the current file was rewritten (the recent rows folded into it)."""


@contextlib.contextmanager
def partition_lock(directory: Path) -> Iterator[None]:
    """Hold the partition's merge lock (blocking); across threads and processes."""
    fd = os.open(directory / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def merge_partition(
    table: Table,
    directory: Path,
    *,
    fold: bool = False,
    fold_fraction: float = FOLD_FRACTION,
    cache: RecentCache | None = None,
) -> Merge | None:
    """Merge the partition's batch files into its recent file, and the recent file into the current one when it
    has grown past `fold_fraction` of it (always with `fold`). None when there was nothing to merge.

    `cache` keeps the recent file's rows in memory between merges (checked against the file on disk)."""
    if not directory.is_dir():
        return None
    cache = RecentCache() if cache is None else cache
    with partition_lock(directory):
        current, recent = directory / CURRENT_NAME, directory / RECENT_NAME
        inputs = sorted(
            p for p in directory.glob("*.parquet") if p.is_file() and p.name not in (CURRENT_NAME, RECENT_NAME)
        )
        if not inputs and not (fold and recent.is_file()):
            return None
        schema = table.arrow_schema()
        try:
            frames = [read_as(schema, p) for p in inputs]
            batch = newest_per_key(table, pa.concat_tables(frames)) if frames else schema.empty_table()
            held = cache.read(schema, recent)
            base_rows = _rows_of(current) if current.is_file() else None
        except (OSError, pa.ArrowException) as exc:
            raise LakeWriteError(f"could not read {directory} to merge it: {exc}") from exc
        rows_in = sum(_rows_of(p) for p in inputs) + (held.num_rows if held is not None else 0)
        if held is None:
            rows, order = batch, _identity(batch.num_rows)
        else:
            rows, order = merge_order(table, held, batch)
        if fold or base_rows is None or len(order) > fold_fraction * base_rows:
            rows_out = fold_into_current(table, directory, rows.take(order))
            done = Merge(directory, len(inputs), rows_in + (base_rows or 0), rows_out, folded=True)
            removed = [*inputs, recent]
            cache.forget(recent)
        else:
            write_rows(rows, order, directory, RECENT_NAME)
            cache.keep(recent, rows.take(order))
            done = Merge(directory, len(inputs), rows_in, len(order), folded=False)
            removed = inputs
        for path in removed:
            path.unlink(missing_ok=True)
        fsync_dir(directory)
        return done


class RecentCache:
    """The recent files' rows as last written, so the next merge need not read them back. An entry is used only
    while the file on disk is the one written (same inode, size and modification time)."""

    def __init__(self) -> None:
        self._held: dict[Path, tuple[tuple[int, int, int], pa.Table]] = {}

    def read(self, schema: pa.Schema, path: Path) -> pa.Table | None:
        """The file's rows (None when there is no such file)."""
        try:
            stat = path.stat()
        except FileNotFoundError:
            self._held.pop(path, None)
            return None
        signature = (stat.st_ino, stat.st_size, stat.st_mtime_ns)
        held = self._held.get(path)
        if held is not None and held[0] == signature:
            return held[1]
        rows = read_as(schema, path)
        self._held[path] = (signature, rows)
        return rows

    def keep(self, path: Path, rows: pa.Table) -> None:
        stat = path.stat()
        self._held[path] = ((stat.st_ino, stat.st_size, stat.st_mtime_ns), rows)

    def forget(self, path: Path) -> None:
        self._held.pop(path, None)


def _identity(rows: int) -> pa.Array:
    return pa.array(range(rows), pa.int64())


def merge_table(root: Path, table: Table, *, fold: bool = True) -> list[Merge]:
    """Merge every day of the table (by default folding each completely into its one current file)."""
    done = []
    for directory in sorted(p for p in (root / table.name).glob("date=*") if p.is_dir()):
        result = merge_partition(table, directory, fold=fold)
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


def _rows_of(path: Path) -> int:
    return int(pq.ParquetFile(path).metadata.num_rows)


def fold_into_current(table: Table, directory: Path, new: pa.Table) -> int:
    """Publish the current file of `directory` merged with `new` (one row per key, sorted by key); returns its
    rows. The current file's rows whose keys `new` does not hold are kept as they are; for the other keys the
    newest of the two rows wins."""
    current = directory / CURRENT_NAME
    schema = table.arrow_schema()
    if not current.is_file():
        write_sorted(new, directory, CURRENT_NAME)
        return int(new.num_rows)
    try:
        base = read_as(schema, current)
    except (OSError, pa.ArrowException) as exc:
        raise LakeWriteError(f"could not read {current} to merge it: {exc}") from exc
    merged, order = merge_order(table, base, new)
    write_rows(merged, order, directory, CURRENT_NAME)
    return len(order)


def merge_order(table: Table, base: pa.Table, new: pa.Table) -> tuple[pa.Table, pa.Array]:
    """(rows, order): `rows.take(order)` are the rows the view shows over `base` and `new` (each one row per
    key), sorted by key. `rows` is `base` followed by the winners of the keys `new` holds, without copying
    `base`; only the keys of `new` are decided again."""
    key = list(table.key)
    schema = table.arrow_schema()
    base_keys = _frame(base.select(key)).with_row_index("_row")
    new_keys = _frame(new.select(key)).unique()
    contested = base_keys.join(new_keys, on=key, how="semi", nulls_equal=True).get_column("_row")
    kept = base_keys.join(new_keys, on=key, how="anti", nulls_equal=True).get_column("_row")
    winners = newest_per_key(table, pa.concat_tables([new, base.take(contested.to_arrow())]).cast(schema))
    rows = pa.concat_tables([base, winners])
    source = pl.concat([kept.cast(pl.Int64), pl.int_range(base.num_rows, rows.num_rows, dtype=pl.Int64, eager=True)])
    keys = pa.concat_tables([base.select(key).take(kept.to_arrow()), winners.select(key)])
    by_key = pc.sort_indices(keys, sort_keys=[(k, "ascending", "at_end") for k in key])
    order = source.to_arrow().take(by_key)
    return rows, order


def newest_per_key(table: Table, rows: pa.Table) -> pa.Table:
    """One row per key, chosen as the views choose it (`views._first_per_key`): largest `latest_by` values first,
    then smallest other columns in schema order, nulls last throughout; sorted by key."""
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


def write_sorted(rows: pa.Table, directory: Path, name: str) -> Path:
    """Publish rows already in their final order as `name` (see `write_rows`)."""
    return write_rows(rows, _identity(rows.num_rows), directory, name)


def write_rows(rows: pa.Table, order: pa.Array, directory: Path, name: str) -> Path:
    """Publish `rows.take(order)` as `directory/name` atomically: a hidden temp file written one row group of
    `ROW_GROUP_ROWS` at a time (each made contiguous, so the bytes depend on the values only), fsynced,
    renamed over the old file; the folder fsynced."""
    final = directory / name
    temp = directory / f".{name}.tmp"  # the lake's temp-file pattern: the janitor removes one a crash left
    try:
        with open(temp, "wb") as out:
            with pq.ParquetWriter(out, rows.schema, compression=COMPRESSION) as writer:
                for start in range(0, len(order), ROW_GROUP_ROWS):
                    group = rows.take(order.slice(start, ROW_GROUP_ROWS)).combine_chunks()
                    writer.write_table(group, row_group_size=ROW_GROUP_ROWS)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temp, final)
        fsync_dir(directory)
    except OSError as exc:
        with contextlib.suppress(OSError):
            temp.unlink(missing_ok=True)
        raise LakeWriteError(f"could not publish {final}: {exc}") from exc
    return final
