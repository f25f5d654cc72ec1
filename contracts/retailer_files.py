"""The retailer's own files (SPEC §2.5.1): what `jwo shoppers import` and `jwo catalog import` read.

CSV with a header row (or a JSON list of objects with these keys); column order does not matter.
"""

from __future__ import annotations

SHOPPER_COLUMNS = ("shopper_id", "identity_key", "visitor_type", "phone_number", "status")
CATALOG_COLUMNS = (
    "store_id",
    "sku",
    "name",
    "barcodes",
    "unit_price",
    "currency",
    "tax_rate",
    "promotion_percent",
)
BARCODE_SEPARATOR = "|"
"""Several barcodes of one item share the `barcodes` cell, separated by this."""
