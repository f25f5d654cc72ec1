"""Retailer files (SPEC §2.5.1): shoppers and catalog, CSV with a header row or a JSON list.

Parsing checks every row first; a file with any bad row is refused whole, its problems listed by
line number, so nothing of it is half-applied. Loading the same file again updates rows in place.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Mapping, Sequence
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, cast

from connectors.directory import phone_digits
from connectors.errors import ImportFileError
from connectors.ports import RetailerAdmin, Shopper, VisitorType
from connectors.pricing import CatalogItem
from contracts.retailer_files import BARCODE_SEPARATOR

Record = tuple[int, Mapping[str, Any]]

_VISITOR_TYPES = ("SHOPPER", "ASSOCIATE", "CASH_SHOPPER")


def read_records(path: Path) -> list[Record]:
    """Rows of a CSV (line numbers as in the file) or a JSON list (1-based positions)."""
    text = path.read_text(encoding="utf-8-sig")
    if path.suffix.lower() == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ImportFileError(str(path), [f"line {exc.lineno}: not valid JSON: {exc.msg}"]) from None
        if not isinstance(data, list) or not all(isinstance(d, dict) for d in data):
            raise ImportFileError(str(path), ["the JSON file must hold a list of objects"])
        return [(i + 1, d) for i, d in enumerate(data)]
    reader = csv.DictReader(io.StringIO(text, newline=""))
    records: list[Record] = []
    for row in reader:
        records.append((reader.line_num, row))
    return records


def _text(row: Mapping[str, Any], column: str) -> str:
    value = row.get(column)
    return "" if value is None else str(value).strip()


def _required(row: Mapping[str, Any], column: str, problems: list[str], line: int, max_len: int = 255) -> str:
    value = _text(row, column)
    if not value:
        problems.append(f"line {line}: {column} is missing")
    elif len(value) > max_len:
        problems.append(f"line {line}: {column} is longer than {max_len} characters")
    return value


def _decimal(
    row: Mapping[str, Any], column: str, problems: list[str], line: int, *, optional: bool = False
) -> Decimal | None:
    value = _text(row, column)
    if not value:
        if not optional:
            problems.append(f"line {line}: {column} is missing")
        return None
    try:
        number = Decimal(value)
    except InvalidOperation:
        problems.append(f"line {line}: {column} {value!r} is not a decimal number")
        return None
    if not number.is_finite() or number < 0:
        problems.append(f"line {line}: {column} {value!r} must be a non-negative number")
        return None
    return number


def parse_shoppers(records: Sequence[Record], source: str) -> list[Shopper]:
    problems: list[str] = []
    shoppers: list[Shopper] = []
    seen_ids: dict[str, int] = {}
    seen_keys: dict[str, int] = {}
    for line, row in records:
        shopper_id = _required(row, "shopper_id", problems, line)
        identity_key = _required(row, "identity_key", problems, line, max_len=1000)
        visitor_type = _text(row, "visitor_type").upper() or "SHOPPER"
        if visitor_type not in _VISITOR_TYPES:
            problems.append(f"line {line}: visitor_type {visitor_type!r} is not one of {', '.join(_VISITOR_TYPES)}")
        status = _text(row, "status").lower() or "active"
        if status not in ("active", "blocked"):
            problems.append(f"line {line}: status {status!r} is not active or blocked")
        phone = _text(row, "phone_number") or None
        if phone is not None and not (phone.startswith("+") and 7 <= len(phone_digits(phone)) <= 15):
            problems.append(f"line {line}: phone_number {phone!r} is not an E.123 international number")
        for value, seen, what in (
            (shopper_id, seen_ids, "shopper_id"),
            (identity_key, seen_keys, "identity_key"),
        ):
            if value and value in seen:
                problems.append(f"line {line}: {what} {value!r} already appears on line {seen[value]}")
            elif value:
                seen[value] = line
        shoppers.append(
            Shopper(
                shopper_id=shopper_id,
                identity_key=identity_key,
                visitor_type=cast(VisitorType, visitor_type),
                phone_number=phone,
                status="blocked" if status == "blocked" else "active",
            )
        )
    if problems:
        raise ImportFileError(source, problems)
    return shoppers


def parse_catalog(records: Sequence[Record], source: str) -> list[tuple[CatalogItem, list[str]]]:
    problems: list[str] = []
    items: list[tuple[CatalogItem, list[str]]] = []
    seen: dict[tuple[str, str], int] = {}
    for line, row in records:
        store_id = _required(row, "store_id", problems, line)
        sku = _required(row, "sku", problems, line)
        name = _required(row, "name", problems, line, max_len=1000)
        currency = _text(row, "currency").upper() or "USD"
        if len(currency) != 3 or not currency.isalpha():
            problems.append(f"line {line}: currency {currency!r} is not an ISO 4217 code")
        unit_price = _decimal(row, "unit_price", problems, line)
        tax_rate = _decimal(row, "tax_rate", problems, line)
        if tax_rate is not None and tax_rate >= 1:
            problems.append(f"line {line}: tax_rate {tax_rate} must be a fraction such as 0.0625")
        promotion = _decimal(row, "promotion_percent", problems, line, optional=True)
        if promotion is not None and promotion > 100:
            problems.append(f"line {line}: promotion_percent {promotion} is over 100")
        barcodes = [b.strip() for b in _text(row, "barcodes").split(BARCODE_SEPARATOR) if b.strip()]
        if (store_id, sku) in seen:
            problems.append(
                f"line {line}: sku {sku!r} of store {store_id!r} already appears on line {seen[(store_id, sku)]}"
            )
        seen[(store_id, sku)] = line
        if unit_price is None or tax_rate is None:
            continue
        item = CatalogItem(store_id, sku, name, unit_price, currency, tax_rate, promotion or None)
        items.append((item, barcodes))
    if problems:
        raise ImportFileError(source, problems)
    return items


def import_shoppers_file(admin: RetailerAdmin, path: Path) -> int:
    """`jwo shoppers import`: parse the whole file, then upsert it; returns the rows loaded."""
    return admin.upsert_shoppers(parse_shoppers(read_records(path), str(path)))


def import_catalog_file(admin: RetailerAdmin, path: Path) -> int:
    """`jwo catalog import`: parse the whole file, then upsert it; returns the items loaded."""
    return admin.upsert_catalog(parse_catalog(read_records(path), str(path)))
