"""SPEC §2.5.1: shoppers and catalog load from CSV or JSON; a file with a bad row is refused whole, its
problems listed by line; loading again updates rows in place."""

from __future__ import annotations

import json
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from connectors.adapters.sqlite_retailer import SqliteRetailerStore
from connectors.directory import CachedDirectory
from connectors.errors import ImportFileError
from connectors.imports import (
    import_catalog_file,
    import_shoppers_file,
    parse_catalog,
    parse_shoppers,
    read_records,
)
from connectors.ports import Shopper
from connectors.pricing import CatalogItem

D = Decimal
SHOPPERS_HEADER = "shopper_id,identity_key,visitor_type,phone_number,status"
CATALOG_HEADER = "store_id,sku,name,barcodes,unit_price,currency,tax_rate,promotion_percent"


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def csv_text(header: str, *rows: str) -> str:
    return "\n".join([header, *rows]) + "\n"


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqliteRetailerStore]:
    retailer = SqliteRetailerStore(tmp_path / "retailer.db")
    yield retailer
    retailer.close()


# --- shoppers ------------------------------------------------------------------------------------


def test_shoppers_load_from_csv_with_defaults(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "shoppers.csv",
        csv_text(
            SHOPPERS_HEADER,
            "s-1,key-1,SHOPPER,+1 617 555 1234,active",
            "s-2,key-2,associate,,BLOCKED",
            "s-3,key-3,,,",
            '"s-4"," key-4 ",CASH_SHOPPER,"+44 20 7946 0000",active',
        ),
    )

    shoppers = parse_shoppers(read_records(path), str(path))

    assert shoppers == [
        Shopper("s-1", "key-1", "SHOPPER", "+1 617 555 1234", "active"),
        Shopper("s-2", "key-2", "ASSOCIATE", None, "blocked"),
        Shopper("s-3", "key-3", "SHOPPER", None, "active"),
        Shopper("s-4", "key-4", "CASH_SHOPPER", "+44 20 7946 0000", "active"),
    ]


def test_shoppers_load_from_a_json_list_with_the_same_keys(tmp_path: Path) -> None:
    rows: list[dict[str, Any]] = [
        {"shopper_id": "s-1", "identity_key": "key-1", "visitor_type": "SHOPPER", "phone_number": None},
        {"shopper_id": 42, "identity_key": "key-42", "status": "blocked", "extra": "ignored"},
    ]
    path = write(tmp_path, "shoppers.json", json.dumps(rows))

    shoppers = parse_shoppers(read_records(path), str(path))

    assert shoppers == [
        Shopper("s-1", "key-1", "SHOPPER", None, "active"),
        Shopper("42", "key-42", "SHOPPER", None, "blocked"),
    ]


def test_a_csv_with_a_byte_order_mark_reads_its_first_column(tmp_path: Path) -> None:
    path = tmp_path / "shoppers.csv"
    path.write_bytes(b"\xef\xbb\xbf" + csv_text(SHOPPERS_HEADER, "s-1,key-1,SHOPPER,,active").encode())

    [(line, row)] = read_records(path)

    assert line == 2
    assert row["shopper_id"] == "s-1"


BAD_SHOPPERS: list[tuple[list[str], str]] = [
    ([",key-1,SHOPPER,,active"], "line 2: shopper_id is missing"),
    (["s-1,,SHOPPER,,active"], "line 2: identity_key is missing"),
    ([f"{'s' * 256},key-1,SHOPPER,,active"], "line 2: shopper_id is longer than 255 characters"),
    ([f"s-1,{'k' * 1001},SHOPPER,,active"], "line 2: identity_key is longer than 1000 characters"),
    (["s-1,key-1,VIP,,active"], "line 2: visitor_type 'VIP' is not one of SHOPPER, ASSOCIATE, CASH_SHOPPER"),
    (["s-1,key-1,SHOPPER,,gone"], "line 2: status 'gone' is not active or blocked"),
    (
        ["s-1,key-1,SHOPPER,617 555 1234,active"],
        "line 2: phone_number '617 555 1234' is not an E.123 international number",
    ),
    (["s-1,key-1,SHOPPER,+1 23,active"], "line 2: phone_number '+1 23' is not an E.123 international number"),
    (
        ["s-1,key-1,SHOPPER,,active", "s-2,key-2,SHOPPER,,active", "s-1,key-3,SHOPPER,,active"],
        "line 4: shopper_id 's-1' already appears on line 2",
    ),
    (
        ["s-1,key-1,SHOPPER,,active", "s-2,key-1,SHOPPER,,active"],
        "line 3: identity_key 'key-1' already appears on line 2",
    ),
]


@pytest.mark.parametrize(("rows", "problem"), BAD_SHOPPERS, ids=[p.split(": ", 1)[1][:40] for _, p in BAD_SHOPPERS])
def test_a_bad_shopper_row_refuses_the_whole_file_with_its_line(
    tmp_path: Path, store: SqliteRetailerStore, rows: list[str], problem: str
) -> None:
    path = write(tmp_path, "shoppers.csv", csv_text(SHOPPERS_HEADER, *rows, "s-ok,key-ok,SHOPPER,,active"))

    with pytest.raises(ImportFileError) as refused:
        import_shoppers_file(store, path)

    assert refused.value.problems == [problem]
    assert str(path) in str(refused.value)
    assert "nothing was imported; 1 bad row(s)" in str(refused.value)
    assert store.get_shopper("s-ok") is None  # not half-applied


def test_every_bad_row_is_listed_by_its_line_in_the_file(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "shoppers.csv",
        csv_text(
            SHOPPERS_HEADER,
            "s-1,key-1,SHOPPER,,active",
            '"s-2","multi',
            'line key",SHOPPER,,nope',
            "s-3,,SHOPPER,,active",
        ),
    )

    with pytest.raises(ImportFileError) as refused:
        parse_shoppers(read_records(path), str(path))

    assert refused.value.problems == [
        "line 4: status 'nope' is not active or blocked",  # a quoted multi-line row: its last line
        "line 5: identity_key is missing",
    ]


def test_a_json_row_is_reported_by_its_position(tmp_path: Path) -> None:
    rows = [{"shopper_id": "s-1", "identity_key": "key-1"}, {"shopper_id": "s-2", "visitor_type": "ROBOT"}]
    path = write(tmp_path, "shoppers.json", json.dumps(rows, indent=2))

    with pytest.raises(ImportFileError) as refused:
        parse_shoppers(read_records(path), str(path))

    assert refused.value.problems == [
        "line 2: identity_key is missing",
        "line 2: visitor_type 'ROBOT' is not one of SHOPPER, ASSOCIATE, CASH_SHOPPER",
    ]


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ('{"shopper_id": "s-1"}', "the JSON file must hold a list of objects"),
        ('[{"shopper_id": "s-1"}, "s-2"]', "the JSON file must hold a list of objects"),
        ('[\n  {"shopper_id": "s-1"},\n  {"shopper_id": }\n]', "line 3: not valid JSON: Expecting value"),
    ],
    ids=["object", "list-of-mixed", "malformed"],
)
def test_a_json_file_that_is_not_a_list_of_objects_is_refused(tmp_path: Path, text: str, problem: str) -> None:
    path = write(tmp_path, "shoppers.json", text)

    with pytest.raises(ImportFileError) as refused:
        read_records(path)

    assert refused.value.problems == [problem]


def test_a_long_list_of_problems_is_shortened_in_the_message(tmp_path: Path) -> None:
    path = write(tmp_path, "shoppers.csv", csv_text(SHOPPERS_HEADER, *[f"s-{n},,SHOPPER,,active" for n in range(25)]))

    with pytest.raises(ImportFileError) as refused:
        parse_shoppers(read_records(path), str(path))

    assert len(refused.value.problems) == 25
    assert "25 bad row(s)" in str(refused.value)
    assert "line 21: identity_key is missing" in str(refused.value)
    assert "line 22: identity_key is missing" not in str(refused.value)
    assert str(refused.value).endswith("... and 5 more")


def test_importing_shoppers_again_updates_them_in_place(tmp_path: Path, store: SqliteRetailerStore) -> None:
    first = write(
        tmp_path, "a.csv", csv_text(SHOPPERS_HEADER, "s-1,key-1,SHOPPER,,active", "s-2,key-2,SHOPPER,,active")
    )
    second = write(
        tmp_path,
        "b.csv",
        csv_text(SHOPPERS_HEADER, "s-1,key-1,SHOPPER,+1 617 555 0000,blocked", "s-2,key-2,SHOPPER,,active"),
    )

    assert import_shoppers_file(store, first) == 2
    assert import_shoppers_file(store, first) == 2
    directory = CachedDirectory(store)
    generation = directory.generation
    assert import_shoppers_file(store, second) == 2

    assert store.get_shopper("s-1") == Shopper("s-1", "key-1", "SHOPPER", "+1 617 555 0000", "blocked")
    assert len(store.snapshot().by_key) == 2
    assert directory.refresh() is True
    assert directory.generation > generation
    assert directory.shopper_by_phone("16175550000") == store.get_shopper("s-1")


def test_an_identity_key_moves_with_its_new_shopper(tmp_path: Path, store: SqliteRetailerStore) -> None:
    import_shoppers_file(store, write(tmp_path, "a.csv", csv_text(SHOPPERS_HEADER, "s-old,key-1,SHOPPER,,active")))

    import_shoppers_file(store, write(tmp_path, "b.csv", csv_text(SHOPPERS_HEADER, "s-new,key-1,SHOPPER,,active")))

    assert store.get_shopper("s-old") is None
    assert CachedDirectory(store).shopper_by_key("key-1") == Shopper("s-new", "key-1", "SHOPPER", None, "active")


# --- catalog -------------------------------------------------------------------------------------


def test_the_catalog_loads_from_csv_with_exact_decimals_and_barcodes(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "catalog.csv",
        csv_text(
            CATALOG_HEADER,
            "store-1,sku-apple,Apple,000000000017|000000000018,0.99,usd,0.0625,",
            "store-1,sku-cheese,Cheese,,12.49,USD,0,10",
            'store-2,sku-apple,"Apple, organic", 4011 ,1.10,,0.07,0',
        ),
    )

    items = parse_catalog(read_records(path), str(path))

    assert items == [
        (
            CatalogItem("store-1", "sku-apple", "Apple", D("0.99"), "USD", D("0.0625"), None),
            ["000000000017", "000000000018"],
        ),
        (CatalogItem("store-1", "sku-cheese", "Cheese", D("12.49"), "USD", D("0"), D("10")), []),
        (CatalogItem("store-2", "sku-apple", "Apple, organic", D("1.10"), "USD", D("0.07"), None), ["4011"]),
    ]
    assert str(items[0][0].unit_price) == "0.99"


def test_the_catalog_loads_from_json_with_numbers_or_strings(tmp_path: Path) -> None:
    rows = [
        {"store_id": "store-1", "sku": "sku-tea", "name": "Tea", "barcodes": "123|456", "unit_price": 1.1,
         "currency": "JPY", "tax_rate": "0.10", "promotion_percent": 5},
    ]  # fmt: skip
    path = write(tmp_path, "catalog.json", json.dumps(rows))

    [(item, barcodes)] = parse_catalog(read_records(path), str(path))

    assert item == CatalogItem("store-1", "sku-tea", "Tea", D("1.1"), "JPY", D("0.10"), D("5"))
    assert barcodes == ["123", "456"]


BAD_CATALOG: list[tuple[str, str]] = [
    (",sku-x,X,,1.00,USD,0,", "line 2: store_id is missing"),
    ("store-1,,X,,1.00,USD,0,", "line 2: sku is missing"),
    ("store-1,sku-x,,,1.00,USD,0,", "line 2: name is missing"),
    ("store-1,sku-x,X,,,USD,0,", "line 2: unit_price is missing"),
    ("store-1,sku-x,X,,abc,USD,0,", "line 2: unit_price 'abc' is not a decimal number"),
    ("store-1,sku-x,X,,-1.00,USD,0,", "line 2: unit_price '-1.00' must be a non-negative number"),
    ("store-1,sku-x,X,,NaN,USD,0,", "line 2: unit_price 'NaN' must be a non-negative number"),
    ("store-1,sku-x,X,,1.00,USD,,", "line 2: tax_rate is missing"),
    ("store-1,sku-x,X,,1.00,USD,6.25,", "line 2: tax_rate 6.25 must be a fraction such as 0.0625"),
    ("store-1,sku-x,X,,1.00,USD,0,150", "line 2: promotion_percent 150 is over 100"),
    ("store-1,sku-x,X,,1.00,USD,0,ten", "line 2: promotion_percent 'ten' is not a decimal number"),
    ("store-1,sku-x,X,,1.00,US,0,", "line 2: currency 'US' is not an ISO 4217 code"),
    ("store-1,sku-x,X,,1.00,U$D,0,", "line 2: currency 'U$D' is not an ISO 4217 code"),
]


@pytest.mark.parametrize(("row", "problem"), BAD_CATALOG, ids=[p.split(": ", 1)[1][:40] for _, p in BAD_CATALOG])
def test_a_bad_catalog_row_refuses_the_whole_file_with_its_line(
    tmp_path: Path, store: SqliteRetailerStore, row: str, problem: str
) -> None:
    path = write(tmp_path, "catalog.csv", csv_text(CATALOG_HEADER, row, "store-1,sku-ok,Ok,,1.00,USD,0,"))

    with pytest.raises(ImportFileError) as refused:
        import_catalog_file(store, path)

    assert refused.value.problems == [problem]
    assert CachedDirectory(store).item_by_sku("store-1", "sku-ok") is None  # not half-applied


def test_a_duplicate_sku_in_one_store_is_refused_but_not_across_stores(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "catalog.csv",
        csv_text(
            CATALOG_HEADER,
            "store-1,sku-a,A,,1.00,USD,0,",
            "store-2,sku-a,A,,1.00,USD,0,",
            "store-1,sku-a,A again,,2.00,USD,0,",
        ),
    )

    with pytest.raises(ImportFileError) as refused:
        parse_catalog(read_records(path), str(path))

    assert refused.value.problems == ["line 4: sku 'sku-a' of store 'store-1' already appears on line 2"]


def test_a_missing_column_is_a_problem_on_every_row(tmp_path: Path) -> None:
    path = write(tmp_path, "catalog.csv", "store_id,sku,name,currency,tax_rate\nstore-1,a,A,USD,0\nstore-1,b,B,USD,0\n")

    with pytest.raises(ImportFileError) as refused:
        parse_catalog(read_records(path), str(path))

    assert refused.value.problems == ["line 2: unit_price is missing", "line 3: unit_price is missing"]


def test_importing_the_catalog_again_updates_prices_in_place(tmp_path: Path, store: SqliteRetailerStore) -> None:
    before = write(tmp_path, "a.csv", csv_text(CATALOG_HEADER, "store-1,sku-a,A,111|222,1.00,USD,0.05,"))
    after = write(tmp_path, "b.csv", csv_text(CATALOG_HEADER, "store-1,sku-a,A new,333,1.25,USD,0.05,20"))

    assert import_catalog_file(store, before) == 1
    assert import_catalog_file(store, before) == 1
    assert import_catalog_file(store, after) == 1

    directory = CachedDirectory(store)
    expected = CatalogItem("store-1", "sku-a", "A new", D("1.25"), "USD", D("0.05"), D("20"))
    assert directory.item_by_sku("store-1", "sku-a") == expected
    assert directory.item_by_barcode("store-1", "333") == expected
    assert directory.item_by_barcode("store-1", "111") is None
    assert len(store.snapshot().by_sku) == 1
