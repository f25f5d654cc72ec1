"""Rows held as an Arrow table: a `Sequence` of row mappings for any sink, and the table itself for the lake.

A stage that already has its rows in columnar form (the Intra-Day report parser, the events-queue batch decoder)
hands them to a `TableSink` as `ArrowRows`: a sink that knows about it (the lake's writer) publishes the Arrow
table as it is, with no per-row Python objects; any other sink iterates it as dicts, built on first use.

Rows can also come in pieces, in order: Arrow tables and runs of row dicts (rows a decoder could not put in
columns). The lake's writer converts the dict runs as it converts any rows and publishes the whole in order.
Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime
from typing import overload

import pyarrow as pa


class ArrowRows(Sequence[Mapping[str, object]]):
    """An Arrow table seen as a sequence of `{column: value}` rows (timestamps UTC-aware, decimals `Decimal`)."""

    def __init__(self, table: pa.Table) -> None:
        self._pieces: tuple[pa.Table | Sequence[Mapping[str, object]], ...] = (table,)
        self._rows: list[dict[str, object]] | None = None

    @classmethod
    def of_pieces(cls, pieces: Sequence[pa.Table | Sequence[Mapping[str, object]]]) -> ArrowRows:
        """Rows given as Arrow tables (each with the same schema) and runs of row dicts, in this order."""
        arrow = [p for p in pieces if isinstance(p, pa.Table)]
        if not arrow:
            raise ValueError("ArrowRows needs at least one Arrow table")
        rows = cls(arrow[0])
        rows._pieces = tuple(pieces)
        return rows

    @property
    def pieces(self) -> tuple[pa.Table | Sequence[Mapping[str, object]], ...]:
        return self._pieces

    @property
    def table(self) -> pa.Table:
        """The rows as one Arrow table; only for rows that are all Arrow (see `pieces`)."""
        if len(self._pieces) != 1 or not isinstance(self._pieces[0], pa.Table):
            raise TypeError("these rows are partly row dicts: read `pieces`")
        return self._pieces[0]

    def rows(self) -> list[dict[str, object]]:
        if self._rows is None:
            self._rows = [
                row
                for piece in self._pieces
                for row in (
                    [{k: _utc(v) for k, v in r.items()} for r in piece.to_pylist()]
                    if isinstance(piece, pa.Table)
                    else [dict(r) for r in piece]
                )
            ]
        return self._rows

    def __len__(self) -> int:
        return sum(int(p.num_rows) if isinstance(p, pa.Table) else len(p) for p in self._pieces)

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
        return f"ArrowRows({len(self)} rows)"

    __hash__ = None  # type: ignore[assignment]


def _utc(value: object) -> object:
    """Arrow gives back a `timestamp[tz=UTC]` with whatever tzinfo pytz/zoneinfo offers; make it `datetime.UTC`."""
    if isinstance(value, datetime) and value.tzinfo is not None:
        return value.astimezone(UTC)
    return value
