"""Requests to Amazon's Payment Service that we originate (SPEC §4, §5): the payment-status report of a debt payoff
and refunds, with the rules that decide whether a refund may be sent. Pure: values in, values out, the clock passed.

Money goes over the wire as `{"amount": <number>, "code": "USD"}`; the number is written from the Decimal's digits
(never through a float). Every request has a deterministic id, so queueing the same request twice is one request:

    payment status   uuid5(store | debt | Σ paid with this payoff)   (one per payoff: the cumulative paid amount
                                                                  grows with each; a retry before it was recorded
                                                                  derives the same id)
    refund           uuid5(trip | amount | reason | refund key)  = refundRequestId, Amazon's idempotency key
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any, Literal

from reconcile.errors import RefundRefusedError
from reconcile.rules import CENT, Debt

Operation = Literal["payment_status", "refund"]
PATHS: dict[Operation, str] = {"payment_status": "/v1/feedback/payment-status", "refund": "/v1/refund"}
DeliveryStatus = Literal["QUEUED", "DELIVERED", "FAILED"]
RefundStatus = Literal["REQUESTED", "REFUNDED", "DECLINED", "FAILED"]

_NAMESPACE = uuid.UUID("0d6f3f0e-64c1-4c55-9d1e-7b0a5a2f8c31")
_REASON = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
ALL_STORES = "*"


# --------------------------------------------------------------------------- wire format


def encode_json(value: object) -> str:
    """Compact JSON where a Decimal is written as a JSON number from its digits (`12.30`, never via float)."""
    if isinstance(value, Decimal):
        if not value.is_finite():
            raise ValueError(f"not a finite amount: {value}")
        return format(value, "f")
    if isinstance(value, Mapping):
        return "{" + ",".join(f"{json.dumps(str(k))}:{encode_json(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list | tuple):
        return "[" + ",".join(encode_json(v) for v in value) + "]"
    if isinstance(value, datetime):
        return json.dumps(wire_time(value))
    return json.dumps(value)


def decode_json(text: str | bytes) -> Any:
    """JSON with numbers that are not integers read as Decimal."""
    return json.loads(text, parse_float=Decimal)


def wire_time(moment: datetime) -> str:
    """`2024-04-25T13:03:14Z` (UTC, seconds; the vendor's format)."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def money(amount: Decimal, currency: str) -> dict[str, object]:
    return {"amount": amount.quantize(CENT), "code": currency}


# --------------------------------------------------------------------------- requests


@dataclass(frozen=True)
class PaymentRequest:
    request_id: str
    operation: Operation
    store_id: str
    shopping_trip_id: str
    body: str
    """The JSON body, fixed when the request is queued (a retry sends the same bytes)."""

    @property
    def path(self) -> str:
        return PATHS[self.operation]


@dataclass(frozen=True)
class PaymentReply:
    """A 2xx answer: Amazon's business outcome (e.g. a refund's `status`), kept as data."""

    status_code: int
    body: Mapping[str, Any]


@dataclass(frozen=True)
class QueuedRequest:
    """A request in the outbox with its delivery state."""

    request: PaymentRequest
    status: DeliveryStatus
    attempts: int
    queued_at: datetime
    next_attempt_at: datetime | None
    finished_at: datetime | None = None
    """When it was delivered, or given up (FAILED)."""
    last_error: str | None = None
    response: str | None = None
    """Amazon's answer body as received, once delivered."""


def reports_payment_status(store_id: str, stores: Sequence[str]) -> bool:
    """Whether a payoff in this store is reported to Amazon: the store is Amazon-managed fraud and abuse
    (`stores` lists them; `*` means every store)."""
    return ALL_STORES in stores or store_id in stores


def payment_status_request(debt: Debt, settled: Decimal, at: datetime) -> PaymentRequest:
    """Report a payoff of `settled` against the debt's balance before it (`totalAmount`) at `at`. A full payoff
    has settledAmount = totalAmount, which is what lets Amazon admit the shopper again.

    The id derives from the debt and its paid amount once this payoff is counted (`debt.paid + settled`): each payoff
    of a debt is a request of its own, even two of the same amount, while the same payoff tried again before it was
    recorded on the debt is the same request."""
    if settled <= 0 or settled > debt.amount:
        raise ValueError(f"a payoff must be more than 0 and at most the balance {debt.amount}, not {settled}")
    body = {
        "storeId": debt.store_id,
        "shoppingTripId": debt.shopping_trip_id,
        "totalAmount": money(debt.amount, debt.currency),
        "settledAmount": money(settled, debt.currency),
        "paymentStatusTime": wire_time(at),
    }
    key = f"payment-status|{debt.store_id}|{debt.debt_id}|{(debt.paid + settled).quantize(CENT)}"
    return PaymentRequest(
        request_id=str(uuid.uuid5(_NAMESPACE, key)),
        operation="payment_status",
        store_id=debt.store_id,
        shopping_trip_id=debt.shopping_trip_id,
        body=encode_json(body),
    )


# --------------------------------------------------------------------------- refunds


@dataclass(frozen=True)
class RefundableTrip:
    """What the warehouse knows about a trip that a refund depends on."""

    shopping_trip_id: str
    store_id: str
    currency: str
    business_date: date
    charged_at: datetime
    """The start of the refund window: the trip's end time, or its first capture when there is no purchase."""
    captured: Decimal
    refunded: Decimal
    """Σ of the trip's refunds that are REQUESTED or REFUNDED (a queued refund may still go through)."""


@dataclass(frozen=True)
class Refund:
    refund_id: str
    shopping_trip_id: str
    store_id: str
    amount: Decimal
    currency: str
    reason_code: str
    status: RefundStatus
    business_date: date
    requested_at: datetime
    answered_at: datetime | None = None
    message: str | None = None


def refund_id(shopping_trip_id: str, amount: Decimal, reason_code: str, key: str = "") -> str:
    return str(uuid.uuid5(_NAMESPACE, f"refund|{shopping_trip_id}|{amount.quantize(CENT)}|{reason_code}|{key}"))


def check_refund(
    trip: RefundableTrip | None,
    shopping_trip_id: str,
    amount: Decimal,
    reason_code: str,
    now: datetime,
    window: timedelta,
    key: str = "",
) -> Refund:
    """The refund to record and send, or RefundRefusedError saying why not. `key` (e.g. the portal's return id)
    tells a deliberate second refund of the same amount and reason from a repeat of the first."""
    if trip is None:
        raise RefundRefusedError(f"unknown trip {shopping_trip_id!r}: no purchase or capture in the warehouse")
    if not amount.is_finite() or amount <= 0 or amount != amount.quantize(CENT):
        raise RefundRefusedError(f"the amount must be positive, in cents: {amount}")
    if not _REASON.match(reason_code):
        raise RefundRefusedError(f"the reason code must be 1-64 letters, digits, '_' or '-': {reason_code!r}")
    deadline = trip.charged_at + window
    if now > deadline:
        raise RefundRefusedError(
            f"trip {shopping_trip_id} is outside the refund window: charged {wire_time(trip.charged_at)}, "
            f"refunds accepted until {wire_time(deadline)} ({window.days} days)"
        )
    left = trip.captured - trip.refunded
    if amount > left:
        raise RefundRefusedError(
            f"trip {shopping_trip_id}: {amount} {trip.currency} is more than can be refunded: captured "
            f"{trip.captured}, already refunded or requested {trip.refunded}, left {left}"
        )
    return Refund(
        refund_id=refund_id(shopping_trip_id, amount, reason_code, key),
        shopping_trip_id=shopping_trip_id,
        store_id=trip.store_id,
        amount=amount.quantize(CENT),
        currency=trip.currency,
        reason_code=reason_code,
        status="REQUESTED",
        business_date=trip.business_date,
        requested_at=now,
    )


def refund_request(refund: Refund) -> PaymentRequest:
    body = {
        "refundRequestId": refund.refund_id,
        "storeId": refund.store_id,
        "shoppingTripId": refund.shopping_trip_id,
        "amount": money(refund.amount, refund.currency),
        "refundReasonCode": refund.reason_code,
    }
    return PaymentRequest(
        request_id=refund.refund_id,
        operation="refund",
        store_id=refund.store_id,
        shopping_trip_id=refund.shopping_trip_id,
        body=encode_json(body),
    )


def refund_answered(refund: Refund, outcome: Literal["delivered", "failed"], detail: str, at: datetime) -> Refund:
    """The refund once Amazon answered: a delivered request is REFUNDED unless Amazon's outcome says DECLINED
    (a business outcome, recorded as data); a refused or undeliverable one is FAILED with the reason."""
    if outcome == "failed":
        return replace(refund, status="FAILED", answered_at=at, message=detail)
    status: RefundStatus = "DECLINED" if _outcome(detail) == "DECLINED" else "REFUNDED"
    return replace(refund, status=status, answered_at=at, message=detail)


def _outcome(response: str) -> str:
    try:
        body = decode_json(response) if response else {}
    except ValueError:
        return ""
    return str(body.get("status", "")).upper() if isinstance(body, dict) else ""


def refund_row(refund: Refund, updated_at: datetime) -> dict[str, object]:
    return {
        "refund_id": refund.refund_id,
        "shopping_trip_id": refund.shopping_trip_id,
        "store_id": refund.store_id,
        "amount": refund.amount,
        "currency": refund.currency,
        "reason_code": refund.reason_code,
        "status": refund.status,
        "business_date": refund.business_date,
        "requested_at": refund.requested_at,
        "answered_at": refund.answered_at,
        "message": refund.message,
        "updated_at": updated_at,
    }


def refund_from_row(row: Mapping[str, Any]) -> Refund:
    amount = row["amount"]
    return Refund(
        refund_id=row["refund_id"],
        shopping_trip_id=row["shopping_trip_id"],
        store_id=row["store_id"],
        amount=amount.quantize(CENT),
        currency=row["currency"],
        reason_code=row["reason_code"],
        status=row["status"],
        business_date=row["business_date"],
        requested_at=row["requested_at"],
        answered_at=row["answered_at"],
        message=row["message"],
    )


def refunded_per_day(refunds: Sequence[Refund]) -> dict[tuple[date, str], Decimal]:
    """`daily_settlement.refunded`: Σ of REFUNDED refunds per (the trip's business day, store)."""
    out: dict[tuple[date, str], Decimal] = {}
    for r in refunds:
        if r.status == "REFUNDED":
            key = (r.business_date, r.store_id)
            out[key] = out.get(key, Decimal("0.00")) + r.amount
    return out
