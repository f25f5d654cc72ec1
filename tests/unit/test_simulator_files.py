import csv
from decimal import Decimal
from pathlib import Path

from simulator.files import write_retailer_files
from simulator.scenario import ScenarioConfig, build_scenario


def read(path: Path) -> tuple[str, list[dict[str, str]]]:
    with path.open(encoding="utf-8", newline="") as handle:
        header = handle.readline().strip()
        handle.seek(0)
        return header, list(csv.DictReader(handle))


def test_shoppers_file_round_trips_with_the_spec_header(tmp_path: Path) -> None:
    scenario = build_scenario(ScenarioConfig(shoppers=50))
    files = write_retailer_files(scenario, tmp_path / "retailer")
    header, rows = read(files.shoppers)
    assert header == "shopper_id,identity_key,visitor_type,phone_number,status"
    assert [
        (r["shopper_id"], r["identity_key"], r["visitor_type"], r["phone_number"] or None, r["status"]) for r in rows
    ] == [(s.shopper_id, s.identity_key, s.visitor_type, s.phone_number, s.status) for s in scenario.shoppers]
    assert {r["status"] for r in rows} == {"active", "blocked"}


def test_catalog_file_round_trips_with_the_spec_header(tmp_path: Path) -> None:
    scenario = build_scenario(ScenarioConfig())
    files = write_retailer_files(scenario, tmp_path)
    header, rows = read(files.catalog)
    assert header == "store_id,sku,name,barcodes,unit_price,currency,tax_rate,promotion_percent"
    assert len(rows) == len(scenario.catalog)
    for row, item in zip(rows, scenario.catalog, strict=True):
        assert (row["store_id"], row["sku"], row["name"], row["currency"]) == (
            item.store_id,
            item.sku,
            item.name,
            item.currency,
        )
        assert tuple(row["barcodes"].split("|")) == item.barcodes
        assert Decimal(row["unit_price"]) == item.unit_price
        assert Decimal(row["tax_rate"]) == item.tax_rate
        assert (Decimal(row["promotion_percent"]) if row["promotion_percent"] else None) == item.promotion_percent
    assert any("|" in row["barcodes"] for row in rows)
    assert any(row["promotion_percent"] for row in rows)
    assert {row["tax_rate"] for row in rows} >= {"0", "0.0625"}
    assert all(len(row["unit_price"].split(".")[1]) == 2 for row in rows)
