"""Warehouse tables written by reconciliation (SPEC §5, §7): trip states, their history, bad debts, alerts and
the daily settlement. Registered in `contracts.tables.TABLES` like every other table.

Current-state tables (`trip_reconciliation`, `bad_debts`, `daily_settlement`) are append-only in the lake: a
change writes a new version of the row and the view keeps the newest one per key (`latest_by`).
"""

from __future__ import annotations

from contracts.tables import Column, Kind, Table

S, M, Q, T, N = Kind.STRING, Kind.MONEY, Kind.QUANTITY, Kind.TIMESTAMP, Kind.INT


def _c(name: str, kind: Kind = Kind.STRING, doc: str = "") -> Column:
    return Column(name, kind, doc)


TRIP_STATES = (
    "matched",
    "amount_mismatch",
    "declined",
    "partially_captured",
    "missing_capture",
    "missing_from_report",
    "orphan_payment",
    "empty_cart_cancelled",
    "pending",
)
"""Every trip is in exactly one of these."""

TRIP_RECONCILIATION = Table(
    "trip_reconciliation",
    (
        _c("shopping_trip_id", S, "Amazon's shopping trip id, as in purchases and payment_events"),
        _c("store_id", S),
        _c("state", S, " | ".join(TRIP_STATES)),
        _c("purchase_total", M, "what we sold: purchases.total (0 for an empty cart or an orphan payment)"),
        _c("authorized", M, "the latest approved authorization (pre-auth at entry, or the adjustment)"),
        _c("captured", M, "Σ CaptureApproved amounts"),
        _c("declined", M, "the largest declined amount (authorization or capture)"),
        _c("reported", M, "Σ line_total of the trip's Intra-Day report lines (null when none arrived)"),
        _c("outstanding", M, "purchase_total - captured - pending_amount (negative: captured more than sold)"),
        _c("pending_amount", M, "what is not yet due: purchase_total - captured while the trip is pending, else 0"),
        _c("currency", S),
        _c("entry_method", S, "FINANCIAL (card entry) | SCAN_CODE (app entry)"),
        _c("shopper_id", S, "our shopper id for app entry, else null"),
        _c("reason", S, "why the trip is in its state, in words"),
        _c("business_date", T, "midnight UTC of the trip's business day (the UTC day of its end time)"),
        _c("subtotal", M, "purchases.subtotal"),
        _c("promotions", M, "purchases.promotions"),
        _c("tax", M, "purchases.tax"),
        _c("first_seen_at", T, "the earliest fact about the trip (partition column)"),
        _c("updated_at", T, "when reconciliation last changed this row; the newest version wins"),
    ),
    key=("shopping_trip_id",),
    partition_by="first_seen_at",
    doc="One current row per shopping trip: its reconciliation state and amounts.",
    latest_by=("updated_at",),
)

TRIP_RECONCILIATION_HISTORY = Table(
    "trip_reconciliation_history",
    (
        _c("shopping_trip_id", S),
        _c("from_state", S, "the state before (null for the trip's first state)"),
        _c("to_state", S),
        _c("cause", S, "what moved the trip: the new fact or the deadline that passed"),
        _c("changed_at", T, "when reconciliation recorded the transition (partition column)"),
    ),
    key=("shopping_trip_id", "changed_at"),
    partition_by="changed_at",
    doc="One row per state transition of a trip; a re-run that changes nothing adds nothing.",
)

BAD_DEBTS = Table(
    "bad_debts",
    (
        _c("debt_id", S, "derived from the trip id: one debt per trip"),
        _c("shopping_trip_id", S),
        _c("shopper_id", S, "our shopper id (app entry), else null: only app-entry debts block at the gate"),
        _c("store_id", S),
        _c(
            "amount",
            M,
            "the balance: while OPEN, the trip's outstanding amount less `paid`; once closed, the balance it closed at",
        ),
        _c("currency", S),
        _c("reason", S, "declined authorization | declined capture | partial capture | expired pre-auth"),
        _c("status", S, "OPEN | SETTLED | WRITTEN_OFF"),
        _c("opened_at", T, "partition column"),
        _c("settled_at", T, "when it was settled or written off"),
        _c(
            "paid",
            M,
            "Σ of the payoffs recorded on it (`jwo debts settle`); null in rows written before this column: zero",
        ),
        _c("updated_at", T, "when this version was written; the newest version wins"),
    ),
    key=("debt_id",),
    partition_by="opened_at",
    doc="One current row per bad debt.",
    latest_by=("updated_at",),
)

ALERTS = Table(
    "alerts",
    (
        _c(
            "alert_id",
            S,
            "derived from (trip, decline subtype): the same decline never alerts twice; a threshold alert's from "
            "(kind, key, the time the breach started)",
        ),
        _c(
            "kind",
            S,
            "decline_authorization | decline_capture | decline_rate | dead_letters | outbox_age | reconcile_backlog",
        ),
        _c("severity", S, "info | warning | critical"),
        _c("store_id", S, "the store (empty for a threshold alert that concerns no store)"),
        _c("shopping_trip_id", S, "the trip (empty for a threshold alert)"),
        _c("message", S),
        _c("created_at", T, "the time of the first event that raised it, or of the check (partition column)"),
    ),
    key=("alert_id",),
    partition_by="created_at",
    doc="One row per alert raised.",
)

DAILY_SETTLEMENT = Table(
    "daily_settlement",
    (
        _c("business_date", Kind.DATE, "the UTC day of the trips' end time"),
        _c("store_id", S),
        _c("trips", N, "trips with a purchase that day (orphan payments are exceptions, not trips)"),
        _c("gross", M, "Σ purchases.subtotal"),
        _c("promotions", M, "Σ purchases.promotions"),
        _c("tax", M, "Σ purchases.tax"),
        _c("net_sales", M, "gross - promotions + tax: Σ purchases.total"),
        _c("authorized", M),
        _c("captured", M),
        _c("declined", M),
        _c("refunded", M, "Σ refunds Amazon accepted (refunds.status REFUNDED) of this day's trips in this store"),
        _c("outstanding", M),
        _c("matched_share", Q, "matched trips / trips with a non-empty cart, 4 places (1 when there are none)"),
        _c("exceptions", N, "trips in a state finance must work through"),
        _c("exception_trips", S, "their shopping trip ids, sorted, comma-separated"),
        _c("day_start", T, "midnight UTC of business_date (partition column)"),
        _c("computed_at", T, "when this version was written; the newest version wins"),
    ),
    key=("business_date", "store_id"),
    partition_by="day_start",
    doc="One current row per store and business day.",
    latest_by=("computed_at",),
)

RECONCILE_TABLES: tuple[Table, ...] = (
    TRIP_RECONCILIATION,
    TRIP_RECONCILIATION_HISTORY,
    BAD_DEBTS,
    ALERTS,
    DAILY_SETTLEMENT,
)
