"""Analyst SQL over the lake, read-only, without touching the writer's DuckDB file.

A reader is an in-memory DuckDB holding one view per table of `contracts.tables`; it never takes the writer's
file lock. It may only read the lake root (`allowed_directories`), cannot reach any other file, and its
settings are locked.

`run_query` keeps one reader per lake (and set of tables) in the process and runs each statement on a cursor of
it, so a query does not pay for a new database, for creating the views, or for parsing the footers of files
it has read before (`parquet_metadata_cache`). What a query sees is still the lake as it is when it runs: a
view's glob is listed again by every query, a view is created again when its table gains its first file or
loses its last, and DuckDB uses a cached footer only while the file's modification time is unchanged and more
than 10 seconds old (a file replaced by a rename has a new one), otherwise it reads the footer again.
"""

from __future__ import annotations

import os
import re
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import duckdb

from contracts.tables import TABLES, Table
from warehouse.errors import QueryError, ReadOnlyQueryError
from warehouse.lake import parquet_file_stats, parquet_files
from warehouse.merge import MERGED_ON_WRITE, is_segment, read_marker, schema_fingerprint
from warehouse.views import (
    batch_select_sql,
    merged_select_sql,
    parquet_glob,
    quote_identifier,
    quote_literal,
    segments_select_sql,
    view_sql,
)

READ_STATEMENTS = frozenset({duckdb.StatementType.SELECT, duckdb.StatementType.EXPLAIN})
"""SELECT also covers FROM-first queries, VALUES, SHOW, DESCRIBE and SUMMARIZE."""

WRITE_KEYWORDS = frozenset({"insert", "update", "delete", "merge"})
"""Keywords refused anywhere in a statement: a SELECT can carry them in a data-modifying CTE."""

_EXPLAIN = re.compile(
    r"\s*EXPLAIN\s+(?:ANALY[SZ]E\s+)?(?:\((?:[^()]|\([^()]*\))*\)\s*)?(?P<inner>.*)",
    re.IGNORECASE | re.DOTALL,
)
_WORD = re.compile(r"\w+")
_INTEGER_TYPES = frozenset({"HUGEINT", "UHUGEINT"})


@dataclass(frozen=True)
class QueryResult:
    """Column names, DuckDB type names and rows of a query, values as Python objects.

    Decimals stay `Decimal`, TIMESTAMPTZ values are UTC-aware `datetime`s.
    """

    columns: tuple[str, ...]
    types: tuple[str, ...]
    rows: list[tuple[object, ...]]


def open_reader(
    lake_root: Path, *, tables: Iterable[Table] | None = None, sandbox: bool = True, kept: bool = False
) -> duckdb.DuckDBPyConnection:
    """An in-memory connection with a view for every table; close it when done.

    With `sandbox` (the default) it can read files under `lake_root` only and its settings are locked.
    The time zone is UTC (for its cursors too). A `kept` reader (one `run_query` reuses) caches the Parquet
    footers it reads (see the module's docstring) and no file data.
    """
    root = lake_root.resolve()
    con = duckdb.connect(":memory:")
    try:
        con.execute("SET GLOBAL TimeZone = 'UTC'")
        if kept:
            con.execute("SET GLOBAL parquet_metadata_cache = true")
            con.execute("SET GLOBAL enable_external_file_cache = false")
        for table in TABLES.values() if tables is None else tables:
            con.execute(view_sql(table, root))
        if sandbox:
            lock_down(con, [root])
    except BaseException:
        con.close()
        raise
    return con


def lock_down(con: duckdb.DuckDBPyConnection, allowed: Sequence[Path]) -> None:
    """Let `con` read and write files under the `allowed` folders only, and lock its settings."""
    listed = ", ".join(quote_literal(p.resolve().as_posix() + "/") for p in allowed)
    con.execute(f"SET allowed_directories = [{listed}]")
    con.execute("SET enable_external_access = false")
    con.execute("SET lock_configuration = true")


def check_read_only(sql: str, con: duckdb.DuckDBPyConnection) -> None:
    """Raise ReadOnlyQueryError unless `sql` is exactly one statement that only reads.

    Parsing uses `con`; nothing is run.
    """
    try:
        statements = con.extract_statements(sql)
    except duckdb.Error as exc:
        raise QueryError(f"not valid SQL: {exc}") from exc
    if not statements:
        raise QueryError("no SQL statement given")
    if len(statements) > 1:
        raise QueryError(f"run one statement at a time, got {len(statements)}")
    _check_statement(statements[0], con)


def _check_statement(statement: duckdb.Statement, con: duckdb.DuckDBPyConnection) -> None:
    kind = statement.type
    if kind not in READ_STATEMENTS:
        raise ReadOnlyQueryError(f"only read queries are allowed (SELECT, EXPLAIN, DESCRIBE, SHOW); got {kind.name}")
    writes = _write_keywords(statement.query)
    if writes:
        raise ReadOnlyQueryError(f"only read queries are allowed; found {', '.join(sorted(writes)).upper()}")
    if kind == duckdb.StatementType.EXPLAIN:
        match = _EXPLAIN.fullmatch(statement.query)
        if match is None:
            raise ReadOnlyQueryError("could not tell what this EXPLAIN explains; explain a SELECT")
        check_read_only(match["inner"], con)


def _write_keywords(sql: str) -> set[str]:
    found: set[str] = set()
    for position, kind in duckdb.tokenize(sql):
        if kind != duckdb.token_type.keyword:
            continue
        word = _WORD.match(sql, position)
        if word is not None and word[0].lower() in WRITE_KEYWORDS:
            found.add(word[0].lower())
    return found


VANISHED_FILE_RETRIES = 5


def file_vanished(exc: BaseException) -> bool:
    """Whether a DuckDB error says a file it listed was gone when read (compaction replaced it)."""
    text = str(exc)
    return "No such file or directory" in text or "No files found" in text


@dataclass(frozen=True)
class _MergedState:
    """What a reader needs to know of a merged-on-write table (`warehouse.merge`) to read it cheaply: whether the
    lake has the marker (and with the table's schema), and its segment and batch files with their signatures."""

    marker: str | None
    segments: tuple[tuple[str, tuple[int, ...]], ...]
    batches: tuple[tuple[str, tuple[int, ...]], ...]

    @property
    def one_segment_per_key(self) -> bool:
        return self.marker is not None

    def view_kind(self, table: Table) -> str:
        """The view the reader keeps for the table in this state: `plain` (the segments as they are, exact or
        by name), `merged` (every key held twice ranked: right in any state), or `empty`."""
        if not self.segments and not self.batches:
            return "empty"
        if self.one_segment_per_key and self.segments:
            return "plain-exact" if self.marker == schema_fingerprint(table) else "plain"
        return "merged"


def _merged_state(root: Path, table: Table) -> _MergedState:
    segments: list[tuple[str, tuple[int, ...]]] = []
    batches: list[tuple[str, tuple[int, ...]]] = []
    for path, stat in parquet_file_stats(root, table):
        entry = (path.as_posix(), (stat.st_ino, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns))
        (segments if is_segment(path) else batches).append(entry)
    return _MergedState(read_marker(root, table), tuple(segments), tuple(batches))


def segments_as_they_are(root: Path, table: Table) -> tuple[str, object] | None:
    """For a table merged on write whose lake has the marker and no batch file waiting: the query of its rows (the
    segments as they are, `views.segments_select_sql`) and the table's file state it holds for (compare it with
    `merged_file_state` after reading: a merge that ran meanwhile can have moved a key). None otherwise (read it by
    the view that ranks the keys held twice)."""
    if table.name not in MERGED_ON_WRITE or not table.key:
        return None
    root = root.resolve()
    state = _merged_state(root, table)
    kind = state.view_kind(table)
    if state.batches or kind not in ("plain", "plain-exact"):  # plain: the segments' view
        return None
    return segments_select_sql(table, root, exact=kind == "plain-exact"), state


def merged_file_state(root: Path, table: Table) -> object:
    """The state `segments_as_they_are` compares: the marker and every file's name and signature."""
    return _merged_state(root.resolve(), table)


class _Reader:
    """A sandboxed reader kept for `run_query`: the database, and which view each table has.

    A table merged on write is read by what its lake holds: with the marker and no batch file, its view takes the
    segments as they are; with the marker and batch files, each cursor gets a temporary view ranking only the
    batches' keys; without the marker, the view ranks every key held twice. A query on such a view is right only
    if the lake did not change while it ran (a merge moves a key from one segment to another in two renames), so
    `run_query` checks the table's files (names and signatures) before and after, and runs it again if they
    changed."""

    def __init__(self, root: Path, tables: tuple[Table, ...]) -> None:
        self._root = root
        self._tables = tables
        self._kinds = {table.name: self._kind(table, self._state(table)) for table in tables}
        self._lock = threading.Lock()
        self.con = open_reader(root, tables=tables, kept=True)
        for table in tables:
            if self._kinds[table.name].startswith("plain"):
                self.con.execute(self._view(table, self._kinds[table.name]))

    def _state(self, table: Table) -> _MergedState | bool:
        if table.name in MERGED_ON_WRITE and table.key:
            return _merged_state(self._root, table)
        return bool(parquet_files(self._root, table))

    def _kind(self, table: Table, state: _MergedState | bool) -> str:
        if isinstance(state, _MergedState):
            return state.view_kind(table)
        return "files" if state else "empty"

    def _view(self, table: Table, kind: str) -> str:
        if kind.startswith("plain"):
            body = segments_select_sql(table, self._root, exact=kind == "plain-exact")
            return f"CREATE OR REPLACE VIEW {quote_identifier(table.name)} AS\n{body}"
        return view_sql(table, self._root, has_files=kind != "empty")

    def states(self) -> tuple[_MergedState, ...]:
        """The merged-on-write tables' states now."""
        found = []
        for table in self._tables:
            state = self._state(table)
            if isinstance(state, _MergedState):
                found.append(state)
        return tuple(found)

    def cursor(self, *, safe: bool = False) -> tuple[duckdb.DuckDBPyConnection, tuple[_MergedState, ...]]:
        """A cursor whose views match the lake now, and the merged tables' states it was made for. A table that
        gained its first file or lost its last gets its view again (a view made empty stays empty, a view over
        no file fails), so does one whose layout changed. `safe`: merged tables read by the view that is right
        in any state."""
        with self._lock:
            states: list[_MergedState] = []
            temp: list[str] = []
            for table in self._tables:
                state = self._state(table)
                kind = self._kind(table, state)
                if kind != self._kinds[table.name]:
                    self.con.execute(self._view(table, kind))
                    self._kinds[table.name] = kind
                if isinstance(state, _MergedState):
                    states.append(state)
                    name = quote_identifier(table.name)
                    if safe and kind != "empty":
                        body = merged_select_sql(table, parquet_glob(table, self._root))
                        temp.append(f"CREATE OR REPLACE TEMP VIEW {name} AS\n{body}")
                    elif state.one_segment_per_key and state.batches:
                        batches = [Path(p) for p, _ in state.batches]
                        exact = state.marker == schema_fingerprint(table)
                        body = batch_select_sql(table, self._root, batches, segments=bool(state.segments), exact=exact)
                        temp.append(f"CREATE OR REPLACE TEMP VIEW {name} AS\n{body}")
            con = self.con.cursor()
        try:
            for statement in temp:
                con.execute(statement)
        except BaseException:
            con.close()
            raise
        return con, tuple(states)


READERS_KEPT = 4
"""Readers `run_query` keeps per process (one per lake and set of tables, the least recently used closed)."""

_readers: dict[tuple[int, Path, tuple[str, ...] | None], _Reader] = {}
_readers_lock = threading.Lock()


def _reader(lake_root: Path, tables: Iterable[Table] | None) -> _Reader:
    root = lake_root.resolve()
    chosen = tuple(TABLES.values()) if tables is None else tuple(tables)
    key = (os.getpid(), root, None if tables is None else tuple(t.name for t in chosen))
    with _readers_lock:
        reader = _readers.pop(key, None)
        if reader is None:
            reader = _Reader(root, chosen)
        _readers[key] = reader  # the most recently used last
        while len(_readers) > READERS_KEPT:
            oldest = next(iter(_readers))
            evicted = _readers.pop(oldest)
            if oldest[0] == os.getpid():  # a forked child must not close its parent's database
                evicted.con.close()  # a query running on a cursor keeps the database until it ends
        return reader


def forget_readers() -> None:
    """Close the readers `run_query` keeps (the next query opens a new one)."""
    with _readers_lock:
        for (pid, _, _), reader in _readers.items():
            if pid == os.getpid():
                reader.con.close()
        _readers.clear()


def run_query(lake_root: Path, sql: str, *, tables: Iterable[Table] | None = None) -> QueryResult:
    """Run one read-only statement over the lake's views and return every row.

    It runs on a cursor of the reader kept for this lake (see the module's docstring). Compaction may remove a
    file between DuckDB listing and reading it; the query then runs again on the new listing (the rows are the
    same, only the files changed). A query over a table merged on write runs again when the table's files
    changed while it ran (`_Reader`); the last attempt reads such tables by the view that is right in any state.
    """
    for attempt in range(VANISHED_FILE_RETRIES + 1):
        last = attempt == VANISHED_FILE_RETRIES
        reader = _reader(lake_root, tables)
        try:
            con, states = reader.cursor(safe=last)
        except duckdb.Error as exc:
            if not last and file_vanished(exc):
                time.sleep(0.02 * (attempt + 1))
                continue
            raise QueryError(str(exc)) from exc
        try:
            check_read_only(sql, con)
            result = fetch(con, sql)
        except QueryError as exc:
            if not last and file_vanished(exc):
                time.sleep(0.02 * (attempt + 1))
                continue
            raise
        finally:
            con.close()
        if last or not states or reader.states() == states:
            return result
    raise AssertionError("unreachable")


def fetch(con: duckdb.DuckDBPyConnection, sql: str) -> QueryResult:
    """Run `sql` on `con` (no read-only check) and return its rows; DuckDB errors become QueryError.

    Rows come through Arrow: DuckDB's own `fetchall` needs pytz for TIMESTAMPTZ, which we do not depend on.
    """
    try:
        relation = con.sql(sql)
        if relation is None:
            return QueryResult((), (), [])
        columns = tuple(relation.columns)
        types = tuple(str(t) for t in relation.types)
        frame = relation.to_arrow_table()
    except duckdb.Error as exc:
        raise QueryError(str(exc)) from exc
    values = [
        _as_ints(column.to_pylist()) if type_name in _INTEGER_TYPES else column.to_pylist()
        for column, type_name in zip(frame.columns, types, strict=True)
    ]
    rows: list[tuple[object, ...]] = list(zip(*values, strict=True)) if values else [() for _ in range(frame.num_rows)]
    return QueryResult(columns, types, rows)


def _as_ints(values: list[object]) -> list[object]:
    """HUGEINT comes through Arrow as a Decimal of scale 0 (e.g. `sum(bigint)`); give it back as an int."""
    return [int(v) if isinstance(v, Decimal) else v for v in values]
