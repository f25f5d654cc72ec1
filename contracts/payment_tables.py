"""Warehouse tables of the payment side we drive ourselves (SPEC §4, §7): refunds sent to Amazon's Payment Service.
Registered in `contracts.tables.TABLES` like every other table.

`refunds` is append-only in the lake like the other current-state tables: a refund's status change (Amazon answered)
writes a new version of its row and the view keeps the newest one per key (`latest_by`).
"""

from __future__ import annotations

from contracts.tables import Column, Kind, Table

S, M, T, D = Kind.STRING, Kind.MONEY, Kind.TIMESTAMP, Kind.DATE

REFUND_STATUSES = ("REQUESTED", "REFUNDED", "DECLINED", "FAILED")
"""REQUESTED: recorded and queued for Amazon; REFUNDED: Amazon accepted it; DECLINED: Amazon answered with a
DECLINED outcome; FAILED: Amazon refused the request (400 errorMsg) or it could not be delivered at all."""

_ID_DOC = (
    "the refundRequestId sent to Amazon (its idempotency key): derived from trip, amount, reason and the optional "
    "refund key, so issuing the same refund twice is one refund"
)
_DAY_DOC = (
    "the trip's business day (UTC day of its end time): the daily_settlement row whose `refunded` counts this refund"
)

REFUNDS = Table(
    "refunds",
    (
        Column(
            "refund_id",
            S,
            "the refundRequestId sent to Amazon (its idempotency key): derived from trip, amount, "
            "reason and the optional refund key, so issuing the same refund twice is one refund",
        ),
        Column("shopping_trip_id", S),
        Column("store_id", S),
        Column("amount", M, "amount refunded (requested)"),
        Column("currency", S),
        Column("reason_code", S, "refundReasonCode sent to Amazon"),
        Column("status", S, " | ".join(REFUND_STATUSES)),
        Column(
            "business_date",
            D,
            "the trip's business day (UTC day of its end time): the daily_settlement row whose "
            "`refunded` counts this refund",
        ),
        Column("requested_at", T, "when the refund was issued (partition column)"),
        Column("answered_at", T, "when Amazon's final answer (or the give-up) was recorded; null while REQUESTED"),
        Column("message", S, "Amazon's outcome or errorMsg, or why delivery was given up"),
        Column("updated_at", T, "when this version was written; the newest version wins"),
    ),
    key=("refund_id",),
    partition_by="requested_at",
    doc="One current row per refund issued with `jwo refunds issue`.",
    latest_by=("updated_at",),
)

PAYMENT_TABLES: tuple[Table, ...] = (REFUNDS,)
