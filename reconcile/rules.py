"""Matching rules (SPEC §5): per-trip facts in, one state with its amounts out. Pure; the clock is passed in.

Per trip: what we sold (the purchase), what the payment side did (PAYMENT events, de-duplicated by event id),
what Amazon reported (Σ of the Intra-Day lines) and whether the empty cart's pre-auth was cancelled. Every trip
lands in exactly one state, and for every trip

    purchase_total = captured + outstanding + pending_amount        (to the cent)

`outstanding` is what the shopper still owes once nothing more is due (negative when more was captured than sold);
`pending_amount` is what is not yet due. The result depends on the set of facts and `now` only, never on the
order the facts arrived in or how often each arrived.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, time, timedelta
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Literal

State = Literal[
    "matched",
    "amount_mismatch",
    "declined",
    "partially_captured",
    "missing_capture",
    "missing_from_report",
    "orphan_payment",
    "empty_cart_cancelled",
    "pending",
]
"""The values of `contracts.reconcile_tables.TRIP_STATES`, as a type (a test keeps the two equal)."""
EXCEPTION_STATES: frozenset[State] = frozenset(
    {"amount_mismatch", "declined", "partially_captured", "missing_capture", "missing_from_report", "orphan_payment"}
)
"""States finance works through; matched, empty_cart_cancelled and pending are not exceptions."""

AUTH_APPROVED = "AuthorizationApproved"
AUTH_DECLINED = "AuthorizationDeclined"
CAPTURE_APPROVED = "CaptureApproved"
CAPTURE_DECLINED = "CaptureDeclined"
DECLINES = (AUTH_DECLINED, CAPTURE_DECLINED)

DebtReason = Literal["declined authorization", "declined capture", "partial capture", "expired pre-auth"]
DebtStatus = Literal["OPEN", "SETTLED", "WRITTEN_OFF"]

ZERO = Decimal("0.00")
CENT = Decimal("0.01")
_SHARE = Decimal("0.0001")
_NAMESPACE = uuid.UUID("6f1c8a52-3a5e-4f7e-9a0c-2f6f4b1d7e10")


def cents(value: Decimal) -> Decimal:
    return value.quantize(CENT, rounding=ROUND_HALF_EVEN)


# --------------------------------------------------------------------------- facts and settings


@dataclass(frozen=True)
class Purchase:
    shopping_trip_id: str
    store_id: str
    entry_method: str
    shopper_id: str | None
    currency: str
    subtotal: Decimal
    promotions: Decimal
    tax: Decimal
    total: Decimal
    line_count: int
    end_time: datetime


@dataclass(frozen=True)
class PaymentEvent:
    event_id: str
    shopping_trip_id: str
    store_id: str
    sub_type: str
    amount: Decimal
    currency: str
    event_time: datetime


@dataclass(frozen=True)
class TripFacts:
    """Everything known about one trip. Payment events may repeat (same event id): they count once."""

    shopping_trip_id: str
    purchase: Purchase | None = None
    payments: tuple[PaymentEvent, ...] = ()
    reported: Decimal | None = None
    """Σ line_total of the trip's latest Intra-Day report lines; None when no line arrived."""
    reported_at: datetime | None = None
    cancelled_at: datetime | None = None
    """When the empty cart's pre-authorization cancel was requested (cancel_charges), if it was."""


@dataclass(frozen=True)
class RuleSettings:
    amount_tolerance: Decimal = Decimal("0.00")
    """A difference up to this much between sold, captured and reported amounts still matches."""
    preauth_window: timedelta = timedelta(hours=24)
    """A trip with a cart but no capture (and no decline) this long after its end: missing capture."""
    report_grace: timedelta = timedelta(hours=2)
    """A captured trip that no Intra-Day report lists this long after its end: missing from the reports."""
    check_reports: bool = True
    """Off when the retailer receives no Intra-Day reports at all (then missing_from_report never happens)."""


# --------------------------------------------------------------------------- results


@dataclass(frozen=True)
class TripResult:
    shopping_trip_id: str
    store_id: str
    state: State
    purchase_total: Decimal
    authorized: Decimal
    captured: Decimal
    declined: Decimal
    reported: Decimal | None
    outstanding: Decimal
    pending_amount: Decimal
    currency: str
    entry_method: str | None
    shopper_id: str | None
    reason: str
    business_date: date
    subtotal: Decimal
    promotions: Decimal
    tax: Decimal
    first_seen_at: datetime
    debt_reason: DebtReason | None = None

    def same_outcome(self, other: TripResult) -> bool:
        """Whether two results say the same thing, ignoring first_seen_at (only the first run sets it) and
        debt_reason (not stored; it follows from state and reason)."""
        return replace(self, first_seen_at=other.first_seen_at, debt_reason=other.debt_reason) == other


def reconcile_trip(facts: TripFacts, settings: RuleSettings, now: datetime) -> TripResult | None:
    """The trip's one state and its amounts, as of `now`. None when there is nothing to reconcile yet
    (no purchase and no payment event)."""
    payments = _distinct(facts.payments)
    purchase = facts.purchase
    if purchase is None and not payments:
        return None
    tol = settings.amount_tolerance
    authorized = _latest_amount(p for p in payments if p.sub_type == AUTH_APPROVED)
    captured = sum((p.amount for p in payments if p.sub_type == CAPTURE_APPROVED), ZERO)
    declines = [p for p in payments if p.sub_type in DECLINES]
    declined = max((p.amount for p in declines), default=ZERO)
    times = [p.event_time for p in payments]
    if purchase is not None:
        times.append(purchase.end_time)
    first_seen = min(times)

    def result(state: State, reason: str, *, pending: bool = False, debt: DebtReason | None = None) -> TripResult:
        total = purchase.total if purchase is not None else ZERO
        pending_amount = total - captured if pending else ZERO
        any_payment = payments[0] if payments else None
        return TripResult(
            shopping_trip_id=facts.shopping_trip_id,
            store_id=purchase.store_id if purchase else (any_payment.store_id if any_payment else ""),
            state=state,
            purchase_total=total,
            authorized=authorized,
            captured=captured,
            declined=declined,
            reported=facts.reported,
            outstanding=total - captured - pending_amount,
            pending_amount=pending_amount,
            currency=purchase.currency if purchase else (any_payment.currency if any_payment else ""),
            entry_method=purchase.entry_method if purchase else None,
            shopper_id=purchase.shopper_id if purchase and purchase.entry_method == "SCAN_CODE" else None,
            reason=reason,
            business_date=(purchase.end_time if purchase else first_seen).astimezone(UTC).date(),
            subtotal=purchase.subtotal if purchase else ZERO,
            promotions=purchase.promotions if purchase else ZERO,
            tax=purchase.tax if purchase else ZERO,
            first_seen_at=first_seen,
            debt_reason=debt,
        )

    if purchase is None:
        return result("orphan_payment", f"{len(payments)} payment event(s) and no purchase")
    total = purchase.total
    if purchase.line_count == 0 or total == ZERO:
        if captured > tol:
            return result("amount_mismatch", f"captured {captured} for an empty cart")
        if facts.cancelled_at is not None:
            return result("empty_cart_cancelled", "empty cart; pre-authorization cancelled")
        return result("empty_cart_cancelled", "empty cart; no cancel request recorded")
    if captured > total + tol:
        return result("amount_mismatch", f"captured {captured}, sold {total}")
    if declines and captured < total - tol:
        latest = max(declines, key=lambda p: (p.event_time, p.event_id))
        debt: DebtReason = "declined authorization" if latest.sub_type == AUTH_DECLINED else "declined capture"
        return result("declined", f"{latest.sub_type} for {latest.amount}", debt=debt)
    if captured > ZERO and captured < total - tol:
        return result("partially_captured", f"captured {captured} of {total}", debt="partial capture")
    if captured == ZERO:
        due = purchase.end_time + settings.preauth_window
        if now < due:
            return result("pending", f"awaiting capture until {due.isoformat()}", pending=True)
        what = f"pre-authorization of {authorized} expired" if authorized else "no authorization or capture"
        return result("missing_capture", f"{what}; no capture by {due.isoformat()}", debt="expired pre-auth")
    # Captured what was sold, within the tolerance: now check what Amazon reported.
    if facts.reported is not None and abs(facts.reported - total) > tol:
        return result("amount_mismatch", f"reported {facts.reported}, sold {total}")
    if facts.reported is None and settings.check_reports:
        due = purchase.end_time + settings.report_grace
        if now < due:
            return result("pending", f"captured; awaiting the Intra-Day report until {due.isoformat()}", pending=True)
        return result("missing_from_report", f"captured {captured}; in no Intra-Day report by {due.isoformat()}")
    return result("matched", f"captured {captured}" + (f", reported {facts.reported}" if facts.reported else ""))


def _distinct(payments: Iterable[PaymentEvent]) -> list[PaymentEvent]:
    """One event per event id (a redelivery is the same event), in a fixed order."""
    by_id: dict[str, PaymentEvent] = {}
    for p in payments:
        kept = by_id.get(p.event_id)
        if kept is None or _order(p) < _order(kept):
            by_id[p.event_id] = p
    return sorted(by_id.values(), key=_order)


def _order(p: PaymentEvent) -> tuple[datetime, str, str, Decimal]:
    return (p.event_time, p.event_id, p.sub_type, p.amount)


def _latest_amount(events: Iterable[PaymentEvent]) -> Decimal:
    latest = max(events, key=_order, default=None)
    return latest.amount if latest is not None else ZERO


# --------------------------------------------------------------------------- bad debts


@dataclass(frozen=True)
class Debt:
    debt_id: str
    shopping_trip_id: str
    shopper_id: str | None
    store_id: str
    amount: Decimal
    currency: str
    reason: str
    status: DebtStatus
    opened_at: datetime
    settled_at: datetime | None = None
    paid: Decimal = ZERO
    """What the shopper paid on it so far (`jwo debts settle`). `amount` is the balance: while the debt is open,
    the trip's outstanding amount less `paid`; once closed, the balance it closed at."""


def debt_id(shopping_trip_id: str) -> str:
    return str(uuid.uuid5(_NAMESPACE, f"debt|{shopping_trip_id}"))


def decide_debt(trip: TripResult, existing: Debt | None, now: datetime) -> Debt | None:
    """The debt row to write for the trip, or None when nothing changes.

    A declined, partially captured or expired trip opens a debt for what is outstanding. An open debt's balance
    follows the outstanding amount less what was paid on it; it is settled when nothing is left to pay (late data
    shows nothing is owed, or the payoffs cover what is). A settled or written-off debt stays closed (finance
    closed it).
    """
    owed = trip.debt_reason is not None and trip.outstanding > ZERO
    if existing is None:
        if not owed or trip.debt_reason is None:
            return None
        return Debt(
            debt_id=debt_id(trip.shopping_trip_id),
            shopping_trip_id=trip.shopping_trip_id,
            shopper_id=trip.shopper_id,
            store_id=trip.store_id,
            amount=trip.outstanding,
            currency=trip.currency,
            reason=trip.debt_reason,
            status="OPEN",
            opened_at=now,
        )
    if existing.status != "OPEN":
        return None
    balance = trip.outstanding - existing.paid
    if not owed or balance <= ZERO:
        return replace(existing, status="SETTLED", settled_at=now)
    reason = trip.debt_reason or existing.reason
    if existing.amount == balance and existing.reason == reason:
        return None
    return replace(existing, amount=balance, reason=reason)


# --------------------------------------------------------------------------- alerts


@dataclass(frozen=True)
class Alert:
    alert_id: str
    kind: str
    severity: str
    store_id: str
    shopping_trip_id: str
    message: str
    created_at: datetime


def decline_alerts(payments: Iterable[PaymentEvent]) -> list[Alert]:
    """One alert per (trip, decline subtype), at the time of the first such event; duplicates collapse."""
    first: dict[tuple[str, str], PaymentEvent] = {}
    for p in _distinct(payments):
        if p.sub_type in DECLINES:
            first.setdefault((p.shopping_trip_id, p.sub_type), p)
    return [decline_alert(p) for p in first.values()]


def decline_alert(p: PaymentEvent) -> Alert:
    kind = "decline_authorization" if p.sub_type == AUTH_DECLINED else "decline_capture"
    return Alert(
        alert_id=str(uuid.uuid5(_NAMESPACE, f"alert|{p.shopping_trip_id}|{p.sub_type}")),
        kind=kind,
        severity="warning",
        store_id=p.store_id,
        shopping_trip_id=p.shopping_trip_id,
        message=f"{p.sub_type} of {p.amount} {p.currency} for trip {p.shopping_trip_id} in store {p.store_id}",
        created_at=p.event_time,
    )


# --------------------------------------------------------------------------- daily settlement


@dataclass(frozen=True)
class Settlement:
    business_date: date
    store_id: str
    trips: int
    gross: Decimal
    promotions: Decimal
    tax: Decimal
    net_sales: Decimal
    authorized: Decimal
    captured: Decimal
    declined: Decimal
    refunded: Decimal
    outstanding: Decimal
    matched_share: Decimal
    exceptions: int
    exception_trips: tuple[str, ...] = field(default=())

    @property
    def day_start(self) -> datetime:
        return datetime.combine(self.business_date, time(), tzinfo=UTC)


def settle(trips: Sequence[TripResult], refunded: Mapping[tuple[date, str], Decimal] | None = None) -> list[Settlement]:
    """One settlement per (business date, store) of the given trips (all of each day's trips), exact to the cent."""
    groups: dict[tuple[date, str], list[TripResult]] = {}
    for trip in trips:
        groups.setdefault((trip.business_date, trip.store_id), []).append(trip)
    out: list[Settlement] = []
    for (day, store), rows in sorted(groups.items()):
        sold = [t for t in rows if t.state != "orphan_payment"]
        carts = [t for t in sold if t.state != "empty_cart_cancelled"]
        matched = sum(t.state == "matched" for t in carts)
        share = (Decimal(matched) / Decimal(len(carts))).quantize(_SHARE, ROUND_HALF_EVEN) if carts else Decimal(1)
        exceptions = tuple(sorted(t.shopping_trip_id for t in rows if t.state in EXCEPTION_STATES))
        out.append(
            Settlement(
                business_date=day,
                store_id=store,
                trips=len(sold),
                gross=sum((t.subtotal for t in sold), ZERO),
                promotions=sum((t.promotions for t in sold), ZERO),
                tax=sum((t.tax for t in sold), ZERO),
                net_sales=sum((t.purchase_total for t in sold), ZERO),
                authorized=sum((t.authorized for t in rows), ZERO),
                captured=sum((t.captured for t in rows), ZERO),
                declined=sum((t.declined for t in rows), ZERO),
                refunded=(refunded or {}).get((day, store), ZERO),
                outstanding=sum((t.outstanding for t in rows), ZERO),
                matched_share=share,
                exceptions=len(exceptions),
                exception_trips=exceptions,
            )
        )
    return out
