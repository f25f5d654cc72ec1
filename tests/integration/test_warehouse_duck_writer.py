"""The one read-write DuckDB file and the views it keeps over the lake."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import duckdb
import pytest

from contracts.tables import PURCHASES, TABLES
from warehouse.duck_writer import WarehouseDb
from warehouse.errors import WarehouseLockedError
from warehouse.lake import LakeWriter

HOLD_THE_FILE = """
import sys, duckdb
con = duckdb.connect(sys.argv[1])
print("holding", flush=True)
sys.stdin.read()
con.close()
"""


def purchase(trip: str) -> dict[str, object]:
    return {
        "shopping_trip_id": trip,
        "end_time": datetime(2024, 5, 1, 9, 15, tzinfo=UTC),
        "total": Decimal("2.5000"),
    }


def count_in_file(path: Path, table: str) -> int:
    con = duckdb.connect(str(path), read_only=True)
    try:
        [(count,)] = con.sql(f"SELECT count(*) FROM {table}").fetchall()
    finally:
        con.close()
    assert isinstance(count, int)
    return count


@pytest.fixture
def other_process_holding(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "home" / "warehouse.duckdb"
    path.parent.mkdir()
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_THE_FILE, str(path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout is not None
    assert holder.stdout.readline().strip() == "holding"
    yield path.parent
    assert holder.stdin is not None
    holder.stdin.close()
    holder.wait(timeout=10)
    holder.stdout.close()


def test_views_in_the_file_are_seen_by_an_analyst_who_opens_it_later(tmp_path: Path) -> None:
    lake, home = tmp_path / "lake", tmp_path / "home"
    LakeWriter(lake).write(PURCHASES, [purchase("t1"), purchase("t2")], "b1")

    with WarehouseDb(home, lake) as db:
        db.refresh_views(TABLES.values())

    assert (home / "warehouse.duckdb").is_file()
    assert count_in_file(home / "warehouse.duckdb", "purchases") == 2
    assert count_in_file(home / "warehouse.duckdb", "auth_events") == 0


def test_an_empty_view_fills_after_the_next_refresh(tmp_path: Path) -> None:
    lake, home = tmp_path / "lake", tmp_path / "home"
    with WarehouseDb(home, lake) as db:
        db.refresh_views([PURCHASES])
        LakeWriter(lake).write(PURCHASES, [purchase("t1")], "b1")
        [(before,)] = db.connection.sql("SELECT count(*) FROM purchases").fetchall()
        db.refresh_views([PURCHASES])
        [(after,)] = db.connection.sql("SELECT count(*) FROM purchases").fetchall()

    assert (before, after) == (0, 1)


def test_a_view_over_files_sees_new_files_without_a_refresh(tmp_path: Path) -> None:
    lake, home = tmp_path / "lake", tmp_path / "home"
    writer = LakeWriter(lake)
    writer.write(PURCHASES, [purchase("t1")], "b1")
    with WarehouseDb(home, lake) as db:
        db.refresh_views([PURCHASES])
        writer.write(PURCHASES, [purchase("t2")], "b2")
        [(count,)] = db.connection.sql("SELECT count(*) FROM purchases").fetchall()

    assert count == 2


def test_a_second_process_cannot_open_the_writer_file(other_process_holding: Path, tmp_path: Path) -> None:
    with pytest.raises(WarehouseLockedError):
        WarehouseDb(other_process_holding, tmp_path / "lake")
