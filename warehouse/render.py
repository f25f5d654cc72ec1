"""Query results as text: CSV, JSON or an aligned table. Pure: a QueryResult in, a string out.

Decimals keep their exact digits (as strings in JSON), timestamps are ISO-8601, nulls are empty (CSV),
`null` (JSON) or blank (table).
"""

from __future__ import annotations

import csv
import io
import json
import uuid
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from typing import Literal

from warehouse.query import QueryResult

Format = Literal["table", "csv", "json"]
FORMATS: tuple[Format, ...] = ("table", "csv", "json")


def render(result: QueryResult, fmt: Format) -> str:
    if fmt == "csv":
        return to_csv(result)
    if fmt == "json":
        return to_json(result)
    if fmt == "table":
        return to_text_table(result)
    raise ValueError(f"unknown format {fmt!r}; use one of {', '.join(FORMATS)}")


def to_csv(result: QueryResult) -> str:
    """RFC 4180 CSV with a header row and `\\n` line ends; true/false for booleans."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(result.columns)
    writer.writerows([_text(v) for v in row] for row in result.rows)
    return out.getvalue()


def to_json(result: QueryResult) -> str:
    """A JSON array with one object per row, keys in column order."""
    objects = [dict(zip(result.columns, row, strict=True)) for row in result.rows]
    return json.dumps(objects, default=_json_default, ensure_ascii=False)


def to_text_table(result: QueryResult) -> str:
    """Columns padded to their widest value, a rule under the header, then one line per row."""
    cells = [list(result.columns), *([_text(v) for v in row] for row in result.rows)]
    widths = [max(len(line[i]) for line in cells) for i in range(len(result.columns))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip() for line in cells]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(lines) + "\n"


def _text(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    return str(value)


def _json_default(value: object) -> object:
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    if isinstance(value, Decimal | uuid.UUID | timedelta):
        return str(value)
    if isinstance(value, bytes):
        return value.hex()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")
