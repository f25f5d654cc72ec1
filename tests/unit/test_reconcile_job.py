"""The reconciliation job over in-memory ports: the simulator's scenario day ends in its answer key's states,
whatever order and however often the facts arrive, and a re-run changes nothing."""

from __future__ import annotations

import contextlib
import threading
from collections import Counter
from collections.abc import Iterator
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from reconcile.fakes import MemoryFacts, MemoryLake, MemoryLedger
from reconcile.job import ReconcileJob
from reconcile.rules import PaymentEvent, Purchase, RuleSettings
from simulator.settlement import SettlementDay, SettlementDayConfig, build_settlement_day

DAY = build_settlement_day(SettlementDayConfig(per_anomaly=1))
assert DAY.key is not None
KEY = DAY.key


def facts_of(day: SettlementDay, payment_rows: list[dict[str, Any]] | None = None) -> MemoryFacts:
    purchases = [
        Purchase(
            shopping_trip_id=str(r["shopping_trip_id"]),
            store_id=str(r["store_id"]),
            entry_method=str(r["entry_method"]),
            shopper_id=r["shopper_id"],  # type: ignore[arg-type]
            currency=str(r["currency"]),
            subtotal=r["subtotal"],  # type: ignore[arg-type]
            promotions=r["promotions"],  # type: ignore[arg-type]
            tax=r["tax"],  # type: ignore[arg-type]
            total=r["total"],  # type: ignore[arg-type]
            line_count=int(r["line_count"]),  # type: ignore[call-overload]
            end_time=r["end_time"],  # type: ignore[arg-type]
        )
        for r in day.purchases
    ]
    rows = day.payment_events if payment_rows is None else payment_rows
    payments = [
        PaymentEvent(
            **{
                k: r[k]
                for k in ("event_id", "shopping_trip_id", "store_id", "sub_type", "amount", "currency", "event_time")
            }
        )
        for r in rows
    ]
    reported = {str(r["shopping_trip_id"]): (r["line_total"], r["last_updated"]) for r in day.intraday_order_lines}
    cancelled: dict[str, datetime] = {
        str(r["shopping_trip_id"]): r["requested_at"]  # type: ignore[misc]
        for r in day.cancel_charges
    }
    return MemoryFacts(purchases, payments, reported, cancelled)


def job(facts: MemoryFacts, lake: MemoryLake, ledger: MemoryLedger, now: datetime) -> ReconcileJob:
    return ReconcileJob(facts, lake, lake, ledger, RuleSettings(), lambda: now)


def assert_matches_the_key(lake: MemoryLake) -> None:
    rows = {str(r["shopping_trip_id"]): r for r in lake.table("trip_reconciliation")}
    assert len(rows) == len(KEY.trips)
    for trip in KEY.trips:
        row = rows[trip.shopping_trip_id]
        assert (row["state"], row["purchase_total"], row["captured"], row["outstanding"]) == (
            trip.state,
            trip.purchase_total,
            trip.captured,
            trip.outstanding,
        ), trip.anomaly
        assert row["purchase_total"] == row["captured"] + row["outstanding"] + row["pending_amount"]  # type: ignore[operator]


def test_the_scenario_day_ends_in_the_answer_keys_states_with_debts_and_alerts() -> None:
    lake, ledger = MemoryLake(), MemoryLedger()
    report = job(facts_of(DAY), lake, ledger, KEY.as_of).run(day=KEY.business_date)
    assert_matches_the_key(lake)
    assert report.debts_opened == sum(t.debt for t in KEY.trips)
    assert ledger.blocked() == {t.shopper_id for t in KEY.trips if t.debt and t.shopper_id}
    assert len(lake.table("alerts")) == sum(t.decline_alerts for t in KEY.trips)
    settlement = {str(r["store_id"]): r for r in lake.table("daily_settlement")}
    for store, row in settlement.items():
        totals = KEY.totals(store)
        assert (row["net_sales"], row["captured"], row["outstanding"]) == (
            totals["net_sales"],
            totals["captured"],
            totals["outstanding"],
        )
        exceptions = sorted(
            t.shopping_trip_id
            for t in KEY.trips
            if t.store_id == store and t.state not in ("matched", "empty_cart_cancelled", "pending")
        )
        assert row["exception_trips"] == ",".join(exceptions)


def test_a_second_run_writes_nothing() -> None:
    lake, ledger = MemoryLake(), MemoryLedger()
    facts = facts_of(DAY)
    first = job(facts, lake, ledger, KEY.as_of).run(day=KEY.business_date)
    second = job(facts, lake, ledger, KEY.as_of + timedelta(hours=1)).run(day=KEY.business_date)
    assert first.batch_id is not None
    assert (second.batch_id, second.changed, second.alerts, second.debts_opened) == (None, 0, 0, 0)
    assert lake.batches == [first.batch_id]


def test_a_run_tells_the_ledger_its_app_entry_debts_in_one_call_per_kind() -> None:
    lake, ledger = MemoryLake(), MemoryLedger()
    report = job(facts_of(DAY), lake, ledger, KEY.as_of).run(day=KEY.business_date)
    owed = [t for t in KEY.trips if t.debt and t.shopper_id]
    assert len(owed) >= 2
    assert report.debts_opened > len(owed)  # card-entry debts too, in bad_debts only
    assert ledger.calls == [("open_many", str(len(owed)))]
    assert set(ledger.debts) == {t.shopping_trip_id for t in owed}
    paid = [
        {
            "event_id": f"late-{t.shopping_trip_id}",
            "shopping_trip_id": t.shopping_trip_id,
            "store_id": t.store_id,
            "sub_type": "CaptureApproved",
            "amount": t.outstanding,
            "currency": "USD",
            "event_time": KEY.as_of,
        }
        for t in owed[:2]
    ]
    ledger.calls.clear()
    report = job(facts_of(DAY, [*DAY.payment_events, *paid]), lake, ledger, KEY.as_of + timedelta(minutes=1)).run(
        day=KEY.business_date
    )
    assert report.debts_closed == 2
    assert ledger.calls == [("close_many", "2")]
    assert {t for t, d in ledger.debts.items() if d.status == "SETTLED"} == {t.shopping_trip_id for t in owed[:2]}


def test_settling_a_debt_lets_the_shopper_in_again() -> None:
    lake, ledger = MemoryLake(), MemoryLedger()
    job(facts_of(DAY), lake, ledger, KEY.as_of).run(day=KEY.business_date)
    owed = next(t for t in KEY.trips if t.debt and t.shopper_id)
    assert owed.shopper_id in ledger.blocked()
    closed = job(facts_of(DAY), lake, ledger, KEY.as_of + timedelta(minutes=1)).close_debt(
        owed.shopping_trip_id, "SETTLED", owed.outstanding
    )
    assert closed.status == "SETTLED"
    assert owed.shopper_id not in ledger.blocked()
    [row] = [r for r in lake.table("bad_debts") if r["shopping_trip_id"] == owed.shopping_trip_id]
    assert row["status"] == "SETTLED"


def test_a_partial_payoff_survives_the_next_runs_and_paying_the_rest_lets_the_shopper_in() -> None:
    lake, ledger = MemoryLake(), MemoryLedger()
    facts = facts_of(DAY)
    job(facts, lake, ledger, KEY.as_of).run(day=KEY.business_date)
    owed = next(t for t in KEY.trips if t.debt and t.shopper_id)
    part = Decimal("10.00")

    def debt_row() -> dict[str, object]:
        [row] = [r for r in lake.table("bad_debts") if r["shopping_trip_id"] == owed.shopping_trip_id]
        return row

    after = job(facts, lake, ledger, KEY.as_of + timedelta(minutes=1)).close_debt(
        owed.shopping_trip_id, "SETTLED", part
    )
    assert (after.status, after.amount, after.paid) == ("OPEN", owed.outstanding - part, part)
    again = job(facts, lake, ledger, KEY.as_of + timedelta(minutes=2)).run(day=KEY.business_date)
    assert again.batch_id is None
    assert (debt_row()["status"], debt_row()["amount"], debt_row()["paid"]) == ("OPEN", owed.outstanding - part, part)
    assert owed.shopper_id in ledger.blocked()

    rest = owed.outstanding - part
    closed = job(facts, lake, ledger, KEY.as_of + timedelta(minutes=3)).close_debt(
        owed.shopping_trip_id, "SETTLED", rest
    )
    assert (closed.status, closed.paid) == ("SETTLED", owed.outstanding)
    assert owed.shopper_id not in ledger.blocked()
    job(facts, lake, ledger, KEY.as_of + timedelta(minutes=4)).run(day=KEY.business_date)
    assert (debt_row()["status"], debt_row()["paid"]) == ("SETTLED", owed.outstanding)


def test_late_data_that_leaves_less_owed_than_was_paid_settles_the_debt() -> None:
    lake, ledger = MemoryLake(), MemoryLedger()
    job(facts_of(DAY), lake, ledger, KEY.as_of).run(day=KEY.business_date)
    owed = next(t for t in KEY.trips if t.debt and t.shopper_id)
    job(facts_of(DAY), lake, ledger, KEY.as_of + timedelta(minutes=1)).close_debt(
        owed.shopping_trip_id, "SETTLED", Decimal("5.00")
    )
    late = [
        *DAY.payment_events,
        {
            "event_id": "late-capture",
            "shopping_trip_id": owed.shopping_trip_id,
            "store_id": owed.store_id,
            "sub_type": "CaptureApproved",
            "amount": owed.outstanding - Decimal("5.00"),
            "currency": "USD",
            "event_time": KEY.as_of,
        },
    ]
    report = job(facts_of(DAY, late), lake, ledger, KEY.as_of + timedelta(minutes=2)).run(day=KEY.business_date)
    assert report.debts_closed == 1
    [row] = [r for r in lake.table("bad_debts") if r["shopping_trip_id"] == owed.shopping_trip_id]
    assert (row["status"], row["paid"]) == ("SETTLED", Decimal("5.00"))
    assert owed.shopper_id not in ledger.blocked()


def test_trips_move_from_pending_as_deadlines_pass_and_the_history_records_it() -> None:
    lake, ledger = MemoryLake(), MemoryLedger()
    facts = facts_of(DAY)
    early = min(r["end_time"] for r in DAY.purchases) + timedelta(minutes=1)  # type: ignore[type-var]
    job(facts, lake, ledger, early).run()  # type: ignore[arg-type]
    assert "pending" in {r["state"] for r in lake.table("trip_reconciliation")}
    job(facts, lake, ledger, KEY.as_of).run()
    assert_matches_the_key(lake)
    moves = Counter((r["from_state"], r["to_state"]) for r in lake.table("trip_reconciliation_history"))
    assert moves[("pending", "missing_capture")] >= 1


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_any_interleaving_and_duplication_of_facts_gives_the_same_states(data: st.DataObject) -> None:
    rows = list(DAY.payment_events)
    extra = data.draw(st.lists(st.sampled_from(rows), max_size=10))
    arrived = data.draw(st.permutations([*rows, *extra]))
    cut = data.draw(st.integers(0, len(arrived)))
    lake, ledger = MemoryLake(), MemoryLedger()
    # Part of the feed first, reconciled mid-day; then the rest, reconciled after every deadline.
    job(facts_of(DAY, list(arrived[:cut])), lake, ledger, KEY.as_of - timedelta(days=2, hours=4)).run()
    everything = facts_of(DAY, list(arrived))
    job(everything, lake, ledger, KEY.as_of).run()
    assert_matches_the_key(lake)
    declines = Counter((r["shopping_trip_id"], r["sub_type"]) for r in rows if str(r["sub_type"]).endswith("Declined"))
    assert len(lake.table("alerts")) == len(declines)
    assert ledger.blocked() == {t.shopper_id for t in KEY.trips if t.debt and t.shopper_id}
    again = job(everything, lake, ledger, KEY.as_of + timedelta(minutes=5)).run()
    assert again.batch_id is None
    assert sum(Decimal(1) for _ in lake.table("alerts")) == len(declines)


def test_a_payoff_waits_for_a_run_in_progress_and_a_run_for_a_payoff() -> None:
    """The job holds its `exclusive` for a whole run and for a payoff, so a payoff never lands between a run's read of
    the debts and its write of them."""
    lake, ledger, held = MemoryLake(), MemoryLedger(), threading.Lock()
    entered: list[str] = []

    @contextlib.contextmanager
    def exclusive() -> Iterator[None]:
        assert held.acquire(blocking=False), "a second holder while the first still runs"
        entered.append("in")
        try:
            yield
        finally:
            held.release()

    locked = ReconcileJob(facts_of(DAY), lake, lake, ledger, RuleSettings(), lambda: KEY.as_of, exclusive=exclusive)
    locked.run(day=KEY.business_date)
    owed = next(t for t in KEY.trips if t.debt and t.shopper_id)
    locked.close_debt(owed.shopping_trip_id, "SETTLED", None)
    assert entered == ["in", "in"]
    with held, pytest.raises(AssertionError, match="a second holder"):  # someone else holds it: the job cannot go in
        locked.run(day=KEY.business_date)
