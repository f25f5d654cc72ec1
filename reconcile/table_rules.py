"""The matching rules of `reconcile.rules` over whole tables: Arrow in, Arrow out, computed by an in-memory DuckDB.

`rules.py` is the readable reference, one trip at a time with `Decimal`s and dataclasses; this module applies
exactly the same rules to every trip of a run at once (a million trips in about a second), and the job uses it for
every run. `tests/unit/test_reconcile_table_rules.py` generates random facts and checks that both give identical
results: the state, every amount and the reason text of each trip, the debts, the decline alerts and the daily
settlement.

Money stays exact: DECIMAL(18,4) in (the warehouse's type), DECIMAL(38,4) sums (a trip's captured sum back to
DECIMAL(18,4), its column's type: one that does not fit fails), never a float. A reason quotes an
amount as `str(Decimal)` would quote the warehouse's value (four places; `0.00` for a sum of no events, as
`sum(..., ZERO)` gives). Pure: values in, values out; the clock's reading (`now`) is passed in, and the DuckDB
connection is a calculator that reads nothing but the tables it is given.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, fields
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

from contracts.reconcile_tables import TRIP_RECONCILIATION
from contracts.reconcile_tables import TRIP_RECONCILIATION_HISTORY as HISTORY
from contracts.tables import Table
from reconcile.rules import (
    AUTH_APPROVED,
    AUTH_DECLINED,
    CAPTURE_APPROVED,
    CAPTURE_DECLINED,
    EXCEPTION_STATES,
    Alert,
    Debt,
    PaymentEvent,
    Purchase,
    RuleSettings,
    Settlement,
    TripFacts,
    TripResult,
    _distinct,
)

MONEY = pa.decimal128(18, 4)
TIME = pa.timestamp("us", tz="UTC")
_MAX_TOLERANCE_PLACES = 10

PURCHASES_SCHEMA = pa.schema(
    [
        ("shopping_trip_id", pa.string()),
        ("store_id", pa.string()),
        ("entry_method", pa.string()),
        ("shopper_id", pa.string()),
        ("currency", pa.string()),
        ("subtotal", MONEY),
        ("promotions", MONEY),
        ("tax", MONEY),
        ("total", MONEY),
        ("line_count", pa.int64()),
        ("end_time", TIME),
    ]
)
"""One row per trip with a purchase (`purchases` as the view shows it)."""
PAYMENTS_SCHEMA = pa.schema(
    [
        ("event_id", pa.string()),
        ("shopping_trip_id", pa.string()),
        ("store_id", pa.string()),
        ("sub_type", pa.string()),
        ("amount", MONEY),
        ("currency", pa.string()),
        ("event_time", TIME),
    ]
)
"""PAYMENT events, each once per trip: a redelivered event is removed where the facts are read (the view keeps one
row per event id; `facts_of` applies `rules`' own de-duplication)."""
REPORTED_SCHEMA = pa.schema([("shopping_trip_id", pa.string()), ("reported", MONEY), ("reported_at", TIME)])
"""Per trip with report lines: Σ line_total of its latest lines, and the newest `last_updated`."""
CANCELLED_SCHEMA = pa.schema([("shopping_trip_id", pa.string()), ("cancelled_at", TIME)])
"""Per empty cart whose pre-authorization cancel was requested."""

RESULT_SCHEMA = pa.schema(
    [
        ("shopping_trip_id", pa.string()),
        ("store_id", pa.string()),
        ("state", pa.string()),
        ("purchase_total", MONEY),
        ("authorized", MONEY),
        ("captured", MONEY),
        ("declined", MONEY),
        ("reported", MONEY),
        ("outstanding", MONEY),
        ("pending_amount", MONEY),
        ("currency", pa.string()),
        ("entry_method", pa.string()),
        ("shopper_id", pa.string()),
        ("reason", pa.string()),
        ("business_date", pa.date32()),
        ("subtotal", MONEY),
        ("promotions", MONEY),
        ("tax", MONEY),
        ("first_seen_at", TIME),
        ("debt_reason", pa.string()),
    ]
)
"""`rules.TripResult`, one row per trip."""

STATE_SCHEMA = pa.schema([f for f in RESULT_SCHEMA if f.name != "debt_reason"])
"""A trip's stored state (`trip_reconciliation` less `updated_at`, `business_date` as a date)."""

DEBT_SCHEMA = pa.schema(
    [
        ("debt_id", pa.string()),
        ("shopping_trip_id", pa.string()),
        ("shopper_id", pa.string()),
        ("store_id", pa.string()),
        ("amount", MONEY),
        ("currency", pa.string()),
        ("reason", pa.string()),
        ("status", pa.string()),
        ("opened_at", TIME),
        ("settled_at", TIME),
        ("paid", MONEY),
    ]
)
"""`rules.Debt`, one row per trip (`bad_debts` as the view shows it; `paid` may be null in rows written before the
column existed, read as zero)."""

ALERT_SCHEMA = pa.schema(
    [
        ("alert_id", pa.string()),
        ("kind", pa.string()),
        ("severity", pa.string()),
        ("store_id", pa.string()),
        ("shopping_trip_id", pa.string()),
        ("message", pa.string()),
        ("created_at", TIME),
    ]
)
"""`rules.Alert` (the `alerts` table's columns)."""

SETTLEMENT_SCHEMA = pa.schema(
    [
        ("business_date", pa.date32()),
        ("store_id", pa.string()),
        ("trips", pa.int64()),
        ("gross", MONEY),
        ("promotions", MONEY),
        ("tax", MONEY),
        ("net_sales", MONEY),
        ("authorized", MONEY),
        ("captured", MONEY),
        ("declined", MONEY),
        ("refunded", MONEY),
        ("outstanding", MONEY),
        ("matched_share", MONEY),
        ("exceptions", pa.int64()),
        ("exception_trips", pa.string()),
    ]
)
"""`rules.Settlement`, `exception_trips` comma-separated (the `daily_settlement` columns less the times)."""
REFUNDED_SCHEMA = pa.schema([("business_date", pa.date32()), ("store_id", pa.string()), ("refunded", MONEY)])
"""Refunds issued per business day and store (`settle`'s `refunded`)."""


@dataclass(frozen=True)
class Facts:
    """What is known about the trips of one run, as tables (the schemas above)."""

    purchases: pa.Table
    payments: pa.Table
    reported: pa.Table
    cancelled: pa.Table

    def __post_init__(self) -> None:
        for name, schema in (
            ("purchases", PURCHASES_SCHEMA),
            ("payments", PAYMENTS_SCHEMA),
            ("reported", REPORTED_SCHEMA),
            ("cancelled", CANCELLED_SCHEMA),
        ):
            table: pa.Table = getattr(self, name)
            if not table.schema.equals(schema):
                raise ValueError(f"facts.{name} must have the schema {schema}, got {table.schema}")


def empty(schema: pa.Schema) -> pa.Table:
    return schema.empty_table()


@contextmanager
def calculator(**tables: pa.Table) -> Iterator[duckdb.DuckDBPyConnection]:
    """An in-memory DuckDB (UTC session) that sees the given Arrow tables under their names, and nothing else."""
    con = duckdb.connect(":memory:")
    try:
        con.execute("SET TimeZone = 'UTC'")
        con.execute("SET enable_external_access = false")
        for name, table in tables.items():
            con.register(name, table)
        yield con
    finally:
        con.close()


def arrow(con: duckdb.DuckDBPyConnection, sql: str, schema: pa.Schema) -> pa.Table:
    """The query's rows cast to `schema` (a cast that would lose digits fails rather than rounds)."""
    table = con.sql(sql).to_arrow_table()
    return table.cast(schema)


def _decimal_literal(value: Decimal, places: int, width: int = 38) -> str:
    if value.as_tuple().exponent < -places:  # type: ignore[operator]
        raise ValueError(f"{value} has more than {places} decimal places")
    return f"CAST('{value}' AS DECIMAL({width},{places}))"


def _tolerance_literal(value: Decimal) -> str:
    """The amount tolerance as SQL: of the warehouse's money type, DECIMAL(18,4), when it fits (four places at most,
    below 10^14), so that comparing it with the amounts stays in 64-bit decimals (against a DECIMAL(38,10), every
    comparison of a million trips' amounts is in 128 bits: ≈ 0.2-0.3 CPU s); else of up to ten places."""
    if value.as_tuple().exponent >= -4 and abs(value) < 10**14:  # type: ignore[operator]
        return _decimal_literal(value, 4, 18)
    return _decimal_literal(value, _MAX_TOLERANCE_PLACES)


def _interval(delta: timedelta) -> str:
    micros = (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds
    return f"to_microseconds({micros}::BIGINT)"


def _timestamp(moment: datetime) -> str:
    if moment.utcoffset() is None:
        raise ValueError(f"{moment!r} must be timezone-aware")
    return f"'{moment.astimezone(UTC).isoformat()}'::TIMESTAMPTZ"


def _iso(expr: str) -> str:
    """SQL for `datetime.isoformat()` of a UTC TIMESTAMPTZ: microseconds only when there are any."""
    return (
        f"(strftime({expr}, '%Y-%m-%dT%H:%M:%S') || "
        f"CASE WHEN epoch_us({expr}) % 1000000 <> 0 THEN '.' || strftime({expr}, '%f') ELSE '' END || '+00:00')"
    )


def utc_date(expr: str) -> str:
    """SQL for the UTC day of a TIMESTAMPTZ, as `CAST(expr AS DATE)` gives it in a UTC session, without the cast's
    time-zone conversion (ICU's calendar, ≈ 40 ns a value: 0.25 s for three million): the microseconds since the
    epoch as a timestamp without a zone, whose date is the UTC date."""
    return f"CAST(make_timestamp(epoch_us({expr})) AS DATE)"


def utc_midnight(expr: str) -> str:
    """SQL for the TIMESTAMPTZ of a DATE's midnight UTC, as `CAST(expr AS TIMESTAMPTZ)` gives it in a UTC session,
    without the cast's time-zone conversion: the date's seconds since the epoch (a whole number) as a time."""
    return f"to_timestamp(epoch({expr}))"


def on_utc_day(expr: str, day: date) -> str:
    """SQL that is true where a TIMESTAMPTZ falls on the UTC `day` (as `CAST(expr AS DATE) = day` in a UTC session),
    false where it does not, null where it is null: two comparisons with the day's bounds, no conversion."""
    start = datetime(day.year, day.month, day.day, tzinfo=UTC)
    return f"({expr} >= {_timestamp(start)} AND {expr} < {_timestamp(start + timedelta(days=1))})"


def _text(expr: str) -> str:
    """SQL for `str(Decimal)` of a four-place decimal."""
    return f"CAST({expr} AS VARCHAR)"


def paid_sql() -> str:
    """Per trip of `payments`, what the rules read of its events: their count, the authorized amount, the captured
    sum and count, the largest decline and the number of declines, the latest decline's subtype and amount, the
    first event's time, and (for an orphan, over tables named payments and purchased) the first event's store and
    currency."""
    declines = f"('{AUTH_DECLINED}', '{CAPTURE_DECLINED}')"
    order = "(event_time, event_id, sub_type, amount, store_id, currency)"
    return f"""
WITH quick AS (
    -- One pass without orderings: exact wherever at most one event competes for a pick (the authorization, the
    -- latest decline), where the pick is the one event (event_time is never null: a PAYMENT event's time is
    -- required, and the lake's partition column). Where several compete: `exact`.
    SELECT shopping_trip_id,
        count(*) AS events,
        count(*) FILTER (WHERE sub_type = '{AUTH_APPROVED}') AS auths,
        max(amount) FILTER (WHERE sub_type = '{AUTH_APPROVED}') AS authorized,
        sum(amount) FILTER (WHERE sub_type = '{CAPTURE_APPROVED}') AS captured,
        count(*) FILTER (WHERE sub_type = '{CAPTURE_APPROVED}') AS captures,
        max(amount) FILTER (WHERE sub_type IN {declines}) AS declined,
        count(*) FILTER (WHERE sub_type IN {declines}) AS decline_events,
        count(*) FILTER (WHERE sub_type = '{AUTH_DECLINED}') AS auth_declines,
        min(event_time) AS first_event
    FROM payments GROUP BY shopping_trip_id
), contested AS (
    -- Trips where several events compete for a pick, and orphans (whose store and currency are their first
    -- event's): the picks again, with the reference's full orderings.
    SELECT shopping_trip_id FROM quick q
    WHERE q.auths > 1 OR q.decline_events > 1
        OR NOT EXISTS (SELECT 1 FROM purchased p WHERE p.shopping_trip_id = q.shopping_trip_id)
), exact AS (
    SELECT shopping_trip_id,
        arg_max(amount, {order}) FILTER (WHERE sub_type = '{AUTH_APPROVED}') AS authorized,
        arg_max(sub_type, (event_time, event_id)) FILTER (WHERE sub_type IN {declines}) AS latest_decline,
        arg_max(amount, (event_time, event_id)) FILTER (WHERE sub_type IN {declines}) AS latest_decline_amount,
        arg_min(store_id, {order}) AS first_store,
        arg_min(currency, {order}) AS first_currency
    FROM payments SEMI JOIN contested USING (shopping_trip_id) GROUP BY shopping_trip_id
)
SELECT q.shopping_trip_id, q.events,
    coalesce(CASE WHEN e.shopping_trip_id IS NULL THEN q.authorized ELSE e.authorized END, 0) AS authorized,
    -- The column's type: the rules' arithmetic and the reasons' text stay in 64-bit decimals.
    CAST(coalesce(q.captured, 0) AS DECIMAL(18,4)) AS captured,
    q.captures, coalesce(q.declined, 0) AS declined, q.decline_events,
    CASE WHEN e.shopping_trip_id IS NOT NULL THEN e.latest_decline
         WHEN q.auth_declines > 0 THEN '{AUTH_DECLINED}'
         WHEN q.decline_events > 0 THEN '{CAPTURE_DECLINED}' END AS latest_decline,
    CASE WHEN e.shopping_trip_id IS NULL THEN q.declined ELSE e.latest_decline_amount END AS latest_decline_amount,
    q.first_event, e.first_store, e.first_currency
FROM quick q LEFT JOIN exact e USING (shopping_trip_id)
"""


def reconcile_sql(settings: RuleSettings, now: datetime, paid: str | None = None) -> str:
    """The query behind `reconcile_trips`, over tables named purchased, payments, reported and cancelled; with
    `paid`, over the relation of that name (`paid_sql` of the payments) instead of the payments."""
    tol = _tolerance_literal(settings.amount_tolerance)
    now_sql = _timestamp(now)
    preauth, grace = _interval(settings.preauth_window), _interval(settings.report_grace)
    check_reports = "true" if settings.check_reports else "false"
    captured_text = f"CASE WHEN a.captures > 0 THEN {_text('a.captured')} ELSE '0.00' END"
    agg = f"agg AS ({paid_sql()}), " if paid is None else ""
    return f"""
WITH {agg}trips AS (
    SELECT coalesce(p.shopping_trip_id, a.shopping_trip_id) AS shopping_trip_id,
        p.shopping_trip_id IS NOT NULL AS sold,
        p.store_id, p.entry_method, p.shopper_id, p.currency, p.subtotal, p.promotions, p.tax, p.total, p.line_count,
        p.end_time,
        coalesce(a.events, 0) AS events, coalesce(a.authorized, 0) AS authorized,
        coalesce(a.captured, 0) AS captured, coalesce(a.captures, 0) AS captures,
        coalesce(a.declined, 0) AS declined, coalesce(a.decline_events, 0) AS decline_events,
        a.latest_decline, a.latest_decline_amount, a.first_event, a.first_store, a.first_currency,
        r.reported, c.cancelled_at,
        p.end_time + {preauth} AS capture_due, p.end_time + {grace} AS report_due
    FROM purchased p
    FULL OUTER JOIN {paid or "agg"} a ON a.shopping_trip_id = p.shopping_trip_id
    LEFT JOIN reported r ON r.shopping_trip_id = coalesce(p.shopping_trip_id, a.shopping_trip_id)
    LEFT JOIN cancelled c ON c.shopping_trip_id = coalesce(p.shopping_trip_id, a.shopping_trip_id)
), decided AS (
    SELECT p.*,
        CASE
            WHEN NOT p.sold THEN 'orphan'
            WHEN p.line_count = 0 OR p.total = 0 THEN
                CASE WHEN p.captured > {tol} THEN 'empty_captured'
                     WHEN p.cancelled_at IS NOT NULL THEN 'empty_cancelled' ELSE 'empty_uncancelled' END
            WHEN p.captured > p.total + {tol} THEN 'over_captured'
            WHEN p.decline_events > 0 AND p.captured < p.total - {tol} THEN 'declined'
            WHEN p.captured > 0 AND p.captured < p.total - {tol} THEN 'partially_captured'
            WHEN p.captured = 0 THEN
                CASE WHEN {now_sql} < p.capture_due THEN 'capture_pending' ELSE 'missing_capture' END
            WHEN p.reported IS NOT NULL AND abs(p.reported - p.total) > {tol} THEN 'report_mismatch'
            WHEN p.reported IS NULL AND {check_reports} THEN
                CASE WHEN {now_sql} < p.report_due THEN 'report_pending' ELSE 'missing_from_report' END
            ELSE 'matched'
        END AS rule
    FROM trips p
), stated AS (
    SELECT d.*,
        CASE d.rule
            WHEN 'orphan' THEN 'orphan_payment'
            WHEN 'empty_captured' THEN 'amount_mismatch'
            WHEN 'empty_cancelled' THEN 'empty_cart_cancelled'
            WHEN 'empty_uncancelled' THEN 'empty_cart_cancelled'
            WHEN 'over_captured' THEN 'amount_mismatch'
            WHEN 'report_mismatch' THEN 'amount_mismatch'
            WHEN 'capture_pending' THEN 'pending'
            WHEN 'report_pending' THEN 'pending'
            ELSE d.rule
        END AS state,
        d.rule IN ('capture_pending', 'report_pending') AS is_pending,
        coalesce(d.total, 0) AS sold_total
    FROM decided d
)
SELECT
    a.shopping_trip_id,
    CASE WHEN a.sold THEN a.store_id ELSE a.first_store END AS store_id,
    a.state,
    a.sold_total AS purchase_total,
    a.authorized,
    a.captured,
    a.declined,
    a.reported,
    a.sold_total - a.captured - CASE WHEN a.is_pending THEN a.sold_total - a.captured ELSE 0 END AS outstanding,
    CASE WHEN a.is_pending THEN a.sold_total - a.captured ELSE 0 END AS pending_amount,
    CASE WHEN a.sold THEN a.currency ELSE a.first_currency END AS currency,
    a.entry_method,
    CASE WHEN a.entry_method = 'SCAN_CODE' THEN a.shopper_id END AS shopper_id,
    CASE a.rule
        WHEN 'orphan' THEN CAST(a.events AS VARCHAR) || ' payment event(s) and no purchase'
        WHEN 'empty_captured' THEN 'captured ' || {captured_text} || ' for an empty cart'
        WHEN 'empty_cancelled' THEN 'empty cart; pre-authorization cancelled'
        WHEN 'empty_uncancelled' THEN 'empty cart; no cancel request recorded'
        WHEN 'over_captured' THEN 'captured ' || {captured_text} || ', sold ' || {_text("a.total")}
        WHEN 'declined' THEN a.latest_decline || ' for ' || {_text("a.latest_decline_amount")}
        WHEN 'partially_captured' THEN 'captured ' || {captured_text} || ' of ' || {_text("a.total")}
        WHEN 'capture_pending' THEN 'awaiting capture until ' || {_iso("a.capture_due")}
        WHEN 'missing_capture' THEN
            CASE WHEN a.authorized <> 0 THEN 'pre-authorization of ' || {_text("a.authorized")} || ' expired'
                 ELSE 'no authorization or capture' END
            || '; no capture by ' || {_iso("a.capture_due")}
        WHEN 'report_mismatch' THEN 'reported ' || {_text("a.reported")} || ', sold ' || {_text("a.total")}
        WHEN 'report_pending' THEN 'captured; awaiting the Intra-Day report until '
            || {_iso("a.report_due")}
        WHEN 'missing_from_report' THEN 'captured ' || {captured_text} || '; in no Intra-Day report by '
            || {_iso("a.report_due")}
        ELSE 'captured ' || {captured_text}
            || CASE WHEN a.reported IS NOT NULL AND a.reported <> 0 THEN ', reported ' || {_text("a.reported")}
                    ELSE '' END
    END AS reason,
    {utc_date("CASE WHEN a.sold THEN a.end_time ELSE a.first_event END")} AS business_date,
    coalesce(a.subtotal, 0) AS subtotal,
    coalesce(a.promotions, 0) AS promotions,
    coalesce(a.tax, 0) AS tax,
    least(a.end_time, a.first_event) AS first_seen_at,
    CASE a.rule
        WHEN 'declined' THEN
            CASE WHEN a.latest_decline = '{AUTH_DECLINED}' THEN 'declined authorization' ELSE 'declined capture' END
        WHEN 'partially_captured' THEN 'partial capture'
        WHEN 'missing_capture' THEN 'expired pre-auth'
    END AS debt_reason
FROM stated a
"""


def reconcile_trips(facts: Facts, settings: RuleSettings, now: datetime) -> pa.Table:
    """`rules.reconcile_trip` for every trip with a purchase or a payment event: one row per trip (RESULT_SCHEMA)."""
    with calculator(
        purchased=facts.purchases, payments=facts.payments, reported=facts.reported, cancelled=facts.cancelled
    ) as con:
        return arrow(con, reconcile_sql(settings, now), RESULT_SCHEMA)


DECLINE_FIRSTS_SQL = f"""
SELECT shopping_trip_id, sub_type,
    arg_min({{'event_time': event_time, 'amount': amount, 'currency': currency, 'store_id': store_id}},
        (event_time, event_id, sub_type, amount, store_id, currency)) AS e
FROM payments WHERE sub_type IN ('{AUTH_DECLINED}', '{CAPTURE_DECLINED}')
GROUP BY shopping_trip_id, sub_type ORDER BY shopping_trip_id, sub_type
"""
"""The first event of each (trip, decline subtype) among `payments`: `e` holds its time, amount, currency, store."""


def _said(expr: str) -> str:
    """SQL for a value as an f-string shows it (`str`; a decimal as `_text`, None as 'None')."""
    return f"coalesce(CAST({expr} AS VARCHAR), 'None')"


DECLINE_ALERTS_SQL = f"""
SELECT shopping_trip_id, sub_type,
    CASE WHEN sub_type = '{AUTH_DECLINED}' THEN 'decline_authorization' ELSE 'decline_capture' END AS kind,
    'warning' AS severity, e.store_id AS store_id,
    {_said("sub_type")} || ' of ' || {_said("e.amount")} || ' ' || {_said("e.currency")} || ' for trip '
        || {_said("shopping_trip_id")} || ' in store ' || {_said("e.store_id")} AS message,
    e.event_time AS created_at
FROM ({DECLINE_FIRSTS_SQL})
"""
"""`rules.decline_alert` of the first event of each (trip, decline subtype), less the alert id (ALERT_SCHEMA's
other columns, and the subtype)."""


def decline_alerts(payments: pa.Table) -> pa.Table:
    """`rules.decline_alerts`: one alert per (trip, decline subtype), from the first such event (ALERT_SCHEMA)."""
    with calculator(payments=payments) as con:
        return _alerts(con.sql(DECLINE_ALERTS_SQL).to_arrow_table(), known=set())


def _alerts(firsts: pa.Table, known: set[str]) -> pa.Table:
    """The decline alerts of `firsts` (DECLINE_ALERTS_SQL's rows, in (trip, subtype) order) whose id is not in
    `known` (ALERT_SCHEMA): built by DuckDB, only the ids (UUIDv5) in Python."""
    trips, sub_types = firsts.column("shopping_trip_id").to_pylist(), firsts.column("sub_type").to_pylist()
    ids = uuid5s(_NAMESPACE, [f"alert|{trip}|{sub_type}" for trip, sub_type in zip(trips, sub_types, strict=True)])
    alerts = firsts.drop_columns(["sub_type"]).add_column(0, "alert_id", pa.array(ids, pa.string()))
    alerts = alerts.select(ALERT_SCHEMA.names).cast(ALERT_SCHEMA)
    return alerts.filter(pa.array([i not in known for i in ids], pa.bool_())) if known else alerts


_NAMESPACE = uuid.UUID("6f1c8a52-3a5e-4f7e-9a0c-2f6f4b1d7e10")
"""`rules`' namespace of debt and alert ids."""
_VARIANT = {f"{n:x}": f"{0x8 | n & 0x3:x}" for n in range(16)}


def uuid5s(namespace: uuid.UUID, names: Sequence[str]) -> list[str]:
    """`str(uuid.uuid5(namespace, name))` of each name, without a `uuid.UUID` per name (a run opens tens of thousands
    of debts: 0.23 s in `uuid.uuid5` for 26k): the SHA-1 of the namespace's bytes and the name, version 5 and the
    RFC 4122 variant set in its hex digits."""
    base = hashlib.sha1(namespace.bytes, usedforsecurity=False)
    ids = []
    for name in names:
        sha = base.copy()
        sha.update(name.encode())
        h = sha.hexdigest()
        ids.append(f"{h[:8]}-{h[8:12]}-5{h[13:16]}-{_VARIANT[h[16]]}{h[17:20]}-{h[20:32]}")
    return ids


def alert_id(shopping_trip_id: str, sub_type: str) -> str:
    """`rules.decline_alert`'s id."""
    return uuid5s(_NAMESPACE, [f"alert|{shopping_trip_id}|{sub_type}"])[0]


@dataclass(frozen=True)
class DebtChanges:
    """`rules.decide_debt` for every trip: the debt rows to write (DEBT_SCHEMA), and which of them open a new debt
    or close an open one (the ledger is told about those)."""

    rows: pa.Table
    opened: pa.Table
    closed: pa.Table


def debts_sql(now: datetime) -> str:
    """`rules.decide_debt` over relations `results` (RESULT_SCHEMA) and `existing` (DEBT_SCHEMA): the debt rows
    that change (a new debt has a null debt_id)."""
    now_sql = _timestamp(now)
    return f"""
            WITH d AS (
                SELECT r.shopping_trip_id, r.shopper_id, r.store_id, r.currency, r.outstanding, r.debt_reason,
                    r.debt_reason IS NOT NULL AND r.outstanding > 0 AS owed,
                    r.outstanding - coalesce(e.paid, 0) AS balance,
                    e.debt_id AS old_id, e.shopper_id AS old_shopper, e.store_id AS old_store, e.amount AS old_amount,
                    e.currency AS old_currency, e.reason AS old_reason, e.status AS old_status,
                    e.opened_at AS old_opened, e.settled_at AS old_settled, coalesce(e.paid, 0) AS old_paid
                FROM results r LEFT JOIN existing e ON e.shopping_trip_id = r.shopping_trip_id
            ), o AS (
                -- open: owed, and (for a debt that exists) not covered by its payoffs
                SELECT d.*, owed AND (old_id IS NULL OR balance > 0) AS open FROM d
            )
            SELECT old_id AS debt_id, shopping_trip_id,
                CASE WHEN old_id IS NULL THEN shopper_id ELSE old_shopper END AS shopper_id,
                CASE WHEN old_id IS NULL THEN store_id ELSE old_store END AS store_id,
                CASE WHEN open THEN balance ELSE old_amount END AS amount,
                CASE WHEN old_id IS NULL THEN currency ELSE old_currency END AS currency,
                CASE WHEN open THEN debt_reason ELSE old_reason END AS reason,
                CASE WHEN open THEN 'OPEN' ELSE 'SETTLED' END AS status,
                CASE WHEN old_id IS NULL THEN {now_sql} ELSE old_opened END AS opened_at,
                CASE WHEN open THEN old_settled ELSE {now_sql} END AS settled_at,
                old_paid AS paid
            FROM o
            WHERE (old_id IS NULL AND open)
               OR (old_status = 'OPEN' AND NOT open)
               OR (old_status = 'OPEN' AND open AND (old_amount <> balance OR old_reason <> debt_reason))
            ORDER BY shopping_trip_id
            """


def decide_debts(results: pa.Table, existing: pa.Table, now: datetime) -> DebtChanges:
    """`rules.decide_debt` for every trip of `results` against its current debt in `existing` (DEBT_SCHEMA)."""
    with calculator(results=results, existing=existing) as con:
        return _debt_changes(arrow(con, debts_sql(now), DEBT_SCHEMA))


def _debt_changes(changes: pa.Table) -> DebtChanges:
    trips = changes.column("shopping_trip_id").to_pylist()
    old_ids = changes.column("debt_id").to_pylist()
    new = [old is None for old in old_ids]
    fresh = iter(uuid5s(_NAMESPACE, [f"debt|{trip}" for trip, n in zip(trips, new, strict=True) if n]))
    ids = [next(fresh) if old is None else old for old in old_ids]  # `rules.debt_id` of the new debts
    rows = changes.set_column(0, DEBT_SCHEMA.field("debt_id"), pa.array(ids, pa.string()))
    closing = [not n and status != "OPEN" for n, status in zip(new, rows.column("status").to_pylist(), strict=True)]
    return DebtChanges(rows, rows.filter(pa.array(new, pa.bool_())), rows.filter(pa.array(closing, pa.bool_())))


def settle_sql() -> str:
    """`rules.settle` over relations `trips` (RESULT_SCHEMA: all of each day's trips) and `refunded`
    (REFUNDED_SCHEMA: zero where it has no row)."""
    exceptions = ", ".join(f"'{s}'" for s in sorted(EXCEPTION_STATES))
    return f"""
            WITH g AS (
                SELECT business_date, store_id,
                    count(*) FILTER (WHERE state <> 'orphan_payment') AS trips,
                    count(*) FILTER (WHERE state NOT IN ('orphan_payment', 'empty_cart_cancelled')) AS carts,
                    count(*) FILTER (WHERE state = 'matched') AS matched,
                    coalesce(sum(subtotal) FILTER (WHERE state <> 'orphan_payment'), 0) AS gross,
                    coalesce(sum(promotions) FILTER (WHERE state <> 'orphan_payment'), 0) AS promotions,
                    coalesce(sum(tax) FILTER (WHERE state <> 'orphan_payment'), 0) AS tax,
                    coalesce(sum(purchase_total) FILTER (WHERE state <> 'orphan_payment'), 0) AS net_sales,
                    sum(authorized) AS authorized,
                    sum(captured) AS captured,
                    sum(declined) AS declined,
                    sum(outstanding) AS outstanding,
                    count(*) FILTER (WHERE state IN ({exceptions})) AS exceptions,
                    coalesce(string_agg(shopping_trip_id, ',' ORDER BY shopping_trip_id)
                        FILTER (WHERE state IN ({exceptions})), '') AS exception_trips
                FROM trips GROUP BY business_date, store_id
            ), s AS (
                SELECT g.*, (matched * 10000) // nullif(carts, 0) AS q, (matched * 10000) % nullif(carts, 0) AS r FROM g
            )
            SELECT s.business_date, s.store_id, s.trips, s.gross, s.promotions, s.tax, s.net_sales, s.authorized,
                s.captured, s.declined, coalesce(f.refunded, 0) AS refunded, s.outstanding,
                CASE WHEN s.carts = 0 THEN 1
                     ELSE CAST(s.q + CASE WHEN 2 * s.r > s.carts OR (2 * s.r = s.carts AND s.q % 2 = 1) THEN 1 ELSE 0
                                      END AS DECIMAL(38,0)) * CAST('0.0001' AS DECIMAL(18,4))
                END AS matched_share,
                s.exceptions, s.exception_trips
            FROM s LEFT JOIN refunded f ON f.business_date = s.business_date AND f.store_id = s.store_id
            ORDER BY s.business_date, s.store_id
            """


def settle(trips: pa.Table, refunded: pa.Table | None = None) -> pa.Table:
    """`rules.settle`: one row per (business date, store) of `trips` (RESULT_SCHEMA; all of each day's trips), with
    `refunded` (REFUNDED_SCHEMA) joined in, zero where it has no row."""
    with calculator(trips=trips, refunded=empty(REFUNDED_SCHEMA) if refunded is None else refunded) as con:
        return arrow(con, settle_sql(), SETTLEMENT_SCHEMA)


_OUTCOME = tuple(f.name for f in STATE_SCHEMA if f.name not in ("shopping_trip_id", "first_seen_at"))
"""What `TripResult.same_outcome` compares."""


@dataclass(frozen=True)
class Outcome:
    """What a run changes: the rows to write and the debts to tell the ledger about."""

    states: dict[str, int]
    """Trips looked at, per state."""
    trip_rows: pa.Table
    """`trip_reconciliation` rows of the trips whose outcome changed (or that are new)."""
    history_rows: pa.Table
    """`trip_reconciliation_history` rows of the trips whose state changed (or that are new)."""
    debts: DebtChanges
    alerts: pa.Table
    """Decline alerts not raised before (ALERT_SCHEMA)."""
    settlements: pa.Table
    """Settlements that changed (SETTLEMENT_SCHEMA)."""
    digest: str
    """A hash of the trip and history rows (independent of their order)."""

    @property
    def trips(self) -> int:
        return sum(self.states.values())


INPUTS = (
    "purchased, payments, reported, cancelled: the facts of the trips in scope (the schemas above); "
    "current_trips (STATE_SCHEMA): at least the current rows of those trips and of every trip of their business "
    "days; current_debts (DEBT_SCHEMA) and known_alerts (alert_id) of those trips; current_settlements "
    "(SETTLEMENT_SCHEMA) of those days; refunded (REFUNDED_SCHEMA)"
)


def run(
    con: duckdb.DuckDBPyConnection,
    settings: RuleSettings,
    now: datetime,
    ready: Callable[[Table, pa.Table], object] = lambda table, rows: None,
) -> Outcome:
    """The whole run inside `con`, which holds the relations of INPUTS: results, what changed against the
    current rows (a known trip keeps its first_seen_at; `TripResult.same_outcome` decides a change), debts,
    new decline alerts, and the settlements of the results' days that changed. Only the rows that change leave
    DuckDB. The trip and history rows (the large ones) are out first, each handed to `ready` as soon as it is
    (the job starts writing them), before the debts, alerts and settlements are computed. `payments`, when a
    temp table, is dropped once its part is computed (a workspace serves one run)."""
    now_sql = _timestamp(now)
    same = " AND ".join(f"o.{c} IS NOT DISTINCT FROM r.{c}" for c in _OUTCOME)
    trip_columns = ", ".join(
        f"{utc_midnight('business_date')} AS business_date" if name == "business_date"
        else f"{now_sql} AS updated_at" if name == "updated_at" else name
        for name in TRIP_RECONCILIATION.column_names
    )  # fmt: skip
    results = ", ".join(RESULT_SCHEMA.names)
    # The payments' part first, and the decline alerts' first events: the payments (the largest input) are then
    # dropped, so the joins and the table of every trip's outcome fit in memory instead of spilling.
    con.execute(f"CREATE TEMP TABLE _paid AS {paid_sql()}")
    declines = con.sql(DECLINE_ALERTS_SQL).to_arrow_table()
    _drop_table(con, "payments")
    con.execute(
        f"""
        CREATE TEMP TABLE _joined AS
        WITH r AS ({reconcile_sql(settings, now, "_paid")})
        SELECT r.* REPLACE (coalesce(o.first_seen_at, r.first_seen_at) AS first_seen_at),
            o.shopping_trip_id IS NULL AS new, o.state AS old_state, o.reason AS old_reason,
            o.shopping_trip_id IS NOT NULL AND {same} AS same
        FROM r LEFT JOIN current_trips o ON o.shopping_trip_id = r.shopping_trip_id
        """
    )
    con.execute("DROP TABLE _paid")
    con.execute(f"CREATE TEMP VIEW results AS SELECT {results} FROM _joined")
    con.execute(
        f"""
        CREATE TEMP VIEW trips AS
        SELECT {results} FROM _joined
        UNION ALL
        SELECT *, NULL AS debt_reason FROM current_trips o
        WHERE o.business_date IN (SELECT DISTINCT business_date FROM _joined)
          AND o.shopping_trip_id NOT IN (SELECT shopping_trip_id FROM _joined)
        """
    )
    con.execute(f"CREATE TEMP VIEW _trip_rows AS SELECT {trip_columns} FROM _joined WHERE NOT same")
    con.execute(
        f"""
        CREATE TEMP VIEW _history_rows AS
        SELECT shopping_trip_id, old_state AS from_state, state AS to_state,
            CASE WHEN new THEN reason ELSE old_reason || ' → ' || reason END AS cause, {now_sql} AS changed_at
        FROM _joined WHERE new OR old_state <> state
        """
    )
    con.execute("CREATE TEMP VIEW existing AS SELECT * FROM current_debts")
    trip_rows, trip_hash = _day_by_day(
        con, "_trip_rows", TRIP_RECONCILIATION.partition_by, TRIP_RECONCILIATION.arrow_schema()
    )
    ready(TRIP_RECONCILIATION, trip_rows)
    history_rows, history_hash = hashed_arrow(con, "_history_rows", "true", HISTORY.arrow_schema())
    ready(HISTORY, history_rows)
    digest = f"{trip_rows.num_rows}:{trip_hash}|{history_rows.num_rows}:{history_hash}"
    states = con.sql("SELECT state, count(*) FROM _joined GROUP BY state ORDER BY state").fetchall()
    known = set(con.sql("SELECT alert_id FROM known_alerts").to_arrow_table().column(0).to_pylist())
    return Outcome(
        states={str(state): int(count) for state, count in states},
        trip_rows=trip_rows,
        history_rows=history_rows,
        debts=_debt_changes(arrow(con, debts_sql(now), DEBT_SCHEMA)),
        alerts=_alerts(declines, known),
        settlements=changed_settlements(con),
        digest=digest,
    )


def _drop_table(con: duckdb.DuckDBPyConnection, name: str) -> None:
    """Drop relation `name` if it is a temp table (the lake's workspace copies the facts into DuckDB); a registered
    Arrow table (the fakes') is the caller's memory, left as it is."""
    found = con.execute("SELECT count(*) FROM duckdb_tables() WHERE temporary AND table_name = ?", [name]).fetchall()
    if found[0][0]:
        con.execute(f"DROP TABLE {name}")


def _day_by_day(con: duckdb.DuckDBPyConnection, relation: str, column: str, schema: pa.Schema) -> tuple[pa.Table, int]:
    """`hashed_arrow` of the relation's rows grouped by the UTC day of `column`, oldest first (null last), each
    day's rows in the relation's order: the lake publishes each day's file as a slice of it instead of copying the
    rows out day by day (a full day's trip rows span two days of `first_seen_at`: ≈ 1.9 s for 1M rows)."""
    found = f"SELECT DISTINCT {utc_date(column)} FROM {relation} ORDER BY 1 NULLS LAST"
    days: list[date | None] = [d for (d,) in con.sql(found).fetchall()]
    if len(days) < 2:
        return hashed_arrow(con, relation, "true", schema)
    wheres = [f"{column} IS NULL" if d is None else on_utc_day(column, d) for d in days]
    parts = [hashed_arrow(con, relation, where, schema) for where in wheres]
    return pa.concat_tables(rows for rows, _ in parts), sum(hashed for _, hashed in parts)


_ROW_HASH = "_row_hash"


def hashed_arrow(con: duckdb.DuckDBPyConnection, relation: str, where: str, schema: pa.Schema) -> tuple[pa.Table, int]:
    """The relation's rows where `where` holds, cast to `schema`, and the sum of their hashes as DuckDB computes
    `sum(hash(r)::HUGEINT)` of each row `r` (0 for no row; independent of the rows' order): hashed as they are
    fetched, so the relation (a view) is evaluated once for both."""
    table = con.sql(f"SELECT r.*, hash(r) AS {_ROW_HASH} FROM {relation} r WHERE {where}").to_arrow_table()
    hashes = table.column(_ROW_HASH)  # UBIGINT: summed in halves, so no sum overflows 64 bits below 2^32 rows
    low: int = pc.sum(pc.bit_wise_and(hashes, pa.scalar(0xFFFFFFFF, pa.uint64()))).as_py() or 0
    high: int = pc.sum(pc.shift_right(hashes, pa.scalar(32, pa.uint64()))).as_py() or 0
    return table.drop_columns([_ROW_HASH]).cast(schema), (high << 32) + low


def changed_settlements(con: duckdb.DuckDBPyConnection) -> pa.Table:
    """The settlements of relation `trips` (RESULT_SCHEMA, all of each day's trips) with `refunded` joined in, where
    they differ from `current_settlements` (SETTLEMENT_SCHEMA)."""
    same = " AND ".join(f"o.{c} IS NOT DISTINCT FROM s.{c}" for c in SETTLEMENT_SCHEMA.names)
    return arrow(
        con,
        f"SELECT * FROM ({settle_sql()}) s WHERE NOT EXISTS "
        f"(SELECT 1 FROM current_settlements o WHERE {same}) ORDER BY business_date, store_id",
        SETTLEMENT_SCHEMA,
    )


# --------------------------------------------------------------------------- between dataclasses and tables


def facts_of(trips: Iterable[TripFacts]) -> Facts:
    """The tables of per-trip facts (a trip's purchase, each of its payment events as given, its report sum)."""
    purchases: list[Purchase] = []
    payments: list[PaymentEvent] = []
    reported: list[dict[str, object]] = []
    cancelled: list[dict[str, object]] = []
    for trip in trips:
        if trip.purchase is not None:
            purchases.append(trip.purchase)
        payments += _distinct(trip.payments)
        if trip.reported is not None:
            reported.append(
                {"shopping_trip_id": trip.shopping_trip_id, "reported": trip.reported, "reported_at": trip.reported_at}
            )
        if trip.cancelled_at is not None:
            cancelled.append({"shopping_trip_id": trip.shopping_trip_id, "cancelled_at": trip.cancelled_at})
    return Facts(
        purchases=table_of(purchases, PURCHASES_SCHEMA),
        payments=table_of(payments, PAYMENTS_SCHEMA),
        reported=pa.Table.from_pylist(reported, schema=REPORTED_SCHEMA),
        cancelled=pa.Table.from_pylist(cancelled, schema=CANCELLED_SCHEMA),
    )


def table_of(items: Sequence[object], schema: pa.Schema) -> pa.Table:
    """Dataclass instances as a table: one column per schema field, read from the attribute of that name."""
    return pa.table({name: [getattr(item, name) for item in items] for name in schema.names}, schema=schema)


def trip_results(table: pa.Table) -> list[TripResult]:
    return [TripResult(**row) for row in table.to_pylist()]


def debts_of(table: pa.Table) -> list[Debt]:
    columns = [table.column(f.name).to_pylist() for f in fields(Debt)]  # a column at a time: no row dicts
    return [Debt(*values) for values in zip(*columns, strict=True)]


def alerts_of(table: pa.Table) -> list[Alert]:
    return [Alert(**row) for row in table.to_pylist()]


def settlements_of(table: pa.Table) -> list[Settlement]:
    out = []
    for row in table.to_pylist():
        trips = str(row.pop("exception_trips"))
        out.append(Settlement(**row, exception_trips=tuple(t for t in trips.split(",") if t)))
    return out


def results_table(results: Sequence[TripResult]) -> pa.Table:
    return table_of(results, RESULT_SCHEMA)
