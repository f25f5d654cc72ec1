"""Merge on write: a latest-wins table kept as de-duplicated segment files, one per UTC hour of its rows, with
every key in exactly one segment of the whole table.

A reader pays for every row of every file it reads, and for the de-duplication the view does (`views.py`). When a
table is written in batches that mostly restate rows already there (an Intra-Day report repeats each line in ~4
files, each file covering the preceding hour), the writer merges after publishing a batch (`TableMerger.merge`).
Each day's folder holds one segment file per UTC hour of the partition column (`part-current-HH.parquet`): the
rows of that hour, sorted by key, one per key. The invariant: **after a merge, every key is in exactly one
segment of the whole table** (all days, all hours), holding its newest version by `Table.latest_by`, then the
same tie-break on the other columns as the view, nulls last. A key whose partition time changed between versions
is removed from its old hour (or day) in the same merge, and an older version arriving after a newer one in
another hour is not inserted. So, when no batch file is waiting, a reader can take the segments as they are.

A merge: (1) the batch files' rows (all days; rows already in memory are handed over) reduced to the newest per
key; (2) the segments that may hold one of those keys found through an in-process index of each segment's key
hashes (a derived cache: built from the segment files, and re-read for a segment whose file changed, so it is
right after a restart or another process's merge), plus the segments of the hours the new rows belong to; (3)
the winner per key among the batch rows and every copy those segments hold; (4) each touched segment rewritten
as its untouched rows plus the winners of its hour (a segment left empty is removed), published as the lake
publishes (temp file, fsync, rename over; each folder fsynced once after its renames); (5) only then the batch
files removed. "Newest per key" does not depend on grouping or order, so a segment's bytes depend on the set of
published rows only (a replay gives the same files).

Crash safety: a batch's rows are published (and its ledger row written) before a merge starts, and stay until
every segment is renamed, so while a crash leaves a key in two segments (or a segment not yet rewritten), a batch
file holding that key still exists; the readers rank exactly the keys of batch files (`views.batch_select_sql`),
and the next merge (run at start by the ingester) takes the batch in again: merging a row twice changes nothing.

Older lakes, written before the invariant, may hold a key in two hours. The table's marker
(`_one_segment_per_key.json` in its folder, holding the schema's fingerprint) says a lake satisfies it: written
after a merge that also took in every key held by more than one segment and rewrote every segment not in the
table's current schema (the first merge of an old lake, or of a new one). Without it, readers keep the view that
de-duplicates every key held twice.

Merges of a table are serialised by an exclusive `flock` on `.merge.lock` in its folder, which compaction takes
too for such a table (it compacts only days without segments: a compacted file is a batch file like any other).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from contracts.tables import Table
from warehouse.errors import LakeWriteError
from warehouse.lake import COMPRESSION, ROW_GROUP_ROWS, fsync_dir, make_dirs, partition_dir

SEGMENT_PREFIX = "part-current-"
SEGMENT_GLOB = f"*/{SEGMENT_PREFIX}*.parquet"
"""Where a table's segments are, relative to its folder."""
LOCK_NAME = ".merge.lock"
MARKER_NAME = "_one_segment_per_key.json"
"""In a table's folder: every key of the table is in exactly one segment once the batch files are merged."""
_EPOCH = date(1970, 1, 1)
WRITE_THREADS = 4
GROUP_ROWS = 250_000
"""Batch rows a merge takes in at once (a backfill's are merged a group at a time)."""
MERGED_ON_WRITE = frozenset({"intraday_order_lines"})
"""Tables kept merged on write (their readers rank only keys of batch files not merged yet)."""


def segment_name(hour: int) -> str:
    """The segment file of a UTC hour (0-23) of the partition column."""
    return f"{SEGMENT_PREFIX}{hour:02d}.parquet"


def is_segment(path: Path) -> bool:
    return path.name.startswith(SEGMENT_PREFIX) and path.name.endswith(".parquet")


def has_segments(directory: Path) -> bool:
    """Whether the day has segment files."""
    return any(is_segment(p) for p in directory.glob(f"{SEGMENT_PREFIX}*.parquet"))


def schema_fingerprint(table: Table) -> str:
    """A short digest of the table's Arrow schema (names and types, in order)."""
    text = "\n".join(f"{f.name}:{f.type}" for f in table.arrow_schema())
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def marker_path(root: Path, table: Table) -> Path:
    return root / table.name / MARKER_NAME


def read_marker(root: Path, table: Table) -> str | None:
    """The schema fingerprint the table's marker records; None when the lake does not say every key is in one
    segment (no marker, or one that cannot be read)."""
    try:
        data = json.loads(marker_path(root, table).read_text())
    except (OSError, ValueError):
        return None
    fingerprint = data.get("schema") if isinstance(data, dict) else None
    return fingerprint if isinstance(fingerprint, str) else None


def _write_marker(root: Path, table: Table) -> None:
    final = marker_path(root, table)
    temp = final.with_name(f".{final.name}.tmp")
    text = json.dumps({"invariant": "every key in exactly one segment", "schema": schema_fingerprint(table)})
    try:
        with open(temp, "w") as out:
            out.write(text + "\n")
            out.flush()
            os.fsync(out.fileno())
        os.replace(temp, final)
        fsync_dir(final.parent)
    except OSError as exc:
        raise LakeWriteError(f"could not write {final}: {exc}") from exc


@dataclass(frozen=True)
class Merge:
    directory: Path
    """The table's folder."""
    inputs: int
    """Batch files merged."""
    rows_in: int
    """Rows read: the batch files' and those of the segments they touched."""
    rows_out: int
    """Rows of the segments written."""
    segments: int
    """Segments written or removed."""


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
    """Hold the partition's lock (compaction's; blocking); across threads and processes."""
    return file_lock(directory / LOCK_NAME)


def table_lock(folder: Path) -> contextlib.AbstractContextManager[None]:
    """Hold the merge lock of the table whose folder this is (blocking); across threads and processes."""
    return file_lock(folder / LOCK_NAME)


def batch_files(root: Path, table: Table) -> list[Path]:
    """The table's published files that are not segments (batches not merged yet), sorted."""
    folder = root / table.name
    return sorted(p for p in folder.glob("*/*.parquet") if p.is_file() and not is_segment(p))


def segment_files(root: Path, table: Table) -> list[Path]:
    return sorted(p for p in (root / table.name).glob(SEGMENT_GLOB) if p.is_file())


class TableMerger:
    """Merges a table's batch files into its segments, keeping every key in one segment (see the module).

    One per table in the writer process: it keeps the last segments written in memory (`SegmentCache`) and the
    key hashes of every segment (the index), each checked against its file before use."""

    def __init__(self, root: Path, table: Table, *, cache_size: int = 8) -> None:
        self._root = root
        self._table = table
        self._cache = SegmentCache(cache_size)
        self._index = _KeyIndex()
        self._pool: ThreadPoolExecutor | None = None

    def _threads(self) -> ThreadPoolExecutor:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(WRITE_THREADS, thread_name_prefix="merge-write")
        return self._pool

    def merge(
        self, held: Mapping[Path, pa.Table] | None = None, *, ready: Callable[[], None] | None = None
    ) -> Merge | None:
        """Merge every batch file of the table; `held` gives the rows of batch files already in memory (exactly
        the table's schema), which may still be being published: `ready` returns once they are durable (it is
        called before the first segment is replaced, so the segments' temp files are written meanwhile). None
        when there was nothing to do. The first merge of a lake without the marker also takes in every key held
        by more than one segment, rewrites the segments not in the current schema, and writes the marker.
        Merges are serialised by the table's lock (threads and processes)."""
        folder = self._root / self._table.name
        if not folder.is_dir() and ready is not None:
            ready()  # the table's first batch: its publication creates (and fsyncs) the folders
        if not folder.is_dir():
            return None
        with table_lock(folder):
            current = read_marker(self._root, self._table) == schema_fingerprint(self._table)
            held = held or {}
            inputs = sorted({*batch_files(self._root, self._table), *held})
            if current and not inputs:
                return None
            self._refresh_index()
            extra, stale = (None, set()) if current else (self._keys_held_twice(), self._other_schema())
            done: list[Merge] = []
            for group in self._groups(inputs, held):  # a backfill's batch files a bounded number of rows at a time
                result = self._merge_locked(group, held, extra, ready or _no_wait, rewrite=stale)
                extra, stale = None, set()
                if result is not None:
                    done.append(result)
            if not current:
                _write_marker(self._root, self._table)
            if not done:
                return None
            return Merge(
                folder,
                sum(m.inputs for m in done),
                sum(m.rows_in for m in done),
                sum(m.rows_out for m in done),
                sum(m.segments for m in done),
            )

    def _groups(self, inputs: list[Path], held: Mapping[Path, pa.Table]) -> list[list[Path]]:
        """The batch files in groups of about `GROUP_ROWS` rows (at least one file each; the held ones first,
        then the others oldest first, so a group covers a few hours), so memory stays bounded; one group at
        least. Each group is a complete merge: its files go once its segments are durable."""
        if not inputs:
            return [[]]
        try:
            sizes = {p: held[p].num_rows if p in held else pq.read_metadata(p).num_rows for p in inputs}
            order = sorted(inputs, key=lambda p: (p not in held, 0 if p in held else p.stat().st_mtime_ns, p))
        except (OSError, pa.ArrowException) as exc:
            raise LakeWriteError(f"could not read the batch files of {self._table.name}: {exc}") from exc
        groups: list[list[Path]] = [[]]
        rows = 0
        for path in order:
            if groups[-1] and rows + sizes[path] > GROUP_ROWS:
                groups.append([])
                rows = 0
            groups[-1].append(path)
            rows += sizes[path]
        return groups

    def _refresh_index(self) -> list[Path]:
        """The table's segments, the index made to match them (a segment whose file changed is read again)."""
        segments = segment_files(self._root, self._table)
        for gone in self._index.paths() - set(segments):
            self._index.drop(gone)
        for path in segments:
            try:
                signature = _signature(path)
                if self._index.signature(path) != signature:
                    keys = pq.read_table(path, columns=list(self._table.key))
                    self._index.put(path, signature, _key_hashes(keys))
            except (OSError, pa.ArrowException) as exc:
                raise LakeWriteError(f"could not read the keys of {path}: {exc}") from exc
        return segments

    def _other_schema(self) -> set[Path]:
        """The segments whose files do not have exactly the table's schema (written before it changed)."""
        schema = self._table.arrow_schema()
        try:
            return {p for p in self._index.paths() if not pq.read_schema(p).remove_metadata().equals(schema)}
        except (OSError, pa.ArrowException) as exc:
            raise LakeWriteError(f"could not read the schema of a segment of {self._table.name}: {exc}") from exc

    def _keys_held_twice(self) -> pa.Table:
        """The keys held by more than one segment (a lake written before the invariant)."""
        key = list(self._table.key)
        twice = self._index.held_twice()
        found = []
        for path in self._index.holding(twice):
            keys = pq.read_table(path, columns=key)
            found.append(keys.filter(_key_hashes(keys).is_in(twice).to_arrow()))
        if not found:
            return self._table.arrow_schema().empty_table().select(key)
        return _frame(pa.concat_tables(found)).unique().to_arrow()

    def _merge_locked(
        self,
        inputs: list[Path],
        held: Mapping[Path, pa.Table],
        extra: pa.Table | None,
        ready: Callable[[], None],
        *,
        rewrite: set[Path],
    ) -> Merge | None:
        table, schema, key = self._table, self._table.arrow_schema(), list(self._table.key)
        try:
            parts = [held[p] if p in held else read_as(schema, p) for p in inputs]
        except (OSError, pa.ArrowException) as exc:
            raise LakeWriteError(f"could not read {self._root / table.name} to merge it: {exc}") from exc
        new, wanted, hashes = _one_per_key(table, pa.concat_tables(parts) if parts else schema.empty_table())
        if extra is not None and extra.num_rows:
            wanted = pl.concat([wanted, _frame(extra.cast(new.select(key).schema))])
            hashes = wanted.hash_rows(seed=0).alias("h")
        targets = _segments_of(self._root, table, new)
        touched = self._index.holding(hashes)
        touched |= targets
        touched |= rewrite
        kept: dict[Path, pa.Table] = {}
        contested: list[pa.Table] = []
        changed: set[Path] = set(targets)
        rows_in = new.num_rows
        for path in sorted(touched):
            try:
                base = self._cache.read(schema, path)
            except (OSError, pa.ArrowException) as exc:
                raise LakeWriteError(f"could not read {path} to merge it: {exc}") from exc
            if base is None:
                continue
            rows_in += base.num_rows
            base_keys = _frame(base.select(key)).with_row_index("_row")
            taken = base_keys.join(wanted, on=key, how="semi", nulls_equal=True).get_column("_row")
            if taken.len() == 0:
                kept[path] = base
                continue
            changed.add(path)
            left = base_keys.join(wanted, on=key, how="anti", nulls_equal=True).get_column("_row")
            contested.append(base.take(taken.to_arrow()))
            kept[path] = base.take(left.to_arrow())
        changed |= rewrite & set(kept)
        winners = newest_per_key(table, pa.concat_tables([new, *contested])) if contested else new
        placed = _by_segment(self._root, table, winners)
        rows_out = 0
        folders: set[Path] = set()
        outputs: list[tuple[Path, pa.Table]] = []
        output_hashes: list[pl.Series] = []
        emptied: list[Path] = []
        for path in sorted(changed):
            parts = [r for r in (kept.get(path), placed.get(path)) if r is not None and r.num_rows]
            if not parts:
                if path.exists():
                    emptied.append(path)
                continue
            make_dirs(path.parent)
            rows, rows_hashes = _sorted_by_key(table, pa.concat_tables(parts))
            outputs.append((path, rows))
            output_hashes.append(rows_hashes)
        if len(outputs) > 1:  # Parquet encoding and fsync release the GIL: the segments are written side by side
            temps = list(self._threads().map(_write_segment, outputs))
        else:
            temps = list(map(_write_segment, outputs))
        try:
            ready()  # the batch is durable: only now may a segment change
        except BaseException:
            for temp in temps:
                temp.unlink(missing_ok=True)
            raise
        for temp, (path, _) in zip(temps, outputs, strict=True):
            try:
                os.replace(temp, path)
            except OSError as exc:
                raise LakeWriteError(f"could not publish {path}: {exc}") from exc
        for path in emptied:
            path.unlink(missing_ok=True)
            self._index.drop(path)
        folders.update(p.parent for p in emptied)
        folders.update(p.parent for p, _ in outputs)
        written = len(emptied) + len(outputs)
        for (path, rows), rows_hashes in zip(outputs, output_hashes, strict=True):
            self._cache.keep(path, rows)
            self._index.put(path, _signature(path), rows_hashes)
            rows_out += rows.num_rows
        for folder in sorted(folders):
            fsync_dir(folder)  # the renames are durable before a batch file goes
        for path in inputs:
            path.unlink(missing_ok=True)  # not fsynced: a batch file back after a crash is merged again, unchanged
        if not inputs and not written:
            return None
        return Merge(self._root / table.name, len(inputs), rows_in, rows_out, written)


class _KeyIndex:
    """Which segments hold which key hashes: one frame of (hash, segment number) rows over every segment, and the
    signature of each segment's file when its keys were taken."""

    def __init__(self) -> None:
        self._frame = pl.DataFrame(schema={"h": pl.UInt64, "seg": pl.UInt32})
        self._numbers: dict[Path, int] = {}
        self._paths: list[Path] = []
        self._signatures: dict[Path, tuple[int, int, int]] = {}

    def paths(self) -> set[Path]:
        return set(self._signatures)

    def signature(self, path: Path) -> tuple[int, int, int] | None:
        return self._signatures.get(path)

    def put(self, path: Path, signature: tuple[int, int, int], hashes: pl.Series) -> None:
        number = self._numbers.get(path)
        if number is None:
            number = self._numbers[path] = len(self._paths)
            self._paths.append(path)
        held = pl.DataFrame({"h": hashes}).with_columns(seg=pl.lit(number, dtype=pl.UInt32))
        self._frame = pl.concat([self._frame.filter(pl.col("seg") != number), held])
        self._signatures[path] = signature

    def drop(self, path: Path) -> None:
        number = self._numbers.get(path)
        if number is not None and path in self._signatures:
            self._frame = self._frame.filter(pl.col("seg") != number)
            del self._signatures[path]

    def holding(self, hashes: pl.Series) -> set[Path]:
        """The segments holding any of these hashes."""
        found = self._frame.filter(pl.col("h").is_in(hashes.implode())).get_column("seg").unique()
        return {self._paths[n] for n in found.to_list()}

    def held_twice(self) -> pl.Series:
        """The hashes more than one segment holds."""
        counted = self._frame.group_by("h").agg(pl.len().alias("n"))
        return counted.filter(pl.col("n") > 1).get_column("h")


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
    """Merge the table's batch files (e.g. after a backfill, or left by a crash); [] when there was nothing to do."""
    result = TableMerger(root, table).merge()
    return [] if result is None else [result]


def _key_hashes(keys: pa.Table) -> pl.Series:
    """A 64-bit hash per row of the key columns (nulls hashed as values). Equal keys hash equally within the
    process; a collision only makes a segment a candidate, which the exact key comparison then settles."""
    return _frame(keys).hash_rows(seed=0).alias("h")


def _hour_codes(table: Table, rows: pa.Table) -> pa.Array:
    """Per row, days since the epoch x 24 + the UTC hour of the partition column: which segment it belongs to."""
    stamps = rows.column(table.partition_by)
    days = pc.cast(pc.cast(stamps, pa.date32()), pa.int32())  # the stamps are UTC
    codes = pc.add(pc.multiply(pc.cast(days, pa.int64()), 24), pc.cast(pc.hour(stamps), pa.int64()))
    return codes.combine_chunks() if isinstance(codes, pa.ChunkedArray) else codes


def _segment_of(root: Path, table: Table, code: int) -> Path:
    day = _EPOCH + timedelta(days=code // 24)
    return partition_dir(root, table, day) / segment_name(code % 24)


def _segments_of(root: Path, table: Table, rows: pa.Table) -> set[Path]:
    """The segments the rows belong to."""
    if rows.num_rows == 0:
        return set()
    return {_segment_of(root, table, c) for c in pc.unique(_hour_codes(table, rows)).to_pylist() if c is not None}


def _by_segment(root: Path, table: Table, rows: pa.Table) -> dict[Path, pa.Table]:
    if rows.num_rows == 0:
        return {}
    codes = _hour_codes(table, rows)
    distinct = sorted(c for c in pc.unique(codes).to_pylist() if c is not None)
    return {_segment_of(root, table, c): rows.filter(pc.equal(codes, c)) for c in distinct}


def _no_wait() -> None:
    return None


def _write_segment(output: tuple[Path, pa.Table]) -> Path:
    path, rows = output
    return write_temp(rows, path)


def _sorted_by_key(table: Table, rows: pa.Table) -> tuple[pa.Table, pl.Series]:
    """The rows sorted by key (nulls last, ties in their order) and their key hashes (`_key_hashes`), in that
    order: the keys converted once for both."""
    key = list(table.key)
    keys = _frame(rows.select(key))
    order = keys.select(pl.arg_sort_by(key, nulls_last=True, maintain_order=True)).to_series()
    return rows.take(order.to_arrow()), keys.hash_rows(seed=0).gather(order).alias("h")


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


def _one_per_key(table: Table, rows: pa.Table) -> tuple[pa.Table, pl.DataFrame, pl.Series]:
    """The newest row of each key of `rows` (in any order), their keys as a polars frame and their key hashes
    (`_key_hashes`), each in the rows' order: `rows` as they are when no two hash alike (so no two share a key: a
    report file's lines), else `newest_per_key`."""
    key = list(table.key)
    keys = _frame(rows.select(key))
    hashes = keys.hash_rows(seed=0).alias("h")
    if not hashes.is_duplicated().any():
        return rows, keys, hashes
    newest = newest_per_key(table, rows)
    keys = _frame(newest.select(key))
    return newest, keys, keys.hash_rows(seed=0).alias("h")


def newest_per_key(table: Table, rows: pa.Table) -> pa.Table:
    """One row per key, chosen as the views choose it (`views._first_per_key`): largest `latest_by` values first,
    then smallest other columns in schema order, nulls last throughout; sorted by key.

    Sorted on the key and `latest_by` columns only; the other columns are compared (`_tie_break`) only for the
    keys whose first two rows tie on every `latest_by` value (rare: two versions of a key from one file)."""
    if rows.num_rows == 0:
        return rows
    key, latest = list(table.key), list(table.latest_by)
    ranked = (
        _frame(rows.select([*key, *latest]))
        .with_row_index(_ROW)
        .sort([*key, *latest], descending=[False] * len(key) + [True] * len(latest), nulls_last=True)
    )

    def differs(columns: list[str]) -> pl.Expr:  # from the row before (nulls equal); the first row does
        changed = pl.any_horizontal(pl.col(c).ne_missing(pl.col(c).shift(1)) for c in columns)
        return changed | (pl.int_range(pl.len()) == 0)

    marks = ranked.select(
        pl.col(_ROW),
        first=differs(key),
        start=differs([*key, *latest]) if latest else pl.lit(True),
    ).with_columns(group=pl.col("start").cum_sum())
    tied = marks.get_column("first") & ~marks.get_column("start").shift(-1, fill_value=True)
    firsts = marks.filter(pl.col("first"))
    winners = firsts.get_column(_ROW)
    if tied.any():
        groups = marks.filter(tied).get_column("group")
        candidates = marks.filter(pl.col("group").is_in(groups.implode()))
        resolved = _tie_break(table, rows, candidates.get_column(_ROW), candidates.get_column("group"))
        winners = winners.scatter(firsts.get_column("group").is_in(groups.implode()).arg_true(), resolved)
    return rows.take(winners.to_arrow())


_ROW = "__row"


def _tie_break(table: Table, rows: pa.Table, candidates: pl.Series, groups: pl.Series) -> pl.Series:
    """Of candidate rows (`groups`: which tie each is in), the first of each group by the full order (key, then
    `latest_by` descending, then the other columns ascending, nulls last); the winners in group order."""
    key = list(table.key)
    order = [(k, "ascending", "at_end") for k in key]
    order += [(c, "descending", "at_end") for c in table.latest_by]
    decided = {*table.key, *table.latest_by}
    order += [(c.name, "ascending", "at_end") for c in table.columns if c.name not in decided]
    subset = rows.take(candidates.to_arrow())
    sorted_positions = pl.Series(pc.sort_indices(subset, sort_keys=order))
    ranked = pl.DataFrame({"row": candidates.gather(sorted_positions), "group": groups.gather(sorted_positions)})
    return ranked.unique("group", keep="first", maintain_order=True).sort("group").get_column("row")


def _frame(rows: pa.Table) -> pl.DataFrame:
    frame = pl.from_arrow(rows)
    assert isinstance(frame, pl.DataFrame)
    return frame


def write_sorted(rows: pa.Table, directory: Path, name: str, *, sync_dir: bool = True) -> Path:
    """Publish `rows` as `directory/name` atomically: a hidden temp file written one row group of `ROW_GROUP_ROWS`
    at a time (each made contiguous, so the bytes depend on the values only), fsynced, renamed over the old
    file; the folder fsynced, unless `sync_dir` is false (the caller fsyncs it after its last rename)."""
    final = directory / name
    temp = write_temp(rows, final)
    try:
        os.replace(temp, final)
        if sync_dir:
            fsync_dir(directory)
    except OSError as exc:
        with contextlib.suppress(OSError):
            temp.unlink(missing_ok=True)
        raise LakeWriteError(f"could not publish {final}: {exc}") from exc
    return final


def write_temp(rows: pa.Table, final: Path) -> Path:
    """`rows` written and fsynced as the hidden temp file of `final` (see `write_sorted`), to be renamed over it."""
    temp = final.with_name(f".{final.name}.tmp")  # the lake's temp-file pattern: the janitor removes one a crash left
    try:
        with open(temp, "wb") as out:
            with pq.ParquetWriter(out, rows.schema, compression=COMPRESSION) as writer:
                for start in range(0, rows.num_rows, ROW_GROUP_ROWS):
                    group = rows.slice(start, ROW_GROUP_ROWS).combine_chunks()
                    writer.write_table(group, row_group_size=ROW_GROUP_ROWS)
            out.flush()
            os.fsync(out.fileno())
    except OSError as exc:
        with contextlib.suppress(OSError):
            temp.unlink(missing_ok=True)
        raise LakeWriteError(f"could not publish {final}: {exc}") from exc
    return temp
