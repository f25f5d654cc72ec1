"""A scenario day for reconciliation (SPEC §5) and its answer key: the facts the warehouse would hold (rows of
`purchases`, `payment_events`, `cancel_charges`, `intraday_order_lines`) with every anomaly injected, and the
state and amounts each trip must end in once every deadline has passed.

Anomalies: declines at entry (AuthorizationDeclined) and at capture, partial capture, amount mismatch (over-
capture, and a report that disagrees), missing capture (an expired pre-auth), a payment without a purchase,
missing report rows, empty carts, and duplicated events (the same event id twice). Written from SPEC §5, not
from `reconcile/`, so the two check each other. Pure and seeded: the same config gives the same day.
"""

from __future__ import annotations

import random
import uuid
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal

from pydantic import BaseModel, ConfigDict

Row = dict[str, object]

ANOMALIES: tuple[str, ...] = (
    "matched",
    "declined_at_entry",
    "declined_at_capture",
    "partial_capture",
    "over_capture",
    "report_mismatch",
    "missing_capture",
    "missing_report",
    "orphan_payment",
    "empty_cart",
)
EXPECTED_STATE: dict[str, str] = {
    "matched": "matched",
    "declined_at_entry": "declined",
    "declined_at_capture": "declined",
    "partial_capture": "partially_captured",
    "over_capture": "amount_mismatch",
    "report_mismatch": "amount_mismatch",
    "missing_capture": "missing_capture",
    "missing_report": "missing_from_report",
    "orphan_payment": "orphan_payment",
    "empty_cart": "empty_cart_cancelled",
}
PREAUTH = Decimal("50.00")


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ExpectedTrip(_Frozen):
    shopping_trip_id: str
    store_id: str
    anomaly: str
    state: str
    purchase_total: Decimal
    captured: Decimal
    outstanding: Decimal
    shopper_id: str | None
    debt: bool
    decline_alerts: int


class SettlementKey(_Frozen):
    business_date: date
    as_of: datetime
    """Reconciled at this time, every deadline (pre-auth window, report grace) has passed."""
    trips: tuple[ExpectedTrip, ...]

    def totals(self, store_id: str) -> dict[str, Decimal]:
        trips = [t for t in self.trips if t.store_id == store_id]
        return {
            "net_sales": sum((t.purchase_total for t in trips), Decimal("0.00")),
            "captured": sum((t.captured for t in trips), Decimal("0.00")),
            "outstanding": sum((t.outstanding for t in trips), Decimal("0.00")),
        }


@dataclass(frozen=True)
class SettlementDayConfig:
    seed: int = 7
    business_date: date = date(2025, 3, 14)
    stores: tuple[str, ...] = ("S1", "S2")
    per_anomaly: int = 2
    """Trips of each anomaly per store."""
    duplicate_share: float = 0.2
    """Of payment events: delivered twice (same event id)."""


@dataclass
class SettlementDay:
    purchases: list[Row] = field(default_factory=list)
    payment_events: list[Row] = field(default_factory=list)
    cancel_charges: list[Row] = field(default_factory=list)
    intraday_order_lines: list[Row] = field(default_factory=list)
    key: SettlementKey | None = None

    def tables(self) -> dict[str, list[Row]]:
        return {
            "purchases": self.purchases,
            "payment_events": self.payment_events,
            "cancel_charges": self.cancel_charges,
            "intraday_order_lines": self.intraday_order_lines,
        }


def build_settlement_day(config: SettlementDayConfig | None = None) -> SettlementDay:
    config = config or SettlementDayConfig()
    rng = random.Random(f"settlement:{config.seed}")
    day = SettlementDay()
    expected: list[ExpectedTrip] = []
    midnight = datetime.combine(config.business_date, time(), tzinfo=UTC)
    n = 0
    for store in config.stores:
        for anomaly in ANOMALIES:
            for _ in range(config.per_anomaly):
                n += 1
                trip = str(uuid.UUID(int=rng.getrandbits(128), version=4))
                app = rng.random() < 0.5
                shopper = f"shopper-{n:04d}" if app else None
                start = midnight + timedelta(hours=8, minutes=rng.randrange(0, 600))
                end = start + timedelta(minutes=rng.randint(2, 30))
                cents = rng.randint(100, 20_000)
                empty = anomaly == "empty_cart"
                total = Decimal(0 if empty else cents).scaleb(-2).quantize(Decimal("0.01"))
                tax = (total * Decimal("0.08")).quantize(Decimal("0.01"))
                subtotal = total - tax
                events: list[tuple[str, Decimal, datetime]] = [("AuthorizationApproved", PREAUTH, start)]
                settle_at = end + timedelta(minutes=rng.randint(1, 30))
                captured = Decimal("0.00")
                alerts = 0
                match anomaly:
                    case "matched" | "missing_report" | "report_mismatch":
                        events.append(("CaptureApproved", total, settle_at))
                        captured = total
                    case "declined_at_entry":
                        events.append(("AuthorizationDeclined", total, settle_at))
                        alerts = 1
                    case "declined_at_capture":
                        events.append(("CaptureDeclined", total, settle_at))
                        alerts = 1
                    case "partial_capture":
                        captured = (total / 2).quantize(Decimal("0.01"))
                        events.append(("CaptureApproved", captured, settle_at))
                    case "over_capture":
                        captured = total + Decimal("1.00")
                        events.append(("CaptureApproved", captured, settle_at))
                    case "orphan_payment":
                        captured = total
                        events.append(("CaptureApproved", total, settle_at))
                if anomaly != "orphan_payment":
                    day.purchases.append(
                        {
                            "shopping_trip_id": trip,
                            "purchase_id": "" if empty else f"P-{trip[:8]}",
                            "store_id": store,
                            "entry_method": "SCAN_CODE" if app else "FINANCIAL",
                            "shopper_id": shopper,
                            "start_time": start,
                            "end_time": end,
                            "currency": "USD",
                            "subtotal": subtotal,
                            "promotions": Decimal("0.00"),
                            "tax": tax,
                            "total": total,
                            "line_count": 0 if empty else 1,
                            "unknown_item_count": 0,
                            "created_at": end,
                        }
                    )
                if empty:
                    day.cancel_charges.append(
                        {"shopping_trip_id": trip, "store_id": store, "requested_at": end, "reason": "empty cart"}
                    )
                for k, (sub_type, amount, at) in enumerate(events):
                    row: Row = {
                        "event_id": f"{trip}-{k}",
                        "shopping_trip_id": trip,
                        "store_id": store,
                        "event_time": at,
                        "sub_type": sub_type,
                        "amount": amount,
                        "currency": "USD",
                        "brand": "VISA",
                        "card_last_four": "4242",
                        "reconciliation_id": f"R-{trip[:8]}",
                        "status": "DECLINED" if "Declined" in sub_type else "APPROVED",
                    }
                    day.payment_events.append(row)
                    if rng.random() < config.duplicate_share:
                        day.payment_events.append(dict(row))
                if anomaly in ("matched", "report_mismatch", "partial_capture", "over_capture", "declined_at_capture"):
                    reported = total - Decimal("2.00") if anomaly == "report_mismatch" else total
                    day.intraday_order_lines.append(_report_line(trip, store, end, reported))
                purchase_total = Decimal("0.00") if anomaly == "orphan_payment" else total
                state = EXPECTED_STATE[anomaly]
                expected.append(
                    ExpectedTrip(
                        shopping_trip_id=trip,
                        store_id=store,
                        anomaly=anomaly,
                        state=state,
                        purchase_total=purchase_total,
                        captured=captured,
                        outstanding=purchase_total - captured,
                        shopper_id=shopper,
                        debt=state in ("declined", "partially_captured", "missing_capture"),
                        decline_alerts=alerts,
                    )
                )
    rng.shuffle(day.payment_events)
    day.key = SettlementKey(
        business_date=config.business_date, as_of=midnight + timedelta(days=3), trips=tuple(expected)
    )
    return day


def _report_line(trip: str, store: str, end: datetime, total: Decimal) -> Row:
    return {
        "order_id": f"O-{trip[:8]}",
        "shopping_trip_id": trip,
        "store_id": store,
        "order_time": end,
        "last_updated": end + timedelta(minutes=20),
        "line_item_id": "1",
        "merchant_sku": "SKU-1",
        "item_name": "item",
        "quantity": Decimal(1),
        "unit_price": total,
        "list_price": total,
        "promotion_amount": Decimal("0.00"),
        "tax_amount": Decimal("0.00"),
        "line_total": total,
        "currency": "USD",
        "payment_status": "settled",
        "card_brand": "VISA",
        "card_last_four": "4242",
        "reconciliation_id": f"R-{trip[:8]}",
        "source_key": "s3://reports/day.csv",
        "file_published_at": end + timedelta(minutes=30),
    }
