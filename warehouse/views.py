"""SQL text of the DuckDB views over the Parquet lake. Values in, SQL out; only `view_sql` looks at the disk.

A view reads every published file of its table, casts each column to the type in `contracts.tables`, and keeps
one row per key, so a batch written twice, or two batches that share a key, never show a row twice. When two
rows share a key, a table with `latest_by` keeps the one with the largest values there (newest first, nulls
last); otherwise, or on a tie, the one that sorts first on the other non-key columns (in schema order, nulls
last) wins: the choice depends on the rows only, never on file order. Columns that older files lack read as null.

A table merged on write (`warehouse.merge.MERGED_ON_WRITE`) holds almost every key once (one segment per hour
of rows, one row per key each; only batch files not merged yet, or, in a lake without the invariant's marker, a
key whose partition time changed, repeat a key). Its view (`merged_select_sql`) does not rank those rows: it
takes a row whose key no other row has as it is, and ranks only the rows of keys held more than once. The rows
are the same as the plain view's. It is right whatever the lake's state, so the writer's views use it; a reader
that knows the state (`query.py`) uses the cheaper `segments_select_sql` (the marker and no batch file: the
segments as they are) or `batch_select_sql` (the marker and batch files: only their keys ranked).
"""

from __future__ import annotations

from pathlib import Path

from contracts.tables import Table
from warehouse.lake import PARQUET_GLOB, parquet_files
from warehouse.merge import MERGED_ON_WRITE, SEGMENT_GLOB


def quote_identifier(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def quote_literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def parquet_glob(table: Table, lake_root: Path) -> str:
    """The glob DuckDB reads for the table; temp files end `.tmp` so it never matches them."""
    return f"{lake_root.as_posix()}/{table.name}/{PARQUET_GLOB}"


def view_sql(table: Table, lake_root: Path, *, has_files: bool | None = None) -> str:
    """`CREATE OR REPLACE VIEW` for the table: over its Parquet files, or empty and typed if it has none yet.

    `has_files=None` looks at the lake. A view created empty stays empty until it is created again.
    """
    if has_files is None:
        has_files = bool(parquet_files(lake_root, table))
    if not has_files:
        body = empty_select_sql(table)
    elif table.name in MERGED_ON_WRITE and table.key:
        body = merged_select_sql(table, parquet_glob(table, lake_root))
    else:
        body = parquet_select_sql(table, parquet_glob(table, lake_root))
    return f"CREATE OR REPLACE VIEW {quote_identifier(table.name)} AS\n{body}"


def empty_select_sql(table: Table) -> str:
    """A query with the table's columns and types and no rows."""
    return f"{_typed_nulls(table)}\nWHERE false"


def parquet_select_sql(table: Table, glob: str) -> str:
    """The table's rows from the Parquet files matching `glob`, typed and de-duplicated on the key."""
    return _select_sql(table, quote_literal(glob))


def files_select_sql(table: Table, files: list[Path]) -> str:
    """The table's rows from exactly these Parquet files, typed and de-duplicated on the key (as the view)."""
    return _select_sql(table, "[" + ", ".join(quote_literal(f.as_posix()) for f in files) + "]")


def merged_select_sql(table: Table, glob: str) -> str:
    """The rows `parquet_select_sql` gives, for a table merged on write: a row whose key no other row has is
    taken as it is; only the rows of keys held more than once are ranked (`QUALIFY`). Keys are told apart by
    their hash first (a collision only sends rows to the ranking, which partitions by the key itself); the
    hashes held more than once are counted once per query (a materialized CTE), not once per branch."""
    source = f"read_parquet({quote_literal(glob)}, hive_partitioning = false, union_by_name = true)"
    rows = f"({_typed_nulls(table)} WHERE false UNION ALL BY NAME SELECT * FROM {source})"
    key_hash = f"hash({', '.join(quote_identifier(name) for name in table.key)})"
    held_twice = f"SELECT {key_hash} AS key_hash FROM {rows} GROUP BY ALL HAVING count(*) > 1"
    return (
        f"WITH held_twice AS MATERIALIZED ({held_twice})\n"
        f"SELECT\n    {_projection(table)}\nFROM {rows}\nWHERE {key_hash} NOT IN (SELECT key_hash FROM held_twice)\n"
        f"UNION ALL\n"
        f"SELECT\n    {_projection(table)}\nFROM {rows}\nWHERE {key_hash} IN (SELECT key_hash FROM held_twice)\n"
        f"QUALIFY {_first_per_key(table)} = 1"
    )


def segments_glob(table: Table, lake_root: Path) -> str:
    """The glob of a merged-on-write table's segment files."""
    return f"{lake_root.as_posix()}/{table.name}/{SEGMENT_GLOB}"


def _rows(table: Table, files_expr: str, *, exact: bool) -> str:
    """The files' rows: as they are when every file has exactly the table's schema, else by name with the
    columns a file lacks as typed nulls."""
    if exact:
        return f"read_parquet({files_expr}, hive_partitioning = false)"
    source = f"read_parquet({files_expr}, hive_partitioning = false, union_by_name = true)"
    return f"({_typed_nulls(table)} WHERE false UNION ALL BY NAME SELECT * FROM {source})"


def segments_select_sql(table: Table, lake_root: Path, *, exact: bool) -> str:
    """The rows of a merged-on-write table whose lake has the marker and no batch file waiting: every key is in
    one segment (`warehouse.merge`), so the segments' rows are the table, taken as they are. `exact`: every
    segment has the table's schema (the marker's fingerprint is the table's)."""
    rows = _rows(table, quote_literal(segments_glob(table, lake_root)), exact=exact)
    return f"SELECT\n    {_projection(table)}\nFROM {rows}"


def batch_select_sql(table: Table, lake_root: Path, batches: list[Path], *, segments: bool, exact: bool) -> str:
    """The rows of a merged-on-write table whose lake has the marker while `batches` wait to be merged: the
    segments' rows whose key no batch holds as they are, and the newest per key among the batches' rows and the
    segments' rows of those keys. A key is in one segment or in a batch file at every moment of a merge, so this
    is the table. Keys are told apart by their hash first (a collision only sends a row to the ranking)."""
    listed = "[" + ", ".join(quote_literal(f.as_posix()) for f in batches) + "]"
    batch_rows = _rows(table, listed, exact=False)
    key_hash = f"hash({', '.join(quote_identifier(name) for name in table.key)})"
    held = f"SELECT DISTINCT {key_hash} AS key_hash FROM {batch_rows}"
    if not segments:
        return f"SELECT\n    {_projection(table)}\nFROM {batch_rows}\nQUALIFY {_first_per_key(table)} = 1"
    segment_rows = _rows(table, quote_literal(segments_glob(table, lake_root)), exact=exact)
    contested = f"SELECT * FROM {segment_rows} WHERE {key_hash} IN (SELECT key_hash FROM batch_keys)"
    return (
        f"WITH batch_keys AS MATERIALIZED ({held})\n"
        f"SELECT\n    {_projection(table)}\nFROM {segment_rows}\n"
        f"WHERE {key_hash} NOT IN (SELECT key_hash FROM batch_keys)\n"
        f"UNION ALL\n"
        f"SELECT\n    {_projection(table)}\nFROM (SELECT * FROM {batch_rows} UNION ALL BY NAME {contested})\n"
        f"QUALIFY {_first_per_key(table)} = 1"
    )


def _projection(table: Table) -> str:
    return ",\n    ".join(
        f"CAST({quote_identifier(c.name)} AS {c.duckdb_type}) AS {quote_identifier(c.name)}" for c in table.columns
    )


def _select_sql(table: Table, files_expr: str) -> str:
    projection = _projection(table)
    source = f"read_parquet({files_expr}, hive_partitioning = false, union_by_name = true)"
    sql = (
        f"SELECT\n    {projection}\nFROM (\n"
        f"    {_typed_nulls(table)} WHERE false\n"
        f"    UNION ALL BY NAME\n"
        f"    SELECT * FROM {source}\n"
        f")"
    )
    if table.key:
        sql += f"\nQUALIFY {_first_per_key(table)} = 1"
    return sql


def _typed_nulls(table: Table) -> str:
    columns = ", ".join(f"CAST(NULL AS {c.duckdb_type}) AS {quote_identifier(c.name)}" for c in table.columns)
    return f"SELECT {columns}"


def _first_per_key(table: Table) -> str:
    partition = ", ".join(quote_identifier(name) for name in table.key)
    newest = [f"{quote_identifier(name)} DESC NULLS LAST" for name in table.latest_by]
    rest = [
        f"{quote_identifier(c.name)} ASC NULLS LAST"
        for c in table.columns
        if c.name not in table.key and c.name not in table.latest_by
    ]
    order = ", ".join(newest + rest)
    window = f"PARTITION BY {partition}" + (f" ORDER BY {order}" if order else "")
    return f"row_number() OVER ({window})"
