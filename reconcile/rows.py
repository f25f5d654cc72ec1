"""Results ↔ warehouse rows (`contracts.reconcile_tables`). Pure."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, date, datetime, time
from decimal import Decimal
from typing import Any, cast

from reconcile.rules import Alert, Debt, DebtStatus, Settlement, State, TripResult

Row = dict[str, object]


def _day_start(day: date) -> datetime:
    return datetime.combine(day, time(), tzinfo=UTC)


def trip_row(trip: TripResult, updated_at: datetime) -> Row:
    return {
        "shopping_trip_id": trip.shopping_trip_id,
        "store_id": trip.store_id,
        "state": trip.state,
        "purchase_total": trip.purchase_total,
        "authorized": trip.authorized,
        "captured": trip.captured,
        "declined": trip.declined,
        "reported": trip.reported,
        "outstanding": trip.outstanding,
        "pending_amount": trip.pending_amount,
        "currency": trip.currency,
        "entry_method": trip.entry_method,
        "shopper_id": trip.shopper_id,
        "reason": trip.reason,
        "business_date": _day_start(trip.business_date),
        "subtotal": trip.subtotal,
        "promotions": trip.promotions,
        "tax": trip.tax,
        "first_seen_at": trip.first_seen_at,
        "updated_at": updated_at,
    }


def _money(value: object) -> Decimal:
    """A DECIMAL(18,4) read back: normalised to the cent scale the rules produce, so equal amounts compare equal."""
    amount = cast(Decimal, value)
    return amount.quantize(Decimal("0.01")) if amount == amount.quantize(Decimal("0.01")) else amount


def _opt_money(value: object) -> Decimal | None:
    return None if value is None else _money(value)


def trip_from_row(row: Mapping[str, Any]) -> TripResult:
    return TripResult(
        shopping_trip_id=row["shopping_trip_id"],
        store_id=row["store_id"],
        state=cast(State, row["state"]),
        purchase_total=_money(row["purchase_total"]),
        authorized=_money(row["authorized"]),
        captured=_money(row["captured"]),
        declined=_money(row["declined"]),
        reported=_opt_money(row["reported"]),
        outstanding=_money(row["outstanding"]),
        pending_amount=_money(row["pending_amount"]),
        currency=row["currency"],
        entry_method=row["entry_method"],
        shopper_id=row["shopper_id"],
        reason=row["reason"],
        business_date=cast(datetime, row["business_date"]).astimezone(UTC).date(),
        subtotal=_money(row["subtotal"]),
        promotions=_money(row["promotions"]),
        tax=_money(row["tax"]),
        first_seen_at=row["first_seen_at"],
    )


def history_row(trip_id: str, from_state: str | None, to_state: str, cause: str, at: datetime) -> Row:
    return {
        "shopping_trip_id": trip_id,
        "from_state": from_state,
        "to_state": to_state,
        "cause": cause,
        "changed_at": at,
    }


def debt_row(debt: Debt, updated_at: datetime) -> Row:
    return {
        "debt_id": debt.debt_id,
        "shopping_trip_id": debt.shopping_trip_id,
        "shopper_id": debt.shopper_id,
        "store_id": debt.store_id,
        "amount": debt.amount,
        "currency": debt.currency,
        "reason": debt.reason,
        "status": debt.status,
        "opened_at": debt.opened_at,
        "settled_at": debt.settled_at,
        "updated_at": updated_at,
    }


def debt_from_row(row: Mapping[str, Any]) -> Debt:
    return Debt(
        debt_id=row["debt_id"],
        shopping_trip_id=row["shopping_trip_id"],
        shopper_id=row["shopper_id"],
        store_id=row["store_id"],
        amount=_money(row["amount"]),
        currency=row["currency"],
        reason=row["reason"],
        status=cast(DebtStatus, row["status"]),
        opened_at=row["opened_at"],
        settled_at=row["settled_at"],
    )


def alert_row(alert: Alert) -> Row:
    return {
        "alert_id": alert.alert_id,
        "kind": alert.kind,
        "severity": alert.severity,
        "store_id": alert.store_id,
        "shopping_trip_id": alert.shopping_trip_id,
        "message": alert.message,
        "created_at": alert.created_at,
    }


def settlement_row(s: Settlement, computed_at: datetime) -> Row:
    return {
        "business_date": s.business_date,
        "store_id": s.store_id,
        "trips": s.trips,
        "gross": s.gross,
        "promotions": s.promotions,
        "tax": s.tax,
        "net_sales": s.net_sales,
        "authorized": s.authorized,
        "captured": s.captured,
        "declined": s.declined,
        "refunded": s.refunded,
        "outstanding": s.outstanding,
        "matched_share": s.matched_share,
        "exceptions": s.exceptions,
        "exception_trips": ",".join(s.exception_trips),
        "day_start": s.day_start,
        "computed_at": computed_at,
    }


def settlement_from_row(row: Mapping[str, Any]) -> Settlement:
    trips_text = cast(str, row["exception_trips"] or "")
    return Settlement(
        business_date=row["business_date"],
        store_id=row["store_id"],
        trips=int(row["trips"]),
        gross=_money(row["gross"]),
        promotions=_money(row["promotions"]),
        tax=_money(row["tax"]),
        net_sales=_money(row["net_sales"]),
        authorized=_money(row["authorized"]),
        captured=_money(row["captured"]),
        declined=_money(row["declined"]),
        refunded=_money(row["refunded"]),
        outstanding=_money(row["outstanding"]),
        matched_share=cast(Decimal, row["matched_share"]),
        exceptions=int(row["exceptions"]),
        exception_trips=tuple(t for t in trips_text.split(",") if t),
    )
