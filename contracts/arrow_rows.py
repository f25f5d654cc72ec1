"""Rows held as an Arrow table: a `Sequence` of row mappings for any sink, and the table itself for the lake.

A stage that already has its rows in columnar form (the Intra-Day report parser) hands them to a `TableSink`
as `ArrowRows`: a sink that knows about it (the lake's writer) publishes the Arrow table as it is, with no
per-row Python objects; any other sink iterates it as dicts, built on first use. Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime
from typing import overload

import pyarrow as pa


class ArrowRows(Sequence[Mapping[str, object]]):
    """An Arrow table seen as a sequence of `{column: value}` rows (timestamps UTC-aware, decimals `Decimal`)."""

    def __init__(self, table: pa.Table) -> None:
        self.table = table
        self._rows: list[dict[str, object]] | None = None

    def rows(self) -> list[dict[str, object]]:
        if self._rows is None:
            self._rows = [{k: _utc(v) for k, v in row.items()} for row in self.table.to_pylist()]
        return self._rows

    def __len__(self) -> int:
        return int(self.table.num_rows)

    @overload
    def __getitem__(self, index: int) -> Mapping[str, object]: ...

    @overload
    def __getitem__(self, index: slice) -> Sequence[Mapping[str, object]]: ...

    def __getitem__(self, index: int | slice) -> Mapping[str, object] | Sequence[Mapping[str, object]]:
        return self.rows()[index]

    def __iter__(self) -> Iterator[Mapping[str, object]]:
        return iter(self.rows())

    def __eq__(self, other: object) -> bool:
        if isinstance(other, ArrowRows):
            return self.rows() == other.rows()
        if isinstance(other, list):
            return self.rows() == other
        return NotImplemented

    def __repr__(self) -> str:
        return f"ArrowRows({self.table.num_rows} rows)"

    __hash__ = None  # type: ignore[assignment]


def _utc(value: object) -> object:
    """Arrow gives back a `timestamp[tz=UTC]` with whatever tzinfo pytz/zoneinfo offers; make it `datetime.UTC`."""
    if isinstance(value, datetime) and value.tzinfo is not None:
        return value.astimezone(UTC)
    return value
