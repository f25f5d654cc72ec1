"""The view SQL text, and the read-only check (DuckDB parses, nothing runs)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import duckdb
import pytest

from contracts.tables import PURCHASE_LINES, PURCHASES, UNKNOWN_EVENTS
from warehouse.errors import QueryError, ReadOnlyQueryError
from warehouse.query import check_read_only
from warehouse.views import quote_identifier, quote_literal, view_sql


def test_a_table_with_files_reads_only_parquet_files_without_hive_columns() -> None:
    sql = view_sql(PURCHASES, Path("/lake"), has_files=True)

    assert sql.startswith('CREATE OR REPLACE VIEW "purchases" AS')
    assert "read_parquet('/lake/purchases/*/*.parquet', hive_partitioning = false, union_by_name = true)" in sql


def test_every_column_is_cast_to_its_contract_type() -> None:
    sql = view_sql(PURCHASES, Path("/lake"), has_files=True)

    for column in PURCHASES.columns:
        name = quote_identifier(column.name)
        assert f"CAST({name} AS {column.duckdb_type}) AS {name}" in sql


def test_rows_are_deduplicated_on_the_key_ordered_by_the_other_columns() -> None:
    sql = view_sql(PURCHASE_LINES, Path("/lake"), has_files=True)

    qualify = sql[sql.index("QUALIFY") :]
    assert 'PARTITION BY "shopping_trip_id", "line_no" ORDER BY "line_item_id" ASC NULLS LAST' in qualify
    assert '"line_no" ASC' not in qualify
    assert qualify.endswith("= 1")


def test_a_table_without_files_gets_an_empty_typed_view() -> None:
    sql = view_sql(PURCHASES, Path("/lake"), has_files=False)

    assert "read_parquet" not in sql
    assert 'CAST(NULL AS DECIMAL(18,4)) AS "total"' in sql
    assert sql.endswith("WHERE false")


def test_view_sql_looks_at_the_lake_when_not_told(tmp_path: Path) -> None:
    assert "read_parquet" not in view_sql(PURCHASES, tmp_path)


def test_quotes_inside_names_and_paths_are_escaped() -> None:
    assert quote_identifier('a"b') == '"a""b"'
    assert quote_literal("/it's/lake") == "'/it''s/lake'"
    assert "'/it''s/lake/unknown_events/*/*.parquet'" in view_sql(UNKNOWN_EVENTS, Path("/it's/lake"), has_files=True)


@pytest.fixture
def con() -> Iterator[duckdb.DuckDBPyConnection]:
    connection = duckdb.connect(":memory:")
    yield connection
    connection.close()


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT 1",
        "FROM purchases",
        "WITH t AS (SELECT 1 AS a) SELECT a FROM t",
        "SHOW TABLES",
        "DESCRIBE purchases",
        "SUMMARIZE purchases",
        "EXPLAIN SELECT 1",
        "EXPLAIN ANALYZE SELECT count(*) FROM purchases",
        "select 1;",
    ],
)
def test_read_statements_are_allowed(con: duckdb.DuckDBPyConnection, sql: str) -> None:
    check_read_only(sql, con)


@pytest.mark.parametrize(
    ("sql", "named"),
    [
        ("INSERT INTO purchases VALUES (1)", "INSERT"),
        ("UPDATE purchases SET total = 0", "UPDATE"),
        ("DELETE FROM purchases", "DELETE"),
        ("CREATE TABLE x AS SELECT 1", "CREATE"),
        ("DROP VIEW purchases", "DROP"),
        ("COPY purchases TO '/tmp/out.csv'", "COPY"),
        ("ATTACH '/tmp/other.duckdb'", "ATTACH"),
        ("PRAGMA version", "PRAGMA"),
        ("SET threads = 1", "SET"),
        ("CALL pragma_version()", "CALL"),
        ("INSTALL httpfs", "LOAD"),
        ("EXPLAIN ANALYZE COPY (SELECT 1) TO '/tmp/out.csv'", "COPY"),
        ("EXPLAIN INSERT INTO purchases VALUES (1)", "INSERT"),
        ("WITH d AS (DELETE FROM purchases RETURNING *) SELECT * FROM d", "DELETE"),
    ],
)
def test_statements_that_write_are_refused(con: duckdb.DuckDBPyConnection, sql: str, named: str) -> None:
    with pytest.raises(ReadOnlyQueryError, match=named):
        check_read_only(sql, con)


def test_a_word_like_delete_inside_a_string_or_quoted_name_is_not_a_write(con: duckdb.DuckDBPyConnection) -> None:
    check_read_only("SELECT 'delete' AS \"insert\" -- update", con)


def test_several_statements_at_once_are_refused(con: duckdb.DuckDBPyConnection) -> None:
    with pytest.raises(QueryError, match="one statement"):
        check_read_only("SELECT 1; DROP VIEW purchases", con)


def test_text_that_is_not_sql_is_a_query_error(con: duckdb.DuckDBPyConnection) -> None:
    with pytest.raises(QueryError, match="not valid SQL"):
        check_read_only("selec 1", con)


def test_a_table_with_latest_by_keeps_the_newest_row_then_the_deterministic_tie_break() -> None:
    from contracts.tables import INTRADAY_ORDER_LINES

    qualify = view_sql(INTRADAY_ORDER_LINES, Path("/lake"), has_files=True).split("QUALIFY", 1)[1]

    assert 'ORDER BY "last_updated" DESC NULLS LAST, "file_published_at" DESC NULLS LAST, "order_id" ASC' in qualify
    assert '"last_updated" ASC' not in qualify


def test_tables_without_latest_by_keep_the_row_that_sorts_first() -> None:
    from contracts.tables import TABLES

    for name in ("auth_events", "purchases", "purchase_lines", "cart_events", "payment_events", "unknown_events"):
        assert TABLES[name].latest_by == ()
        assert " DESC" not in view_sql(TABLES[name], Path("/lake"), has_files=True)
