"""`RetailerAdmin` + `SnapshotSource`: the SQLite store and its in-memory fake behave the same."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest

from connectors.adapters.sqlite_retailer import SqliteRetailerStore
from connectors.directory import CachedDirectory
from connectors.fakes import MemorySource
from connectors.ports import BadDebt, Shopper
from connectors.pricing import CatalogItem

AT = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
ALICE = Shopper("S-alice", "key-alice", "SHOPPER", "+1 617 555 0101", "active")
BOB = Shopper("S-bob", "key-bob", "ASSOCIATE", None, "active")
APPLE = CatalogItem("store-1", "SKU-APPLE", "Apple", Decimal("0.50"), "USD", Decimal("0.0625"), None)


def _debt(trip: str = "trip-1") -> BadDebt:
    return BadDebt("debt-1", "S-alice", trip, "store-1", Decimal("12.34"), "USD", "declined capture", "OPEN", AT)


@pytest.fixture(params=["sqlite", "memory"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SqliteRetailerStore | MemorySource]:
    if request.param == "memory":
        yield MemorySource()
        return
    sqlite = SqliteRetailerStore(tmp_path / "retailer.db")
    yield sqlite
    sqlite.close()


def test_upserted_shoppers_and_items_reach_the_directory(store: SqliteRetailerStore | MemorySource) -> None:
    assert store.upsert_shoppers([ALICE, BOB]) == 2
    assert store.upsert_catalog([(APPLE, ["012345678905"])]) == 1
    directory = CachedDirectory(store)
    assert directory.shopper_by_key("key-alice") == ALICE
    assert directory.shopper_by_phone("16175550101") == ALICE
    assert directory.item_by_sku("store-1", "SKU-APPLE") == APPLE
    assert directory.item_by_barcode("store-1", "012345678905") == APPLE
    assert directory.item_by_sku("store-2", "SKU-APPLE") is None


def test_a_change_bumps_the_generation_and_refresh_picks_it_up(store: SqliteRetailerStore | MemorySource) -> None:
    store.upsert_shoppers([ALICE])
    directory = CachedDirectory(store)
    assert directory.refresh() is False
    assert store.set_status("S-alice", "blocked") is True
    assert directory.refresh() is True
    found = directory.shopper_by_key("key-alice")
    assert found is not None
    assert found.status == "blocked"
    assert store.set_status("S-nobody", "blocked") is False


def test_an_identity_key_moves_with_its_new_shopper(store: SqliteRetailerStore | MemorySource) -> None:
    store.upsert_shoppers([ALICE])
    store.upsert_shoppers([Shopper("S-carol", "key-alice", "SHOPPER", None, "active")])
    directory = CachedDirectory(store)
    moved = directory.shopper_by_key("key-alice")
    assert moved is not None
    assert moved.shopper_id == "S-carol"
    assert store.get_shopper("S-alice") is None


def test_an_open_debt_refuses_the_shopper_until_it_is_closed(store: SqliteRetailerStore | MemorySource) -> None:
    store.upsert_shoppers([ALICE])
    directory = CachedDirectory(store)
    assert store.open_debt(_debt()) is True
    assert store.open_debt(_debt()) is False  # one debt per trip
    directory.refresh()
    assert directory.has_open_debt("S-alice")
    assert [d.status for d in store.debts("S-alice")] == ["OPEN"]

    assert store.close_debt("trip-1", "SETTLED", AT) is True
    assert store.close_debt("trip-1", "SETTLED", AT) is False
    directory.refresh()
    assert not directory.has_open_debt("S-alice")
    (settled,) = store.debts()
    assert (settled.status, settled.settled_at, settled.amount) == ("SETTLED", AT, Decimal("12.34"))
    assert store.debts("S-bob") == []


def test_debts_open_and_close_in_batches_as_the_single_calls_do(store: SqliteRetailerStore | MemorySource) -> None:
    store.upsert_shoppers([ALICE, BOB])
    directory = CachedDirectory(store)
    alice = [replace(_debt(f"trip-{n}"), debt_id=f"debt-{n}") for n in range(3)]
    bob = replace(_debt("trip-bob"), debt_id="debt-bob", shopper_id="S-bob")
    assert store.open_debts([]) == 0
    assert store.open_debts([*alice, bob]) == 4
    assert store.open_debts([alice[0], replace(_debt("trip-9"), debt_id="debt-9")]) == 1  # one debt per trip
    directory.refresh()
    assert directory.has_open_debt("S-alice")
    assert directory.has_open_debt("S-bob")

    assert store.close_debts(["trip-bob", "trip-nobody"], "WRITTEN_OFF", AT) == 1
    assert store.close_debts(["trip-bob"], "SETTLED", AT) == 0
    directory.refresh()
    assert not directory.has_open_debt("S-bob")
    assert directory.has_open_debt("S-alice")
    assert store.close_debts(["trip-0", "trip-1", "trip-2", "trip-9"], "SETTLED", AT) == 4
    directory.refresh()
    assert not directory.has_open_debt("S-alice")
    assert sorted((d.shopping_trip_id, d.status) for d in store.debts()) == [
        ("trip-0", "SETTLED"),
        ("trip-1", "SETTLED"),
        ("trip-2", "SETTLED"),
        ("trip-9", "SETTLED"),
        ("trip-bob", "WRITTEN_OFF"),
    ]
