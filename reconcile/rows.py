"""Results ↔ warehouse rows (`contracts.reconcile_tables`). Pure."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, cast

from reconcile.rules import Alert, Debt, DebtStatus, State, TripResult

Row = dict[str, object]


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
        "paid": debt.paid,
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
        paid=_money(row.get("paid") or Decimal("0.00")),
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
