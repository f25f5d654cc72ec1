"""Merge on write: a day of a latest-wins table kept as one de-duplicated segment file per hour of its rows.

A reader pays for every row of every file it reads, because the view keeps one row per key (`views.py`).
When a table is written in batches that mostly restate rows already there (an Intra-Day report repeats each
line in ~4 files, each file covering the preceding hour), the writer calls `merge_partition` after publishing a
batch. A day's folder then holds one segment file per UTC hour of the partition column
(`part-current-HH.parquet`): one row per key among the rows of that hour, the newest by `Table.latest_by`, then
the same tie-break on the other columns as the view, nulls last; sorted by key.

`merge_partition` splits the day's batch files (and a batch's rows handed over in memory, never published as a
batch file) by hour and merges each hour's rows into that hour's segment only. A report covers the preceding
hour, so a file rewrites about two segments (about two hours of lines), not the whole day: the rewrite volume
per file stays the same all day long, and so does the memory.

Each segment is the newest row per key over every published row of its hour, sorted by key and written in
fixed row groups, and "newest per key" does not depend on grouping or order: a segment's bytes depend on the
set of published rows only, never on arrival order or on how the merges were grouped (so a replay gives the
same files). A key whose partition time changed between versions sits in two segments; the view decides it.

Crash safety is compaction's argument (`compact.py`): each segment goes to a hidden temp file, is fsynced and
renamed over the old one; when every hour of the batch is renamed the folder is fsynced (once for them all),
and only then are the batch files removed (and the folder fsynced again). A crash in between leaves batch
files whose rows are already in some segments; the view, which still de-duplicates, shows the same rows, and
the next merge takes them in again (merging a row twice changes nothing). Rows handed over in memory belong to
a report file whose ledger row is written only after the merge, so a crash mid-merge has the file applied
again.

Merges of one partition are serialised by an exclusive `flock` on `.merge.lock` in its folder, which
compaction takes too, so two threads or processes never merge the same day at once.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from contracts.tables import Table
from warehouse.errors import LakeWriteError
from warehouse.lake import COMPRESSION, ROW_GROUP_ROWS, fsync_dir

SEGMENT_PREFIX = "part-current-"
LOCK_NAME = ".merge.lock"
MERGED_ON_WRITE = frozenset({"intraday_order_lines"})
"""Tables whose days are kept merged on write (their view ranks only keys held more than once)."""


def segment_name(hour: int) -> str:
    """The segment file of a UTC hour (0-23) of the partition column."""
    return f"{SEGMENT_PREFIX}{hour:02d}.parquet"


def is_segment(path: Path) -> bool:
    return path.name.startswith(SEGMENT_PREFIX) and path.name.endswith(".parquet")


def has_segments(directory: Path) -> bool:
    """Whether the day is kept merged on write (compaction leaves it alone)."""
    return any(is_segment(p) for p in directory.glob(f"{SEGMENT_PREFIX}*.parquet"))


@dataclass(frozen=True)
class Merge:
    directory: Path
    inputs: int
    """Batch files merged."""
    rows_in: int
    """Rows read: the batch files' and those of the segments they touched."""
    rows_out: int
    """Rows of the segments written."""
    segments: int
    """Segments written."""


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive `flock` on `path` (created if missing; blocking); across threads and processes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def partition_lock(directory: Path) -> contextlib.AbstractContextManager[None]:
    """Hold the partition's merge lock (blocking); across threads and processes."""
    return file_lock(directory / LOCK_NAME)


def merge_partition(
    table: Table, directory: Path, rows: pa.Table | None = None, *, cache: SegmentCache | None = None
) -> Merge | None:
    """Merge the partition's batch files, and `rows` (the day's rows of a batch kept in memory, with exactly the
    table's schema, not published as a file), into its hourly segments; None when there was nothing to merge.

    `cache` keeps the segments last written in memory, so the next merge need not read them back."""
    if not directory.is_dir():
        return None
    cache = SegmentCache(0) if cache is None else cache
    with partition_lock(directory):
        inputs = sorted(p for p in directory.glob("*.parquet") if p.is_file() and not is_segment(p))
        if not inputs and rows is None:
            return None
        schema = table.arrow_schema()
        rows_in = rows_out = segments = 0
        for hour, hour_rows in _by_hour(table, inputs, rows):
            path = directory / segment_name(hour)
            try:
                base = cache.read(schema, path)
            except (OSError, pa.ArrowException) as exc:
                raise LakeWriteError(f"could not read {path} to merge it: {exc}") from exc
            new = newest_per_key(table, hour_rows)
            if base is None:
                merged = new
            else:
                both, order = merge_order(table, base, new)
                merged = both.take(order)
            write_sorted(merged, directory, path.name, sync_dir=False)
            cache.keep(path, merged)
            rows_in += hour_rows.num_rows + (0 if base is None else base.num_rows)
            rows_out += merged.num_rows
            segments += 1
        if segments:
            fsync_dir(directory)  # the renames are durable before a batch file goes
        for path in inputs:
            path.unlink(missing_ok=True)
        if inputs:
            fsync_dir(directory)
        return Merge(directory, len(inputs), rows_in, rows_out, segments)


class SegmentCache:
    """The last `size` segments written, in memory. An entry is used only while the file on disk is the one
    written (same inode, size and modification time), so a file another process replaced is read again."""

    def __init__(self, size: int = 8) -> None:
        self._size = size
        self._held: OrderedDict[Path, tuple[tuple[int, int, int], pa.Table]] = OrderedDict()

    def read(self, schema: pa.Schema, path: Path) -> pa.Table | None:
        """The segment's rows; None when there is no such file."""
        try:
            signature = _signature(path)
        except FileNotFoundError:
            self._held.pop(path, None)
            return None
        held = self._held.get(path)
        if held is not None and held[0] == signature:
            self._held.move_to_end(path)
            return held[1]
        return read_as(schema, path)

    def keep(self, path: Path, rows: pa.Table) -> None:
        if self._size <= 0:
            return
        self._held[path] = (_signature(path), rows)
        self._held.move_to_end(path)
        while len(self._held) > self._size:
            self._held.popitem(last=False)


def _signature(path: Path) -> tuple[int, int, int]:
    stat = path.stat()
    return (stat.st_ino, stat.st_size, stat.st_mtime_ns)


def merge_table(root: Path, table: Table) -> list[Merge]:
    """Merge every day of the table that has batch files (e.g. after a backfill, or left by a crash)."""
    done = []
    for directory in sorted(p for p in (root / table.name).glob("date=*") if p.is_dir()):
        result = merge_partition(table, directory)
        if result is not None:
            done.append(result)
    return done


def _by_hour(table: Table, inputs: list[Path], rows: pa.Table | None) -> Iterator[tuple[int, pa.Table]]:
    """The rows of the batch files and `rows`, an hour at a time, oldest first. Only the files holding rows of
    the hour are read for it (their partition column says which), and a file is let go after its last hour,
    so a backfill of a whole day of batch files is never in memory at once."""
    schema = table.arrow_schema()
    try:
        hours_of = {p: set(_hours(table, pq.read_table(p, columns=[table.partition_by]))) for p in inputs}
    except (OSError, pa.ArrowException) as exc:
        raise LakeWriteError(f"could not read {inputs[0].parent} to merge it: {exc}") from exc
    held = dict(split_by_hour(table, rows)) if rows is not None else {}
    read: dict[Path, pa.Table] = {}
    for hour in sorted(set(held).union(*hours_of.values())):
        parts = [held.pop(hour)] if hour in held else []
        for path in (p for p in inputs if hour in hours_of[p]):
            try:
                frame = read[path] if path in read else read.setdefault(path, read_as(schema, path))
            except (OSError, pa.ArrowException) as exc:
                raise LakeWriteError(f"could not read {path} to merge it: {exc}") from exc
            parts.append(frame.filter(pc.equal(_hour_array(table, frame), hour)))
            if hour == max(hours_of[path]):
                del read[path]
        yield hour, pa.concat_tables(parts)


def _hour_array(table: Table, rows: pa.Table) -> pa.ChunkedArray:
    return pc.hour(rows.column(table.partition_by))  # the stamps are UTC


def _hours(table: Table, rows: pa.Table) -> list[int]:
    return [h for h in pc.unique(_hour_array(table, rows)).to_pylist() if h is not None]


def split_by_hour(table: Table, rows: pa.Table) -> list[tuple[int, pa.Table]]:
    """The rows by UTC hour of the partition column (which the lake guarantees is set), oldest hour first."""
    hours = _hour_array(table, rows)
    return [(hour, rows.filter(pc.equal(hours, hour))) for hour in sorted(_hours(table, rows))]


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


def write_sorted(rows: pa.Table, directory: Path, name: str, *, sync_dir: bool = True) -> Path:
    """Publish `rows` as `directory/name` atomically: a hidden temp file written one row group of `ROW_GROUP_ROWS`
    at a time (each made contiguous, so the bytes depend on the values only), fsynced, renamed over the old
    file; the folder fsynced, unless `sync_dir` is false (the caller fsyncs it after its last rename)."""
    final = directory / name
    temp = directory / f".{name}.tmp"  # the lake's temp-file pattern: the janitor removes one a crash left
    try:
        with open(temp, "wb") as out:
            with pq.ParquetWriter(out, rows.schema, compression=COMPRESSION) as writer:
                for start in range(0, rows.num_rows, ROW_GROUP_ROWS):
                    group = rows.slice(start, ROW_GROUP_ROWS).combine_chunks()
                    writer.write_table(group, row_group_size=ROW_GROUP_ROWS)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temp, final)
        if sync_dir:
            fsync_dir(directory)
    except OSError as exc:
        with contextlib.suppress(OSError):
            temp.unlink(missing_ok=True)
        raise LakeWriteError(f"could not publish {final}: {exc}") from exc
    return final
