"""The table rules (`reconcile.table_rules`, what the job runs) equal the reference rules (`reconcile.rules`, one trip
at a time) on random facts: the same state, every amount and the same reason text for each trip, the same debts, the
same decline alerts and the same daily settlement.

Money facts are generated as the warehouse holds them (DECIMAL(18,4), so `Decimal('12.3400')`): the reason texts
quote amounts as `str(Decimal)` does, which shows the scale.
"""

from __future__ import annotations

import uuid
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import pyarrow as pa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from reconcile import table_rules
from reconcile.rules import (
    AUTH_APPROVED,
    AUTH_DECLINED,
    CAPTURE_APPROVED,
    CAPTURE_DECLINED,
    Debt,
    PaymentEvent,
    Purchase,
    RuleSettings,
    TripFacts,
    TripResult,
    debt_id,
    decide_debt,
    decline_alerts,
    reconcile_trip,
    settle,
)

BASE = datetime(2025, 3, 14, 0, 0, tzinfo=UTC)
FOUR = Decimal("0.0001")
SUB_TYPES = (AUTH_APPROVED, AUTH_DECLINED, CAPTURE_APPROVED, CAPTURE_DECLINED)


def money(cents: int) -> Decimal:
    return (Decimal(cents) / 100).quantize(FOUR)


cents = st.one_of(st.sampled_from([0, 1, 999, 1000, 1001, 1234, 5000]), st.integers(-500, 20_000))
moments = st.builds(
    lambda minutes, micro: BASE + timedelta(minutes=minutes, microseconds=micro),
    st.integers(-600, 4 * 24 * 60),
    st.sampled_from([0, 0, 0, 1, 500_000]),
)


@st.composite
def trip_facts(draw: st.DrawFn, trip: str) -> TripFacts:
    store = draw(st.sampled_from(["S1", "S2", "S3"]))
    purchase = None
    total = draw(cents)
    if draw(st.booleans()) or draw(st.booleans()):
        app = draw(st.booleans())
        subtotal, promotions = draw(cents), draw(st.integers(0, 300))
        purchase = Purchase(
            shopping_trip_id=trip,
            store_id=store,
            entry_method="SCAN_CODE" if app else "FINANCIAL",
            shopper_id=draw(st.sampled_from(["shopper-1", "shopper-2", None])),
            currency="USD",
            subtotal=money(subtotal),
            promotions=money(promotions),
            tax=money(total - subtotal + promotions),
            total=money(total),
            line_count=draw(st.sampled_from([0, 1, 3])),
            end_time=draw(moments),
        )
    # Amounts near the sale: whole, short by a cent, partial, over; or anything.
    near = st.sampled_from([total, total - 1, total + 1, total // 2, total * 2, 5000])
    events = draw(
        st.lists(
            st.builds(
                lambda n, sub_type, amount, at, currency: PaymentEvent(
                    event_id=f"{trip}-e{n}",
                    shopping_trip_id=trip,
                    store_id=store,
                    sub_type=sub_type,
                    amount=money(amount),
                    currency=currency,
                    event_time=at,
                ),
                st.integers(0, 1000),
                st.sampled_from(SUB_TYPES),
                st.one_of(near, cents),
                moments,
                st.sampled_from(["USD", "USD", "EUR"]),
            ),
            max_size=5,
            unique_by=lambda e: e.event_id,
        )
    )
    duplicated = draw(st.lists(st.sampled_from(events), max_size=3)) if events else []
    reported_cents = draw(st.one_of(st.none(), near, cents))
    return TripFacts(
        shopping_trip_id=trip,
        purchase=purchase,
        payments=tuple(draw(st.permutations([*events, *duplicated]))),
        reported=None if reported_cents is None else money(reported_cents),
        reported_at=None if reported_cents is None else draw(moments),
        cancelled_at=draw(st.one_of(st.none(), moments)),
    )


@st.composite
def runs(draw: st.DrawFn) -> tuple[list[TripFacts], RuleSettings, datetime]:
    count = draw(st.integers(1, 12))
    trips = [draw(trip_facts(f"T{i:02d}")) for i in range(count)]
    rule_settings = RuleSettings(
        amount_tolerance=draw(
            st.sampled_from([Decimal("0.00"), Decimal("0.01"), Decimal("0.005"), Decimal("1"), Decimal("0.00005")])
        ),
        preauth_window=draw(st.sampled_from([timedelta(hours=24), timedelta(minutes=90)])),
        report_grace=draw(st.sampled_from([timedelta(hours=2), timedelta(minutes=15)])),
        check_reports=draw(st.booleans()),
    )
    # Now: anywhere, or exactly on (or a microsecond either side of) a trip's deadline.
    ends = [t.purchase.end_time for t in trips if t.purchase is not None]
    deadlines = [e + w for e in ends for w in (rule_settings.preauth_window, rule_settings.report_grace)]
    exact = st.sampled_from(deadlines) if deadlines else moments
    nudge = st.sampled_from([timedelta(0), timedelta(microseconds=1), -timedelta(microseconds=1)])
    now = draw(st.one_of(moments, st.builds(lambda d, n: d + n, exact, nudge)))
    return trips, rule_settings, now


def reference(trips: list[TripFacts], rule_settings: RuleSettings, now: datetime) -> list[TripResult]:
    results = [reconcile_trip(t, rule_settings, now) for t in trips]
    return sorted((r for r in results if r is not None), key=lambda r: r.shopping_trip_id)


def by_table(trips: list[TripFacts], rule_settings: RuleSettings, now: datetime) -> list[TripResult]:
    table = table_rules.reconcile_trips(table_rules.facts_of(trips), rule_settings, now)
    return sorted(table_rules.trip_results(table), key=lambda r: r.shopping_trip_id)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(runs())
def test_the_table_rules_give_every_trip_the_reference_state_amounts_and_reason(
    run: tuple[list[TripFacts], RuleSettings, datetime],
) -> None:
    trips, rule_settings, now = run
    expected = reference(trips, rule_settings, now)
    actual = by_table(trips, rule_settings, now)
    assert [r.shopping_trip_id for r in actual] == [r.shopping_trip_id for r in expected]
    for got, want in zip(actual, expected, strict=True):
        assert got == want
        assert got.reason == want.reason  # equal Decimals may print differently: the text is compared as text
    assert table_rules.settlements_of(table_rules.settle(table_rules.results_table(actual))) == settle(expected)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(runs(), st.data())
def test_the_table_rules_decide_the_reference_debts_with_their_payoffs_and_alerts(
    run: tuple[list[TripFacts], RuleSettings, datetime], data: st.DataObject
) -> None:
    trips, rule_settings, now = run
    expected = reference(trips, rule_settings, now)
    existing: dict[str, Debt] = {}
    for result in expected:
        status = data.draw(st.sampled_from([None, "OPEN", "OPEN", "SETTLED", "WRITTEN_OFF"]))
        if status is not None:
            existing[result.shopping_trip_id] = Debt(
                debt_id=debt_id(result.shopping_trip_id),
                shopping_trip_id=result.shopping_trip_id,
                shopper_id=data.draw(st.sampled_from([None, "shopper-9"])),
                store_id="S9",
                amount=money(data.draw(st.sampled_from([0, 1234, 617]))),
                currency="USD",
                reason=data.draw(st.sampled_from(["declined capture", "partial capture", "expired pre-auth"])),
                status=status,  # type: ignore[arg-type]
                opened_at=BASE,
                settled_at=None if status == "OPEN" else BASE + timedelta(hours=1),
                paid=money(data.draw(st.sampled_from([0, 0, 1, 617, 1233, 1234, 20_000]))),
            )
    later = now + timedelta(minutes=1)
    decided = [decide_debt(r, existing.get(r.shopping_trip_id), later) for r in expected]
    want = sorted((d for d in decided if d is not None), key=lambda d: d.shopping_trip_id)
    changes = table_rules.decide_debts(
        table_rules.results_table(expected), table_rules.table_of(list(existing.values()), table_rules.DEBT_SCHEMA),
        later,
    )  # fmt: skip
    assert table_rules.debts_of(changes.rows) == want
    assert {d.shopping_trip_id for d in table_rules.debts_of(changes.opened)} == {
        d.shopping_trip_id for d in want if d.shopping_trip_id not in existing
    }
    assert {d.shopping_trip_id for d in table_rules.debts_of(changes.closed)} == {
        d.shopping_trip_id for d in want if existing.get(d.shopping_trip_id) is not None and d.status != "OPEN"
    }

    payments = [p for t in trips for p in t.payments]
    alerts = table_rules.alerts_of(table_rules.decline_alerts(table_rules.facts_of(trips).payments))
    assert sorted(alerts, key=lambda a: a.alert_id) == sorted(decline_alerts(payments), key=lambda a: a.alert_id)


def test_a_debt_row_written_before_the_paid_column_counts_as_nothing_paid() -> None:
    sold = Purchase("T1", "S1", "SCAN_CODE", "shopper-1", "USD", *(money(1234),) * 2, money(0), money(1234), 1, BASE)
    declined = PaymentEvent("e1", "T1", "S1", CAPTURE_DECLINED, money(1234), "USD", BASE)
    [result] = reference([TripFacts("T1", sold, (declined,))], RuleSettings(), BASE + timedelta(days=2))
    old = Debt(debt_id("T1"), "T1", "shopper-1", "S1", money(1000), "USD", "declined capture", "OPEN", BASE)
    rows = table_rules.table_of([old], table_rules.DEBT_SCHEMA)
    rows = rows.set_column(rows.schema.get_field_index("paid"), "paid", pa.nulls(1, table_rules.MONEY))
    changes = table_rules.decide_debts(table_rules.results_table([result]), rows, BASE + timedelta(days=2))
    [debt] = table_rules.debts_of(changes.rows)
    assert debt == decide_debt(result, old, BASE + timedelta(days=2))
    assert (debt.amount, debt.paid) == (money(1234), Decimal(0))


def test_a_settlement_joins_the_refunds_of_its_day_and_store() -> None:
    sold = Purchase("T1", "S1", "FINANCIAL", None, "USD", *(money(1234),) * 2, money(0), money(1234), 1, BASE)
    result = reconcile_trip(TripFacts("T1", sold), RuleSettings(), BASE + timedelta(days=2))
    assert result is not None
    refunded = pa.table(
        {"business_date": [date(2025, 3, 14), date(2025, 3, 14)], "store_id": ["S1", "S2"],
         "refunded": [money(500), money(700)]},
        schema=table_rules.REFUNDED_SCHEMA,
    )  # fmt: skip
    [day] = table_rules.settlements_of(table_rules.settle(table_rules.results_table([result]), refunded))
    assert day == replace(settle([result], {(date(2025, 3, 14), "S1"): money(500)})[0])
    assert day.refunded == money(500)


@given(st.uuids(), st.lists(st.text(), max_size=20))
def test_the_batched_uuid5_ids_are_the_uuid_modules_ids(namespace: uuid.UUID, names: list[str]) -> None:
    assert table_rules.uuid5s(namespace, names) == [str(uuid.uuid5(namespace, name)) for name in names]


@settings(max_examples=200, deadline=None)
@given(
    moments=st.lists(
        st.datetimes(min_value=datetime(1900, 1, 1), max_value=datetime(2200, 1, 1), timezones=st.just(UTC))
        | st.sampled_from([datetime(2026, 11, 20, tzinfo=UTC), datetime(1969, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)])
        | st.none(),
        min_size=1,
        max_size=20,
    ),
    day=st.dates(min_value=date(1900, 1, 1), max_value=date(2200, 1, 1)),
)
def test_the_utc_day_helpers_agree_with_duckdbs_casts_in_a_utc_session(
    moments: list[datetime | None], day: date
) -> None:
    moments += [datetime(day.year, day.month, day.day, tzinfo=UTC) + timedelta(microseconds=d) for d in (-1, 0, 1)]
    frame = pa.table({"t": pa.array(moments, pa.timestamp("us", tz="UTC"))})
    with table_rules.calculator(f=frame) as con:
        rows = con.sql(
            f"SELECT CAST(t AS DATE), {table_rules.utc_date('t')}, CAST(t AS DATE) = DATE '{day}', "
            f"{table_rules.on_utc_day('t', day)}, CAST(CAST(t AS DATE) AS TIMESTAMPTZ), "
            f"{table_rules.utc_midnight(table_rules.utc_date('t'))} FROM f"
        ).fetchall()
    for cast_day, day_of, cast_on, on_day, cast_midnight, midnight in rows:
        assert (day_of, on_day, midnight) == (cast_day, cast_on, cast_midnight)


@settings(max_examples=25, deadline=None)
@given(rows=st.integers(0, 3000), keep=st.integers(0, 4))
def test_rows_hashed_as_they_are_fetched_sum_as_duckdbs_hugeint_sum_of_their_hashes(rows: int, keep: int) -> None:
    with table_rules.calculator() as con:
        con.execute(
            f"CREATE TEMP VIEW v AS SELECT i, 'trip-' || i AS trip, CAST(i AS DECIMAL(18,4)) AS amount, "
            f"CASE WHEN i % 3 = 0 THEN NULL ELSE TIMESTAMPTZ '2026-11-20 00:00:00+00' END AS at FROM range({rows}) r(i)"
        )
        where = f"i % 5 >= {keep}"
        [(count, expected)] = con.sql(
            f"SELECT count(*), coalesce(sum(hash(r)::HUGEINT), 0) FROM v r WHERE {where}"
        ).fetchall()
        schema = pa.schema([("i", pa.int64()), ("trip", pa.string()), ("amount", table_rules.MONEY),
                            ("at", table_rules.TIME)])  # fmt: skip
        fetched, hashed = table_rules.hashed_arrow(con, "v", where, schema)
    assert (fetched.num_rows, hashed) == (count, int(expected))
    assert fetched.schema.equals(schema)
    assert count < 50 or hashed >= 2**64  # enough rows for a 64-bit sum to overflow: the halves are what hold
