"""`newest_per_key` sorts on the key and `latest_by` columns only and compares the other columns only for keys
whose first two versions tie on every `latest_by` value: it must pick what one sort over every column picks."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
from hypothesis import given, settings
from hypothesis import strategies as st

from contracts.tables import INTRADAY_ORDER_LINES
from warehouse.merge import newest_per_key

TABLE = INTRADAY_ORDER_LINES
SCHEMA = TABLE.arrow_schema()
T0 = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)


def newest_by_one_sort(rows: pa.Table) -> pa.Table:
    """The reference: every row sorted by key, `latest_by` descending, then every other column, nulls last;
    the first row of each key."""
    key = list(TABLE.key)
    order = [(k, "ascending", "at_end") for k in key]
    order += [(c, "descending", "at_end") for c in TABLE.latest_by]
    decided = {*TABLE.key, *TABLE.latest_by}
    order += [(c.name, "ascending", "at_end") for c in TABLE.columns if c.name not in decided]
    ranked = rows.take(pc.sort_indices(rows, sort_keys=order))
    frame = pl.from_arrow(ranked.select(key))
    assert isinstance(frame, pl.DataFrame)
    return ranked.filter(frame.select(pl.struct(key).is_first_distinct()).to_series().to_arrow())


def table_of(rows: list[dict[str, object]]) -> pa.Table:
    return pa.Table.from_pylist([{f.name: row.get(f.name) for f in SCHEMA} for row in rows], schema=SCHEMA)


maybe = st.one_of(st.none(), st.sampled_from(["a", "b", "c"]))
minutes = st.one_of(st.none(), st.integers(0, 2)).map(lambda m: None if m is None else T0 + timedelta(minutes=m))
row = st.fixed_dictionaries(
    {
        "shopping_trip_id": st.one_of(st.none(), st.sampled_from(["t1", "t2", "t3"])),
        "line_item_id": maybe,
        "order_time": st.just(T0),
        "last_updated": minutes,
        "file_published_at": minutes,
        "payment_status": maybe,
        "item_name": maybe,
        "quantity": st.one_of(st.none(), st.sampled_from([Decimal("1"), Decimal("-2.5"), Decimal("3.0001")])),
    }
)


@settings(max_examples=300, deadline=None)
@given(st.lists(row, max_size=40))
def test_the_newest_version_of_a_key_is_what_a_sort_over_every_column_picks(rows: list[dict[str, object]]) -> None:
    table = table_of(rows)
    assert newest_per_key(TABLE, table).equals(newest_by_one_sort(table))


def test_versions_that_tie_on_last_updated_and_publication_are_decided_by_the_other_columns() -> None:
    tied = {"shopping_trip_id": "t1", "line_item_id": "1", "order_time": T0, "last_updated": T0}
    rows = [
        {**tied, "file_published_at": T0, "payment_status": "settled"},
        {**tied, "file_published_at": T0, "payment_status": None},
        {**tied, "file_published_at": T0, "payment_status": "pending"},
        {**tied, "file_published_at": T0 - timedelta(minutes=1), "payment_status": "a-older"},
        {**tied, "line_item_id": "2", "file_published_at": T0, "payment_status": "only"},
    ]
    newest = newest_per_key(TABLE, table_of(rows))
    assert newest.select(["line_item_id", "payment_status"]).to_pylist() == [
        {"line_item_id": "1", "payment_status": "pending"},
        {"line_item_id": "2", "payment_status": "only"},
    ]
