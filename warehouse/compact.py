"""Compaction: many small batch files of a day become one file with large row groups.

A consumer publishes one small file per micro-batch; readers pay per file. `compact_partition` merges
a day's files that hold fewer than `min_rows` rows into one file (rows de-duplicated on the table key
exactly as the views do it, row groups up to `ROW_GROUP_ROWS`), published atomically under a name that
derives from its inputs, and only then removes the inputs. A crash in between leaves the inputs beside
the merged file: the views de-duplicate on the key, so readers see the same rows, and the next run
merges again. Files that already hold `min_rows` rows are left alone, so the work per run is bounded.
Only the lake's one writer process runs this. A day kept merged on write (`merge.py`: it has segment files)
is left to its merges; the partition's lock is held while compacting, and for a table merged on write the
table's merge lock too, so a compaction and a merge never interleave (a compacted file of such a table is a
batch file like any other: the next merge takes it in).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import duckdb
import pyarrow.parquet as pq

from contracts.tables import Table
from warehouse.errors import LakeWriteError
from warehouse.lake import COMPRESSION, ROW_GROUP_ROWS, fsync_dir
from warehouse.merge import MERGED_ON_WRITE, has_segments, partition_lock, table_lock
from warehouse.views import files_select_sql, quote_literal

MIN_ROWS = 100_000
COMPACTED_PREFIX = "part-c-"


@dataclass(frozen=True)
class Compaction:
    directory: Path
    inputs: int
    rows_in: int
    rows_out: int
    output: Path


def rows_in(path: Path) -> int:
    return int(pq.ParquetFile(path).metadata.num_rows)


def compact_partition(table: Table, directory: Path, *, min_rows: int = MIN_ROWS) -> Compaction | None:
    """Merge the partition's small files into one; None when there are fewer than two small files, or when the
    partition is merged on write (it has segment files)."""
    if not directory.is_dir() or has_segments(directory):
        return None
    merges = table_lock(directory.parent) if table.name in MERGED_ON_WRITE else contextlib.nullcontext()
    with merges, partition_lock(directory):
        if has_segments(directory):
            return None
        return _compact_locked(table, directory, min_rows)


def _compact_locked(table: Table, directory: Path, min_rows: int) -> Compaction | None:
    small = sorted((p, n) for p in directory.glob("*.parquet") if p.is_file() and (n := rows_in(p)) < min_rows)
    if len(small) < 2:
        return None
    inputs = [p for p, _ in small]
    digest = hashlib.sha256("\n".join(p.name for p in inputs).encode()).hexdigest()[:24]
    final = directory / f"{COMPACTED_PREFIX}{digest}.parquet"
    temp = directory / f".{final.name}.tmp"
    con = duckdb.connect(":memory:")
    try:
        con.execute("SET TimeZone = 'UTC'")
        options = f"FORMAT parquet, COMPRESSION {COMPRESSION}, ROW_GROUP_SIZE {ROW_GROUP_ROWS}"
        con.execute(f"COPY ({files_select_sql(table, inputs)}) TO {quote_literal(temp.as_posix())} ({options})")
        with open(temp, "rb+") as written:
            os.fsync(written.fileno())
        os.replace(temp, final)
        fsync_dir(directory)
    except (duckdb.Error, OSError) as exc:
        temp.unlink(missing_ok=True)
        raise LakeWriteError(f"could not compact {directory}: {exc}") from exc
    finally:
        con.close()
    for path in inputs:
        if path != final:
            path.unlink(missing_ok=True)
    fsync_dir(directory)
    return Compaction(directory, len(inputs), sum(n for _, n in small), rows_in(final), final)


def compact_table(root: Path, table: Table, *, min_rows: int = MIN_ROWS) -> list[Compaction]:
    """Compact every day of the table that has small files to merge."""
    done = []
    for directory in sorted(p for p in (root / table.name).glob("date=*") if p.is_dir()):
        result = compact_partition(table, directory, min_rows=min_rows)
        if result is not None:
            done.append(result)
    return done
