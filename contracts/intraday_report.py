"""Amazon's Intra-Day report file (SPEC §3.1): the working column layout the simulator writes and the
ingester expects by default. Each report column is also the name of its `intraday_order_lines` column."""

from __future__ import annotations

REPORT_COLUMNS: tuple[str, ...] = (
    "order_id",
    "shopping_trip_id",
    "store_id",
    "order_time",
    "last_updated",
    "line_item_id",
    "merchant_sku",
    "item_name",
    "quantity",
    "unit_price",
    "list_price",
    "promotion_amount",
    "tax_amount",
    "line_total",
    "currency",
    "payment_status",
    "card_brand",
    "card_last_four",
    "reconciliation_id",
)
