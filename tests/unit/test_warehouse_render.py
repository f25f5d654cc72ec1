"""Query results as CSV, JSON and a text table."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime
from decimal import Decimal

import pytest

from warehouse.query import QueryResult
from warehouse.render import render, to_csv, to_json, to_text_table

RESULT = QueryResult(
    columns=("trip", "total", "end_time", "day", "lines", "known", "note"),
    types=("VARCHAR", "DECIMAL(18,4)", "TIMESTAMP WITH TIME ZONE", "DATE", "BIGINT", "BOOLEAN", "VARCHAR"),
    rows=[
        ("t1", Decimal("12.3400"), datetime(2024, 5, 1, 23, 5, tzinfo=UTC), date(2024, 5, 1), 3, True, None),
        ("t,2", Decimal("-0.0001"), None, None, 0, False, 'say "hi"'),
    ],
)


def test_csv_has_a_header_and_exact_values() -> None:
    assert to_csv(RESULT) == (
        "trip,total,end_time,day,lines,known,note\n"
        "t1,12.3400,2024-05-01T23:05:00+00:00,2024-05-01,3,true,\n"
        '"t,2",-0.0001,,,0,false,"say ""hi"""\n'
    )


def test_json_is_a_list_of_objects_with_decimals_as_strings_and_iso_timestamps() -> None:
    assert json.loads(to_json(RESULT)) == [
        {
            "trip": "t1",
            "total": "12.3400",
            "end_time": "2024-05-01T23:05:00+00:00",
            "day": "2024-05-01",
            "lines": 3,
            "known": True,
            "note": None,
        },
        {
            "trip": "t,2",
            "total": "-0.0001",
            "end_time": None,
            "day": None,
            "lines": 0,
            "known": False,
            "note": 'say "hi"',
        },
    ]


def test_json_of_no_rows_is_an_empty_list() -> None:
    assert to_json(QueryResult(("a",), ("INTEGER",), [])) == "[]"


def test_csv_of_no_rows_is_the_header_alone() -> None:
    assert to_csv(QueryResult(("a", "b"), ("INTEGER", "INTEGER"), [])) == "a,b\n"


def test_the_text_table_aligns_columns_under_a_rule() -> None:
    result = QueryResult(("trip", "total"), ("VARCHAR", "DECIMAL(18,4)"), [("t1", Decimal("1.5000")), ("t22", None)])

    assert to_text_table(result) == "trip  total\n----  ------\nt1    1.5000\nt22\n"


@pytest.mark.parametrize(("fmt", "starts"), [("csv", "trip,"), ("json", "[{"), ("table", "trip ")])
def test_render_picks_the_format(fmt: str, starts: str) -> None:
    assert render(RESULT, fmt).startswith(starts)  # type: ignore[arg-type]


def test_render_refuses_an_unknown_format() -> None:
    with pytest.raises(ValueError, match="xml"):
        render(RESULT, "xml")  # type: ignore[arg-type]
