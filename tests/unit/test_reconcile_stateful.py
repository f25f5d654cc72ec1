"""A Hypothesis state machine over the reconciliation job: purchases, payment events, report rows and cancel-charge
requests arrive in any order, any of them more than once, with reconciliations in between as the clock moves on.
After every run, every trip's money adds up to the cent (`purchase total = captured + outstanding + pending`) and
each decline seen has exactly one alert; at the end, once everything has arrived and every deadline has passed,
the states and amounts are the answer key's and a re-run changes nothing."""

from __future__ import annotations

from collections import Counter
from datetime import timedelta
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from reconcile.fakes import MemoryFacts, MemoryLake, MemoryLedger
from tests.unit.test_reconcile_job import DAY, KEY, assert_matches_the_key, facts_of, job

Row = dict[str, Any]
START = KEY.as_of - timedelta(days=2, hours=4)
"""The first run's clock: mid-day, before the capture and report deadlines of most trips."""


def decline_keys(payments: list[Row]) -> set[tuple[str, str]]:
    return {
        (str(r["shopping_trip_id"]), str(r["sub_type"])) for r in payments if str(r["sub_type"]).endswith("Declined")
    }


class FactsArriving(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.purchases: list[Row] = []
        self.payments: list[Row] = []
        self.report_lines: list[Row] = []
        self.cancels: list[Row] = []
        self.lake, self.ledger = MemoryLake(), MemoryLedger()
        self.now = START
        self.reconciled_declines: set[tuple[str, str]] = set()
        self.runs = 0

    def facts(self) -> MemoryFacts:
        """What the warehouse shows of what has arrived: a purchase, report line or cancel request once per key
        (the warehouse upserts them), payment events with their redeliveries (the job de-duplicates those)."""
        facts = facts_of(DAY, list(self.payments))
        arrived_trips = {str(r["shopping_trip_id"]) for r in self.purchases}
        reported = {str(r["shopping_trip_id"]) for r in self.report_lines}
        cancelled = {str(r["shopping_trip_id"]) for r in self.cancels}
        return MemoryFacts(
            [p for p in facts.purchases if p.shopping_trip_id in arrived_trips],
            facts.payments,
            {trip: value for trip, value in facts.reported.items() if trip in reported},
            {trip: at for trip, at in facts.cancelled.items() if trip in cancelled},
        )

    @rule(row=st.sampled_from(DAY.purchases))
    def a_purchase_arrives(self, row: Row) -> None:
        self.purchases.append(row)

    @rule(row=st.sampled_from(DAY.payment_events))
    def a_payment_event_arrives(self, row: Row) -> None:
        self.payments.append(row)

    @rule(row=st.sampled_from([r for r in DAY.payment_events if str(r["sub_type"]).endswith("Declined")]))
    def a_decline_arrives(self, row: Row) -> None:
        self.payments.append(row)

    @rule(row=st.sampled_from(DAY.intraday_order_lines))
    def a_report_line_arrives(self, row: Row) -> None:
        self.report_lines.append(row)

    @rule(row=st.sampled_from(DAY.cancel_charges))
    def a_cancel_request_arrives(self, row: Row) -> None:
        self.cancels.append(row)

    @rule(later=st.sampled_from([timedelta(0), timedelta(hours=1), timedelta(hours=6), timedelta(days=1)]))
    def reconcile(self, later: timedelta) -> None:
        # The clock moves on, as a wall clock does, however little (two runs at the same instant would tie in
        # the lake's latest-wins), and stays before the answer key's time, which the last run takes.
        self.now = max(min(self.now + later, KEY.as_of - timedelta(minutes=1)), self.now + timedelta(seconds=1))
        job(self.facts(), self.lake, self.ledger, self.now).run()
        self.reconciled_declines = decline_keys(self.payments)
        self.runs += 1

    @precondition(lambda self: self.runs > 0)
    @invariant()
    def every_trips_money_adds_up_to_the_cent(self) -> None:
        for row in self.lake.table("trip_reconciliation"):
            assert row["purchase_total"] == row["captured"] + row["outstanding"] + row["pending_amount"], row

    @invariant()
    def each_decline_reconciled_has_exactly_one_alert(self) -> None:
        alerts = Counter(str(a["shopping_trip_id"]) for a in self.lake.table("alerts"))
        expected = Counter(trip for trip, _ in self.reconciled_declines)
        assert alerts == expected

    def teardown(self) -> None:
        """The rest of the day's facts arrive (those already in, again), every deadline passes: the answer key."""
        self.purchases += DAY.purchases
        self.payments += DAY.payment_events
        self.report_lines += DAY.intraday_order_lines
        self.cancels += DAY.cancel_charges
        final = self.facts()
        job(final, self.lake, self.ledger, KEY.as_of).run()
        assert_matches_the_key(self.lake)
        assert self.ledger.blocked() == {t.shopper_id for t in KEY.trips if t.debt and t.shopper_id}
        alerts = Counter(str(a["shopping_trip_id"]) for a in self.lake.table("alerts"))
        assert alerts == Counter(trip for trip, _ in decline_keys(self.payments))
        again = job(final, self.lake, self.ledger, KEY.as_of + timedelta(minutes=5)).run()
        assert again.batch_id is None  # nothing changed


FactsArriving.TestCase.settings = settings(
    max_examples=25, stateful_step_count=20, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
test_facts_arriving_in_any_order_and_any_number_of_times = FactsArriving.TestCase
