"""The retailer's identity store and catalog as CSV files (SPEC §2.5.1), ready for `jwo` to import."""

from __future__ import annotations

import csv
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from contracts.retailer_files import BARCODE_SEPARATOR, CATALOG_COLUMNS, SHOPPER_COLUMNS
from simulator.scenario import Scenario


@dataclass(frozen=True)
class RetailerFiles:
    shoppers: Path
    catalog: Path


def write_retailer_files(scenario: Scenario, directory: Path) -> RetailerFiles:
    directory.mkdir(parents=True, exist_ok=True)
    files = RetailerFiles(shoppers=directory / "shoppers.csv", catalog=directory / "catalog.csv")
    _write(
        files.shoppers,
        SHOPPER_COLUMNS,
        ((s.shopper_id, s.identity_key, s.visitor_type, s.phone_number or "", s.status) for s in scenario.shoppers),
    )
    _write(
        files.catalog,
        CATALOG_COLUMNS,
        (
            (
                item.store_id,
                item.sku,
                item.name,
                BARCODE_SEPARATOR.join(item.barcodes),
                str(item.unit_price),
                item.currency,
                str(item.tax_rate),
                "" if item.promotion_percent is None else str(item.promotion_percent),
            )
            for item in scenario.catalog
        ),
    )
    return files


def _write(path: Path, header: tuple[str, ...], rows: Iterable[tuple[str, ...]]) -> None:
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
