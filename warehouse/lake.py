"""The Parquet lake: one folder per table, one folder per UTC day, one file per batch.

    <root>/<table>/date=YYYY-MM-DD/part-<batch_id>.parquet

A file's name derives from the batch that produced it, so writing a batch again overwrites its files rather
than adding rows. Files are published atomically: the bytes go to a hidden temp file in the same folder
(`.part-<batch_id>.parquet.tmp`), which is flushed and fsynced, renamed over the final name, and the folder is
fsynced. Readers glob `*.parquet`, so a temp file is never read; a crash leaves at most a temp file, which
`janitor` removes. The files of one batch are written on a few threads at once (Arrow's Parquet encoder, zstd
and fsync release the GIL); the batch is published when every one of them is. A large table's files can be
`stage`d before the batch id is known (the bytes under `.part-staged-<random>.parquet.tmp`, renamed into place by
`write_tables`), so that encoding them overlaps the caller's work on the rest of its batch.
"""

from __future__ import annotations

import contextlib
import os
import re
import stat
import threading
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import UTC, date, datetime, timezone
from decimal import ROUND_HALF_EVEN, Context, Decimal
from itertools import chain
from operator import attrgetter, itemgetter
from pathlib import Path
from typing import overload
from zoneinfo import ZoneInfo

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from pydantic_core import TzInfo

from contracts.arrow_rows import ArrowRows
from contracts.tables import Column, Kind, Table
from warehouse.errors import InvalidBatchIdError, LakeWriteError, RowSchemaError

PARQUET_GLOB = "*/*.parquet"
"""Where a table's published files are, relative to its folder; the views read exactly this."""

TEMP_GLOB = "*/*/.part-*.parquet.tmp"
"""Where unpublished temp files are, relative to the lake root."""

COMPRESSION = "zstd"

_BATCH_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._=-]{0,199}")
_DECIMAL_KINDS = frozenset({Kind.MONEY, Kind.QUANTITY})
_FOUR_PLACES = Decimal("0.0001")
_WIDE = Context(prec=60)
_CONVERSION_ERRORS = (pa.ArrowException, ArithmeticError, TypeError, ValueError)
_TZINFO = attrgetter("tzinfo")
_ZONE_TYPES = frozenset({timezone, type(TzInfo(0)), ZoneInfo})
"""tzinfo classes whose `utcoffset` is never None: an aware datetime stays aware."""
PUBLISH_THREADS = 4
ROW_GROUP_ROWS = 131_072
"""Rows per Parquet row group of a published file (at least 100k, STYLE.md). DuckDB reads a file's row groups in
parallel and one row group on one thread, so a file of a million rows in one group (pyarrow's default) was read on
one core of two: a reconcile run's facts (bench/reconcile.py, 2026-12-03)."""
DICTIONARY_MIN_ROWS = 100_000
"""Files with fewer rows are written without dictionary encoding: a batch's files (a few thousand rows, rewritten
by compaction into row groups of at least 100k rows) came out ~7% smaller without it and cost ~25% less CPU to
encode (bench/consumers.py batches, 2026-11-25)."""


def partition_dir(root: Path, table: Table, day: date) -> Path:
    return root / table.name / f"date={day.isoformat()}"


def published_name(batch_id: str) -> str:
    return f"part-{batch_id}.parquet"


def temp_name(batch_id: str) -> str:
    return f".part-{batch_id}.parquet.tmp"


def parquet_files(root: Path, table: Table) -> list[Path]:
    """The table's files that a view would read right now, sorted."""
    return sorted(p for p in (root / table.name).glob(PARQUET_GLOB) if p.is_file())


def parquet_file_stats(root: Path, table: Table) -> list[tuple[Path, os.stat_result]]:
    """`parquet_files` with each file's `stat`, sorted: the folders listed with `scandir`, one `stat` a file (a
    file gone between the listing and its `stat` is left out, as it would be from a listing a moment later)."""
    found: list[tuple[Path, os.stat_result]] = []
    try:
        with os.scandir(root / table.name) as entries:
            days = [entry.path for entry in entries if entry.is_dir()]
    except (FileNotFoundError, NotADirectoryError):
        return []
    for day in days:
        try:
            with os.scandir(day) as entries:
                for entry in entries:
                    if not entry.name.endswith(".parquet"):
                        continue
                    with contextlib.suppress(FileNotFoundError):
                        info = entry.stat()
                        if stat.S_ISREG(info.st_mode):
                            found.append((Path(entry.path), info))
        except (FileNotFoundError, NotADirectoryError):
            continue
    found.sort(key=itemgetter(0))
    return found


def check_batch_id(batch_id: str) -> None:
    if not _BATCH_ID.fullmatch(batch_id):
        raise InvalidBatchIdError(
            f"batch id {batch_id!r} cannot name a file: use 1-200 of [A-Za-z0-9._=-], not starting with '.'"
        )


def utc_day(table: Table, row: Mapping[str, object]) -> date:
    """The UTC date of the row's partition timestamp."""
    value = row.get(table.partition_by)
    if not isinstance(value, datetime) or value.utcoffset() is None:
        raise RowSchemaError(
            f"{table.name}.{table.partition_by} must be a timezone-aware datetime to partition by, got {value!r}"
        )
    return value.astimezone(UTC).date()


def group_by_day(table: Table, rows: Sequence[Mapping[str, object]]) -> dict[date, list[Mapping[str, object]]]:
    groups: dict[date, list[Mapping[str, object]]] = {}
    for row in rows:
        groups.setdefault(utc_day(table, row), []).append(row)
    return dict(sorted(groups.items()))


def to_arrow(table: Table, rows: Sequence[Mapping[str, object]]) -> pa.Table:
    """The rows as an Arrow table with exactly the table's schema, built a column at a time.

    Missing keys are nulls; unknown keys are an error (a typo would otherwise become a silent null).
    Decimals are rounded half-even to 4 places; floats are refused for money and quantities.
    """
    columns = _full_columns(table, rows)
    if columns is None:
        names = frozenset(table.column_names)
        unknown = set(chain.from_iterable(rows)) - names
        if unknown:
            raise RowSchemaError(f"{table.name} has no column {', '.join(sorted(unknown))}")
        columns = [[row.get(column.name) for row in rows] for column in table.columns]
    arrays = [_column_array(table, column, values) for column, values in zip(table.columns, columns, strict=True)]
    return pa.Table.from_arrays(arrays, schema=table.arrow_schema())


def _full_columns(table: Table, rows: Sequence[Mapping[str, object]]) -> list[Sequence[object]] | None:
    """The rows' values column by column when every row has exactly the table's columns (as decoded rows
    do), transposed in C; None otherwise (`to_arrow` then takes each column with `get`)."""
    names = table.column_names
    if len(names) < 2 or not set(map(len, rows)) <= {len(names)}:
        return None
    try:
        values = list(map(itemgetter(*names), rows))  # as many keys as columns, and every column: no others
    except (KeyError, TypeError):
        return None
    if not values:
        return [() for _ in names]
    return list(zip(*values, strict=True))


def split_by_day(table: Table, frame: pa.Table) -> list[tuple[date, pa.Table]]:
    """An Arrow table with exactly the table's schema, split by the UTC day of `table.partition_by`, oldest
    first. Raises RowSchemaError when the schema differs or a row has no partition timestamp."""
    if not frame.schema.equals(table.arrow_schema()):
        raise RowSchemaError(f"{table.name}: the Arrow schema {frame.schema} is not the table's")
    if frame.num_rows == 0:
        return []
    stamps = frame.column(table.partition_by)
    if stamps.null_count:
        raise RowSchemaError(f"{table.name}.{table.partition_by} must be a timezone-aware datetime to partition by")
    days = pc.cast(stamps, pa.date32())  # the stamps are UTC
    distinct = sorted(pc.unique(days).to_pylist())
    if len(distinct) == 1:
        return [(distinct[0], frame)]
    if pc.all(pc.less_equal(days.slice(0, len(days) - 1), days.slice(1))).as_py():
        # Already oldest day first (as reconciliation hands over its trip rows): each day is a slice, no copy.
        counts = pc.value_counts(days)
        rows = dict(zip(counts.field("values").to_pylist(), counts.field("counts").to_pylist(), strict=True))
        offsets = [0]
        for day in distinct:
            offsets.append(offsets[-1] + rows[day])
        return [(day, frame.slice(offsets[i], rows[day])) for i, day in enumerate(distinct)]
    # One chunk first: filtering a table of many small chunks (as DuckDB hands them over) costs per chunk.
    frame, days = frame.combine_chunks(), days.combine_chunks()
    return [(day, frame.filter(pc.equal(days, pa.scalar(day, pa.date32())))) for day in distinct]


def _by_day(table: Table, rows: Sequence[Mapping[str, object]]) -> list[tuple[date, pa.Table]]:
    """`to_arrow` of each UTC day's rows, oldest first: the whole batch converted at once and split by Arrow
    when every row has a timezone-aware partition time, else row by row (which words the error)."""
    partition = table.column(table.partition_by)
    stamps = [row.get(table.partition_by) for row in rows]
    try:
        zones = set(map(_TZINFO, stamps))  # None (a missing time) and non-datetimes have no tzinfo
    except AttributeError:
        zones = {None}
    if all(type(zone) in _ZONE_TYPES for zone in zones) and partition.kind is Kind.TIMESTAMP:
        with contextlib.suppress(RowSchemaError):
            return split_by_day(table, to_arrow(table, rows))
    return [(day, to_arrow(table, day_rows)) for day, day_rows in group_by_day(table, rows).items()]


def frames_by_day(table: Table, rows: Sequence[Mapping[str, object]]) -> list[tuple[date, pa.Table]]:
    """The Arrow table of each UTC day's rows, oldest day first, as `LakeWriter` publishes them; rows in the
    order given within a day. Raises RowSchemaError when a row does not fit the table."""
    if isinstance(rows, ArrowRows):
        return split_by_day(table, _frame_of(table, rows))
    return _by_day(table, rows)


def _frame_of(table: Table, rows: ArrowRows) -> pa.Table:
    """ArrowRows as one Arrow table with the table's schema: its row-dict pieces converted as `to_arrow`
    converts rows, every piece in its place."""
    parts = [
        piece if isinstance(piece, pa.Table) else _concat(table, [f for _, f in _by_day(table, piece)])
        for piece in rows.pieces
    ]
    return parts[0] if len(parts) == 1 else _concat(table, parts)


def _concat(table: Table, frames: list[pa.Table]) -> pa.Table:
    if not frames:
        return table.arrow_schema().empty_table()
    return frames[0] if len(frames) == 1 else pa.concat_tables(frames).combine_chunks()


def _column_array(table: Table, column: Column, values: Sequence[object]) -> pa.Array:
    fast = _plain_array(column, values)
    if fast is not None:
        return fast
    where = f"{table.name}.{column.name}"
    try:
        if column.kind in _DECIMAL_KINDS:
            values = [_four_places(v) if isinstance(v, Decimal) else v for v in values]
        elif column.kind is Kind.TIMESTAMP:
            naive = next((v for v in values if isinstance(v, datetime) and v.utcoffset() is None), None)
            if naive is not None:
                raise RowSchemaError(f"{where} must be timezone-aware, got {naive!r}")
        return pa.array(values, type=column.arrow_type)
    except _CONVERSION_ERRORS as exc:
        raise RowSchemaError(f"{where} does not fit {column.arrow_type}: {exc}") from exc


def _plain_array(column: Column, values: Sequence[object]) -> pa.Array | None:
    """The column's array when building it needs no per-value Python work, else None (`_column_array` then
    converts with the checks and rounding, and words any error).

    Decimals that already fit 4 places convert exactly as rounded ones would (Arrow refuses, rather than
    rounds, a value that would lose digits); timestamps whose zones all have an offset for every instant
    (fixed offsets, IANA zones) cannot be naive.
    """
    try:
        if column.kind is Kind.TIMESTAMP:
            zones = set(map(_TZINFO, filter(None, values)))
            if not all(type(zone) in _ZONE_TYPES for zone in zones):
                return None
        elif column.kind not in _DECIMAL_KINDS:
            return None
        return pa.array(values, type=column.arrow_type)
    except (*_CONVERSION_ERRORS, AttributeError):
        return None


def _four_places(value: Decimal) -> Decimal:
    return value.quantize(_FOUR_PLACES, rounding=ROUND_HALF_EVEN, context=_WIDE)


class LakeWriter:
    """Publishes batches of rows as Parquet files under one lake root. One writer process per lake."""

    def __init__(self, root: Path) -> None:
        self._root = root
        self._pool: ThreadPoolExecutor | None = None
        self._pool_lock = threading.Lock()

    @property
    def root(self) -> Path:
        return self._root

    def write(self, table: Table, rows: Sequence[Mapping[str, object]], batch_id: str) -> list[Path]:
        """Publish the rows, one file per UTC day of `table.partition_by`; returns the files, oldest day first.

        Writing the same batch id again replaces its files. No rows, no files.
        """
        return self.write_tables({table: rows}, batch_id)

    def write_tables(self, batch: Mapping[Table, Sequence[Mapping[str, object]]], batch_id: str) -> list[Path]:
        """Publish the rows of several tables under one batch id, as `write` does for each.

        Every row is converted before the first file is published: rows that do not fit raise RowSchemaError
        with nothing of the batch published. Rows that `stage` is writing already are published by renaming
        their temp files (once each is written and fsynced), after the batch's other files.
        """
        check_batch_id(batch_id)
        frames: list[tuple[Path, pa.Table]] = []
        staged: list[StagedRows] = []
        for table, rows in batch.items():
            if isinstance(rows, StagedRows) and rows.writer is self:
                staged.append(rows)
                continue
            frames += [(partition_dir(self._root, table, day), frame) for day, frame in frames_by_day(table, rows)]
        if len(frames) < 2:
            published = [self._publish(frame, directory, batch_id) for directory, frame in frames]
        else:
            futures = [self._threads().submit(self._publish, f, directory, batch_id) for directory, f in frames]
            _raise_first(f.exception() for f in futures)  # waits for every file, published or not
            published = [f.result() for f in futures]
        _raise_first(e for rows in staged for e in rows.written())
        return published + [path for rows in staged for path in rows.publish(batch_id)]

    def stage(self, table: Table, rows: Sequence[Mapping[str, object]]) -> AbstractContextManager[StagedRows]:
        """Start writing the rows' files (as `write_tables` would) under hidden temp names, on the writer's threads,
        while the caller computes the rest of its batch; the context's value stands for the rows in
        `write_tables`, which renames the files into place under the batch id. Leaving the context removes the
        temp files that were not published (a crash leaves them to `janitor`). Raises RowSchemaError at once when
        a row does not fit the table."""
        files = []
        for day, frame in frames_by_day(table, rows):
            directory = partition_dir(self._root, table, day)
            temp = directory / temp_name(f"staged-{uuid.uuid4().hex}")
            files.append(_StagedFile(directory, temp, self._threads().submit(self._write_temp, frame, directory, temp)))
        return _staging(StagedRows(self, rows, files))

    def _threads(self) -> ThreadPoolExecutor:
        with self._pool_lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(PUBLISH_THREADS, thread_name_prefix="lake-publish")
            return self._pool

    def write_arrow(self, table: Table, frame: pa.Table, batch_id: str) -> list[Path]:
        """Publish an Arrow table that has exactly the table's schema, as `write` publishes rows."""
        return self.write_tables({table: ArrowRows(frame)}, batch_id)

    def _publish(self, frame: pa.Table, directory: Path, batch_id: str) -> Path:
        temp = directory / temp_name(batch_id)
        self._write_temp(frame, directory, temp)
        return _rename(temp, directory / published_name(batch_id))

    def _write_temp(self, frame: pa.Table, directory: Path, temp: Path) -> None:
        """The frame's Parquet bytes in the temp file, flushed and fsynced (no temp file left on an error)."""
        try:
            make_dirs(directory)
            with open(temp, "wb") as out:
                pq.write_table(
                    frame,
                    out,
                    compression=COMPRESSION,
                    use_dictionary=frame.num_rows >= DICTIONARY_MIN_ROWS,
                    row_group_size=ROW_GROUP_ROWS,
                )
                out.flush()
                os.fsync(out.fileno())
        except OSError as exc:
            _remove_quietly(temp)
            raise LakeWriteError(f"could not write {temp}: {exc}") from exc


def _rename(temp: Path, final: Path) -> Path:
    """Publish a written temp file: renamed over the final name, the folder fsynced."""
    try:
        os.replace(temp, final)
        fsync_dir(final.parent)
    except OSError as exc:
        _remove_quietly(temp)
        raise LakeWriteError(f"could not publish {final}: {exc}") from exc
    return final


def _raise_first(errors: Iterable[BaseException | None]) -> None:
    first = next((e for e in list(errors) if e is not None), None)  # list: every one waited for
    if first is not None:
        raise first


@dataclass
class _StagedFile:
    directory: Path
    temp: Path
    written: Future[None]
    published: bool = False


class StagedRows(Sequence[Mapping[str, object]]):
    """Rows of one table whose files `LakeWriter.stage` is writing under temp names: the rows themselves for any
    other reader, and the files to rename for the writer that staged them."""

    def __init__(self, writer: LakeWriter, rows: Sequence[Mapping[str, object]], files: list[_StagedFile]) -> None:
        self.writer, self._rows, self._files = writer, rows, files

    @overload
    def __getitem__(self, index: int) -> Mapping[str, object]: ...
    @overload
    def __getitem__(self, index: slice) -> Sequence[Mapping[str, object]]: ...
    def __getitem__(self, index: int | slice) -> Mapping[str, object] | Sequence[Mapping[str, object]]:
        return self._rows[index]

    def __len__(self) -> int:
        return len(self._rows)

    def written(self) -> list[BaseException | None]:
        """Waits for every file's bytes: the error of each (None when written)."""
        return [f.written.exception() for f in self._files]

    def publish(self, batch_id: str) -> list[Path]:
        paths = []
        for f in self._files:
            f.written.result()
            paths.append(_rename(f.temp, f.directory / published_name(batch_id)))
            f.published = True
        return paths

    def discard(self) -> None:
        """Remove the temp files not published (waiting for a file being written)."""
        for f in self._files:
            if not f.published:
                f.written.cancel()
                with contextlib.suppress(Exception):
                    f.written.exception()
                _remove_quietly(f.temp)


@contextlib.contextmanager
def _staging(rows: StagedRows) -> Iterator[StagedRows]:
    try:
        yield rows
    finally:
        rows.discard()


def janitor(root: Path, *, older_than_seconds: float = 0.0, now: float | None = None) -> int:
    """Remove temp files left by interrupted writes; returns how many were removed.

    Run it when no writer is publishing (at writer start-up), or give `older_than_seconds` so a write in
    flight keeps its temp file. `now` is a Unix time (defaults to the clock).
    """
    cutoff = (time.time() if now is None else now) - older_than_seconds
    removed = 0
    for temp in root.glob(TEMP_GLOB):
        try:
            if older_than_seconds > 0 and temp.stat().st_mtime > cutoff:
                continue
            temp.unlink()
        except FileNotFoundError:
            continue
        removed += 1
    return removed


def fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def make_dirs(directory: Path) -> None:
    """Create the folder and its missing parents, fsyncing each parent so the new entries survive a crash."""
    missing: list[Path] = []
    current = directory
    while not current.is_dir():
        missing.append(current)
        current = current.parent
    for folder in reversed(missing):
        folder.mkdir(exist_ok=True)
        fsync_dir(folder.parent)


def _remove_quietly(path: Path) -> None:
    with contextlib.suppress(OSError):
        path.unlink(missing_ok=True)
