"""Warehouse table schemas (SPEC §7), defined once and used by readers, writers and tests.

Money is DECIMAL(18,4), times are UTC timestamps, ids are strings. Each table names the key that
makes a row unique (redelivery overwrites rather than duplicates) and the timestamp column its
Parquet files are partitioned by (`date=YYYY-MM-DD`).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

import pyarrow as pa


class Kind(StrEnum):
    STRING = "string"
    MONEY = "money"
    QUANTITY = "quantity"
    TIMESTAMP = "timestamp"
    DATE = "date"
    INT = "int"
    BOOL = "bool"


_ARROW: dict[Kind, pa.DataType] = {
    Kind.STRING: pa.string(),
    Kind.MONEY: pa.decimal128(18, 4),
    Kind.QUANTITY: pa.decimal128(18, 4),
    Kind.TIMESTAMP: pa.timestamp("us", tz="UTC"),
    Kind.DATE: pa.date32(),
    Kind.INT: pa.int64(),
    Kind.BOOL: pa.bool_(),
}

_DUCKDB: dict[Kind, str] = {
    Kind.STRING: "VARCHAR",
    Kind.MONEY: "DECIMAL(18,4)",
    Kind.QUANTITY: "DECIMAL(18,4)",
    Kind.TIMESTAMP: "TIMESTAMPTZ",
    Kind.DATE: "DATE",
    Kind.INT: "BIGINT",
    Kind.BOOL: "BOOLEAN",
}


@dataclass(frozen=True)
class Column:
    name: str
    kind: Kind
    doc: str = ""

    @property
    def arrow_type(self) -> pa.DataType:
        return _ARROW[self.kind]

    @property
    def duckdb_type(self) -> str:
        return _DUCKDB[self.kind]


@dataclass(frozen=True)
class Table:
    name: str
    columns: tuple[Column, ...]
    key: tuple[str, ...]
    partition_by: str
    doc: str = ""
    latest_by: tuple[str, ...] = ()
    """Columns that decide which of two rows with the same key wins, newest (largest) first, before the
    deterministic tie-break on the other columns. Empty: the row that sorts first on the non-key columns wins."""

    def __post_init__(self) -> None:
        names = {c.name for c in self.columns}
        unknown = [n for n in (*self.key, self.partition_by, *self.latest_by) if n not in names]
        if unknown:
            raise ValueError(f"table {self.name} names unknown columns: {', '.join(unknown)}")

    @property
    def column_names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns)

    def arrow_schema(self) -> pa.Schema:
        return pa.schema([pa.field(c.name, c.arrow_type) for c in self.columns])

    def column(self, name: str) -> Column:
        for c in self.columns:
            if c.name == name:
                return c
        raise KeyError(f"{self.name} has no column {name}")


def _c(name: str, kind: Kind = Kind.STRING, doc: str = "") -> Column:
    return Column(name, kind, doc)


S, M, Q, T, N, B = Kind.STRING, Kind.MONEY, Kind.QUANTITY, Kind.TIMESTAMP, Kind.INT, Kind.BOOL

AUTH_EVENTS = Table(
    "auth_events",
    (
        _c("event_id", S, "idempotency key of the identity call (scan id + time, authEvent.id or requestId)"),
        _c("request_id", S, "Amazon's requestId of the first accepted attempt"),
        _c("endpoint", S, "scan | identity_keys | shopper"),
        _c("store_id", S),
        _c("occurred_at", T, "when the shopper scanned (Amazon's timestamp)"),
        _c("received_at", T, "when our connector accepted the call"),
        _c("location", S, "ENTRY | EXIT | MANUAL_IN_STORE (null for GetShopper)"),
        _c("channel", S, "OPTICAL | RADIO | CONTACT | QR_CODE | PHONE_NUMBER"),
        _c("outcome", S, "ACCEPT | REJECT | NOT_FOUND"),
        _c("http_status", N, "status we answered"),
        _c("visitor_type", S),
        _c("shopper_id", S, "our shopper id; never the raw identity key"),
    ),
    key=("event_id",),
    partition_by="occurred_at",
    doc="One row per accepted identity call.",
)

PURCHASES = Table(
    "purchases",
    (
        _c("shopping_trip_id", S, "Amazon's idempotentShoppingTripId"),
        _c("purchase_id", S, "our purchase id ('' for an empty cart)"),
        _c("store_id", S),
        _c("entry_method", S, "FINANCIAL (card entry) | SCAN_CODE (app entry)"),
        _c("shopper_id", S, "our shopper id for app entry, else null"),
        _c("start_time", T),
        _c("end_time", T),
        _c("currency", S),
        _c("subtotal", M, "Σ amount"),
        _c("promotions", M, "Σ discount"),
        _c("tax", M, "Σ tax"),
        _c("total", M, "Σ line_total"),
        _c("line_count", N),
        _c("unknown_item_count", N),
        _c("created_at", T),
    ),
    key=("shopping_trip_id",),
    partition_by="end_time",
    doc="One row per shopping trip (cart) the Ordering Connector accepted.",
)

PURCHASE_LINES = Table(
    "purchase_lines",
    (
        _c("shopping_trip_id", S),
        _c("line_no", N, "1-based position in the cart"),
        _c("line_item_id", S),
        _c("item_id", S, "SKU or scanned code as Amazon sent it"),
        _c("item_type", S, "SKU | SCANCODE"),
        _c("sku", S, "resolved catalog SKU, null when unknown"),
        _c("quantity", Q),
        _c("unit", S),
        _c("unit_price", M),
        _c("amount", M),
        _c("discount", M),
        _c("tax", M),
        _c("line_total", M),
        _c("known", B, "false when the item is not in the store's catalog"),
        _c("end_time", T, "the trip's end time (partition column)"),
    ),
    key=("shopping_trip_id", "line_no"),
    partition_by="end_time",
    doc="One row per cart line.",
)

BAD_CARTS = Table(
    "bad_carts",
    (
        _c("shopping_trip_id", S),
        _c("store_id", S),
        _c("item_id", S),
        _c("item_type", S),
        _c("reason", S),
        _c("created_at", T),
    ),
    key=("shopping_trip_id", "item_id", "item_type"),
    partition_by="created_at",
    doc="One row per unknown item in a cart.",
)

CANCEL_CHARGES = Table(
    "cancel_charges",
    (
        _c("shopping_trip_id", S),
        _c("store_id", S),
        _c("requested_at", T),
        _c("reason", S),
    ),
    key=("shopping_trip_id",),
    partition_by="requested_at",
    doc="One row per empty cart whose pre-authorization must be cancelled.",
)

CART_EVENTS = Table(
    "cart_events",
    (
        _c("event_id", S, "EventBridge event id (envelope `id`); a redelivery carries the same id"),
        _c("line_no", N, "1-based position in the event's cartItems"),
        _c("shopping_trip_id", S, "Amazon's shopping trip id, as in purchases"),
        _c("store_id", S),
        _c("event_time", T, "detail.eventTime"),
        _c("merchant_sku", S, "merchantSku: our SKU (the item id as scanned when our catalog lacks it)"),
        _c("quantity", Q, "quantityValue (units, or kg for weighed goods)"),
        _c("price", M, "priceValue: the line's price before promotions (quantity x list price)"),
        _c("tax", M, "taxValue: the line's tax (null when not sent)"),
        _c("list_price", M, "listPriceValue: the unit list price (null when not sent)"),
        _c("promotion_total", M, "Σ promotionInfos[].amount (0 without promotions)"),
    ),
    key=("event_id", "line_no"),
    partition_by="event_time",
    doc="One row per line of an EventBridge CART event.",
)

PAYMENT_EVENTS = Table(
    "payment_events",
    (
        _c("event_id", S, "EventBridge event id (envelope `id`); a redelivery carries the same id"),
        _c("shopping_trip_id", S, "Amazon's shopping trip id, as in purchases"),
        _c("store_id", S),
        _c("event_time", T, "detail.eventTime"),
        _c("sub_type", S, "AuthorizationApproved | AuthorizationDeclined | CaptureApproved | CaptureDeclined"),
        _c("amount", M, "amount.value"),
        _c("currency", S, "amount.currencyCode"),
        _c("brand", S, "card brand as sent (VISA, MASTERCARD, ...)"),
        _c("card_last_four", S, "the card's last four digits, never more (null when fewer were sent)"),
        _c("reconciliation_id", S, "Amazon's reconciliationId"),
        _c("status", S, "as sent (APPROVED, DECLINED, ...)"),
    ),
    key=("event_id",),
    partition_by="event_time",
    doc="One row per EventBridge PAYMENT event of a known subType (others go to unknown_events).",
)

UNKNOWN_EVENTS = Table(
    "unknown_events",
    (
        _c("source", S, "the queue or feed it came from"),
        _c("message_id", S, "our message id or the EventBridge event id; the SQS message id of an undecodable body"),
        _c("type", S, "the type or detail-type we did not recognise, PAYMENT/<subType>, or undecodable"),
        _c("received_at", T),
        _c("body", S, "the raw body (Event Feed bodies: card numbers cut to their last four digits)"),
        _c("reason", S),
    ),
    key=("source", "message_id"),
    partition_by="received_at",
    doc="Messages we could not type; kept, never dropped.",
)

INTRADAY_ORDER_LINES = Table(
    "intraday_order_lines",
    (
        _c("order_id", S, "Amazon's order id"),
        _c("shopping_trip_id", S, "Amazon's shopping trip id, as in purchases"),
        _c("store_id", S),
        _c("order_time", T, "when the order was placed (partition column)"),
        _c("last_updated", T, "when Amazon last changed this line; the newest version wins"),
        _c("line_item_id", S, "Amazon's line item id, unique within the trip"),
        _c("merchant_sku", S, "our SKU as Amazon reports it"),
        _c("item_name", S),
        _c("quantity", Q, "units, or kg for weighed goods"),
        _c("unit_price", M),
        _c("list_price", M),
        _c("promotion_amount", M),
        _c("tax_amount", M),
        _c("line_total", M),
        _c("currency", S),
        _c("payment_status", S, "as reported (pending, settled, ...)"),
        _c("card_brand", S),
        _c("card_last_four", S, "the card's last four digits as reported"),
        _c("reconciliation_id", S, "Amazon's reconciliationId"),
        _c("source_key", S, "the report file this version came from (s3://bucket/key, or a local path)"),
        _c("file_published_at", T, "when that file was published (S3 event time); breaks last_updated ties"),
    ),
    key=("shopping_trip_id", "line_item_id"),
    partition_by="order_time",
    doc="The latest version of every order line of the Intra-Day S3 reports (SPEC §3.1).",
    latest_by=("last_updated", "file_published_at"),
)

QUARANTINE = Table(
    "quarantine",
    (
        _c("source_key", S, "the report file (s3://bucket/key, or a local path)"),
        _c("etag", S, "the file version's ETag (a file re-published under the same key has a new one)"),
        _c("line_no", N, "1-based physical line in the file where the row starts (the header is line 1)"),
        _c("reason", S, "what was wrong: bad number, bad date, missing key, wrong field count"),
        _c("raw", S, "the row's text as it was in the file"),
        _c("quarantined_at", T, "when the file was applied"),
    ),
    key=("source_key", "etag", "line_no"),
    partition_by="quarantined_at",
    doc="One row per report row that could not be loaded; the rest of its file loads.",
)

INTRADAY_FILES = Table(
    "intraday_files",
    (
        _c("bucket", S, "S3 bucket ('' for a local file)"),
        _c("key", S, "S3 key, or the local file's path"),
        _c("etag", S, "S3 ETag without quotes (a local file: the SHA-256 of its content)"),
        _c("published_at", T, "when the file was published (S3 event time, LastModified, or file mtime)"),
        _c("rows", N, "data rows in the file"),
        _c("quarantined", N, "of which quarantined"),
        _c("content_sha256", S, "SHA-256 of the file as stored (its name in the lake's _landing folder)"),
        _c("applied_at", T, "when the file was applied"),
    ),
    key=("bucket", "key", "etag"),
    partition_by="published_at",
    doc="The ledger of applied report files: one row per file version, written in the same batch as its rows.",
)

TABLES: dict[str, Table] = {
    t.name: t
    for t in (
        AUTH_EVENTS,
        PURCHASES,
        PURCHASE_LINES,
        BAD_CARTS,
        CANCEL_CHARGES,
        CART_EVENTS,
        PAYMENT_EVENTS,
        UNKNOWN_EVENTS,
        INTRADAY_ORDER_LINES,
        QUARANTINE,
        INTRADAY_FILES,
    )
}

# Reconciliation's tables live in their own module; registered here so TABLES holds every table.
from contracts.reconcile_tables import RECONCILE_TABLES  # noqa: E402

TABLES.update((t.name, t) for t in RECONCILE_TABLES)

# Refunds (the payment side we drive) likewise.
from contracts.payment_tables import PAYMENT_TABLES  # noqa: E402

TABLES.update((t.name, t) for t in PAYMENT_TABLES)
