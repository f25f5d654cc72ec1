"""The matching rules: one state per trip, amounts that add up to the cent, debts, alerts, settlement."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import pytest

from reconcile.rules import (
    Debt,
    PaymentEvent,
    Purchase,
    RuleSettings,
    TripFacts,
    TripResult,
    decide_debt,
    decline_alerts,
    reconcile_trip,
    settle,
)

END = datetime(2025, 3, 14, 12, 0, tzinfo=UTC)
LATER = END + timedelta(days=2)
SETTINGS = RuleSettings(amount_tolerance=Decimal("0.00"))
D = Decimal


def purchase(trip: str = "T1", total: str = "12.34", *, app: bool = False, lines: int = 2) -> Purchase:
    return Purchase(
        shopping_trip_id=trip,
        store_id="S1",
        entry_method="SCAN_CODE" if app else "FINANCIAL",
        shopper_id="shopper-1" if app else None,
        currency="USD",
        subtotal=D(total),
        promotions=D("0.00"),
        tax=D("0.00"),
        total=D(total),
        line_count=lines,
        end_time=END,
    )


def event(sub_type: str, amount: str, *, trip: str = "T1", n: int = 0, minutes: int = 5) -> PaymentEvent:
    return PaymentEvent(
        event_id=f"{trip}-{sub_type}-{n}",
        shopping_trip_id=trip,
        store_id="S1",
        sub_type=sub_type,
        amount=D(amount),
        currency="USD",
        event_time=END + timedelta(minutes=minutes),
    )


def run(facts: TripFacts, now: datetime = LATER, settings: RuleSettings = SETTINGS) -> TripResult:
    result = reconcile_trip(facts, settings, now)
    assert result is not None
    assert result.purchase_total == result.captured + result.outstanding + result.pending_amount
    return result


PREAUTH = event("AuthorizationApproved", "50.00", minutes=-10)
CAPTURE = event("CaptureApproved", "12.34")


def test_a_captured_and_reported_trip_is_matched() -> None:
    result = run(TripFacts("T1", purchase(), (PREAUTH, CAPTURE), reported=D("12.34")))
    assert (result.state, result.captured, result.outstanding, result.authorized) == (
        "matched",
        D("12.34"),
        D("0.00"),
        D("50.00"),
    )


def test_a_capture_above_the_sale_is_an_amount_mismatch_with_negative_outstanding() -> None:
    result = run(TripFacts("T1", purchase(), (PREAUTH, event("CaptureApproved", "13.00")), reported=D("12.34")))
    assert (result.state, result.outstanding) == ("amount_mismatch", D("-0.66"))


def test_a_report_that_disagrees_with_the_sale_is_an_amount_mismatch() -> None:
    result = run(TripFacts("T1", purchase(), (PREAUTH, CAPTURE), reported=D("11.00")))
    assert result.state == "amount_mismatch"
    assert "reported 11.00" in result.reason


def test_a_difference_within_the_tolerance_still_matches() -> None:
    loose = RuleSettings(amount_tolerance=D("0.01"))
    result = run(TripFacts("T1", purchase(), (event("CaptureApproved", "12.33"),), reported=D("12.34")), settings=loose)
    assert (result.state, result.outstanding) == ("matched", D("0.01"))


def test_a_declined_capture_is_declined_with_the_total_outstanding_and_a_debt_reason() -> None:
    result = run(TripFacts("T1", purchase(), (PREAUTH, event("CaptureDeclined", "12.34"))))
    assert (result.state, result.outstanding, result.declined) == ("declined", D("12.34"), D("12.34"))
    assert result.debt_reason == "declined capture"


def test_a_declined_authorization_is_declined() -> None:
    result = run(TripFacts("T1", purchase(), (PREAUTH, event("AuthorizationDeclined", "12.34"))))
    assert (result.state, result.debt_reason) == ("declined", "declined authorization")


def test_a_capture_short_of_the_sale_is_partially_captured() -> None:
    result = run(TripFacts("T1", purchase(), (PREAUTH, event("CaptureApproved", "10.00"))))
    assert (result.state, result.outstanding, result.debt_reason) == (
        "partially_captured",
        D("2.34"),
        "partial capture",
    )


def test_no_capture_after_the_preauth_window_is_missing_capture() -> None:
    result = run(TripFacts("T1", purchase(), (PREAUTH,)))
    assert (result.state, result.outstanding, result.debt_reason) == ("missing_capture", D("12.34"), "expired pre-auth")


def test_no_capture_within_the_preauth_window_is_pending_with_the_total_pending() -> None:
    result = run(TripFacts("T1", purchase(), (PREAUTH,)), now=END + timedelta(hours=1))
    assert (result.state, result.pending_amount, result.outstanding) == ("pending", D("12.34"), D("0.00"))


def test_a_capture_in_no_report_after_the_grace_period_is_missing_from_report() -> None:
    assert run(TripFacts("T1", purchase(), (PREAUTH, CAPTURE))).state == "missing_from_report"


def test_a_capture_awaiting_its_report_is_pending_and_matches_without_reports() -> None:
    facts = TripFacts("T1", purchase(), (PREAUTH, CAPTURE))
    assert run(facts, now=END + timedelta(minutes=30)).state == "pending"
    assert run(facts, settings=RuleSettings(check_reports=False)).state == "matched"


def test_payments_without_a_purchase_are_an_orphan_payment() -> None:
    result = run(TripFacts("T1", None, (CAPTURE,)))
    assert (result.state, result.purchase_total, result.outstanding) == ("orphan_payment", D("0.00"), D("-12.34"))


def test_an_empty_cart_is_empty_cart_cancelled() -> None:
    result = run(TripFacts("T1", purchase(total="0.00", lines=0), (PREAUTH,), cancelled_at=END))
    assert (result.state, result.outstanding) == ("empty_cart_cancelled", D("0.00"))


def test_a_trip_with_no_facts_has_no_state() -> None:
    assert reconcile_trip(TripFacts("T1"), SETTINGS, LATER) is None


def test_a_duplicated_event_counts_once() -> None:
    result = run(TripFacts("T1", purchase(), (PREAUTH, CAPTURE, CAPTURE), reported=D("12.34")))
    assert (result.state, result.captured) == ("matched", D("12.34"))


def test_late_capture_moves_a_missing_capture_to_matched() -> None:
    before = run(TripFacts("T1", purchase(), (PREAUTH,), reported=D("12.34")))
    after = run(TripFacts("T1", purchase(), (PREAUTH, CAPTURE), reported=D("12.34")))
    assert (before.state, after.state) == ("missing_capture", "matched")


def test_a_declined_app_trip_opens_a_debt_for_the_shopper_and_a_late_capture_settles_it() -> None:
    declined = run(TripFacts("T1", purchase(app=True), (event("CaptureDeclined", "12.34"),)))
    debt = decide_debt(declined, None, LATER)
    assert isinstance(debt, Debt)
    assert (debt.shopper_id, debt.amount, debt.status, debt.reason) == (
        "shopper-1",
        D("12.34"),
        "OPEN",
        "declined capture",
    )
    assert decide_debt(declined, debt, LATER) is None
    paid = run(TripFacts("T1", purchase(app=True), (event("CaptureDeclined", "12.34"), CAPTURE), reported=D("12.34")))
    closed = decide_debt(paid, debt, LATER)
    assert closed is not None
    assert (closed.status, closed.settled_at) == ("SETTLED", LATER)


def test_a_matched_trip_opens_no_debt() -> None:
    assert decide_debt(run(TripFacts("T1", purchase(), (CAPTURE,), reported=D("12.34"))), None, LATER) is None


def test_each_decline_subtype_alerts_once_per_trip() -> None:
    declines = [
        event("AuthorizationDeclined", "12.34"),
        event("AuthorizationDeclined", "12.34"),
        event("AuthorizationDeclined", "12.34", n=1, minutes=9),
        event("CaptureDeclined", "12.34"),
    ]
    alerts = decline_alerts([*declines, CAPTURE])
    assert sorted(a.kind for a in alerts) == ["decline_authorization", "decline_capture"]
    assert len({a.alert_id for a in alerts}) == 2
    assert decline_alerts(reversed(declines)) == decline_alerts(declines)


@pytest.mark.parametrize("total", ["0.01", "12.34", "999.99"])
def test_settlement_adds_up_to_the_cent_and_lists_exceptions(total: str) -> None:
    matched = run(TripFacts("A", purchase("A", total), (event("CaptureApproved", total, trip="A"),), reported=D(total)))
    declined = run(TripFacts("B", purchase("B", total), (event("CaptureDeclined", total, trip="B"),)))
    [day] = settle([matched, declined])
    assert (day.business_date, day.store_id, day.trips) == (date(2025, 3, 14), "S1", 2)
    assert day.net_sales == D(total) * 2
    assert day.captured + day.outstanding == day.net_sales
    assert (day.matched_share, day.exceptions, day.exception_trips) == (D("0.5000"), 1, ("B",))


def test_the_state_type_names_exactly_the_contract_states() -> None:
    from typing import get_args

    from contracts.reconcile_tables import TRIP_STATES
    from reconcile.rules import State

    assert get_args(State) == TRIP_STATES
