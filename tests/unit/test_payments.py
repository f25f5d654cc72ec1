"""Payment-Service requests we originate (SPEC §4, §5): the wire format, the refund rules, and the sender over the
in-memory outbox and Payment Service."""

from __future__ import annotations

import asyncio
import json
import random
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import pytest

from contracts.payment_tables import REFUNDS
from reconcile.errors import RefundRefusedError
from reconcile.fakes import MemoryLake, MemoryLedger, MemoryOutbox, MemoryPaymentService
from reconcile.payment_sender import Delivery, PaymentSender, SenderPolicy
from reconcile.payments import (
    RefundableTrip,
    check_refund,
    encode_json,
    payment_status_request,
    refund_answered,
    refund_request,
    refund_row,
    refunded_per_day,
    reports_payment_status,
)
from reconcile.rules import Debt
from tests.unit.test_reconcile_job import DAY, KEY, facts_of, job

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
DEBT = Debt("debt-1", "trip-1", "shopper-1", "S1", Decimal("12.30"), "USD", "declined capture", "OPEN", NOW)
TRIP = RefundableTrip("trip-1", "S1", "USD", date(2026, 11, 24), NOW - timedelta(days=1), Decimal("10.00"), Decimal(0))


def test_money_goes_on_the_wire_as_a_number_written_from_the_decimals_digits() -> None:
    text = encode_json({"amount": {"amount": Decimal("12.30"), "code": "USD"}, "n": 1, "s": 'x"y'})
    assert text == '{"amount":{"amount":12.30,"code":"USD"},"n":1,"s":"x\\"y"}'
    with pytest.raises(ValueError, match="finite"):
        encode_json(Decimal("NaN"))


def test_a_payoff_report_carries_the_balance_the_settled_amount_and_the_time_keyed_by_store_and_trip() -> None:
    request = payment_status_request(DEBT, Decimal("12.30"), NOW)
    assert request.path == "/v1/feedback/payment-status"
    assert json.loads(request.body) == {
        "storeId": "S1",
        "shoppingTripId": "trip-1",
        "totalAmount": {"amount": 12.3, "code": "USD"},
        "settledAmount": {"amount": 12.3, "code": "USD"},
        "paymentStatusTime": "2026-11-25T12:00:00Z",
    }
    assert payment_status_request(DEBT, Decimal("12.30"), NOW + timedelta(seconds=5)).request_id == request.request_id
    assert payment_status_request(DEBT, Decimal("2.30"), NOW).request_id != request.request_id
    with pytest.raises(ValueError, match="at most the balance"):
        payment_status_request(DEBT, Decimal("12.31"), NOW)


def test_each_payoff_of_a_debt_is_its_own_report_even_of_the_same_amount_and_a_retry_is_the_same() -> None:
    first = payment_status_request(DEBT, Decimal("5.00"), NOW)
    after_first = replace(DEBT, amount=Decimal("7.30"), paid=Decimal("5.00"))
    second = payment_status_request(after_first, Decimal("5.00"), NOW + timedelta(minutes=1))
    assert second.request_id != first.request_id
    assert json.loads(second.body)["totalAmount"] == {"amount": 7.3, "code": "USD"}
    retried = payment_status_request(after_first, Decimal("5.00"), NOW + timedelta(minutes=2))
    assert retried.request_id == second.request_id
    other_debt = replace(after_first, debt_id="debt-2", shopping_trip_id="trip-2")
    assert payment_status_request(other_debt, Decimal("5.00"), NOW).request_id != second.request_id


def test_payoffs_are_reported_for_the_listed_fraud_and_abuse_stores_or_every_store() -> None:
    assert reports_payment_status("S1", ["*"])
    assert reports_payment_status("S1", ["S1", "S2"])
    assert not reports_payment_status("S3", ["S1", "S2"])
    assert not reports_payment_status("S1", [])


def test_a_refund_has_a_deterministic_request_id_and_the_vendor_body() -> None:
    refund = check_refund(TRIP, "trip-1", Decimal("4.00"), "DAMAGED", NOW, timedelta(days=7))
    again = check_refund(TRIP, "trip-1", Decimal("4.00"), "DAMAGED", NOW + timedelta(hours=1), timedelta(days=7))
    other = check_refund(TRIP, "trip-1", Decimal("4.00"), "DAMAGED", NOW, timedelta(days=7), key="return-2")
    assert refund.refund_id == again.refund_id != other.refund_id
    body = json.loads(refund_request(refund).body)
    assert body == {
        "refundRequestId": refund.refund_id,
        "storeId": "S1",
        "shoppingTripId": "trip-1",
        "amount": {"amount": 4.0, "code": "USD"},
        "refundReasonCode": "DAMAGED",
    }


@pytest.mark.parametrize(
    ("trip", "amount", "reason", "now", "problem"),
    [
        (None, "1.00", "DAMAGED", NOW, "unknown trip"),
        (TRIP, "10.01", "DAMAGED", NOW, "more than can be refunded"),
        (TRIP, "0", "DAMAGED", NOW, "positive"),
        (TRIP, "1.001", "DAMAGED", NOW, "in cents"),
        (TRIP, "1.00", "", NOW, "reason code"),
        (TRIP, "1.00", "DAMAGED", TRIP.charged_at + timedelta(days=7, seconds=1), "outside the refund window"),
    ],
)
def test_a_refund_is_refused_with_the_reason(
    trip: RefundableTrip | None, amount: str, reason: str, now: datetime, problem: str
) -> None:
    with pytest.raises(RefundRefusedError, match=problem):
        check_refund(trip, "trip-1", Decimal(amount), reason, now, timedelta(days=7))


def test_what_was_already_refunded_counts_against_the_capture_and_the_window_edge_is_inside() -> None:
    partly = RefundableTrip(**{**TRIP.__dict__, "refunded": Decimal("6.00")})
    edge = TRIP.charged_at + timedelta(days=7)
    assert check_refund(partly, "trip-1", Decimal("4.00"), "X", edge, timedelta(days=7)).amount == Decimal("4.00")
    with pytest.raises(RefundRefusedError, match=r"left 4\.00"):
        check_refund(partly, "trip-1", Decimal("4.01"), "X", NOW, timedelta(days=7))


def test_amazons_answer_decides_the_refund_status_and_only_accepted_refunds_settle() -> None:
    refund = check_refund(TRIP, "trip-1", Decimal("4.00"), "DAMAGED", NOW, timedelta(days=7))
    ok = refund_answered(refund, "delivered", '{"status":"APPROVED"}', NOW)
    declined = refund_answered(refund, "delivered", '{"status":"DECLINED"}', NOW)
    failed = refund_answered(refund, "failed", "HTTP 400: amount.amount: required", NOW)
    assert (ok.status, declined.status, failed.status) == ("REFUNDED", "DECLINED", "FAILED")
    assert failed.message == "HTTP 400: amount.amount: required"
    assert refunded_per_day([ok, declined, failed, refund]) == {(date(2026, 11, 24), "S1"): Decimal("4.00")}


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> datetime:
        return self.now


def _sender(outbox: MemoryOutbox, service: MemoryPaymentService, clock: Clock, **kw: object) -> PaymentSender:
    return PaymentSender(outbox, service, clock, SenderPolicy(max_attempts=3), rng=random.Random(1), **kw)  # type: ignore[arg-type]


def test_a_request_queued_while_amazon_is_down_is_delivered_later_exactly_once() -> None:
    outbox, service, clock = MemoryOutbox(), MemoryPaymentService(unavailable=1), Clock()
    request = payment_status_request(DEBT, DEBT.amount, NOW)
    assert outbox.enqueue(request, NOW)
    assert not outbox.enqueue(request, NOW)  # the same request twice is one request
    sender = _sender(outbox, service, clock)

    first = asyncio.run(sender.send(request.request_id))
    assert first is not None
    assert first.outcome == "queued"
    assert first.next_attempt_at is not None
    assert first.next_attempt_at > NOW
    assert asyncio.run(sender.drain()) == []  # not due yet
    clock.now = first.next_attempt_at
    [second] = asyncio.run(sender.drain())
    assert second.outcome == "delivered"
    assert asyncio.run(sender.drain()) == []
    clock.now += timedelta(days=1)
    assert asyncio.run(sender.drain()) == []
    assert [c.request_id for c in service.calls] == [request.request_id]
    kept = outbox.get(request.request_id)
    assert kept is not None
    assert (kept.status, kept.attempts) == ("DELIVERED", 2)


def test_a_refused_request_fails_with_amazons_message_and_is_not_sent_again() -> None:
    outbox, clock = MemoryOutbox(), Clock()
    request = payment_status_request(DEBT, DEBT.amount, NOW)
    service = MemoryPaymentService(reject={request.request_id: "HTTP 400: settledAmount: more than totalAmount"})
    outbox.enqueue(request, NOW)
    [delivery] = asyncio.run(_sender(outbox, service, clock).drain())
    assert (delivery.outcome, delivery.detail) == ("failed", "HTTP 400: settledAmount: more than totalAmount")
    clock.now += timedelta(days=1)
    assert asyncio.run(_sender(outbox, service, clock).drain()) == []
    kept = outbox.get(request.request_id)
    assert kept is not None
    assert kept.status == "FAILED"
    assert kept.last_error == delivery.detail


def test_a_request_that_never_gets_through_is_given_up_after_the_last_delivery() -> None:
    outbox, service, clock = MemoryOutbox(), MemoryPaymentService(unavailable=10), Clock()
    request = payment_status_request(DEBT, DEBT.amount, NOW)
    outbox.enqueue(request, NOW)
    sender = _sender(outbox, service, clock)
    outcomes = []
    for _ in range(5):
        outcomes += [d.outcome for d in asyncio.run(sender.drain())]
        clock.now += timedelta(hours=1)
    assert outcomes == ["queued", "queued", "failed"]
    kept = outbox.get(request.request_id)
    assert kept is not None
    assert kept.last_error is not None
    assert kept.last_error.startswith("gave up after 3")


def test_an_outcome_the_hook_could_not_record_is_sent_again_after_the_lease() -> None:
    outbox, service, clock = MemoryOutbox(), MemoryPaymentService(), Clock()
    refund = check_refund(TRIP, "trip-1", Decimal("4.00"), "DAMAGED", NOW, timedelta(days=7))
    outbox.enqueue(refund_request(refund), NOW)
    seen: list[Delivery] = []
    lake = MemoryLake()

    def record(delivery: Delivery, at: datetime) -> None:
        if not seen:
            seen.append(delivery)
            raise OSError("disk full")
        seen.append(delivery)
        answered = refund_answered(refund, "delivered", delivery.detail, at)
        lake.write_tables({REFUNDS: [refund_row(answered, at)]}, "b")

    sender = _sender(outbox, service, clock, on_outcome=record)
    assert asyncio.run(sender.drain()) == []  # the hook failed: not recorded as delivered
    assert asyncio.run(sender.drain()) == []  # still leased
    clock.now += SenderPolicy().lease
    [delivery] = asyncio.run(sender.drain())
    assert delivery.outcome == "delivered"
    assert len(seen) == 2
    assert len(service.calls) == 2
    assert [r.status for r in lake.refunds()] == ["REFUNDED"]


def test_the_daily_settlement_counts_accepted_refunds_on_the_trips_day_to_the_cent() -> None:
    matched = [t for t in KEY.trips if t.state == "matched" and t.store_id == "S1"]
    lake = MemoryLake()
    trip_id = matched[0].shopping_trip_id
    trip = RefundableTrip(trip_id, "S1", "USD", KEY.business_date, KEY.as_of, Decimal(100), Decimal(0))
    base = check_refund(trip, trip_id, Decimal("1.23"), "DAMAGED", KEY.as_of, timedelta(days=7))
    rows = [
        refund_row(refund_answered(base, "delivered", '{"status":"APPROVED"}', KEY.as_of), KEY.as_of),
        refund_row(refund_answered(base, "delivered", '{"status":"DECLINED"}', KEY.as_of), KEY.as_of)
        | {"refund_id": "declined", "amount": Decimal("5.00")},
        refund_row(base, KEY.as_of) | {"refund_id": "still-requested", "amount": Decimal("2.00")},
        refund_row(refund_answered(base, "delivered", "{}", KEY.as_of), KEY.as_of)
        | {"refund_id": "second", "amount": Decimal("0.01"), "shopping_trip_id": matched[-1].shopping_trip_id},
    ]
    lake.write_tables({REFUNDS: rows}, "refunds")
    job(facts_of(DAY), lake, MemoryLedger(), KEY.as_of).run(day=KEY.business_date)
    refunded = {str(r["store_id"]): r["refunded"] for r in lake.table("daily_settlement")}
    assert refunded == {"S1": Decimal("1.24"), "S2": Decimal("0.00")}
